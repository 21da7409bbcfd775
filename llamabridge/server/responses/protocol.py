"""OpenAI Responses API request schemas (msgspec), fields in the order of the API reference.

`input` items and `tools` are decoded one by one (see `items.py`), so an item or tool type
that cannot apply here (`web_search`, `image_generation`, ...) is dropped with a log line
instead of failing the whole request.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from ...engine.request import StopReason
from ..openai.protocol import error_body  # noqa: F401 - Responses errors are OpenAI's
from ..ranges import Fraction, Temperature, TokenCount, TopLogprobs

# ---------------------------------------------------------------- input items

class ContentPart(msgspec.Struct, kw_only=True):
    type: str                      # input_text | output_text | text | refusal | input_image | input_file
    text: str | None = None
    refusal: str | None = None


class _Item(msgspec.Struct, kw_only=True):
    """What every input item may carry besides its own fields."""
    id: str | None = None
    status: str | None = None


class MessageItem(_Item, kw_only=True):
    role: Literal["user", "assistant", "system", "developer"]
    content: Union[str, list[ContentPart]]
    type: Literal["message"] = "message"


class FunctionCallItem(_Item, kw_only=True):
    call_id: str
    name: str
    arguments: str = ""
    namespace: str | None = None
    type: Literal["function_call"] = "function_call"


class ToolOutputItem(_Item, kw_only=True):
    """function_call_output and custom_tool_call_output."""
    call_id: str
    output: Union[str, list[ContentPart]]
    type: str = "function_call_output"


class CustomToolCallItem(_Item, kw_only=True):
    call_id: str
    name: str
    input: str = ""
    namespace: str | None = None
    type: Literal["custom_tool_call"] = "custom_tool_call"


class SummaryPart(msgspec.Struct, kw_only=True):
    text: str
    type: str = "summary_text"


class ReasoningItem(msgspec.Struct, kw_only=True):
    summary: list[SummaryPart] = []
    content: list[ContentPart] | None = None
    encrypted_content: str | None = None
    type: Literal["reasoning"] = "reasoning"
    id: str | None = None
    status: str | None = None


class ItemReference(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["item_reference"] = "item_reference"


ITEM_TYPES: dict[str, type] = {
    "message": MessageItem, "function_call": FunctionCallItem, "function_call_output": ToolOutputItem,
    "custom_tool_call": CustomToolCallItem, "custom_tool_call_output": ToolOutputItem,
    "reasoning": ReasoningItem, "item_reference": ItemReference,
}

# ---------------------------------------------------------------- tools

class FunctionTool(msgspec.Struct, kw_only=True):
    name: str
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None
    type: Literal["function"] = "function"


class CustomFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "grammar"] = "text"
    syntax: Literal["lark", "regex"] | None = None
    definition: str | None = None


class CustomTool(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    format: CustomFormat | None = None
    type: Literal["custom"] = "custom"


class NamespaceTool(msgspec.Struct, kw_only=True):
    name: str
    tools: list[dict[str, Any]]
    description: str | None = None
    type: Literal["namespace"] = "namespace"


TOOL_TYPES: dict[str, type] = {"function": FunctionTool, "custom": CustomTool, "namespace": NamespaceTool}

# ---------------------------------------------------------------- the request

class Reasoning(msgspec.Struct, kw_only=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class TextOptions(msgspec.Struct, kw_only=True):
    format: TextFormat | None = None
    verbosity: str | None = None


LOGPROBS = "message.output_text.logprobs"     # the `include` item that asks for output text log-probabilities


class ResponsesRequest(msgspec.Struct, kw_only=True):
    model: str
    input: Union[str, list[dict[str, Any]]] = []
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: TokenCount | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None     # a client's session: keeps its conversation on one slot
    reasoning: Reasoning | None = None
    store: bool = True
    stream: bool = False
    temperature: Temperature | None = None
    text: TextOptions | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: TopLogprobs | None = None
    top_p: Fraction | None = None
    truncation: str | None = None
    user: str | None = None

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in (self.include or ()) or self.top_logprobs is not None


# ---------------------------------------------------------------- wire tables

STATUS = {"end_turn": "completed", "stop_sequence": "completed", "tool_use": "completed",
          "max_tokens": "incomplete", "cancelled": "incomplete"}     # engine stop reason -> response status


def engine_stop_reason(status: str | None, incomplete_reason: str | None = None) -> StopReason:
    """A response's status from the wire as the engine names its stop."""
    return "max_tokens" if status == "incomplete" and incomplete_reason == "max_output_tokens" else "end_turn"
