"""OpenAI Chat Completions request schemas (msgspec), fields in the order of the API reference."""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from ...engine.request import StopReason
from ...errors import ContextLimitExceededError
from ..ranges import (
    Fraction,
    LogitBias,
    NonNegative,
    Penalty,
    StopString,
    Temperature,
    TokenCount,
    TopK,
    TopLogprobs,
)


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None
    image_url: Any = None


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, kw_only=True):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoiceFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedToolChoiceFunction


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    name: str = "response"
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    messages: list[ChatMessage]
    model: str
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, LogitBias] | None = None      # token id -> bias
    logprobs: bool | None = None
    max_completion_tokens: TokenCount | None = None
    max_tokens: TokenCount | None = None
    n: TokenCount | None = None
    parallel_tool_calls: bool = True
    presence_penalty: Penalty | None = None
    prompt_cache_key: str | None = None     # a client's session: keeps its conversation on one slot
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: Union[StopString, list[StopString], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    tools: list[Tool] | None = None
    top_logprobs: TopLogprobs | None = None
    top_p: Fraction | None = None
    user: str | None = None
    # llama.cpp extensions
    top_k: TopK | None = None
    min_p: Fraction | None = None
    repeat_penalty: NonNegative | None = None
    chat_template_kwargs: dict[str, Any] | None = None


# ---------------------------------------------------------------- wire tables and the error shape

# engine stop reason -> finish_reason
FINISH_REASONS: dict[StopReason, str] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                                         "tool_use": "tool_calls", "cancelled": "stop"}


def engine_stop_reason(finish_reason: str | None) -> StopReason:
    """A finish_reason from the wire as the engine names it (content_filter: end_turn)."""
    return next((engine for engine, wire in FINISH_REASONS.items() if wire == finish_reason), "end_turn")


def error_body(exc) -> dict:
    """OpenAI's error JSON for a BridgeError (Chat Completions and Responses share it)."""
    if isinstance(exc, ContextLimitExceededError):
        message = (
            f"This model's maximum context length is {exc.n_ctx} tokens. However, you requested "
            f"{exc.prompt_tokens + exc.max_tokens} tokens ({exc.prompt_tokens} in the messages, "
            f"{exc.max_tokens} in the completion). Please reduce the length of the messages or completion."
        )
    else:
        message = exc.message
    error_type = {"not_found_error": "invalid_request_error", "api_error": "server_error",
                  "overloaded_error": "server_error",
                  "request_too_large": "invalid_request_error"}.get(exc.type, exc.type)
    return {"error": {"message": message, "type": error_type, "param": exc.param, "code": exc.code}}
