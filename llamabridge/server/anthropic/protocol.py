"""Anthropic Messages API request schemas (msgspec), fields in the order of the API reference.

Unknown fields (context_management, output_config.format, ...) are accepted and ignored;
content blocks are a tagged union on `type`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

from ...engine.request import StopReason
from ..ranges import Fraction, StopString, ThinkingBudget, TokenCount, TopK


class _Block(msgspec.Struct, tag_field="type", kw_only=True):
    cache_control: Any = None


class TextBlock(_Block, tag="text"):
    text: str
    citations: Any = None


class ImageBlock(_Block, tag="image"):
    source: dict[str, Any]


class DocumentBlock(_Block, tag="document"):
    source: dict[str, Any]
    title: str | None = None


class ToolUseBlock(_Block, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block, tag="tool_result"):
    tool_use_id: str
    content: Union[str, list[Union[TextBlock, ImageBlock, DocumentBlock]]] = ""
    is_error: bool = False


class ThinkingBlock(_Block, tag="thinking"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(_Block, tag="redacted_thinking"):
    data: str


ContentBlock = Union[TextBlock, ImageBlock, DocumentBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock,
                     RedactedThinkingBlock]


class Message(msgspec.Struct):
    role: Literal["user", "assistant", "system"]
    content: Union[str, list[ContentBlock]]


class Tool(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    type: str | None = None             # server tools (web_search_..., bash_...) have a type and no schema
    cache_control: Any = None


class ToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class Thinking(msgspec.Struct, kw_only=True):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: ThinkingBudget | None = None


class _Common(msgspec.Struct, kw_only=True):
    model: str
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    system: Union[str, list[TextBlock], None] = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class Metadata(msgspec.Struct, kw_only=True):
    user_id: str | None = None      # Claude Code: a JSON string holding its session_id


class OutputConfig(msgspec.Struct, kw_only=True):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class MessagesRequest(_Common, kw_only=True):
    max_tokens: TokenCount
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    stop_sequences: list[StopString] | None = None
    stream: bool = False
    temperature: Fraction | None = None
    top_k: TopK | None = None
    top_p: Fraction | None = None


class CountTokensRequest(_Common, kw_only=True):
    pass


# ---------------------------------------------------------------- wire tables and the error shape

# engine stop reason -> stop_reason
STOP_REASONS: dict[StopReason, str] = {
    "end_turn": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence", "tool_use": "tool_use",
    "cancelled": "end_turn"}


def engine_stop_reason(stop_reason: str | None) -> StopReason:
    """A stop_reason from the wire as the engine names it (pause_turn, refusal: end_turn)."""
    return next((engine for engine, wire in STOP_REASONS.items() if wire == stop_reason), "end_turn")


def error_body(exc) -> dict:
    """Anthropic's error JSON for a BridgeError."""
    return {"type": "error", "error": {"type": exc.type, "message": exc.message}}
