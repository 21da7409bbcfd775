"""Ollama's native API with the `ollama` Python client and raw HTTP, against a real server."""

import json

import ollama
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["unit"]}}}
GREEDY = {"temperature": 0}


@pytest.fixture
def client(server):
    return ollama.Client(host=server.url)


def test_chat(client):
    response = client.chat(model="scripted", messages=[{"role": "user", "content": "Hi"}], options=GREEDY)
    assert response.message.role == "assistant" and response.message.content == SCRIPTED_REPLY
    assert response.done and response.done_reason == "stop" and response.eval_count == 12
    assert response.prompt_eval_count > 0 and response.total_duration > 0


def test_chat_stream_is_ndjson(client, http):
    parts = list(client.chat(model="scripted:latest", messages=[{"role": "user", "content": "Hi"}], stream=True,
                             options=GREEDY))
    assert "".join(p.message.content for p in parts) == SCRIPTED_REPLY
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].model == "scripted:latest" and parts[-1].eval_count == 12
    with http.stream("POST", "/api/chat", json={"model": "scripted", "messages": [{"role": "user", "content": "Hi"}]}) \
            as response:      # streaming is Ollama's default
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] is True and len(lines) > 2


def test_thinking(client):
    parts = list(client.chat(model="thinker", messages=[{"role": "user", "content": "Hi"}], think=True, stream=True,
                             options=GREEDY))
    assert "".join(p.message.thinking or "" for p in parts) == "Plan."
    assert "".join(p.message.content for p in parts) == "Done!"
    whole = client.chat(model="thinker", messages=[{"role": "user", "content": "Hi"}], think=True, options=GREEDY)
    assert whole.message.thinking == "Plan." and whole.message.content == "Done!"


def test_tool_round_trip(client):
    asked = [{"role": "user", "content": "Weather?"}]
    first = client.chat(model="tool-caller", messages=asked, tools=[WEATHER], think=False,
                        options={"temperature": 0, "num_predict": 300})
    call = first.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments["unit"] in ("c", "f")
    streamed = list(client.chat(model="tool-caller", messages=asked, tools=[WEATHER], think=False, stream=True,
                                options={"temperature": 0, "num_predict": 300}))
    calls = [c for p in streamed for c in p.message.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
    second = client.chat(model="tool-caller", tools=[WEATHER], think=False,
                         options={"temperature": 0, "num_predict": 300},
                         messages=asked + [first.message, {"role": "tool", "tool_name": "get_weather",
                                                           "content": "21 degrees"}])
    assert second.done


def test_format_and_options(client):
    schema = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c"]}}, "required": ["unit"]}
    response = client.chat(model="random", messages=[{"role": "user", "content": "Unit?"}], format=schema, think=False,
                           options={"temperature": 0, "num_predict": 50})
    assert json.loads(response.message.content) == {"unit": "c"}
    short = client.chat(model="scripted", messages=[{"role": "user", "content": "Hi"}],
                        options={"temperature": 0, "num_predict": 3, "num_ctx": 4096, "seed": 1, "top_k": 5})
    assert short.done_reason == "length" and short.eval_count == 3
    stopped = client.chat(model="scripted", messages=[{"role": "user", "content": "Hi"}],
                          options={"temperature": 0, "stop": ["llamabridge"]}, keep_alive="5m")
    assert stopped.message.content == "Hello from "


def test_generate(client):
    response = client.generate(model="scripted", prompt="Hi", system="Be brief.", options=GREEDY)
    assert response.response == SCRIPTED_REPLY and response.done_reason == "stop"
    parts = list(client.generate(model="scripted", prompt="Hi", stream=True, options=GREEDY))
    assert "".join(p.response for p in parts) == SCRIPTED_REPLY
    loaded = client.generate(model="scripted")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""


def test_list_show_ps_version(client, http):
    names = {m.model: m for m in client.list().models}
    assert {"scripted", "thinker", "tool-caller"} <= set(names)
    assert names["scripted"].details.format == "gguf" and names["scripted"].size > 0
    shown = client.show("scripted")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 65536
    assert "im_start" in shown.template and "tools" in shown.capabilities
    running = {m.model: m for m in client.ps().models}
    assert running["thinker"].context_length == 2048
    assert http.get("/api/version").json()["version"]


def test_errors_are_ollamas_shape(client, http):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="gpt-x", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 404 and "gpt-x" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.show("gpt-x")
    assert info.value.status_code == 404
    image = http.post("/api/chat", json={"model": "scripted", "stream": False, "messages": [
        {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo="]}]})
    assert image.status_code == 400 and "text models only" in image.json()["error"]
    for body in (b"{", b'{"model": "scripted", "messages": 5}', b'{"model": "scripted", "options": {"top_k": "x"}}'):
        response = http.post("/api/chat", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and set(response.json()) == {"error"}
    raw = http.post("/api/generate", json={"model": "scripted", "prompt": "x", "raw": True, "stream": False})
    assert raw.status_code == 400 and "raw" in raw.json()["error"]
    overflow = http.post("/api/chat", json={"model": "strict-x", "stream": False, "options": {"num_predict": 5000},
                                            "messages": [{"role": "user", "content": "Hi"}]})
    assert overflow.status_code == 400 and "context" in overflow.json()["error"]
