"""OpenAI Chat Completions <-> the engine: request mapping, chunk stream and JSON response from engine events."""

from __future__ import annotations

import secrets
import time
from typing import Any

from ...engine.params import ThinkingParams
from ...engine.request import ChatRequest, Done, ToolChoice
from ...errors import BridgeError, InvalidRequestError
from ..api import StreamRenderer
from ..blocks import BlockAssembler, assemble
from ..logprobs import logprob_entries, logprobs_setting, text_logprobs
from ..mapping import effort_kwargs, format_schema, function_tool, only_tool, sampling_with
from ..messages import no_vision, omitted_media
from ..streaming import sse_data
from .protocol import FINISH_REASONS, ChatCompletionRequest, ChatMessage, NamedToolChoice, error_body


def to_chat_request(req: ChatCompletionRequest, clamp_max_tokens: bool = True) -> ChatRequest:
    if req.n is not None and req.n != 1:
        raise InvalidRequestError("n: only n=1 is supported (one choice per request)", param="n")
    if not req.messages:
        raise InvalidRequestError("messages: at least one message is required", param="messages")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(req.messages)]

    tools = [function_tool(t.function.name, t.function.description, t.function.parameters) for t in req.tools or []]
    tool_choice: ToolChoice = "auto"
    if isinstance(req.tool_choice, NamedToolChoice):
        tools = only_tool(tools, req.tool_choice.function.name, "tool_choice")
        tool_choice = "required"
    elif req.tool_choice is not None:
        tool_choice = req.tool_choice
    if tool_choice == "required" and not tools:
        raise InvalidRequestError("tool_choice is 'required' but no tools were given", param="tool_choice")

    fmt = req.response_format
    json_schema = None
    if fmt is not None:
        given = fmt.json_schema.schema or {} if fmt.json_schema is not None else None
        json_schema = format_schema(fmt.type, given, "response_format.json_schema")
    sampling = sampling_with(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, min_p=req.min_p,
                             presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                             repeat_penalty=req.repeat_penalty, seed=req.seed, logit_bias=token_biases(req.logit_bias))
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    kwargs = effort_kwargs(req.reasoning_effort, req.chat_template_kwargs)
    enabled = True
    if req.reasoning_effort == "none":
        enabled = False
    if isinstance(kwargs.get("enable_thinking"), bool):
        enabled = kwargs.pop("enable_thinking")
    return ChatRequest(messages=messages, tools=tools, tool_choice=tool_choice,
                       parallel_tool_calls=req.parallel_tool_calls, sampling=sampling, max_tokens=max_tokens,
                       stop=stop, thinking=ThinkingParams(enabled=enabled), json_schema=json_schema,
                       json_schema_field="response_format.json_schema.schema",
                       chat_template_kwargs=kwargs, clamp_max_tokens=clamp_max_tokens,
                       logprobs=top_logprobs(req.logprobs, req.top_logprobs))


def token_biases(logit_bias: dict[str, float] | None) -> tuple[tuple[int, float], ...] | None:
    """OpenAI's logit_bias ({"token id": bias}) as the engine's (token, bias) pairs."""
    if logit_bias is None:
        return None
    pairs = []
    for key, bias in logit_bias.items():
        try:
            pairs.append((int(key), bias))
        except ValueError:
            raise InvalidRequestError(f"logit_bias: keys are token ids, not {key!r}", param="logit_bias") from None
    return tuple(pairs)


def top_logprobs(logprobs: bool | None, top: int | None) -> int | None:
    """The engine's logprobs setting from `logprobs` and `top_logprobs` (alternatives need logprobs)."""
    if not logprobs and top:
        raise InvalidRequestError("top_logprobs: requires logprobs to be true", param="top_logprobs")
    return logprobs_setting(bool(logprobs), top)


def _message(m: ChatMessage, where: str) -> dict[str, Any]:
    role = "system" if m.role == "developer" else m.role
    out: dict[str, Any] = {"role": role, "content": _content(m.content, where, tool_result=m.role == "tool")}
    if m.role == "assistant":
        if m.reasoning_content:
            out["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
                                 for c in m.tool_calls]
    if m.role == "tool":
        if not m.tool_call_id:
            raise InvalidRequestError(f"{where}.tool_call_id: required for role tool", param=f"{where}.tool_call_id")
        out["tool_call_id"] = m.tool_call_id
    if m.role != "assistant" and m.content is None:
        raise InvalidRequestError(f"{where}.content: required for role {m.role}", param=f"{where}.content")
    return out


def _content(content, where: str, tool_result: bool = False):
    """A message's text parts; an image is a 400 in the user's words and a note in a tool's result."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if part.type == "text" and part.text is not None:
            parts.append({"type": "text", "text": part.text})
        elif part.type in ("image_url", "input_audio", "file") and tool_result:
            parts.append({"type": "text", "text": omitted_media(part.type, f"{where}.content[{j}]")})
        elif part.type in ("image_url", "input_audio", "file"):
            raise no_vision(part.type, f"{where}.content[{j}]", param=f"{where}.content[{j}].type")
        else:
            raise InvalidRequestError(f"{where}.content[{j}]: content part type {part.type!r} is not supported",
                                      param=f"{where}.content[{j}].type")
    return parts


# ---------------------------------------------------------------- responses

def session_key(req, headers) -> str | None:
    """The client's session: prompt_cache_key, else user, else a `session-id` header (Codex)."""
    return req.prompt_cache_key or req.user or headers.get("session-id") or None


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _usage(done: Done) -> dict:
    return {"prompt_tokens": done.usage.prompt_tokens, "completion_tokens": done.usage.completion_tokens,
            "total_tokens": done.usage.prompt_tokens + done.usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": done.usage.cached_tokens}}


class CompletionStream(StreamRenderer):
    """Engine events -> chat.completion.chunk objects."""

    def __init__(self, completion_id: str, model: str, include_usage: bool, logprobs: bool = False) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.assembler = BlockAssembler()
        self.tool_calls = 0

    def _chunk(self, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> bytes:
        return sse_data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                         "model": self.model,
                         "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                      "finish_reason": finish_reason}]})

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def event(self, event) -> list[bytes]:
        if isinstance(event, Done):
            self.assembler.finish()
            out = [self._chunk({}, FINISH_REASONS[event.stop_reason])]
            if self.include_usage:
                out.append(sse_data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                     "model": self.model, "choices": [], "usage": _usage(event)}))
            out.append(sse_data("[DONE]"))
            return out
        out = []
        for op in self.assembler.feed(event):
            block = op.block
            if block.kind == "tool_use":
                if op.op == "start":
                    block.tool_index = self.tool_calls
                    self.tool_calls += 1
                    out.append(self._chunk({"tool_calls": [{
                        "index": block.tool_index, "id": _call_id(), "type": "function",
                        "function": {"name": block.name, "arguments": ""}}]}))
                elif op.op == "delta":
                    out.append(self._chunk({"tool_calls": [{"index": block.tool_index,
                                                            "function": {"arguments": op.delta}}]}))
            elif op.op == "delta" and block.kind == "text":
                logprobs = {"content": logprob_entries(op.logprobs), "refusal": None} if self.logprobs else None
                out.append(self._chunk({"content": op.delta}, logprobs=logprobs))
            elif op.op == "delta":
                out.append(self._chunk({"reasoning_content": op.delta}))
        return out

    def ping(self) -> bytes:
        return b": ping\n\n"         # an SSE comment: keeps the client waiting, ignored by parsers

    def error(self, exc: BridgeError) -> list[bytes]:
        return [sse_data(error_body(exc)), sse_data("[DONE]")]


def build_completion(completion_id: str, model: str, events: list, logprobs: bool = False) -> dict:
    blocks, done = assemble(events)
    text = "".join(b.text for b in blocks if b.kind == "text")
    reasoning = "".join(b.text for b in blocks if b.kind == "thinking")
    calls = [{"id": _call_id(), "type": "function", "function": {"name": b.name, "arguments": b.text}}
             for b in blocks if b.kind == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "logprobs": {"content": text_logprobs(blocks), "refusal": None} if logprobs else None,
                         "finish_reason": FINISH_REASONS[done.stop_reason]}],
            "usage": _usage(done)}

