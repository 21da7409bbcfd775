"""logprobs / top_logprobs / logit_bias on Chat Completions, Responses and Ollama, streamed and not."""

import json

import ollama
import openai
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

from ..support import sse_events

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)


def check_entries(entries, top: int) -> None:
    """Token entries spell the reply; greedy on the scripted model: each token is its likeliest."""
    assert "".join(e["token"] for e in entries) == SCRIPTED_REPLY
    if entries and entries[0].get("bytes") is not None:          # the ollama client keeps no bytes
        assert b"".join(bytes(e["bytes"]) for e in entries).decode() == SCRIPTED_REPLY
    for e in entries:
        assert e["logprob"] <= 0 and len(e["top_logprobs"]) == top
        if top:
            assert e["top_logprobs"][0]["token"] == e["token"]
            assert e["top_logprobs"][0]["logprob"] == e["logprob"]
            assert [t["logprob"] for t in e["top_logprobs"]] == sorted((t["logprob"] for t in e["top_logprobs"]),
                                                                        reverse=True)


def test_chat_completions_logprobs(client):
    completion = client.chat.completions.create(model="scripted", messages=HI, temperature=0, logprobs=True,
                                                top_logprobs=3)
    logprobs = completion.choices[0].logprobs
    check_entries([e.model_dump() for e in logprobs.content], 3)
    plain = client.chat.completions.create(model="scripted", messages=HI, temperature=0)
    assert plain.choices[0].logprobs is None
    no_top = client.chat.completions.create(model="scripted", messages=HI, temperature=0, logprobs=True)
    check_entries([e.model_dump() for e in no_top.choices[0].logprobs.content], 0)


def test_chat_completions_logprobs_streamed(client):
    stream = client.chat.completions.create(model="scripted", messages=HI, temperature=0, stream=True,
                                            logprobs=True, top_logprobs=2)
    entries, text = [], ""
    for chunk in stream:
        choice = chunk.choices[0]
        if choice.delta.content:
            text += choice.delta.content
            entries += [e.model_dump() for e in choice.logprobs.content]
    assert text == SCRIPTED_REPLY
    check_entries(entries, 2)


def test_logit_bias_bans_and_forces_tokens(client, scripted):
    first = scripted.tokenize(SCRIPTED_REPLY)[0]
    banned = client.chat.completions.create(model="scripted", messages=HI, temperature=0, max_tokens=3,
                                            logit_bias={str(first): -100})
    assert not banned.choices[0].message.content.startswith(scripted.detokenize([first]))
    forced_token = scripted.tokenize(" llama")[0]
    forced = client.chat.completions.create(model="scripted", messages=HI, temperature=0, max_tokens=3,
                                            logit_bias={str(forced_token): 100})
    assert forced.choices[0].message.content.split() == ["llama"] * 3


@pytest.mark.parametrize("extra, param", [
    ({"logit_bias": {"hello": 5}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": -1, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
])
def test_bad_logprobs_and_bias_are_400s(http, extra, param):
    for stream in (False, True):
        response = http.post("/v1/chat/completions", json={"model": "scripted", "messages": HI, "stream": stream,
                                                           **extra})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_responses_logprobs(client, http):
    response = client.responses.create(model="scripted", input="Hi", temperature=0, top_logprobs=2,
                                       include=["message.output_text.logprobs"])
    part = response.output[0].content[0]
    check_entries([e.model_dump() for e in part.logprobs], 2)
    assert response.top_logprobs == 2
    plain = client.responses.create(model="scripted", input="Hi", temperature=0)
    assert plain.output[0].content[0].logprobs == []
    body = {"model": "scripted", "input": "Hi", "temperature": 0, "stream": True,
            "include": ["message.output_text.logprobs"]}
    with http.stream("POST", "/v1/responses", json=body) as streamed:
        events = [data for kind, data in sse_events(streamed) if kind != "comment"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    check_entries([entry for e in deltas for entry in e["logprobs"]], 0)
    done = next(e for e in events if e["type"] == "response.output_text.done")
    check_entries(done["logprobs"], 0)


def test_ollama_logprobs(server, http):
    client = ollama.Client(host=server.url)
    answer = client.chat(model="scripted", messages=HI, options={"temperature": 0}, logprobs=True, top_logprobs=2)
    check_entries([e.model_dump() for e in answer.logprobs], 2)
    body = {"model": "scripted", "messages": HI, "options": {"temperature": 0}, "logprobs": True}
    with http.stream("POST", "/api/chat", json=body) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    check_entries([e for line in lines if not line["done"] for e in line["logprobs"]], 0)
    generated = http.post("/api/generate", json={"model": "scripted", "prompt": "Hi", "stream": False,
                                                 "options": {"temperature": 0}, "logprobs": True}).json()
    check_entries(generated["logprobs"], 0)
