"""The token loop of one chat completion: sampling, detokenizing, stops, output parsing.

Runs on a Cache that holds its lock; yields engine events. The per-token path keeps to
native calls (sample+accept, decode of one token) plus the stream bookkeeping the
protocols need.
"""

from __future__ import annotations

import codecs
import time
from typing import Iterator

from .. import _core
from ..errors import DecodeAbortedError
from .request import (
    ChatRequest, Done, Event, ReasoningDelta, TextDelta, Timings, ToolCallDelta, ToolCallEnd, ToolCallStart, Usage,
)
from .stops import StopMatcher


class OutputStream:
    """Turns generated text into events through llama.cpp's incremental chat parser."""

    def __init__(self, rendered: dict, parse_tool_calls: bool) -> None:
        self.parser = _core.ChatParser({
            "format": rendered["format"],
            "parser": rendered["parser"],
            "generation_prompt": rendered["generation_prompt"],
            "reasoning_format": "deepseek",
            "parse_tool_calls": parse_tool_calls,
        })
        self.open_tool: int | None = None
        self.tools_started = 0

    def feed(self, text: str, partial: bool = True) -> list[Event]:
        return self._events(self.parser.feed(text, partial))

    def finish(self, raw_text: str) -> list[Event]:
        """Final, strict parse. A tool call the parser cannot complete comes back as text."""
        try:
            events = self.feed("", partial=False)
        except ValueError:
            events = []
            if self.tools_started == 0:
                message = self.parser.message()
                emitted = message["content"]
                rest = raw_text[len(emitted):] if raw_text.startswith(emitted) else raw_text
                if rest:
                    events.append(TextDelta(rest))
        if self.open_tool is not None:
            events.append(ToolCallEnd(self.open_tool))
            self.open_tool = None
        return events

    def tool_calls(self) -> tuple[dict[str, str], ...]:
        return tuple(self.parser.message()["tool_calls"])

    def _events(self, diffs: list[dict]) -> list[Event]:
        events: list[Event] = []
        for diff in diffs:
            if "reasoning" in diff:
                events.append(ReasoningDelta(diff["reasoning"]))
            if "content" in diff:
                if self.open_tool is not None:
                    events.append(ToolCallEnd(self.open_tool))
                    self.open_tool = None
                events.append(TextDelta(diff["content"]))
            if "tool_index" in diff:
                index = diff["tool_index"]
                if index != self.open_tool:
                    if self.open_tool is not None:
                        events.append(ToolCallEnd(self.open_tool))
                    events.append(ToolCallStart(index, diff["tool_name"]))
                    self.open_tool = index
                    self.tools_started += 1
                if diff["tool_args"]:
                    events.append(ToolCallDelta(index, diff["tool_args"]))
        return events


def generate(
    cache,
    request: ChatRequest,
    rendered: dict,
    prompt_tokens: int,
    cached_tokens: int,
    max_tokens: int,
    prompt_seconds: float,
) -> Iterator[Event]:
    """Sample up to max_tokens after the prompt already evaluated into `cache`."""
    model = cache.model
    ctx = cache.context
    native = model.native

    sampling = request.sampling.to_native()
    sampling.update({
        "preserved_tokens": rendered["preserved_tokens"],
        "generation_prompt": rendered["generation_prompt"],
        "thinking_start_tag": rendered["thinking_start_tag"] if rendered["supports_thinking"] else "",
        "thinking_end_tags": rendered["thinking_end_tags"] if rendered["supports_thinking"] else [],
    })
    if rendered["grammar"]:
        sampling.update({
            "grammar": rendered["grammar"],
            "grammar_type": "tool_calls",
            "grammar_lazy": rendered["grammar_lazy"],
            "grammar_triggers": rendered["grammar_triggers"],
        })
    if request.thinking.budget_tokens is not None:
        sampling["reasoning_budget_tokens"] = request.thinking.budget_tokens
    sampler = _core.Sampler(native, sampling)
    preserved = {t for text in rendered["preserved_tokens"] for t in [_single_token(native, text)] if t is not None}

    stops = StopMatcher(tuple(request.stop) + tuple(rendered["additional_stops"]))
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    output = OutputStream(rendered, parse_tool_calls=bool(request.tools) and request.tool_choice != "none")
    raw: list[str] = []
    n_generated = 0
    stop_reason = "max_tokens"
    pos = prompt_tokens
    started = time.perf_counter()
    try:
        while n_generated < max_tokens:
            if ctx.cancelled:
                stop_reason = "cancelled"
                break
            token = sampler.sample_accept(ctx)
            n_generated += 1
            if native.is_eog(token):
                stop_reason = "end_turn"
                break
            text = utf8.decode(native.token_to_piece(token, special=token in preserved))
            visible = stops.feed(text) if text else ""
            if visible:
                raw.append(visible)
                yield from output.feed(visible)
            if stops.matched is not None:
                stop_reason = "stop_sequence"
                break
            if n_generated >= max_tokens:
                break
            try:
                ctx.decode_one(token, pos)
            except DecodeAbortedError:
                stop_reason = "cancelled"
                break
            cache.tokens.append(token)
            pos += 1
        tail = stops.feed(utf8.decode(b"", final=True)) + stops.flush()
        if tail:
            raw.append(tail)
            yield from output.feed(tail)
        raw_text = "".join(raw)
        yield from output.finish(raw_text)
        tool_calls = output.tool_calls()
    finally:
        sampler.close()
        output.parser.close()
    if stop_reason == "end_turn" and tool_calls:
        stop_reason = "tool_use"
    elapsed = time.perf_counter() - started
    yield Done(
        stop_reason=stop_reason,
        usage=Usage(prompt_tokens, n_generated, cached_tokens),
        timings=Timings(prompt_seconds, elapsed),
        stop_sequence=stops.matched,
        raw_text=raw_text,
        tool_calls=tool_calls,
    )


def _single_token(native, text: str) -> int | None:
    ids = native.tokenize(text, parse_special=True)
    return ids[0] if len(ids) == 1 else None
