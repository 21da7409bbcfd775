"""What every API's mapping into a ChatRequest does alike: function tools, a named tool_choice, a response
format's JSON schema, and the sampling a request overrides."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..engine.params import SamplingParams
from ..errors import InvalidRequestError


def function_tool(name: str, description: str | None, parameters: dict | None) -> dict[str, Any]:
    """A tool as the engine (and llama.cpp's templates) take it: OpenAI's function shape."""
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": parameters or {"type": "object"}}}


def only_tool(tools: list[dict], name: str, param: str) -> list[dict]:
    """The one tool a tool_choice names, which must be among `tools` (a 400 naming `param` otherwise)."""
    named = [t for t in tools if t["function"]["name"] == name]
    if not named:
        raise InvalidRequestError(f"tool_choice names tool {name!r}, which is not in tools", param=param)
    return named


def format_schema(kind: str | None, schema: dict | None, field: str) -> dict | None:
    """The JSON schema a response format asks for: None for plain text, {} for any JSON object, the given
    schema for `json_schema` (which then must be there: a 400 naming `field`)."""
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        if schema is None:
            raise InvalidRequestError(f"{field} is required for type json_schema", param=field)
        return schema
    return None


def sampling_with(**values: Any) -> SamplingParams:
    """The default sampling with what a request set (None: not set)."""
    return dataclasses.replace(SamplingParams(), **{k: v for k, v in values.items() if v is not None})


def effort_kwargs(effort: str | None, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chat template's variables with an API's reasoning effort (low, medium, high, ...) as
    `reasoning_effort`, which templates that have levels read (gpt-oss's "Reasoning: high", DeepSeek V4's
    max), as llama-server passes it; "none" (reasoning off) and a level the client set itself are left."""
    out = dict(kwargs or {})
    if effort and effort != "none":
        out.setdefault("reasoning_effort", effort)
    return out
