"""Ollama's native API request schemas (msgspec) and its wire tables, as ollama's docs/api.md lists them."""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from ..ranges import Fraction, NonNegative, Penalty, StopString, TopK, TopLogprobs

VERSION = "0.13.0"     # the Ollama API version this server speaks (clients gate features on it)


class ToolCallFunction(msgspec.Struct, kw_only=True):
    name: str
    arguments: dict[str, Any] = {}
    index: int | None = None


class ToolCall(msgspec.Struct, kw_only=True):
    function: ToolCallFunction
    id: str | None = None
    type: str | None = None


class Message(msgspec.Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class FunctionDef(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


class Tool(msgspec.Struct, kw_only=True):
    function: FunctionDef
    type: str = "function"


class Options(msgspec.Struct, kw_only=True):
    """The generation options; load-time options (num_ctx, num_gpu, ...) are fixed by the server's config."""
    temperature: NonNegative | None = None
    top_p: Fraction | None = None
    top_k: TopK | None = None
    min_p: Fraction | None = None
    num_predict: int | None = None
    stop: list[StopString] | None = None
    seed: int | None = None
    repeat_penalty: NonNegative | None = None
    repeat_last_n: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    num_ctx: int | None = None


Think = Union[bool, Literal["low", "medium", "high"], None]
Format = Union[Literal["", "json"], dict[str, Any], None]


class _Generating(msgspec.Struct, kw_only=True):
    model: str
    format: Format = None
    options: Options | None = None
    stream: bool = True
    think: Think = None
    keep_alive: Union[str, float, int, None] = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None


class ChatRequest(_Generating, kw_only=True):
    messages: list[Message] = []
    tools: list[Tool] | None = None


class GenerateRequest(_Generating, kw_only=True):
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    raw: bool = False
    images: list[str] | None = None
    template: str | None = None
    context: list[int] | None = None


class ModelRequest(msgspec.Struct, kw_only=True):
    """/api/show: `model` (or the older `name`)."""
    model: str = ""
    name: str = ""
    verbose: bool = False


DONE_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "stop", "max_tokens": "length",
                "cancelled": "stop"}   # engine stop reason -> done_reason

FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              32: "BF16"}    # GGUF general.file_type -> the quantization name Ollama shows


def error_body(exc) -> dict:
    """Ollama's error JSON: a bare message."""
    return {"error": exc.message}
