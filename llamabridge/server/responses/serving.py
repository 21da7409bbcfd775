"""OpenAI Responses <-> the engine: request mapping, the event stream, and the response object.

One `ResponseStream` turns engine events into output items and stream events; a
non-streamed answer is the same stream's final response object, so both carry the same
items, ids aside.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any, Callable

import msgspec

from ...engine.params import ThinkingParams
from ...engine.request import ChatRequest, Done, ToolChoice
from ...errors import BridgeError, InvalidRequestError
from ..api import StreamRenderer
from ..blocks import Block, BlockAssembler, BlockOp
from ..logprobs import logprob_entries, logprobs_setting
from ..mapping import effort_kwargs, format_schema, only_tool, sampling_with
from ..streaming import sse_event
from .items import (
    Tools,
    call_arguments,
    convert_tools,
    encode_reasoning,
    exposed_name,
    parse_items,
    resolve_references,
    to_messages,
)
from .protocol import STATUS, ResponsesRequest, error_body
from .store import ResponseStore

EFFORT_BUDGETS = {"minimal": 256, "low": 1024}     # thinking tokens; medium and above: the model's own length


@dataclasses.dataclass
class Mapped:
    """A request mapped for the engine, with what the answer needs to map back."""
    chat: ChatRequest
    tools: Tools
    history: list[dict]           # every input item of the conversation (stored with the response)


def to_chat_request(req: ResponsesRequest, store: ResponseStore, clamp_max_tokens: bool = True) -> Mapped:
    raw_input = [{"type": "message", "role": "user", "content": req.input}] if isinstance(req.input, str) \
        else list(req.input)
    history: list[dict] = []
    if req.previous_response_id:
        previous = store.get(req.previous_response_id)
        if previous is None:
            raise InvalidRequestError(f"previous response with id {req.previous_response_id!r} not found "
                                      "(responses are kept in memory while the server runs, when store is true)",
                                      param="previous_response_id")
        history = previous.input_items + previous.response["output"]
    history += raw_input
    items = resolve_references(parse_items(history), store.item)
    tools = convert_tools(req.tools)
    messages = to_messages(items, req.instructions)
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequestError("input: the conversation has no user message", param="input")

    chat_tools, tool_choice = _tool_choice(req.tool_choice, tools)
    fmt = req.text.format if req.text is not None else None
    json_schema = format_schema(fmt.type, fmt.schema, "text.format.schema") if fmt is not None else None

    thinking = ThinkingParams()
    effort = req.reasoning.effort if req.reasoning is not None else None
    if effort == "none":
        thinking = ThinkingParams(enabled=False)
    elif effort in EFFORT_BUDGETS:
        thinking = ThinkingParams(budget_tokens=EFFORT_BUDGETS[effort])
    chat = ChatRequest(messages=messages, tools=chat_tools, tool_choice=tool_choice,
                       parallel_tool_calls=req.parallel_tool_calls,
                       sampling=sampling_with(temperature=req.temperature, top_p=req.top_p),
                       max_tokens=req.max_output_tokens, thinking=thinking, json_schema=json_schema,
                       chat_template_kwargs=effort_kwargs(effort),
                       json_schema_field="text.format.schema",
                       clamp_max_tokens=clamp_max_tokens,
                       logprobs=logprobs_setting(req.logprobs, req.top_logprobs))
    return Mapped(chat, tools, history)


def _tool_choice(choice, tools: Tools) -> tuple[list[dict], ToolChoice]:
    """The tools the model may call and how: auto, none, required, or one named tool."""
    chat_tools = tools.chat
    if choice is None or choice == "auto":
        return chat_tools, "auto"
    if choice in ("none", "required"):
        if choice == "required" and not chat_tools:
            raise InvalidRequestError("tool_choice is 'required' but no tools were given", param="tool_choice")
        return chat_tools, choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            return only_tool(chat_tools, exposed_name(choice["name"], choice.get("namespace")), "tool_choice"), \
                "required"
        if kind == "allowed_tools":
            allowed = {exposed_name(t.get("name", ""), t.get("namespace")) for t in choice.get("tools") or []
                       if isinstance(t, dict)}
            mode = choice.get("mode", "auto")
            return [t for t in chat_tools if t["function"]["name"] in allowed], \
                "required" if mode == "required" else "auto"
        if isinstance(kind, str):
            return chat_tools, "auto"    # a hosted tool (web_search, ...) that cannot run here
    raise InvalidRequestError("tool_choice: expected 'auto', 'none', 'required' or a tool object",
                              param="tool_choice")


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(16)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def response_object(response_id: str, req: ResponsesRequest) -> dict:
    """The response as it stands before any output: status in_progress."""
    fmt = req.text.format if req.text is not None and req.text.format is not None else None
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None, "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens, "model": req.model, "output": [],
        "parallel_tool_calls": req.parallel_tool_calls, "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": req.reasoning.effort if req.reasoning else None,
                      "summary": req.reasoning.summary if req.reasoning else None},
        "store": req.store, "temperature": req.temperature,
        "text": {"format": _to_builtins(fmt) if fmt is not None else {"type": "text"}},
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "tools": req.tools or [], "top_logprobs": req.top_logprobs, "top_p": req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": None, "user": req.user, "metadata": req.metadata or {},
    }


def _to_builtins(value) -> Any:
    return {k: v for k, v in msgspec.to_builtins(value).items() if v is not None}


def usage(done: Done) -> dict:
    u = done.usage
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


class ResponseStream(StreamRenderer):
    """Engine events -> Responses stream events, building the response object as it goes.

    `summary`: reasoning goes out as summary text (what `reasoning.summary` asks for), else as
    reasoning text; `encrypted`: reasoning items carry `encrypted_content` for the next turn;
    `on_done(response)` hears the finished response (to store it). With `render` False only the
    response object is built (a non-streamed answer): no event is serialized.
    """

    def __init__(self, response: dict, tools: Tools, *, summary: bool, encrypted: bool, logprobs: bool = False,
                 on_done: Callable[[dict], None] | None = None, render: bool = True) -> None:
        self.response = response
        self.logprobs = logprobs
        self.render = render
        self.tools = tools
        self.summary = summary
        self.encrypted = encrypted
        self.on_done = on_done
        self.assembler = BlockAssembler()
        self.sequence = 0
        # output items still streaming: their text lives in the block (as parts, see Block.text) and is
        # copied into the response object only when it is serialized, not on every delta
        self._open: dict[int, Block] = {}

    def _fill(self) -> None:
        """Copy the open items' text so far from their blocks into the response object."""
        for index, block in self._open.items():
            item = self.response["output"][index]
            if item["type"] == "message":
                item["content"][0]["text"] = block.text
            elif item["type"] == "reasoning":
                (item["summary"] if self.summary else item["content"])[0]["text"] = block.text
            elif item["type"] == "function_call":
                item["arguments"] = block.text

    def _event(self, kind: str, **fields) -> bytes:
        """One event, serialized at once: the bytes are the snapshot of the objects it names."""
        self.sequence += 1
        if not self.render:
            return b""
        return sse_event(kind, {"type": kind, "sequence_number": self.sequence - 1, **fields})

    def start(self) -> bytes:
        return self._event("response.created", response=self.response) + \
            self._event("response.in_progress", response=self.response)

    def ping(self) -> bytes:
        """A lifecycle event, not an SSE comment: Codex's idle timer counts events only."""
        self._fill()
        return self._event("response.in_progress", response=self.response)

    def event(self, event) -> list[bytes]:
        if isinstance(event, Done):
            out = self._ops(self.assembler.finish())
            return out + self._finish(event)
        return self._ops(self.assembler.feed(event))

    def error(self, exc: BridgeError) -> list[bytes]:
        body = error_body(exc)["error"]
        self._fill()
        self.response.update(status="failed", error={"code": body["code"] or body["type"], "message": body["message"]})
        return [self._event("error", code=body["code"] or body["type"], message=body["message"], param=body["param"]),
                self._event("response.failed", response=self.response)]

    def _finish(self, done: Done) -> list[bytes]:
        status = STATUS[done.stop_reason]
        self.response.update(status=status, usage=usage(done))
        if status == "incomplete":
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
        if done.stop_reason != "cancelled" and self.on_done is not None:
            self.on_done(self.response)
        return [self._event(f"response.{status}", response=self.response)]

    # -- output items

    def _ops(self, ops: list[BlockOp]) -> list[bytes]:
        out: list[bytes] = []
        for op in ops:
            handler = self._delta if op.op == "delta" else self._start if op.op == "start" else self._stop
            out.extend(handler(op.block.index, op))
        return out

    def _start(self, index: int, op: BlockOp) -> list[bytes]:
        block = op.block
        item: dict[str, Any]
        if block.kind == "text":
            item = {"id": _item_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
        elif block.kind == "thinking":
            item = {"id": _item_id("rs"), "type": "reasoning", "summary": []}
            if not self.summary:
                item["content"] = []
        else:
            target = self.tools.target(block.name)
            function = target.kind == "function"
            item = {"id": _item_id("fc" if function else "ctc"), "type": "function_call" if function
                    else "custom_tool_call", "status": "in_progress", "call_id": _item_id("call"), "name": target.name}
            item.update({"arguments": ""} if target.kind == "function" else {"input": ""})
            if target.namespace:
                item["namespace"] = target.namespace
        self.response["output"].append(item)
        self._open[index] = block
        out = [self._event("response.output_item.added", output_index=index, item=item)]
        if block.kind == "text":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item["content"].append(part)
            out.append(self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                   content_index=0, part=part))
        elif block.kind == "thinking":
            if self.summary:
                part = {"type": "summary_text", "text": ""}
                item["summary"].append(part)
                out.append(self._event("response.reasoning_summary_part.added", item_id=item["id"],
                                       output_index=index, summary_index=0, part=part))
            else:
                item["content"].append({"type": "reasoning_text", "text": ""})
        return out

    def _delta(self, index: int, op: BlockOp) -> list[bytes]:
        item = self.response["output"][index]
        if item["type"] == "message":
            part = item["content"][0]
            logprobs = logprob_entries(op.logprobs) if self.logprobs else []
            part["logprobs"].extend(logprobs)
            return [self._event("response.output_text.delta", item_id=item["id"], output_index=index,
                                content_index=0, delta=op.delta, logprobs=logprobs)]
        if item["type"] == "reasoning":
            if self.summary:
                return [self._event("response.reasoning_summary_text.delta", item_id=item["id"],
                                    output_index=index, summary_index=0, delta=op.delta)]
            return [self._event("response.reasoning_text.delta", item_id=item["id"], output_index=index,
                                content_index=0, delta=op.delta)]
        if item["type"] == "function_call":
            return [self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                delta=op.delta)]
        return []          # a custom tool's input is complete only once its arguments are

    def _stop(self, index: int, op: BlockOp) -> list[bytes]:
        self._fill()                  # this item's text is complete, the others' as far as they came
        del self._open[index]
        item = self.response["output"][index]
        out: list[bytes] = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=part["text"], logprobs=part["logprobs"]))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part))
        elif item["type"] == "reasoning":
            text = op.block.text
            if self.summary:
                out.append(self._event("response.reasoning_summary_text.done", item_id=item["id"],
                                       output_index=index, summary_index=0, text=text))
                out.append(self._event("response.reasoning_summary_part.done", item_id=item["id"],
                                       output_index=index, summary_index=0, part=item["summary"][0]))
            else:
                out.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                       content_index=0, text=text))
            if self.encrypted:
                item["encrypted_content"] = encode_reasoning(text)
        elif item["type"] == "function_call":
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   name=item["name"], arguments=item["arguments"]))
        else:
            item["input"] = call_arguments(self.tools.target(op.block.name), op.block.text)
            out.append(self._event("response.custom_tool_call_input.delta", item_id=item["id"], output_index=index,
                                   delta=item["input"]))
            out.append(self._event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index,
                                   input=item["input"]))
        if item["type"] != "reasoning":
            item["status"] = "completed"
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out


def build_response(stream: ResponseStream, events: list) -> dict:
    """The non-streamed answer: the stream's response object once every event went through it."""
    stream.render = False
    for event in events:
        stream.event(event)
    return stream.response
