"""The per-token path of one job: sampling, detokenizing, stops, output parsing.

The scheduler decodes and hands each job's Generation the batch index to sample at. The
per-token path keeps to native calls (sample+accept, token text) plus the stream
bookkeeping the protocols need.
"""

from __future__ import annotations

import dataclasses
import time

from .. import _core
from .request import (
    ChatRequest, Done, Event, ReasoningDelta, TextDelta, Timings, TokenLogprob, ToolCallDelta, ToolCallEnd,
    ToolCallStart, Usage,
)
from .pieces import PieceDecoder
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
        self.reasoned = False        # the last feed produced reasoning

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
        self.reasoned = False
        for diff in diffs:
            if "reasoning" in diff:
                events.append(ReasoningDelta(diff["reasoning"]))
                self.reasoned = True
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


class Generation:
    """One job's token path: its sampler, stop strings, UTF-8 assembly and output parser.

    The scheduler decodes; a Generation samples at the batch index it is given and turns the
    token into events. `rendered` is llama.cpp's chat params for a chat, or None for a raw
    prompt (generate_batch): then no template grammar, no parser, text as it comes.
    """

    def __init__(self, native, request: ChatRequest | None, rendered: dict | None, sampling: dict,
                 max_tokens: int, stop: tuple[str, ...] = ()) -> None:
        self.native = native
        self.max_tokens = max_tokens
        self.tokens: list[int] = []           # every sampled token, end-of-generation included
        self.stop_reason = "max_tokens"
        self._raw: list[str] = []
        self._utf8 = PieceDecoder()
        self._preserved: set[int] = set()
        self._output: OutputStream | None = None
        self._tool_calls: tuple[dict[str, str], ...] = ()
        self._started = 0.0
        self._reasoning_tokens = 0
        self._logprobs = request.logprobs if request is not None else None
        self._pending_logprobs: list[TokenLogprob] = []    # tokens whose text has not come out yet
        if rendered is not None:
            sampling = _chat_sampling(sampling, request, rendered)
            self._preserved = {t for text in rendered["preserved_tokens"]
                               for t in [_single_token(native, text)] if t is not None}
            stop = tuple(stop) + tuple(rendered["additional_stops"])
            parse_tools = request is not None and bool(request.tools) and request.tool_choice != "none"
            self._output = OutputStream(rendered, parse_tool_calls=parse_tools)
        self._stops = StopMatcher(tuple(stop))
        try:
            self._sampler = _core.Sampler(native, sampling)
        except BaseException:
            if self._output is not None:
                self._output.parser.close()
            raise

    def step(self, ctx, index: int) -> tuple[int | None, list[Event]]:
        """Sample at batch `index`; return the token to decode next (None: generation is over) and events."""
        if not self.tokens:
            self._started = time.perf_counter()
        token = self._sampler.sample_accept(ctx, index)
        self.tokens.append(token)
        if self.native.is_eog(token):
            self.stop_reason = "end_turn"
            return None, []
        events: list[Event] = []
        piece = self.native.token_to_piece(token, special=token in self._preserved)
        if self._logprobs is not None:
            self._pending_logprobs.append(self._token_logprob(ctx, index, token, piece))
        text = self._utf8.feed(piece)
        visible = self._stops.feed(text) if text else ""
        if visible:
            self._raw.append(visible)
            if self._output is not None:
                events = self._output.feed(visible)
                if self._output.reasoned:
                    self._reasoning_tokens = len(self.tokens)
            else:
                events = [TextDelta(visible)]
            if self._pending_logprobs:
                self._attach_logprobs(events)
        if self._stops.matched is not None:
            self.stop_reason = "stop_sequence"
            return None, events
        if len(self.tokens) >= self.max_tokens:
            return None, events
        return token, events

    def finish(self, usage: Usage, prompt_seconds: float, slot: int | None = None) -> list[Event]:
        """The last events: what the stop matcher held back, the final parse, then Done."""
        events: list[Event] = []
        self._utf8.finish()                   # a character cut by max_tokens is dropped, not U+FFFD
        tail = self._stops.flush()
        if tail:
            self._raw.append(tail)
            events.extend(self._output.feed(tail) if self._output is not None else [TextDelta(tail)])
        if self._pending_logprobs:
            self._attach_logprobs(events)
        raw_text = "".join(self._raw)
        if self._output is not None:
            events.extend(self._output.finish(raw_text))
            self._tool_calls = self._output.tool_calls()
        reason = self.stop_reason
        if reason == "end_turn" and self._tool_calls:
            reason = "tool_use"
        elapsed = time.perf_counter() - self._started if self.tokens else 0.0
        if self._reasoning_tokens:
            usage = dataclasses.replace(usage, reasoning_tokens=self._reasoning_tokens)
        events.append(Done(
            stop_reason=reason, usage=usage, timings=Timings(prompt_seconds, elapsed),
            stop_sequence=self._stops.matched, raw_text=raw_text, tool_calls=self._tool_calls, slot=slot,
        ))
        return events

    def _token_logprob(self, ctx, index: int, token: int, piece: bytes) -> TokenLogprob:
        logprob, top = ctx.token_logprobs(index, token, self._logprobs)
        return TokenLogprob(piece, logprob, tuple((self.native.token_to_piece(t), lp) for t, lp in top))

    def _attach_logprobs(self, events: list[Event]) -> None:
        """Give the held tokens' log-probabilities to the first text these events carry. Tokens that
        came out as reasoning or a tool call have none in the answer's text: theirs are dropped."""
        for i, event in enumerate(events):
            if isinstance(event, TextDelta):
                events[i] = TextDelta(event.text, tuple(self._pending_logprobs))
                break
        if events:
            self._pending_logprobs.clear()

    def close(self) -> None:
        self._sampler.close()
        if self._output is not None:
            self._output.parser.close()


def _chat_sampling(sampling: dict, request: ChatRequest | None, rendered: dict) -> dict:
    """The sampler's parameters for a templated chat: the request's, plus the template's grammar,
    preserved tokens, generation prompt, thinking tags and budget."""
    sampling = dict(sampling)
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
    if request is not None and request.thinking.budget_tokens is not None:
        sampling["reasoning_budget_tokens"] = request.thinking.budget_tokens
    return sampling


def _single_token(native, text: str) -> int | None:
    ids = native.tokenize(text, parse_special=True)
    return ids[0] if len(ids) == 1 else None
