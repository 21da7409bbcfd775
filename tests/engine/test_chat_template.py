"""Chat formatting and output parsing through llama.cpp common/chat (Qwen3 and Llama 3.1 templates)."""

import json

import pytest

from llamabridge import _core
from llamabridge.errors import TemplateError

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.",
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    {"role": "user", "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "tomorrow?"}]},
]


def render(model, **inputs):
    return model.native.apply_chat_template({"messages": CONVERSATION, **inputs})


def test_qwen3_renders_tools_calls_and_results(qwen3):
    out = render(qwen3, tools=[WEATHER_TOOL])
    prompt = out["prompt"]
    assert prompt.startswith("<|im_start|>system\nYou are terse.")
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert "<tool_call>" in prompt and '"Paris"' in prompt
    assert "<tool_response>\n18C, sunny\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert out["grammar_lazy"] and out["grammar_triggers"]
    assert "<tool_call>" in out["preserved_tokens"]
    assert out["parser"]


def test_qwen3_thinking_switch(qwen3):
    on = render(qwen3)
    off = render(qwen3, enable_thinking=False)
    assert on["supports_thinking"] and on["thinking_start_tag"] == "<think>"
    assert off["prompt"].endswith("<think>\n\n</think>\n\n")
    assert not on["prompt"].endswith("</think>\n\n")


def test_tool_choice_required_gives_a_strict_grammar(qwen3):
    auto = render(qwen3, tools=[WEATHER_TOOL], tool_choice="auto")
    required = render(qwen3, tools=[WEATHER_TOOL], tool_choice="required")
    none = render(qwen3, tools=[WEATHER_TOOL], tool_choice="none")
    assert auto["grammar_lazy"] and not required["grammar_lazy"]
    assert "get_weather" in required["grammar"]
    assert not none["grammar"]


def test_json_schema_gives_a_grammar(qwen3):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    out = qwen3.native.apply_chat_template({"messages": [{"role": "user", "content": "hi"}], "json_schema": schema})
    assert "ok" in out["grammar"] and not out["grammar_lazy"]


def test_llama31_renders_tools(llama31):
    out = render(llama31, tools=[WEATHER_TOOL])
    prompt = out["prompt"]
    assert "<|start_header_id|>system<|end_header_id|>" in prompt
    assert "get_weather" in prompt and "<|eom_id|>" not in prompt.split("<|start_header_id|>assistant")[-1]
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    tokens = llama31.native.tokenize(prompt, add_special=True)
    assert tokens.count(llama31.native.bos_token) == 1, "BOS exactly once"


@pytest.mark.parametrize("message, says", [
    ({"role": "user"}, "Expected 'content'"),
    ({"content": "x"}, "Missing 'role'"),
    ({"role": "user", "content": 5}, "Invalid 'content' type"),
])
def test_malformed_messages_are_invalid_requests(qwen3, message, says):
    with pytest.raises(TemplateError, match=says) as info:
        qwen3.native.apply_chat_template({"messages": [message]})
    assert info.value.status == 400


def parser_for(model, rendered):
    return _core.ChatParser({"format": rendered["format"], "parser": rendered["parser"],
                             "generation_prompt": rendered["generation_prompt"]})


def test_parse_qwen3_tool_call(qwen3):
    rendered = render(qwen3, tools=[WEATHER_TOOL])
    parser = parser_for(qwen3, rendered)
    parser.feed('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
                partial=False)
    message = parser.message()
    assert message["content"].strip() == "Let me check."
    assert [c["name"] for c in message["tool_calls"]] == ["get_weather"]
    assert json.loads(message["tool_calls"][0]["arguments"]) == {"city": "Oslo"}


def test_parse_think_block(qwen3):
    rendered = render(qwen3)
    parser = parser_for(qwen3, rendered)
    parser.feed("<think>\nThe user wants weather.\n</think>\n\nIt is sunny.", partial=False)
    message = parser.message()
    assert message["reasoning_content"].strip() == "The user wants weather."
    assert message["content"].strip() == "It is sunny."


def test_incremental_parse_equals_one_shot(qwen3):
    text = ('<think>\nhmm\n</think>\n\nOK.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n'
            '</tool_call>')
    rendered = render(qwen3, tools=[WEATHER_TOOL])
    streamed = parser_for(qwen3, rendered)
    diffs = []
    for i in range(0, len(text), 3):
        diffs += streamed.feed(text[i:i + 3], partial=True)
    diffs += streamed.feed("", partial=False)
    oneshot = parser_for(qwen3, rendered)
    oneshot.feed(text, partial=False)
    assert streamed.message() == oneshot.message()
    assert "".join(d.get("tool_args", "") for d in diffs) == streamed.message()["tool_calls"][0]["arguments"]
    assert "".join(d.get("reasoning", "") for d in diffs) == streamed.message()["reasoning_content"]


def test_parse_llama31_tool_call(llama31):
    rendered = render(llama31, tools=[WEATHER_TOOL])
    parser = parser_for(llama31, rendered)
    parser.feed('{"name": "get_weather", "parameters": {"city": "Lima"}}', partial=False)
    calls = parser.message()["tool_calls"]
    assert [c["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Lima"}
