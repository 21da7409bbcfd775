"""Responses input items -> chat messages: assistant turns gathered, instructions and developer messages placed."""

import pytest

from llamabridge.errors import InvalidRequestError
from llamabridge.server.responses.items import (
    convert_tools,
    decode_reasoning,
    encode_reasoning,
    parse_items,
    to_messages,
)


def messages(raw, instructions=None):
    return to_messages(parse_items(raw), instructions)


def test_assistant_items_form_one_turn():
    thought = encode_reasoning("think")
    out = messages([
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "short"}], "encrypted_content": thought},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "spawn", "namespace": "agents", "arguments": "{\"n\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "a.py"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "ok"},
    ])
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "tool"]
    turn = out[1]
    assert turn["content"] == "Let me look." and turn["reasoning_content"] == "think"
    assert [c["function"]["name"] for c in turn["tool_calls"]] == ["ls", "agents__spawn"]
    assert out[2] == {"role": "tool", "tool_call_id": "c1", "content": "a.py"}


def test_instructions_and_leading_developer_messages_are_the_system_prompt():
    out = messages([{"role": "developer", "content": "Dev one."}, {"role": "system", "content": "Sys two."},
                    {"role": "user", "content": "Hi"}, {"role": "developer", "content": "Late."}],
                   instructions="Be brief.")
    assert out[0] == {"role": "system", "content": "Be brief.\n\nDev one.\n\nSys two."}
    assert out[1]["role"] == "user" and [p["text"] for p in out[1]["content"]] == ["Hi", "Late."]


def test_namespaced_and_custom_tools_are_exposed_as_functions():
    tools = convert_tools([
        {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "spawn"}]},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark",
                                                             "definition": "start: x"}},
        {"type": "web_search"}, {"type": "image_generation"}])
    assert [t["function"]["name"] for t in tools.chat] == ["agents__spawn", "apply_patch"]
    assert tools.target("agents__spawn").namespace == "agents" and tools.target("apply_patch").kind == "custom"
    assert "start: x" in tools.chat[1]["function"]["description"]


def test_reasoning_round_trip_and_tampering():
    assert decode_reasoning(encode_reasoning("ünïcode <think>"), "input[0]") == "ünïcode <think>"
    token = encode_reasoning("secret plan")
    tampered = token[:-40] + ("A" if token[-40] != "A" else "B") + token[-39:]
    with pytest.raises(InvalidRequestError):
        decode_reasoning(tampered, "input[0]")


def test_bad_items_name_their_place():
    with pytest.raises(InvalidRequestError) as info:
        parse_items([{"role": "user", "content": "x"}, {"type": "function_call", "name": "f"}])
    assert info.value.param == "input[1]" and "call_id" in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        parse_items([{"role": "user", "content": [{"type": "input_text", "text": 5}]}])
    assert info.value.param == "input[0].content[0].text"
    assert parse_items([{"type": "compaction", "encrypted_content": "x"}]) == []
