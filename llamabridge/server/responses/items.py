"""Responses input items and tools -> the engine's chat messages and function tools.

Items that the assistant produced (reasoning, output messages, function and custom tool
calls) are gathered into one assistant turn, so a turn the model generated renders back
into the prompt as it was generated and the prefix cache holds. Reasoning comes back
through `encrypted_content`, which this server writes: the reasoning text with a checksum
(opaque to clients; a changed one is a 400).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...errors import InvalidRequestError
from ..errors import validation_error
from ..logtext import shown
from ..mapping import function_tool
from ..messages import merge_late_system, no_vision, omitted_media
from .protocol import (
    ITEM_TYPES,
    TOOL_TYPES,
    ContentPart,
    CustomTool,
    CustomToolCallItem,
    FunctionCallItem,
    FunctionTool,
    ItemReference,
    MessageItem,
    NamespaceTool,
    ReasoningItem,
    ToolOutputItem,
)

log = logging.getLogger("llamabridge.server")

NAMESPACE_SEPARATOR = "__"      # a namespaced tool's name as the model sees it: namespace__name
REASONING_PREFIX = "llamabridge.reasoning.v1."


# ---------------------------------------------------------------- tools

@dataclass(frozen=True)
class ToolTarget:
    """What a tool name the model calls means to the client."""
    kind: str                   # function | custom
    name: str
    namespace: str | None = None


@dataclass
class Tools:
    """The request's tools as the engine takes them, and the way back from a called name."""
    chat: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, ToolTarget] = field(default_factory=dict)

    def target(self, called: str) -> ToolTarget:
        return self.targets.get(called) or ToolTarget("function", called)


def exposed_name(name: str, namespace: str | None) -> str:
    """A tool's name as the model sees it (namespaced tools: namespace__name)."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def convert_tools(raw: list[dict[str, Any]] | None) -> Tools:
    tools = Tools()
    dropped: list[str] = []
    for i, entry in enumerate(raw or []):
        _add_tool(tools, entry, f"tools[{i}]", None, dropped)
    if dropped:
        log.info("responses: dropped tools that cannot run here: %s", shown(", ".join(sorted(set(dropped)))))
    return tools


def _add_tool(tools: Tools, entry: dict, where: str, namespace: str | None, dropped: list[str]) -> None:
    kind = entry.get("type") if isinstance(entry, dict) else None
    schema = TOOL_TYPES.get(kind) if isinstance(kind, str) else None
    if schema is None or (namespace and kind == "namespace"):
        if not isinstance(kind, str):
            raise InvalidRequestError(f"{where}.type: a tool needs a type", param=f"{where}.type")
        dropped.append(kind)
        return
    tool = _convert(entry, schema, where)
    if isinstance(tool, NamespaceTool):
        for j, inner in enumerate(tool.tools):
            _add_tool(tools, inner, f"{where}.tools[{j}]", tool.name, dropped)
        return
    exposed = exposed_name(tool.name, namespace)
    if exposed in tools.targets:
        raise InvalidRequestError(f"{where}.name: tool {exposed!r} is defined twice", param=f"{where}.name")
    if isinstance(tool, FunctionTool):
        tools.targets[exposed] = ToolTarget("function", tool.name, namespace)
        parameters = tool.parameters or {"type": "object", "properties": {}}
        description = tool.description or ""
    else:
        tools.targets[exposed] = ToolTarget("custom", tool.name, namespace)
        parameters, description = _custom_parameters(tool)
    tools.chat.append(function_tool(exposed, description, parameters))


def _custom_parameters(tool: CustomTool) -> tuple[dict, str]:
    """A freeform tool as a function of one string, `input`. A regex format becomes the string's
    pattern (llama.cpp's grammar honours it); a Lark grammar cannot be expressed, so the model
    reads it in the description and the input is unconstrained."""
    field_schema: dict[str, Any] = {"type": "string", "description": "the tool's raw input"}
    description = tool.description or ""
    fmt = tool.format
    if fmt is not None and fmt.type == "grammar" and fmt.definition:
        if fmt.syntax == "regex":
            field_schema["pattern"] = f"^({fmt.definition.removeprefix('^').removesuffix('$')})$"   # a full match
        else:
            description += f"\n\nThe input follows this {fmt.syntax or 'lark'} grammar:\n{fmt.definition}"
    return {"type": "object", "properties": {"input": field_schema}, "required": ["input"]}, description


def call_arguments(target: ToolTarget, arguments: str) -> str:
    """A custom tool's input, from the arguments the model produced ({"input": "..."})."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


# ---------------------------------------------------------------- reasoning round trip

def encode_reasoning(text: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"text": text}, ensure_ascii=False).encode()).decode()
    return f"{REASONING_PREFIX}{payload}.{_checksum(payload)}"


def decode_reasoning(value: str, where: str) -> str | None:
    """The reasoning text this server wrote into `encrypted_content`; None for another server's (a Codex
    session begun with OpenAI: its reasoning cannot be read here, and is dropped); a 400 for one of this
    server's that was altered."""
    if not value.startswith(REASONING_PREFIX):
        return None
    try:
        payload, checksum = value[len(REASONING_PREFIX):].rsplit(".", 1)
        if checksum != _checksum(payload):
            raise ValueError
        return json.loads(base64.urlsafe_b64decode(payload.encode()))["text"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequestError(f"{where}.encrypted_content: altered since this server wrote it",
                                  param=f"{where}.encrypted_content") from None


def _checksum(payload: str) -> str:
    return hashlib.sha256(f"llamabridge:{payload}".encode()).hexdigest()[:32]


# ---------------------------------------------------------------- input items

def parse_items(raw: str | list[dict[str, Any]], where: str = "input") -> list:
    """Input items as schema objects; items that cannot apply here are dropped with a log line."""
    if isinstance(raw, str):
        return [MessageItem(role="user", content=raw)]
    items, dropped = [], []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InvalidRequestError(f"{where}[{i}]: an input item must be an object", param=f"{where}[{i}]")
        kind = entry.get("type", "message" if "role" in entry else None)
        schema = ITEM_TYPES.get(kind) if isinstance(kind, str) else None
        if schema is None:
            if not isinstance(kind, str):
                raise InvalidRequestError(f"{where}[{i}].type: an input item needs a type", param=f"{where}[{i}].type")
            dropped.append(kind)
            continue
        items.append(_convert(entry, schema, f"{where}[{i}]"))
    if dropped:
        log.info("responses: dropped input items that cannot apply here: %s",
                 shown(", ".join(sorted(set(dropped)))))
    return items


def to_messages(items: list, instructions: str | None) -> list[dict[str, Any]]:
    """The chat messages of a list of input items (references already resolved)."""
    system: list[str] = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    late_system: list[tuple[int, str]] = []
    turn: dict[str, Any] | None = None          # the assistant turn being gathered
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, (ReasoningItem, FunctionCallItem, CustomToolCallItem)) or (
                isinstance(item, MessageItem) and item.role == "assistant"):
            if turn is None:
                turn = {"role": "assistant", "content": ""}
                messages.append(turn)
            _add_to_turn(turn, item, where)
            continue
        turn = None
        if isinstance(item, MessageItem):
            if item.role in ("system", "developer"):
                text = _text(item.content, where, images="refuse")
                if not messages:
                    system.append(text)
                else:
                    late_system.append((len(messages), text))
            else:
                content = item.content if isinstance(item.content, str) else [
                    {"type": "text", "text": t} for t in _texts(item.content, where, images="refuse")]
                messages.append({"role": "user", "content": content})
        elif isinstance(item, ToolOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id,
                             "content": _text(item.output, where, images="omit")})
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
        late_system = [(at + 1, text) for at, text in late_system]
    return merge_late_system(messages, late_system)


def _add_to_turn(turn: dict, item, where: str) -> None:
    if isinstance(item, ReasoningItem):
        if item.encrypted_content:
            text = decode_reasoning(item.encrypted_content, where)
            if text is None:
                log.info("responses: dropped %s: reasoning another server wrote (its encrypted_content cannot be "
                         "read here)", where)
                return
        elif item.content:
            text = "".join(p.text or "" for p in item.content)
        else:
            text = "\n\n".join(p.text for p in item.summary)
        if text:
            turn["reasoning_content"] = turn.get("reasoning_content", "") + text
    elif isinstance(item, MessageItem):
        turn["content"] += _text(item.content, where, images="refuse")
    else:
        name = exposed_name(item.name, item.namespace)
        if isinstance(item, CustomToolCallItem):
            arguments = json.dumps({"input": item.input}, ensure_ascii=False)
        else:
            arguments = item.arguments or "{}"
        turn.setdefault("tool_calls", []).append(
            {"id": item.call_id, "type": "function", "function": {"name": name, "arguments": arguments}})


def _texts(parts: list[ContentPart], where: str, images: str) -> list[str]:
    out = []
    for j, part in enumerate(parts):
        if part.type in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            out.append(part.text or "")
        elif part.type == "refusal":
            out.append(part.refusal or part.text or "")
        elif images == "omit":
            out.append(omitted_media(part.type, f"{where}.content[{j}]"))
        else:
            raise no_vision(part.type, f"{where}.content[{j}]", param=f"{where}.content[{j}].type")
    return out


def _text(content: str | list[ContentPart], where: str, images: str) -> str:
    return content if isinstance(content, str) else "".join(_texts(content, where, images))


def _convert(entry: dict, schema: type, where: str):
    try:
        return msgspec.convert(entry, type=schema)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, where) from None


def resolve_references(items: list, lookup) -> list:
    """item_reference items replaced by the stored items they name (`lookup(id)` or None)."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, ItemReference):
            found = lookup(item.id)
            if found is None:
                raise InvalidRequestError(f"input[{i}]: no stored item with id {item.id!r}", param=f"input[{i}].id")
            out.extend(parse_items([found], f"input[{i}]"))
        else:
            out.append(item)
    return out
