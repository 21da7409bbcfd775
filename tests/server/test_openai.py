"""OpenAI Chat Completions with the official SDK and raw HTTP, against a real server."""

import json

import openai
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

from ..support import sse_events

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["unit"], "additionalProperties": False}}}
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)


def test_create(client):
    completion = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hi"}])
    choice = completion.choices[0]
    assert choice.message.content == SCRIPTED_REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="scripted", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SCRIPTED_REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_length_and_stop(client):
    short = client.chat.completions.create(model="scripted", max_completion_tokens=2,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert short.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(model="scripted", stop="llamabridge",
                                             messages=[{"role": "user", "content": "Hi"}])
    assert stopped.choices[0].message.content == "Hello from "
    assert stopped.choices[0].finish_reason == "stop"


def test_tools_required(client):
    completion = client.chat.completions.create(model="tool-caller", tools=[WEATHER], tool_choice="required",
                                                temperature=0,
                                                messages=[{"role": "user", "content": "Weather?"}],
                                                max_tokens=300, extra_body=NO_THINK)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["unit"] in ("c", "f")


def test_tools_stream_deltas(client):
    stream = client.chat.completions.create(model="tool-caller", tools=[WEATHER], stream=True, temperature=0,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                            messages=[{"role": "user", "content": "Weather?"}], max_tokens=300,
                                            extra_body=NO_THINK)
    calls = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            if delta.id:
                entry["id"] = delta.id
            if delta.function and delta.function.name:
                entry["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"])["unit"] in ("c", "f")


def test_tool_round_trip_is_accepted(client):
    completion = client.chat.completions.create(model="scripted", tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"unit":"c"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ])
    assert completion.choices[0].message.content == SCRIPTED_REPLY


def test_reasoning_content(client):
    completion = client.chat.completions.create(model="thinker", messages=[{"role": "user", "content": "Think"}])
    message = completion.choices[0].message
    assert message.content == "Done!"
    assert message.model_extra["reasoning_content"] == "Plan."
    stream = client.chat.completions.create(model="thinker", stream=True,
                                            messages=[{"role": "user", "content": "Think"}])
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in stream)
    assert reasoning == "Plan."


def test_json_object_response_format(server, http):
    body = {"model": "llama-3.1", "max_tokens": 80, "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "JSON please"}]}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    if response.json()["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


def test_n_greater_than_one_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="scripted", n=2, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.body["param"] == "n"
    assert "n=1" in info.value.body["message"]


def test_stream_raw_format(http):
    body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [e for e in sse_events(response) if e[0] != "comment"]
    assert events[-1] == ("message", "[DONE]")
    first = events[0][1]
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


def test_models_endpoint(client):
    names = [m.id for m in client.models.list()]
    assert "scripted" in names and "tool-caller" in names
