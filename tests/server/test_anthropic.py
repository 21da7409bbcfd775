"""Anthropic Messages API with the official SDK and raw HTTP, against a real server."""


import anthropic
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

from ..support import sse_events

WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
                     "required": ["unit"], "additionalProperties": False},
}


@pytest.fixture
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key="sk-ant-none", max_retries=0)


def test_create(client):
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=100,
                                     messages=[{"role": "user", "content": "Hello?"}])
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == SCRIPTED_REPLY
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-sonnet-4-6"
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0


def test_stream_text(client):
    with client.messages.stream(model="claude-opus-4-8", max_tokens=100,
                                system=[{"type": "text", "text": "Be brief."}],
                                messages=[{"role": "user", "content": "Hi there"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == SCRIPTED_REPLY
    assert final.content[0].text == SCRIPTED_REPLY
    assert final.stop_reason == "end_turn"


def test_max_tokens_stop(client):
    message = client.messages.create(model="claude-x", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_stop_sequence(client):
    message = client.messages.create(model="claude-x", max_tokens=50, stop_sequences=["llamabridge"],
                                     messages=[{"role": "user", "content": "Hi"}])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "llamabridge"
    assert message.content[0].text == "Hello from "


def test_forced_tool_use_streams_and_matches_non_streamed(client):
    kwargs = dict(model="tool-caller", max_tokens=300, tools=[WEATHER], extra_body={"temperature": 0},
                  tool_choice={"type": "tool", "name": "get_weather"},
                  messages=[{"role": "user", "content": "Weather?"}])
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_uses = [b for b in final.content if b.type == "tool_use"]
    assert len(tool_uses) == 1 and tool_uses[0].name == "get_weather"
    assert tool_uses[0].input["unit"] in ("c", "f")
    assert tool_uses[0].id.startswith("toolu_")
    assert not [b for b in final.content if b.type == "text"], "no empty text block beside the tool_use"
    plain = client.messages.create(**kwargs)
    assert [b.input for b in plain.content if b.type == "tool_use"] == [tool_uses[0].input]


def test_tool_round_trip_is_accepted(client):
    message = client.messages.create(
        model="claude-x", max_tokens=60, tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "call it", "signature": "sig-from-elsewhere"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"unit": "c"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "failed", "is_error": True},
                {"type": "text", "text": "Thanks"}]},
        ])
    assert message.content[0].text == SCRIPTED_REPLY


def test_thinking_blocks_stream_with_signature(server, http):
    body = {"model": "thinker", "max_tokens": 50, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 20},
            "messages": [{"role": "user", "content": "Think first"}]}
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [e for e in sse_events(response) if e[0] != "ping"]
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    thinking_deltas = [d for d in deltas if d["type"] == "thinking_delta"]
    assert "".join(d["thinking"] for d in thinking_deltas) == "Plan."
    signature_at = [i for i, d in enumerate(deltas) if d["type"] == "signature_delta"]
    assert len(signature_at) == 1 and deltas[signature_at[0] - 1]["type"] == "thinking_delta"
    assert "".join(d.get("text", "") for d in deltas) == "Done!"


def test_thinking_in_sdk_response(client):
    message = client.messages.create(model="thinker", max_tokens=50, thinking={"type": "adaptive"},
                                     messages=[{"role": "user", "content": "Think first"}])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Plan." and message.content[0].signature
    assert message.content[1].text == "Done!"


def test_sse_event_order(http):
    body = {"model": "claude-x", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with http.stream("POST", "/v1/messages?beta=true", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [n for n, _ in sse_events(response) if n != "ping"]
    assert names[0] == "message_start"
    assert names[1] == "content_block_start"
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_message_start_carries_input_tokens_and_delta_the_usage(http):
    body = {"model": "claude-x", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "Yo"}]}
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = dict((n, d) for n, d in sse_events(response) if n in ("message_start", "message_delta"))
    count = http.post("/v1/messages/count_tokens", json={"model": "claude-x", "messages": body["messages"]}).json()
    assert events["message_start"]["message"]["usage"]["input_tokens"] == count["input_tokens"]
    usage = events["message_delta"]["usage"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == count["input_tokens"]
    assert usage["output_tokens"] == 12
    assert events["message_delta"]["delta"]["stop_reason"] == "end_turn"


def test_count_tokens_with_sdk(client):
    count = client.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "Count me"}],
                                         tools=[WEATHER], system="You are terse.")
    message = client.messages.create(model="claude-x", max_tokens=20, tools=[WEATHER], system="You are terse.",
                                     messages=[{"role": "user", "content": "Count me"}])
    assert count.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def test_unknown_fields_and_cache_control_are_accepted(http):
    body = {"model": "claude-x", "max_tokens": 20, "metadata": {"user_id": "u"},
            "context_management": {"edits": []}, "output_config": {"effort": "high"},
            "thinking": {"type": "disabled"}, "something_new": True,
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                       "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text


def test_thinking_budget_is_enforced(client):
    message = client.messages.create(model="thinker", max_tokens=50,
                                     thinking={"type": "enabled", "budget_tokens": 1},
                                     messages=[{"role": "user", "content": "Think briefly"}])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Plan"       # cut after one token: "</think>" was forced
    assert message.content[1].text == "Done!"


def test_thinking_disabled_renders_no_reasoning(client):
    message = client.messages.create(model="thinker", max_tokens=50, thinking={"type": "disabled"},
                                     messages=[{"role": "user", "content": "No thinking"}])
    assert all(b.type != "thinking" for b in message.content)
