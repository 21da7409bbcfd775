"""OpenAI Responses API (Codex CLI's) with the official SDK, raw HTTP and the captured Codex requests."""

import copy
import json

import openai
import pytest

from llamabridge.synthetic import SCRIPTED_REPLY

from ..support import FIXTURES, sse_events

UNIT = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["unit"],
        "additionalProperties": False}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather", "parameters": UNIT,
           "strict": True}
NO_THINK = {"effort": "none"}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)


def test_create(client):
    response = client.responses.create(model="scripted", input="Hi", temperature=0)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.output_text == SCRIPTED_REPLY
    message = response.output[-1]
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens == 12
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_stream_helper_sees_the_whole_event_sequence(client):
    with client.responses.stream(model="scripted", input=[{"role": "user", "content": "Hi"}], temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events if e.type != "response.in_progress"]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds[1:4] == ["response.output_item.added", "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == SCRIPTED_REPLY
    assert final.output_text == SCRIPTED_REPLY and final.status == "completed"


def test_function_tool_round_trip(client):
    first = client.responses.create(model="tool-caller", input="Weather?", tools=[WEATHER], tool_choice="required",
                                    reasoning=NO_THINK, temperature=0, max_output_tokens=300)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert json.loads(call.arguments)["unit"] in ("c", "f") and call.namespace is None
    follow_up = [{"role": "user", "content": "Weather?"}, call.model_dump(exclude_none=True),
                 {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees"}]
    with client.responses.stream(model="tool-caller", input=follow_up, tools=[WEATHER], reasoning=NO_THINK,
                                 temperature=0, max_output_tokens=300) as stream:
        events = list(stream)
    second = events[-1].response
    assert events[-1].type == "response.completed" and second.status == "completed"
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 4


def test_stream_function_call_arguments(client):
    with client.responses.stream(model="tool-caller", input="Weather?", tools=[WEATHER], reasoning=NO_THINK,
                                 tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
                                 max_output_tokens=300) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"][0]
    assert done.arguments == deltas == final.output[0].arguments and done.name == "get_weather"


def test_namespaced_tools_are_called_back_in_their_namespace(client):
    tools = [{"type": "namespace", "name": "weather_v1", "description": "Weather tools",
              "tools": [dict(WEATHER, strict=False)]}, {"type": "web_search"}]
    first = client.responses.create(model="tool-caller", input="Weather?", tools=tools, reasoning=NO_THINK,
                                    tool_choice={"type": "function", "name": "get_weather", "namespace": "weather_v1"},
                                    temperature=0, max_output_tokens=300)
    call = first.output[-1]
    assert (call.type, call.name, call.namespace) == ("function_call", "get_weather", "weather_v1")
    second = client.responses.create(model="tool-caller", tools=tools, reasoning=NO_THINK, temperature=0,
                                     max_output_tokens=300, input=[
                                         {"role": "user", "content": "Weather?"}, call.model_dump(exclude_none=True),
                                         {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 4


def test_custom_tool_returns_its_raw_input(client):
    patch = {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
             "format": {"type": "grammar", "syntax": "regex", "definition": "[a-z]{1,6}"}}
    first = client.responses.create(model="tool-caller", input="Patch it", tools=[patch], reasoning=NO_THINK,
                                    tool_choice={"type": "custom", "name": "apply_patch"}, temperature=0,
                                    max_output_tokens=300)
    call = first.output[-1]
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert 1 <= len(call.input) <= 6 and call.input.isalpha() and call.input.islower()
    with client.responses.stream(model="tool-caller", input="Patch it", tools=[patch], reasoning=NO_THINK,
                                 tool_choice={"type": "custom", "name": "apply_patch"}, temperature=0,
                                 max_output_tokens=300) as stream:
        events = list(stream)
    done = [e for e in events if e.type == "response.custom_tool_call_input.done"][0]
    assert done.input == call.input
    second = client.responses.create(model="tool-caller", tools=[patch], reasoning=NO_THINK, temperature=0,
                                     max_output_tokens=300, input=[
                                         {"role": "user", "content": "Patch it"}, call.model_dump(exclude_none=True),
                                         {"type": "custom_tool_call_output", "call_id": call.call_id,
                                          "output": "Done!"}])
    assert second.status in ("completed", "incomplete")


def test_reasoning_summary_and_encrypted_round_trip(client):
    with client.responses.stream(model="thinker", input="Hi", reasoning={"summary": "auto"},
                                 include=["reasoning.encrypted_content"], temperature=0) as stream:
        events = list(stream)
        first = stream.get_final_response()
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    reasoning, message = first.output
    assert summary == "Plan." and reasoning.type == "reasoning" and reasoning.summary[0].text == "Plan."
    assert reasoning.encrypted_content and message.content[0].text == "Done!"
    assert first.usage.output_tokens_details.reasoning_tokens > 0
    history = [{"role": "user", "content": "Hi"}] + [item.model_dump(exclude_none=True) for item in first.output]
    second = client.responses.create(model="thinker", input=history + [{"role": "user", "content": "And?"}],
                                     include=["reasoning.encrypted_content"], temperature=0)
    assert second.status == "completed"
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens


def test_altered_reasoning_of_this_server_is_a_400(client):
    first = client.responses.create(model="thinker", input="Hi", include=["reasoning.encrypted_content"],
                                    temperature=0)
    reasoning = first.output[0].model_dump(exclude_none=True)
    payload, checksum = reasoning["encrypted_content"].rsplit(".", 1)
    reasoning["encrypted_content"] = payload[:-4] + "AAAA." + checksum          # its text changed
    altered = [{"role": "user", "content": "Hi"}, reasoning, {"role": "assistant", "content": "Done!"},
               {"role": "user", "content": "And?"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="thinker", input=altered)
    assert info.value.body["param"] == "input[1].encrypted_content" and "altered" in info.value.body["message"]


def test_a_codex_session_begun_with_openai_resumes_here(client, caplog):
    """Its reasoning items carry OpenAI's encrypted_content, which no server but OpenAI's can read: dropped, each
    turn, with a log line, and the conversation goes on."""
    foreign = [{"role": "user", "content": "Hi"},
               {"type": "reasoning", "id": "rs_68a0", "summary": [{"type": "summary_text", "text": "Thinking"}],
                "encrypted_content": "gAAAAABo" + "x" * 400},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
               {"role": "user", "content": "And?"}]
    with caplog.at_level("INFO", logger="llamabridge.server"):
        response = client.responses.create(model="thinker", input=foreign, temperature=0)
    assert response.status == "completed" and response.output[-1].content[0].text == "Done!"
    assert any("dropped input[1]: reasoning another server wrote" in r.getMessage() for r in caplog.records)


def test_reasoning_text_without_summary(client):
    response = client.responses.create(model="thinker", input="Hi", temperature=0)
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary == []
    assert reasoning.content[0].text == "Plan." and reasoning.encrypted_content is None


def test_previous_response_id_continues_the_conversation(client, http):
    first = client.responses.create(model="scripted", input="Hi", instructions="Be brief.", temperature=0)
    second = client.responses.create(model="scripted", input="Again", previous_response_id=first.id, temperature=0)
    assert second.output_text == SCRIPTED_REPLY and second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens
    assert client.responses.retrieve(second.id).output_text == SCRIPTED_REPLY
    items = client.responses.input_items.list(second.id, order="asc")
    assert [getattr(i, "role", i.type) for i in items.data] == ["user", "assistant", "user"]
    assert client.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", input="x", previous_response_id=first.id)
    assert info.value.body["param"] == "previous_response_id"
    unstored = client.responses.create(model="scripted", input="Hi", store=False, temperature=0)
    assert http.get(f"/v1/responses/{unstored.id}").status_code == 404


def test_json_schema_format(client):
    schema = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c"]}}, "required": ["unit"],
              "additionalProperties": False}
    response = client.responses.create(model="random", input="Unit?", temperature=0, reasoning=NO_THINK,
                                       text={"format": {"type": "json_schema", "name": "unit", "schema": schema}},
                                       max_output_tokens=100)
    assert json.loads(response.output_text) == {"unit": "c"}


def test_max_output_tokens_is_incomplete(client):
    response = client.responses.create(model="scripted", input="Hi", max_output_tokens=3, temperature=0)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_unknown_items_are_dropped_and_developer_messages_anywhere(client):
    response = client.responses.create(model="scripted", temperature=0, input=[
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be kind."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Again"}])
    assert response.output_text == SCRIPTED_REPLY


@pytest.mark.parametrize("name", ["codex-0.169.0-responses-request.json", "codex-0.169.0-tool-output-request.json"])
def test_captured_codex_requests_are_served(http, name):
    captured = json.loads((FIXTURES / name).read_text())
    body = copy.deepcopy(captured["body"])
    body["model"] = "scripted"
    headers = {k: v for k, v in captured["headers"].items() if k.lower() not in ("content-length", "host")}
    with http.stream("POST", captured["path"], json=body, headers=headers) as response:
        assert response.status_code == 200
        events = sse_events(response)
    kinds = [name for name, _ in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds[-3:]
    final = events[-1][1]["response"]
    assert final["usage"]["input_tokens"] > 1000 and final["output"]


# ---------------------------------------------------------------- errors, in OpenAI's shape

def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_request_errors(http):
    unknown = http.post("/v1/responses", json={"model": "gpt-x", "input": "Hi"})
    assert error_of(unknown, 404)["code"] == "model_not_found"
    malformed = http.post("/v1/responses", content=b"{", headers={"content-type": "application/json"})
    assert "malformed JSON" in error_of(malformed, 400)["message"]
    assert error_of(http.post("/v1/responses", json={"input": "Hi"}), 400)["message"].find("model") > 0
    err = error_of(http.post("/v1/responses", json={"model": "scripted", "input": [{"content": "x"}]}), 400)
    assert err["param"] == "input[0].type"
    err = error_of(http.post("/v1/responses", json={"model": "scripted", "input": [
        {"type": "message", "role": "user", "content": 5}]}), 400)
    assert err["param"] == "input[0].content"
    err = error_of(http.post("/v1/responses", json={"model": "scripted", "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]}), 400)
    assert "text models only" in err["message"]
    err = error_of(http.post("/v1/responses", json={"model": "scripted", "input": "Hi", "tools": [WEATHER],
                                                    "tool_choice": {"type": "function", "name": "nope"}}), 400)
    assert err["param"] == "tool_choice"
    err = error_of(http.post("/v1/responses", json={"model": "scripted", "input": []}), 400)
    assert err["param"] == "input"
    err = error_of(http.post("/v1/responses", json={"model": "strict-x", "input": "Hi", "max_output_tokens": 5000}),
                   400)
    assert err["code"] == "context_length_exceeded"
    assert error_of(http.get("/v1/responses/resp_unknown"), 404)["type"] == "invalid_request_error"


def test_stream_errors_before_the_first_byte_are_http_errors(http):
    with http.stream("POST", "/v1/responses", json={"model": "strict-x", "input": "Hi", "stream": True,
                                                     "max_output_tokens": 5000}) as response:
        assert response.status_code == 400
        response.read()
        assert response.json()["error"]["code"] == "context_length_exceeded"


def test_raw_stream_has_sequence_numbers_and_keep_alive_events(http):
    with http.stream("POST", "/v1/responses", json={"model": "scripted", "input": "Hi", "stream": True}) as response:
        events = sse_events(response)
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
