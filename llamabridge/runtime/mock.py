"""--mock: caches that answer without a model, with well-formed canned output (tool calls included)."""

from __future__ import annotations

import json
from typing import AsyncIterator

from ..engine.ending import Ending
from ..engine.planning import plan_max_tokens
from ..engine.request import (
    ChatRequest,
    Done,
    PreparedChat,
    PromptReady,
    ReasoningDelta,
    RenderedChat,
    StopReason,
    TextDelta,
    Timings,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from .config import CacheConfig

MOCK_TEXT = "This is a mock response from llamabridge."


class MockCache:
    """A ServedCache (served_cache.py) like the engine's Cache, with no native code."""

    waiting = 0          # nothing ever queues: answers are instant

    def __init__(self, config: CacheConfig) -> None:
        self.name = config.name
        self.n_ctx = config.params.n_ctx or 32768        # "the model's own" context, for a model that is not there

    def slots(self) -> list[dict]:
        return []

    def speculation(self) -> dict | None:
        return None

    def count_tokens(self, request: ChatRequest) -> int:
        text = json.dumps(request.messages) + json.dumps(request.tools)
        return max(1, len(text) // 4)

    def prepare(self, request: ChatRequest) -> PreparedChat:
        n = self.count_tokens(request)
        max_tokens = plan_max_tokens(n, request.max_tokens, self.n_ctx, request.clamp_max_tokens)
        rendered = RenderedChat(f"[mock prompt: {len(request.messages)} messages]")
        return PreparedChat(request, rendered, [0] * n, max_tokens)

    async def achat(self, prepared: PreparedChat, *, session: str | None = None, label: str = "",
                    idle: float | None = None, stop: Ending | None = None) -> AsyncIterator:
        """The mock's answer at once (never silent: `idle` has nothing to report; nothing to `stop`)."""
        request = prepared.request
        yield PromptReady(prepared.prompt_tokens, 0, prepared.max_tokens)
        words = MOCK_TEXT.split(" ")
        budget = prepared.max_tokens
        generated = 0
        if request.thinking.enabled and budget > 1:
            yield ReasoningDelta("The user sent a request; a mock answers it.")
            generated += 1
        stop_reason: StopReason = "end_turn"
        if request.tools and request.tool_choice != "none":
            tool = request.tools[0]["function"]
            arguments = json.dumps(_example_arguments(tool.get("parameters") or {}))
            yield ToolCallStart(0, tool["name"])
            yield ToolCallDelta(0, arguments)
            yield ToolCallEnd(0)
            generated += 1
            stop_reason = "tool_use"
            raw = arguments
        else:
            raw = ""
            for i, word in enumerate(words):
                if generated >= budget:
                    stop_reason = "max_tokens"
                    break
                piece = word if i == 0 else " " + word
                raw += piece
                yield TextDelta(piece)
                generated += 1
        yield Done(stop_reason, Usage(prepared.prompt_tokens, generated, 0), Timings(0.0, 0.0), raw_text=raw)

    def close(self) -> None:
        pass


def _example_arguments(schema: dict) -> dict:
    """Arguments that satisfy a simple JSON schema: each required property with a typed placeholder."""
    out = {}
    props = schema.get("properties") or {}
    for name in schema.get("required") or list(props)[:1]:
        prop = props.get(name, {})
        kind = prop.get("type")
        if "enum" in prop:
            out[name] = prop["enum"][0]
        elif kind == "integer" or kind == "number":
            out[name] = 1
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = "mock"
    return out
