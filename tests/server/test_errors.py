"""Every bad input gets a clear error in the API's own shape; the server keeps serving."""

import logging

import anthropic
import openai
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

HI = [{"role": "user", "content": "Hi"}]


def anthropic_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]


def openai_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_malformed_json(http):
    json_type = {"content-type": "application/json"}
    err = anthropic_error(http.post("/v1/messages", content=b'{"model": "x", ', headers=json_type), 400)
    assert err["type"] == "invalid_request_error" and "malformed JSON" in err["message"]
    err = openai_error(http.post("/v1/chat/completions", content=b"not json", headers=json_type), 400)
    assert "malformed JSON" in err["message"]


def test_missing_and_mistyped_fields_are_named(http):
    err = anthropic_error(http.post("/v1/messages", json={"model": "claude-x", "messages": HI}), 400)
    assert "max_tokens" in err["message"]
    err = anthropic_error(http.post("/v1/messages", json={"model": "claude-x", "messages": HI,
                                                          "max_tokens": "many"}), 400)
    assert "max_tokens" in err["message"] and "int" in err["message"]
    err = anthropic_error(http.post("/v1/messages", json={"model": "claude-x", "max_tokens": 5,
                                                          "messages": [{"role": "robot", "content": "x"}]}), 400)
    assert "messages[0].role" in err["message"]
    err = openai_error(http.post("/v1/chat/completions", json={"model": "scripted"}), 400)
    assert "messages" in err["message"]
    err = openai_error(http.post("/v1/chat/completions", json={"model": "scripted",
                                                               "messages": [{"role": "wizard", "content": "x"}]}), 400)
    assert "role" in err["message"]
    err = openai_error(http.post("/v1/chat/completions", json={"model": "scripted", "messages": HI,
                                                               "temperature": "hot"}), 400)
    assert err["param"] == "temperature"


def test_unknown_block_type_and_images_are_400(http):
    err = anthropic_error(http.post("/v1/messages", json={"model": "claude-x", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "hologram", "data": "x"}]}]}), 400)
    assert "type" in err["message"]
    err = anthropic_error(http.post("/v1/messages", json={"model": "claude-x", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                    "data": "AA=="}}]}]}), 400)
    assert "image" in err["message"] and "no vision input" in err["message"]


PNG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def test_an_image_in_a_tool_result_is_a_note_the_model_reads(http, caplog):
    """Claude Code's Read of a PNG: the agent's turn goes on, on a model without vision input."""
    caplog.set_level(logging.INFO, logger="llamabridge.server")
    messages = [{"role": "user", "content": "Look at the screenshot"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read",
                                                   "input": {"file_path": "shot.png"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [PNG]}]}]
    body = {"model": "claude-x", "max_tokens": 5, "messages": messages}
    answer = http.post("/v1/messages", json=body)
    assert answer.status_code == 200, answer.text
    count = http.post("/v1/messages/count_tokens", json={"model": "claude-x", "messages": messages}).json()
    plain = http.post("/v1/messages/count_tokens", json={"model": "claude-x", "messages": messages[:2] + [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "[image omitted: this model reads text only]"}]}]}).json()
    assert count == plain                                  # the note is what the model reads
    assert any("image in a tool result replaced with a note" in r.getMessage() for r in caplog.records)
    openai_tool = [{"role": "user", "content": "Look"},
                   {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                         "function": {"name": "read", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": [
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]
    answer = http.post("/v1/chat/completions", json={"model": "claude-x", "max_tokens": 5, "messages": openai_tool})
    assert answer.status_code == 200, answer.text
    user_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    err = openai_error(http.post("/v1/chat/completions", json={"model": "claude-x", "messages": user_image}), 400)
    assert "no vision input" in err["message"] and err["param"] == "messages[0].content[0].type"


def test_unknown_model_is_404_in_both_shapes(server):
    a = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as info:
        a.messages.create(model="gpt-4o", max_tokens=5, messages=HI)
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "gpt-4o" in info.value.body["error"]["message"]
    o = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        o.chat.completions.create(model="nonexistent", messages=HI)
    assert info.value.body["code"] == "model_not_found"


def test_overflow_anthropic_shape(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="strict-model", max_tokens=64000, messages=HI, timeout=60)
    message = info.value.body["error"]["message"]
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert message.startswith("input length and `max_tokens` exceed context limit: ")
    assert message.endswith(" + 64000 > 256, decrease input length or `max_tokens` and try again")
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="small-model", max_tokens=10, messages=[{"role": "user", "content": "w " * 400}])
    assert info.value.body["error"]["message"].startswith("prompt is too long: ")
    assert info.value.body["error"]["message"].endswith(" tokens > 256 maximum")


def test_overflow_openai_shape(server):
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="strict-model", max_tokens=1000, messages=HI)
    body = info.value.body
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert body["type"] == "invalid_request_error"
    assert body["message"].startswith("This model's maximum context length is 256 tokens. However, you requested ")
    assert "in the messages, 1000 in the completion)" in body["message"]


def test_overflow_stream_is_a_real_400_before_any_event(http):
    body = {"model": "strict-x", "max_tokens": 64000, "stream": True, "messages": HI}
    with http.stream("POST", "/v1/messages", json=body) as response:
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")


def test_clamping_by_default(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    message = client.messages.create(model="small-model", max_tokens=64000, messages=HI, timeout=60)
    assert message.stop_reason == "end_turn" and message.content[0].text == SCRIPTED_REPLY
    long_ask = client.messages.create(model="small-model", max_tokens=64000, timeout=60,
                                      messages=[{"role": "user", "content": "w " * 230}])
    assert long_ask.stop_reason in ("max_tokens", "end_turn")
    assert long_ask.usage.input_tokens + (long_ask.usage.cache_read_input_tokens or 0) \
        + long_ask.usage.output_tokens <= 256


def test_unknown_path_lists_the_real_ones(http):
    response = http.post("/v1/v1/messages", json={}, headers={"anthropic-version": "2023-06-01"})
    err = anthropic_error(response, 404)
    assert "/v1/messages" in err["message"] and "/v1/chat/completions" in err["message"]


def test_probes(http):
    assert http.head("/").status_code == 200
    assert http.get("/").status_code == 200
    assert http.get("/health").json() == {"status": "ok"}


def test_server_still_serves_after_errors(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    assert client.messages.create(model="claude-x", max_tokens=50, messages=HI).content[0].text == SCRIPTED_REPLY


# -- hostile bodies: a 400 in the route's own shape, never a 500

CHAT_PATHS = [("/v1/messages", anthropic_error), ("/v1/messages/count_tokens", anthropic_error),
              ("/v1/chat/completions", openai_error), ("/v1/responses", openai_error)]


@pytest.mark.parametrize("path,shape", CHAT_PATHS)
def test_invalid_utf8_inside_a_string_is_a_400(http, path, shape):
    turn = b'[{"role": "user", "content": "a\xff\xfeb"}]'
    body = b'{"model": "scripted", "max_tokens": 5, "' + (b'input' if "responses" in path else b'messages') + b'": ' \
        + turn + b'}'
    err = shape(http.post(path, content=body, headers={"content-type": "application/json"}), 400)
    assert "UTF-8" in err["message"] and "0xff" in err["message"]


@pytest.mark.parametrize("path,shape", CHAT_PATHS)
def test_deeply_nested_json_is_a_400(http, path, shape):
    depth = 100_000
    key = b'input' if "responses" in path else b'messages'
    body = b'{"model": "scripted", "max_tokens": 5, "' + key + b'": ' + b'[' * depth + b']' * depth + b'}'
    shape(http.post(path, content=body, headers={"content-type": "application/json"}), 400)
    nested = b'{"a": ' * depth + b'1' + b'}' * depth          # in a field nobody reads: skipped, still parsed
    err = shape(http.post(path, content=b'{"model": "scripted", "max_tokens": 5, "x": ' + nested + b'}',
                          headers={"content-type": "application/json"}), 400)
    assert "nested too deeply" in err["message"]


def test_a_body_over_the_limit_is_413_request_too_large(http):
    big = b'{"model": "scripted", "max_tokens": 5, "messages": [], "pad": "' + b"x" * (65 << 20) + b'"}'
    err = anthropic_error(http.post("/v1/messages", content=big, headers={"content-type": "application/json"}), 413)
    assert err["type"] == "request_too_large"
    err = openai_error(http.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"}),
                       413)
    assert err["type"] == "invalid_request_error" and "too large" in err["message"]


ANTHROPIC_OUT_OF_RANGE = [
    ("temperature", -1), ("temperature", 1e9), ("top_p", -1), ("top_p", 2), ("top_k", -5),
    ("stop_sequences", [""]), ("max_tokens", 0), ("thinking", {"type": "enabled", "budget_tokens": -1}),
    ("messages", []),
]
OPENAI_OUT_OF_RANGE = [
    ("temperature", -1), ("temperature", 1e9), ("top_p", -1), ("top_p", 2), ("top_k", -5), ("min_p", -3),
    ("frequency_penalty", 1e9), ("presence_penalty", -3), ("stop", [""]), ("stop", ""), ("max_tokens", 0),
    ("max_completion_tokens", -1),
]


@pytest.mark.parametrize("field,value", ANTHROPIC_OUT_OF_RANGE)
def test_anthropic_values_out_of_range_are_named(http, field, value):
    body = {"model": "scripted", "max_tokens": 5, "messages": HI, field: value}
    err = anthropic_error(http.post("/v1/messages", json=body), 400)
    assert field in err["message"]


@pytest.mark.parametrize("field,value", OPENAI_OUT_OF_RANGE)
def test_openai_values_out_of_range_are_named(http, field, value):
    body = {"model": "scripted", "messages": HI, field: value}
    err = openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert err["param"] == field or err["param"].startswith(field), err


def test_responses_and_ollama_values_out_of_range_are_named(http):
    err = openai_error(http.post("/v1/responses", json={"model": "scripted", "input": "hi", "temperature": 3}), 400)
    assert err["param"] == "temperature"
    response = http.post("/api/chat", json={"model": "scripted", "messages": HI, "options": {"top_p": 2}})
    assert response.status_code == 400 and "options.top_p" in response.json()["error"]


def test_head_on_read_only_endpoints(http):
    for path in ("/health", "/info", "/v1/models", "/v1/models/scripted", "/"):
        response = http.head(path)
        assert response.status_code == 200 and response.content == b"", path


def test_a_huge_prompt_is_refused_without_tokenizing_it_all(http):
    """A 30 MB prompt far beyond the context: a quick 400 (counted up to the limit, never templated)."""
    huge = "lots of words in this line\n" * 1_100_000
    body = {"model": "scripted", "max_tokens": 5, "messages": [{"role": "user", "content": huge}]}
    err = anthropic_error(http.post("/v1/messages", json=body), 400)
    assert err["message"].startswith("prompt is too long")
    err = anthropic_error(http.post("/v1/messages/count_tokens", json=body), 400)
    assert err["message"].startswith("prompt is too long")
    err = openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert err["code"] == "context_length_exceeded"


def test_each_openai_404_names_its_own_code(http):
    assert openai_error(http.get("/v1/nonexistent"), 404)["code"] == "unknown_url"
    assert openai_error(http.get("/v1/responses/resp_nope"), 404)["code"] == "response_not_found"
    assert openai_error(http.post("/v1/chat/completions", json={"model": "gpt-x", "messages": HI}),
                        404)["code"] == "model_not_found"
    assert openai_error(http.get("/v1/models/gpt-x"), 404)["code"] == "model_not_found"


def test_claude_codes_hello_probe_is_answered(http):
    assert http.head("/api/hello").status_code == 200
    assert http.get("/api/hello").status_code == 200


def test_a_rejected_request_writes_one_log_line(http, caplog):
    caplog.set_level(logging.INFO, logger="llamabridge.server")
    http.post("/v1/messages", json={"model": "scripted", "messages": HI}, headers={"user-agent": "claude-cli/9"})
    http.get("/v1/nonexistent")
    lines = [r.getMessage() for r in caplog.records if r.name == "llamabridge.server"]
    assert any(line.startswith("POST /v1/messages -> 400: ") and "max_tokens" in line and "claude-cli/9" in line
               and "127.0.0.1:" in line for line in lines), lines
    assert any(line.startswith("GET /v1/nonexistent -> 404: no route") for line in lines), lines


def test_no_schema_pages_are_served(http):
    """Litestar's /schema pages load their scripts from a CDN: not served."""
    for path in ("/schema", "/schema/swagger", "/schema/openapi.json"):
        assert http.get(path).status_code == 404, path
