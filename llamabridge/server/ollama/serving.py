"""Ollama's native API <-> the engine: request mapping, NDJSON stream and JSON answers, model details."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

from ...engine.params import ThinkingParams
from ...engine.request import ChatRequest, Done
from ...errors import BridgeError, InvalidRequestError
from ..api import StreamRenderer
from ..blocks import BlockAssembler, assemble
from ..logprobs import logprob_entries, logprobs_setting, text_logprobs
from ..mapping import effort_kwargs, function_tool, sampling_with
from ..messages import no_vision
from ..streaming import json_bytes
from .protocol import DONE_REASONS, FILE_TYPES, GenerateRequest, Message, error_body
from .protocol import ChatRequest as OllamaChat

log = logging.getLogger("llamabridge.server")


def routed_name(name: str) -> str:
    """Ollama's clients add `:latest` to a bare name; routes match the name without it."""
    return name.removesuffix(":latest")


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- requests

def to_chat_request(req: OllamaChat | GenerateRequest, clamp_max_tokens: bool = True) -> ChatRequest:
    if isinstance(req, GenerateRequest):
        if req.raw or req.suffix or req.template:
            field = "raw" if req.raw else "suffix" if req.suffix else "template"
            raise InvalidRequestError(f"{field}: this server renders prompts with the model's own chat template; "
                                      "raw prompts, suffixes and custom templates are not supported", param=field)
        if req.images:
            raise no_vision("image", "images", param="images")
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + \
            [{"role": "user", "content": req.prompt}]
        tools: list[dict] = []
    else:
        messages = _messages(req.messages)
        tools = [function_tool(t.function.name, t.function.description, t.function.parameters)
                 for t in req.tools or []]
    options = req.options
    overrides: dict[str, Any] = {}
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    if options is not None:
        overrides = {k: v for k, v in (
            ("temperature", options.temperature), ("top_p", options.top_p), ("top_k", options.top_k),
            ("min_p", options.min_p), ("seed", options.seed), ("repeat_penalty", options.repeat_penalty),
            ("penalty_last_n", options.repeat_last_n), ("presence_penalty", options.presence_penalty),
            ("frequency_penalty", options.frequency_penalty)) if v is not None}
        if options.num_predict is not None and options.num_predict >= 0:
            max_tokens = options.num_predict or None      # 0 and -1: as many as fit
        stop = tuple(options.stop or ())
        if options.num_ctx is not None:
            log.info("ollama: options.num_ctx=%d ignored: the context size is the cache's (set in the config)",
                     options.num_ctx)
    json_schema = None
    if req.format == "json":
        json_schema = {}
    elif isinstance(req.format, dict):
        json_schema = req.format
    thinking = ThinkingParams(enabled=req.think is not False)
    return ChatRequest(messages=messages, tools=tools, sampling=sampling_with(**overrides),
                       max_tokens=max_tokens, stop=stop, thinking=thinking, json_schema=json_schema,
                       chat_template_kwargs=effort_kwargs(req.think if isinstance(req.think, str) else None),
                       json_schema_field="format",
                       clamp_max_tokens=clamp_max_tokens,
                       logprobs=logprobs_setting(req.logprobs, req.top_logprobs))


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    calls: list[tuple[str, str]] = []            # (id, name) of the assistant's calls, for tool answers
    for i, m in enumerate(messages):
        if m.images:
            raise no_vision("image", f"messages[{i}].images", param=f"messages[{i}].images")
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant":
            if m.thinking:
                message["reasoning_content"] = m.thinking
            if m.tool_calls:
                message["tool_calls"] = []
                for j, call in enumerate(m.tool_calls):
                    call_id = call.id or f"call_{i}_{j}"     # stable ids: the same prompt every turn
                    calls.append((call_id, call.function.name))
                    message["tool_calls"].append({"id": call_id, "type": "function", "function": {
                        "name": call.function.name, "arguments": json.dumps(call.function.arguments,
                                                                            ensure_ascii=False)}})
        elif m.role == "tool":
            message["tool_call_id"] = m.tool_call_id or _answered_call(calls, m.tool_name)
        out.append(message)
    return out


def _answered_call(calls: list[tuple[str, str]], name: str | None) -> str:
    """The id of the call a tool message answers: the first open call of that name (else the first open)."""
    for k, (_, called) in enumerate(calls):
        if name is None or called == name:
            return calls.pop(k)[0]
    return calls.pop(0)[0] if calls else "call_0"


# ---------------------------------------------------------------- answers

def _stats(done: Done) -> dict:
    u, t = done.usage, done.timings
    prompt_ns, eval_ns = int(t.prompt_seconds * 1e9), int(t.generate_seconds * 1e9)
    return {"done": True, "done_reason": DONE_REASONS[done.stop_reason],
            "total_duration": prompt_ns + eval_ns, "load_duration": 0,
            "prompt_eval_count": u.prompt_tokens - u.cached_tokens, "prompt_eval_duration": prompt_ns,
            "eval_count": u.completion_tokens, "eval_duration": eval_ns}


class NdjsonStream(StreamRenderer):
    """Engine events -> Ollama's NDJSON lines. `chat`: lines carry `message` (else `response`, /api/generate).

    Tool calls go out whole, in one line each, when their arguments are complete.
    """

    def __init__(self, model: str, chat: bool, logprobs: bool = False) -> None:
        self.model = model
        self.chat = chat
        self.logprobs = logprobs
        self.assembler = BlockAssembler()
        self.calls = 0

    def _line(self, body: dict) -> bytes:
        return json_bytes({"model": self.model, "created_at": now(), **body}) + b"\n"

    def piece(self, content: str = "", thinking: str = "", tool_calls: list | None = None) -> dict:
        if not self.chat:
            piece: dict[str, Any] = {"response": content}
            if thinking:
                piece["thinking"] = thinking
            return piece
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"message": message}

    def start(self) -> bytes:
        return b""

    def event(self, event) -> list[bytes]:
        if isinstance(event, Done):
            out = self._ops(self.assembler.finish())
            return out + [self._line({**self.piece(), **_stats(event)})]
        return self._ops(self.assembler.feed(event))

    def _ops(self, ops) -> list[bytes]:
        out = []
        for op in ops:
            block = op.block
            if op.op == "delta" and block.kind == "text":
                logprobs = {"logprobs": logprob_entries(op.logprobs)} if self.logprobs else {}
                out.append(self._line({**self.piece(content=op.delta), **logprobs, "done": False}))
            elif op.op == "delta" and block.kind == "thinking":
                out.append(self._line({**self.piece(thinking=op.delta), "done": False}))
            elif op.op == "stop" and block.kind == "tool_use" and self.chat:
                call = self.tool_call(block)
                out.append(self._line({**self.piece(tool_calls=[call]), "done": False}))
        return out

    def tool_call(self, block) -> dict:
        call = {"function": {"index": self.calls, "name": block.name, "arguments": block.arguments()}}
        self.calls += 1
        return call

    def error(self, exc: BridgeError) -> list[bytes]:
        return [json_bytes(error_body(exc)) + b"\n"]


def build(model: str, chat: bool, events: list, logprobs: bool = False) -> dict:
    """The non-streamed answer: the whole message (or response) and the stats."""
    blocks, done = assemble(events)
    stream = NdjsonStream(model, chat)
    calls = [stream.tool_call(b) for b in blocks if b.kind == "tool_use"] if chat else None
    piece = stream.piece("".join(b.text for b in blocks if b.kind == "text"),
                         "".join(b.text for b in blocks if b.kind == "thinking"), calls)
    if logprobs:
        piece["logprobs"] = text_logprobs(blocks)
    return {"model": model, "created_at": now(), **piece, **_stats(done)}


def load_answer(model: str, chat: bool) -> dict:
    """A request with nothing to generate loads the model (it is loaded already): Ollama's `load` answer."""
    return {"model": model, "created_at": now(), **NdjsonStream(model, chat).piece(), "done": True,
            "done_reason": "load"}


# ---------------------------------------------------------------- model details

def model_details(state, name: str, cache) -> dict:
    """Ollama's view of the model a name routes to (through `cache`): file, size, digest, family,
    context, template."""
    model_config = state.config.models[cache.model]
    loaded = state.pool.models.get(cache.model)
    metadata = loaded.metadata() if loaded is not None else {}
    path = str(model_config.path)
    try:
        size = os.path.getsize(path)
        modified = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc)
    except OSError:
        size, modified = 0, datetime.fromtimestamp(state.started_at, timezone.utc)
    architecture = metadata.get("general.architecture", "")
    file_type = metadata.get("general.file_type", "")
    details = {"parent_model": "", "format": "gguf", "family": architecture,
               "families": [architecture] if architecture else None,
               "parameter_size": metadata.get("general.size_label", ""),
               "quantization_level": FILE_TYPES.get(int(file_type), file_type) if file_type.isdigit() else ""}
    template = loaded.chat_template if loaded is not None else ""
    return {"name": name, "model": name, "modified_at": modified.isoformat().replace("+00:00", "Z"), "size": size,
            "digest": hashlib.sha256(f"{path}:{size}".encode()).hexdigest(), "details": details,
            "n_ctx": state.pool.n_ctx(cache.name), "architecture": architecture, "template": template}


def capabilities(template: str) -> list[str]:
    found = ["completion"]
    if "tools" in template:
        found.append("tools")
    if "<think>" in template or "enable_thinking" in template or "reasoning_content" in template:
        found.append("thinking")
    return found
