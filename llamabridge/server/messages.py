"""Shaping the internal chat messages (OpenAI-shaped dicts) that several APIs share."""

from __future__ import annotations

import logging

from ..errors import InvalidRequestError

log = logging.getLogger("llamabridge.server")


def omitted_media(kind: str, where: str) -> str:
    """What the model reads in place of an image (or document) in a tool's result: Claude Code's `Read` of a
    PNG must not end the agent's turn with a 400 on a model without vision input."""
    log.info("%s: %s in a tool result replaced with a note: this model reads text only", where, kind)
    return f"[{kind} omitted: this model reads text only]"


def no_vision(kind: str, where: str, param: str | None = None) -> InvalidRequestError:
    """The 400 for an image (or document) in a user's message."""
    return InvalidRequestError(f"{where}: {kind} input is not supported: this model has no vision input "
                               "(llamabridge serves text models only for now)", param=param)


def merge_late_system(messages: list[dict], late: list[tuple[int, str]]) -> list[dict]:
    """System (or developer) messages inside the conversation (Claude Code >= 2.1.154, Codex) join the adjacent
    user turn.

    Strict templates accept a system message only first; the leading system prompt is never
    rewritten (that would break the prefix cache), the text goes to the user turn before it,
    or else the one after it.
    """
    if not late:
        return messages
    out = list(messages)
    inserted = 0
    for position, text in late:
        at = position + inserted
        before = out[at - 1] if at > 0 else None
        after = out[at] if at < len(out) else None
        if before is not None and before["role"] == "user":
            before["content"] = _with_text(before["content"], text, append=True)
        elif after is not None and after["role"] == "user":
            after["content"] = _with_text(after["content"], text, append=False)
        else:
            out.insert(at, {"role": "user", "content": text})
            inserted += 1
    return out


def _with_text(content, text: str, append: bool):
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    part = {"type": "text", "text": text}
    return parts + [part] if append else [part] + parts
