"""Anthropic Messages <-> the engine: request mapping, SSE stream and JSON response from engine events."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from ...engine.params import SamplingParams, ThinkingParams
from ...engine.request import ChatRequest, Done, ToolChoice
from ...errors import BridgeError, InvalidRequestError
from ..api import StreamRenderer
from ..blocks import BlockAssembler, BlockOp, assemble
from ..mapping import effort_kwargs, function_tool, only_tool, sampling_with
from ..messages import merge_late_system, no_vision, omitted_media
from ..streaming import sse_event
from .protocol import (
    STOP_REASONS,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    error_body,
)

BILLING_HEADER = "x-anthropic-billing-header:"


def system_text(system: str | list[TextBlock] | None) -> str:
    """The system prompt, without Claude Code's per-session billing header block.

    That block (`x-anthropic-billing-header: cc_version=...; cch=...`) changes between
    sessions and requests; keeping it would make every new session re-evaluate the whole
    system + tools prefix.
    """
    if system is None:
        return ""
    if isinstance(system, str):
        return "" if system.startswith(BILLING_HEADER) else system
    return "\n\n".join(b.text for b in system if not b.text.lstrip().startswith(BILLING_HEADER))


def to_chat_request(req: MessagesRequest | CountTokensRequest, clamp_max_tokens: bool = True) -> ChatRequest:
    messages: list[dict[str, Any]] = []
    system = system_text(req.system)
    if system:
        messages.append({"role": "system", "content": system})
    late_system: list[tuple[int, str]] = []   # (position in `messages`, text) of system messages inside the chat
    for i, message in enumerate(req.messages):
        where = f"messages[{i}]"
        if message.role == "system":
            text = message.content if isinstance(message.content, str) else _joined_text(message.content, where)
            late_system.append((len(messages), text))
        elif message.role == "user":
            messages.extend(_user_messages(message.content, where))
        else:
            messages.append(_assistant_message(message.content, where))
    messages = merge_late_system(messages, late_system)

    tools = [function_tool(t.name, t.description, t.input_schema)
             for t in req.tools or [] if t.input_schema is not None]
    tool_choice: ToolChoice = "auto"
    parallel = True
    if req.tool_choice is not None:
        parallel = not req.tool_choice.disable_parallel_tool_use
        kind = req.tool_choice.type
        if kind == "any":
            tool_choice = "required"
        elif kind == "none":
            tool_choice = "none"
        elif kind == "tool":
            if req.tool_choice.name is None:
                raise InvalidRequestError("tool_choice.name: required when tool_choice.type is 'tool'",
                                          param="tool_choice.name")
            tools = only_tool(tools, req.tool_choice.name, "tool_choice.name")
            tool_choice = "required"
    thinking = ThinkingParams(enabled=False)
    if req.thinking is not None and req.thinking.type != "disabled":
        thinking = ThinkingParams(enabled=True, budget_tokens=req.thinking.budget_tokens)

    extra: dict[str, Any] = {}
    sampling = SamplingParams()
    if isinstance(req, MessagesRequest):
        sampling = sampling_with(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k)
        extra = {"max_tokens": req.max_tokens, "stop": tuple(req.stop_sequences or ()),
                 "clamp_max_tokens": clamp_max_tokens,
                 "chat_template_kwargs": effort_kwargs(req.output_config.effort if req.output_config else None)}
    return ChatRequest(messages=messages, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel,
                       sampling=sampling, thinking=thinking, **extra)


def _joined_text(blocks, where: str) -> str:
    parts = []
    for j, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            raise InvalidRequestError(f"{where}.content[{j}]: a system message takes text blocks only")
        parts.append(block.text)
    return "\n\n".join(parts)


def _user_messages(content, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, str]] = []
    for j, block in enumerate(content):
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ToolResultBlock):
            out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                        "content": _tool_result_text(block, f"{where}.content[{j}]")})
        elif isinstance(block, (ImageBlock, DocumentBlock)):
            raise no_vision(_media_kind(block), f"{where}.content[{j}]")
        else:
            raise InvalidRequestError(f"{where}.content[{j}]: a user message cannot hold a "
                                      f"{_block_type(block)} block")
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _tool_result_text(block: ToolResultBlock, where: str) -> str:
    if isinstance(block.content, str):
        text = block.content
    else:
        texts = []
        for k, part in enumerate(block.content):
            if isinstance(part, (ImageBlock, DocumentBlock)):
                texts.append(omitted_media(_media_kind(part), f"{where}.content[{k}]"))
            elif not isinstance(part, TextBlock):
                raise InvalidRequestError(f"{where}.content[{k}]: only text, images and documents are read in tool "
                                          "results")
            else:
                texts.append(part.text)
        text = "\n".join(texts)
    return f"Error: {text}" if block.is_error else text


def _media_kind(block) -> str:
    return "image" if isinstance(block, ImageBlock) else "document"


def _assistant_message(content, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text, reasoning, calls = [], [], []
    for j, block in enumerate(content):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)          # signature ignored
        elif isinstance(block, RedactedThinkingBlock):
            continue
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
        else:
            raise InvalidRequestError(f"{where}.content[{j}]: an assistant message cannot hold a "
                                      f"{_block_type(block)} block")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if reasoning:
        message["reasoning_content"] = "\n".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message


def _block_type(block) -> str:
    return type(block).__struct_config__.tag


# ---------------------------------------------------------------- responses

def session_key(req: MessagesRequest, headers) -> str | None:
    """The client's session: Claude Code's X-Claude-Code-Session-Id header, else the session_id
    inside metadata.user_id (a JSON string), else the user_id itself."""
    header = headers.get("x-claude-code-session-id")
    if header:
        return header
    user_id = req.metadata.user_id if req.metadata else None
    if not user_id:
        return None
    try:
        decoded = json.loads(user_id)
    except ValueError:
        return user_id
    session = decoded.get("session_id") if isinstance(decoded, dict) else None
    return session if isinstance(session, str) and session else user_id


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _tool_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def _signature(thinking: str) -> str:
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


def _usage(done: Done) -> dict[str, int]:
    return {"input_tokens": done.usage.prompt_tokens - done.usage.cached_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": done.usage.cached_tokens,
            "output_tokens": done.usage.completion_tokens}


class MessageStream(StreamRenderer):
    """Engine events -> Anthropic SSE events, with block indices sequential from 0."""

    def __init__(self, message_id: str, model: str, prompt_tokens: int) -> None:
        self.message_id = message_id
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.assembler = BlockAssembler()
        self.tool_ids: dict[int, str] = {}

    def start(self) -> bytes:
        return sse_event("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0},
        }})

    def ping(self) -> bytes:
        return sse_event("ping", {"type": "ping"})

    def event(self, event) -> list[bytes]:
        if isinstance(event, Done):
            out = self._ops(self.assembler.finish())
            out.append(sse_event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": STOP_REASONS[event.stop_reason], "stop_sequence": event.stop_sequence},
                "usage": _usage(event),
            }))
            out.append(sse_event("message_stop", {"type": "message_stop"}))
            return out
        return self._ops(self.assembler.feed(event))

    def error(self, exc: BridgeError) -> list[bytes]:
        return [sse_event("error", error_body(exc))]

    def _ops(self, ops: list[BlockOp]) -> list[bytes]:
        out = []
        for op in ops:
            block = op.block
            if op.op == "start":
                body: dict[str, Any]
                if block.kind == "text":
                    body = {"type": "text", "text": ""}
                elif block.kind == "thinking":
                    body = {"type": "thinking", "thinking": "", "signature": ""}
                else:
                    self.tool_ids[block.index] = _tool_id()
                    body = {"type": "tool_use", "id": self.tool_ids[block.index], "name": block.name, "input": {}}
                out.append(sse_event("content_block_start",
                                     {"type": "content_block_start", "index": block.index, "content_block": body}))
            elif op.op == "delta":
                if block.kind == "text":
                    delta = {"type": "text_delta", "text": op.delta}
                elif block.kind == "thinking":
                    delta = {"type": "thinking_delta", "thinking": op.delta}
                else:
                    delta = {"type": "input_json_delta", "partial_json": op.delta}
                out.append(sse_event("content_block_delta",
                                     {"type": "content_block_delta", "index": block.index, "delta": delta}))
            else:
                if block.kind == "thinking":
                    out.append(sse_event("content_block_delta", {
                        "type": "content_block_delta", "index": block.index,
                        "delta": {"type": "signature_delta", "signature": _signature(block.text)}}))
                out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": block.index}))
        return out


def build_message(message_id: str, model: str, events: list) -> dict:
    """The non-streaming response, from the same events a stream would carry."""
    blocks, done = assemble(events)
    content: list[dict[str, Any]] = []
    for block in blocks:
        if block.kind == "text":
            content.append({"type": "text", "text": block.text})
        elif block.kind == "thinking":
            content.append({"type": "thinking", "thinking": block.text, "signature": _signature(block.text)})
        else:
            content.append({"type": "tool_use", "id": _tool_id(), "name": block.name,
                            "input": block.arguments()})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": STOP_REASONS[done.stop_reason], "stop_sequence": done.stop_sequence,
            "usage": _usage(done)}
