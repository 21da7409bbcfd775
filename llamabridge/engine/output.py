"""A chat's raw output turned into events, on the consumer's side of the mailbox.

The worker posts what the model wrote (RawText, after stop strings) and a Done that knows nothing
of the output's structure; the job's consumer (a ChatStream, or the event loop for achat) runs it
through llama.cpp's chat parser into reasoning, text and tool-call events, and completes the Done
(tool calls, tool_use, reasoning tokens). llama.cpp's parser re-reads the whole output on every
call, so its cost grows with the answer; here it runs beside the next decode instead of between
two decodes, as llama-server parses in its HTTP threads.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from .. import _core
from .request import (
    ChatRequest,
    Done,
    Event,
    ReasoningDelta,
    RenderedChat,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)

log = logging.getLogger("llamabridge.engine")


@dataclass(frozen=True)
class RawText:
    """Output text of a chat as the worker produced it, not yet parsed (never leaves the engine)."""

    text: str
    tokens: int                               # tokens generated so far, this text's included
    logprobs: tuple[TokenLogprob, ...] = ()   # of the tokens since the last RawText (logprobs requested)


def attach_logprobs(events: list[Event], pending: list[TokenLogprob]) -> None:
    """Give the held tokens' log-probabilities to the first text these events carry. Tokens that came
    out as reasoning or a tool call have none in the answer's text: theirs are dropped. Nothing is
    given while there are no events (a marker still held back)."""
    if not pending:
        return
    for i, event in enumerate(events):
        if isinstance(event, TextDelta):
            events[i] = TextDelta(event.text, tuple(pending))
            break
    if events:
        pending.clear()


class OutputReader:
    """One chat's parser: RawText items in, events out; a Done completed by the final, strict parse."""

    def __init__(self, rendered: RenderedChat, parse_tool_calls: bool) -> None:
        self.parser = _core.ChatParser({
            "format": rendered.format,
            "parser": rendered.parser,
            "generation_prompt": rendered.generation_prompt,
            "reasoning_format": "deepseek",
            "parse_tool_calls": parse_tool_calls,
        })
        self.open_tool: int | None = None
        self.tools_started = 0
        self._parts: list[str] = []   # the output so far (joined only if the parser gives up on it)
        self.unparsed: str | None = None   # why llama.cpp's parser gave up on this output: the rest is text
        self.reasoning_tokens = 0     # tokens generated up to the last text that produced reasoning
        self._logprobs: list[TokenLogprob] = []

    @classmethod
    def for_chat(cls, request: ChatRequest | None, rendered: RenderedChat | None) -> OutputReader | None:
        """The reader of a templated chat; None for a raw prompt (its text comes as TextDelta)."""
        if rendered is None:
            return None
        return cls(rendered, parse_tool_calls=request is not None and bool(request.tools)
                   and request.tool_choice != "none")

    def read(self, items: list) -> list:
        """A batch of the job's items with RawText parsed into events and the Done completed."""
        out: list = []
        for item in items:
            if isinstance(item, RawText):
                out.extend(self._text(item))
            elif isinstance(item, Done):
                out.extend(self._finish(item) if item.stop_reason != "cancelled" else [item])
                self.close()
            else:
                out.append(item)
        return out

    def close(self) -> None:
        self.parser.close()

    def _text(self, item: RawText) -> list[Event]:
        self._logprobs.extend(item.logprobs)
        self._parts.append(item.text)
        if self.unparsed is not None:
            events: list[Event] = [TextDelta(item.text)] if item.text else []
        else:
            try:
                events = self._events(self.parser.feed(item.text), item.tokens)
            except ValueError as exc:
                events = self._give_up(str(exc))
        attach_logprobs(events, self._logprobs)
        return events

    def _give_up(self, why: str) -> list[Event]:
        """llama.cpp's parser cannot read this output as its template's format (a model that strays from it,
        or a parser that does not know all of it): what it has not passed on yet, and all that follows,
        is the answer's text, as llama.cpp's own final parse does with a tool call it cannot complete."""
        log.warning("the model's output does not match its chat template's format (%s): the rest of it is "
                    "answered as text", why)
        self.unparsed = why
        events: list[Event] = []
        if self.open_tool is not None:
            events.append(ToolCallEnd(self.open_tool))
            self.open_tool = None
        return events + self._unsent("".join(self._parts))

    def _unsent(self, raw: str) -> list[Event]:
        """The output the parser has not passed on as content, as text."""
        content = self.parser.message()["content"]
        rest = raw[len(content):] if raw.startswith(content) else raw
        return [TextDelta(rest)] if rest else []

    def _finish(self, done: Done) -> list[Event]:
        """The final parse, then the Done with the calls it found. A tool call the parser cannot
        complete comes back as text; output it gave up on earlier has no calls."""
        events: list[Event] = []
        tool_calls: tuple[dict[str, str], ...] = ()
        if self.unparsed is None:
            try:
                events = self._events(self.parser.feed("", False))
            except ValueError:
                if self.tools_started == 0:
                    events = self._unsent(done.raw_text)
            tool_calls = tuple(self.parser.message()["tool_calls"])
        if self.open_tool is not None:
            events.append(ToolCallEnd(self.open_tool))
            self.open_tool = None
        attach_logprobs(events, self._logprobs)
        reason = "tool_use" if done.stop_reason == "end_turn" and tool_calls else done.stop_reason
        usage = done.usage
        if self.reasoning_tokens:
            usage = dataclasses.replace(usage, reasoning_tokens=self.reasoning_tokens)
        events.append(dataclasses.replace(done, stop_reason=reason, usage=usage, tool_calls=tool_calls))
        return events

    def _events(self, diffs: list[dict], tokens: int | None = None) -> list[Event]:
        """Events from the parser's diffs; reasoning in them moves reasoning_tokens to `tokens` (the
        tokens generated up to this text; None for the final parse, which adds no tokens)."""
        events: list[Event] = []
        for diff in diffs:
            if "reasoning" in diff:
                events.append(ReasoningDelta(diff["reasoning"]))
                if tokens is not None:
                    self.reasoning_tokens = tokens
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
