"""Each API as a client speaks it: a family case (llamabridge.synthetic.families.CASES) sent as that API's request,
streamed or not, and the answer read back into one shape: text, reasoning, tool calls, stop reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx

from llamabridge.synthetic.families import Case

from ..support import sse_events

MAX_TOKENS = 1100      # the longest script is under 300 tokens; a run past it ends soon


@dataclass
class Answer:
    text: str = ""
    reasoning: str = ""
    calls: list[tuple[str, dict]] = field(default_factory=list)
    stop: str = ""
    usage: dict = field(default_factory=dict)


def _arguments(call: dict) -> dict:
    return json.loads(call["function"]["arguments"])


# -------------------------------------------------------------------------- Anthropic Messages

def anthropic(http: httpx.Client, case: Case, stream: bool, max_tokens: int = MAX_TOKENS) -> Answer:
    messages: list[dict] = []
    for m in case.messages:
        if m["role"] == "user":
            messages.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant" and "tool_calls" not in m:          # a text turn
            messages.append({"role": "assistant", "content": m["content"]})
        elif m["role"] == "assistant":
            messages.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": _arguments(c)}
                for c in m["tool_calls"]]})
        else:
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]}]})
    thinking = {"type": "enabled", "budget_tokens": min(1024, max_tokens - 1)} if case.thinking \
        else {"type": "disabled"}
    body = {"model": "m", "max_tokens": max_tokens, "messages": messages, "stream": stream, "thinking": thinking,
            "tools": [{"name": t["function"]["name"], "description": t["function"]["description"],
                       "input_schema": t["function"]["parameters"]} for t in case.tools]}
    if not case.tools:
        del body["tools"]
    answer = Answer()
    if not stream:
        reply = http.post("/v1/messages", json=body)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        blocks = data["content"]
        answer.stop, answer.usage = data["stop_reason"], data["usage"]
    else:
        with http.stream("POST", "/v1/messages", json=body) as reply:
            assert reply.status_code == 200, reply.read()
            events = sse_events(reply)
        blocks = []
        for name, data in events:
            if name == "content_block_start":
                blocks.append({**data["content_block"], "partial": ""})
            elif name == "content_block_delta":
                delta = data["delta"]
                block = blocks[data["index"]]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                elif delta["type"] == "thinking_delta":
                    block["thinking"] += delta["thinking"]
                elif delta["type"] == "input_json_delta":
                    block["partial"] += delta["partial_json"]
            elif name == "message_delta":
                answer.stop, answer.usage = data["delta"]["stop_reason"], data["usage"]
            assert name != "error", data
        for block in blocks:
            if block["type"] == "tool_use":
                block["input"] = json.loads(block["partial"]) if block["partial"] else {}
    for block in blocks:
        if block["type"] == "text":
            answer.text += block["text"]
        elif block["type"] == "thinking":
            answer.reasoning += block["thinking"]
        elif block["type"] == "tool_use":
            answer.calls.append((block["name"], block["input"]))
    return answer


# -------------------------------------------------------------------------- OpenAI Chat Completions

def openai(http: httpx.Client, case: Case, stream: bool, max_tokens: int = MAX_TOKENS) -> Answer:
    body = {"model": "m", "max_tokens": max_tokens, "messages": list(case.messages), "stream": stream}
    if case.tools:
        body["tools"] = list(case.tools)
    if not case.thinking:
        body["reasoning_effort"] = "none"
    answer = Answer()
    if not stream:
        reply = http.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        message = data["choices"][0]["message"]
        answer.text, answer.reasoning = message.get("content") or "", message.get("reasoning_content") or ""
        answer.calls = [(c["function"]["name"], _arguments(c)) for c in message.get("tool_calls") or ()]
        answer.stop, answer.usage = data["choices"][0]["finish_reason"], data["usage"]
        return answer
    body["stream_options"] = {"include_usage": True}
    calls: dict[int, dict] = {}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200, reply.read()
        events = sse_events(reply)
    for _, data in events:
        if data == "[DONE]":
            continue
        assert "error" not in data, data
        if data.get("usage"):
            answer.usage = data["usage"]
        for choice in data["choices"]:
            delta = choice["delta"]
            answer.text += delta.get("content") or ""
            answer.reasoning += delta.get("reasoning_content") or ""
            for piece in delta.get("tool_calls") or ():
                call = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
                call["name"] += (piece.get("function") or {}).get("name") or ""
                call["arguments"] += (piece.get("function") or {}).get("arguments") or ""
            if choice.get("finish_reason"):
                answer.stop = choice["finish_reason"]
    answer.calls = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    return answer


# -------------------------------------------------------------------------- OpenAI Responses

def responses(http: httpx.Client, case: Case, stream: bool, max_tokens: int = MAX_TOKENS) -> Answer:
    items: list[dict] = []
    for m in case.messages:
        if m["role"] == "user":
            items.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant" and "tool_calls" not in m:
            items.append({"role": "assistant", "content": m["content"]})
        elif m["role"] == "assistant":
            items += [{"type": "function_call", "call_id": c["id"], "name": c["function"]["name"],
                       "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
        else:
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": m["content"]})
    body = {"model": "m", "max_output_tokens": max_tokens, "input": items, "stream": stream, "store": False,
            "reasoning": {"effort": "medium" if case.thinking else "none"},
            "tools": [{"type": "function", "name": t["function"]["name"],
                       "description": t["function"]["description"], "parameters": t["function"]["parameters"]}
                      for t in case.tools]}
    if not stream:
        reply = http.post("/v1/responses", json=body)
        assert reply.status_code == 200, reply.text
        response = reply.json()
        streamed_arguments = None
    else:
        with http.stream("POST", "/v1/responses", json=body) as reply:
            assert reply.status_code == 200, reply.read()
            events = sse_events(reply)
        response = next(data["response"] for name, data in events if name == "response.completed")
        streamed_arguments = {}
        for name, data in events:
            assert name not in ("error", "response.failed"), data
            if name == "response.function_call_arguments.delta":
                streamed_arguments[data["item_id"]] = streamed_arguments.get(data["item_id"], "") + data["delta"]
    answer = Answer(stop=response["status"], usage=response["usage"])
    for item in response["output"]:
        if item["type"] == "message":
            answer.text += "".join(part["text"] for part in item["content"] if part["type"] == "output_text")
        elif item["type"] == "reasoning":
            answer.reasoning += "".join(part["text"] for part in item.get("content") or ())
        elif item["type"] == "function_call":
            if streamed_arguments is not None:
                assert streamed_arguments.get(item["id"], "") == item["arguments"]   # the deltas add up
            answer.calls.append((item["name"], json.loads(item["arguments"])))
    if answer.calls:
        answer.stop = "function_call"
    return answer


# -------------------------------------------------------------------------- Ollama

def ollama(http: httpx.Client, case: Case, stream: bool, max_tokens: int = MAX_TOKENS) -> Answer:
    messages: list[dict] = []
    for m in case.messages:
        if m["role"] == "assistant" and "tool_calls" in m:
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": c["function"]["name"], "arguments": _arguments(c)}} for c in m["tool_calls"]]})
        else:
            messages.append({"role": m["role"], "content": m["content"]})
    body = {"model": "m", "messages": messages, "stream": stream, "think": case.thinking,
            "options": {"num_predict": max_tokens}}
    if case.tools:
        body["tools"] = list(case.tools)
    if not stream:
        reply = http.post("/api/chat", json=body)
        assert reply.status_code == 200, reply.text
        pieces = [reply.json()]
    else:
        with http.stream("POST", "/api/chat", json=body) as reply:
            assert reply.status_code == 200, reply.read()
            pieces = [json.loads(line) for line in reply.iter_lines() if line.strip()]
    answer = Answer()
    for piece in pieces:
        assert "error" not in piece, piece
        message = piece.get("message") or {}
        answer.text += message.get("content") or ""
        answer.reasoning += message.get("thinking") or ""
        answer.calls += [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or ()]
        if piece.get("done"):
            answer.stop = piece.get("done_reason") or ""
            answer.usage = {"prompt_eval_count": piece.get("prompt_eval_count"), "eval_count": piece.get("eval_count")}
    return answer


APIS = {"anthropic": anthropic, "openai": openai, "responses": responses, "ollama": ollama}
# the stop reason each API gives a turn that ends with tool calls, and one that ends with text
STOPS = {"anthropic": ("tool_use", "end_turn"), "openai": ("tool_calls", "stop"),
         "responses": ("function_call", "completed"), "ollama": ("stop", "stop")}
