"""Protocol mapping without a server or a model: API requests -> one internal ChatRequest."""

import json

import pytest

from llamabridge.engine import SamplingParams
from llamabridge.errors import InvalidRequestError
from llamabridge.server.anthropic import serving as anthropic
from llamabridge.server.anthropic.protocol import MessagesRequest
from llamabridge.server.errors import decode_body
from llamabridge.server.openai import serving as openai
from llamabridge.server.openai.protocol import ChatCompletionRequest


def a(body: dict):
    body = {"model": "m", "max_tokens": 10, **body}
    return anthropic.to_chat_request(decode_body(json.dumps(body).encode(), MessagesRequest))


def o(body: dict):
    body = {"model": "m", **body}
    return openai.to_chat_request(decode_body(json.dumps(body).encode(), ChatCompletionRequest))


USER = [{"role": "user", "content": "hi"}]


def test_billing_header_blocks_are_dropped():
    chat = a({"system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=abc;"},
                         {"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}],
              "messages": USER})
    assert chat.messages[0] == {"role": "system", "content": "Part one.\n\nPart two."}


def test_system_string():
    assert a({"system": "Be brief.", "messages": USER}).messages[0] == {"role": "system", "content": "Be brief."}


def test_late_system_goes_to_the_previous_user_turn_or_the_next():
    chat = a({"system": "S", "messages": [{"role": "user", "content": "u1"}, {"role": "system", "content": "late"},
                                          {"role": "assistant", "content": "a1"}]})
    assert chat.messages[0]["content"] == "S"
    assert chat.messages[1]["content"] == [{"type": "text", "text": "u1"}, {"type": "text", "text": "late"}]
    chat = a({"messages": [{"role": "system", "content": "first"}, {"role": "user", "content": "u1"}]})
    assert chat.messages == [{"role": "user", "content": [{"type": "text", "text": "first"},
                                                          {"type": "text", "text": "u1"}]}]


def test_tool_choice_and_thinking():
    tools = [{"name": "t1", "input_schema": {"type": "object"}}, {"name": "t2", "input_schema": {"type": "object"}},
             {"type": "web_search_20250305", "name": "web_search"}]
    chat = a({"messages": USER, "tools": tools, "tool_choice": {"type": "any", "disable_parallel_tool_use": True}})
    assert chat.tool_choice == "required" and not chat.parallel_tool_calls
    assert [t["function"]["name"] for t in chat.tools] == ["t1", "t2"], "server tools without a schema are skipped"
    chat = a({"messages": USER, "tools": tools, "tool_choice": {"type": "tool", "name": "t2"}})
    assert [t["function"]["name"] for t in chat.tools] == ["t2"] and chat.tool_choice == "required"
    with pytest.raises(InvalidRequestError, match="not in tools"):
        a({"messages": USER, "tools": tools, "tool_choice": {"type": "tool", "name": "zzz"}})
    assert not a({"messages": USER}).thinking.enabled
    assert a({"messages": USER, "thinking": {"type": "adaptive"}}).thinking.enabled
    enabled = a({"messages": USER, "thinking": {"type": "enabled", "budget_tokens": 1024}}).thinking
    assert enabled.enabled and enabled.budget_tokens == 1024


def test_sampling_overrides():
    chat = a({"messages": USER, "temperature": 0, "top_k": 5, "stop_sequences": ["END"]})
    assert chat.sampling.temperature == 0 and chat.sampling.top_k == 5 and chat.stop == ("END",)
    assert chat.sampling.top_p == SamplingParams().top_p


def test_openai_roles_and_options():
    chat = o({"messages": [{"role": "developer", "content": "D"}, {"role": "user", "content": "U"}],
              "max_completion_tokens": 7, "stop": "X", "seed": 3, "response_format": {"type": "json_object"},
              "reasoning_effort": "none"})
    assert chat.messages[0] == {"role": "system", "content": "D"}
    assert chat.max_tokens == 7 and chat.stop == ("X",) and chat.sampling.seed == 3
    assert chat.json_schema == {} and not chat.thinking.enabled
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = o({"messages": USER,
              "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert chat.json_schema == schema


def test_openai_errors_name_the_parameter():
    with pytest.raises(InvalidRequestError) as info:
        o({"messages": USER, "n": 3})
    assert info.value.param == "n"
    with pytest.raises(InvalidRequestError) as info:
        o({"messages": [{"role": "tool", "content": "x"}]})
    assert "tool_call_id" in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        o({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert "image_url" in info.value.message
    with pytest.raises(InvalidRequestError, match="required"):
        o({"messages": USER, "tool_choice": "required"})
