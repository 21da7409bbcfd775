"""Engine events -> numbered content blocks, the shape every API's responses are built from.

One assembler serves streaming and non-streaming answers alike, so both carry the same
text, reasoning and tool input. Whitespace-only text is held back until real text follows,
so no empty text block stands beside a tool call (whitespace inside a text block is kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..engine.request import (
    Done,
    Event,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)


@dataclass
class Block:
    index: int
    kind: str                     # text | thinking | tool_use
    name: str = ""
    tool_index: int = -1
    closed: bool = False
    logprobs: list[TokenLogprob] = field(default_factory=list)   # a text block's tokens, when asked for
    parts: list[str] = field(default_factory=list)   # its text as it came, joined when read (see text)

    @property
    def text(self) -> str:
        """The text, thinking, or the tool input JSON so far. Kept as parts: adding to one string would
        copy all of it on every token, quadratic over a long answer or a whole file in a tool call."""
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def arguments(self) -> dict:
        """A tool_use block's input as an object ({} when the model's JSON is not one)."""
        try:
            value = json.loads(self.text) if self.text.strip() else {}
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class BlockOp:
    op: str                       # start | delta | stop
    block: Block
    delta: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass
class BlockAssembler:
    blocks: list[Block] = field(default_factory=list)
    _pending_space: str = ""
    _pending_logprobs: tuple[TokenLogprob, ...] = ()

    @property
    def current(self) -> Block | None:
        return self.blocks[-1] if self.blocks and not self.blocks[-1].closed else None

    def feed(self, event: Event) -> list[BlockOp]:
        ops: list[BlockOp] = []
        if isinstance(event, TextDelta):
            text = self._pending_space + event.text
            logprobs = self._pending_logprobs + event.logprobs
            opening = self.current is None or self.current.kind != "text"
            if opening and not text.strip():
                # leading whitespace: open no block for it yet
                self._pending_space, self._pending_logprobs = text, logprobs
                return ops
            self._pending_space, self._pending_logprobs = "", ()
            block = self._ensure("text", ops)
            block.parts.append(text)
            block.logprobs.extend(logprobs)
            ops.append(BlockOp("delta", block, text, logprobs))
        elif isinstance(event, ReasoningDelta):
            if event.text:
                block = self._ensure("thinking", ops)
                block.parts.append(event.text)
                ops.append(BlockOp("delta", block, event.text))
        elif isinstance(event, ToolCallStart):
            self._pending_space, self._pending_logprobs = "", ()
            self._close(ops)
            block = Block(len(self.blocks), "tool_use", name=event.name, tool_index=event.index)
            self.blocks.append(block)
            ops.append(BlockOp("start", block))
        elif isinstance(event, ToolCallDelta):
            current = self.current
            if current is not None and current.kind == "tool_use" and event.arguments:
                current.parts.append(event.arguments)
                ops.append(BlockOp("delta", current, event.arguments))
        elif isinstance(event, ToolCallEnd):
            current = self.current
            if current is not None and current.kind == "tool_use":
                self._close(ops)
        return ops

    def finish(self) -> list[BlockOp]:
        ops: list[BlockOp] = []
        self._close(ops)
        return ops

    def _ensure(self, kind: str, ops: list[BlockOp]) -> Block:
        block = self.current
        if block is not None and block.kind == kind:
            return block
        self._close(ops)
        block = Block(len(self.blocks), kind)
        self.blocks.append(block)
        ops.append(BlockOp("start", block))
        return block

    def _close(self, ops: list[BlockOp]) -> None:
        block = self.current
        if block is not None:
            block.closed = True
            ops.append(BlockOp("stop", block))


def assemble(events: list) -> tuple[list[Block], Done]:
    """All blocks of a finished answer, and its Done event (non-streaming responses)."""
    assembler = BlockAssembler()
    done = None
    for event in events:
        if isinstance(event, Done):
            done = event
        else:
            assembler.feed(event)
    assembler.finish()
    if done is None:
        raise RuntimeError("generation ended without a Done event")
    return assembler.blocks, done
