"""Client-supplied text as it may appear in a log line: control characters escaped, length bounded.

A model name, session key, tool name or user agent comes from whoever sent the request. Logged raw,
a newline in it starts a line of the client's choosing (a forged `ERROR` line); a megabyte of it
floods the log. `shown()` is applied where such a value is put into a message; `SafeFormatter` is
the net under every line the server writes (its message escaped, a traceback kept as it is).
"""

from __future__ import annotations

import logging
import re

LIMIT = 120             # characters of a client's value kept in a log line
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escaped(text: str) -> str:
    """`text` with every control character (newlines included) written as an escape."""
    return _CONTROL.sub(_escape, text)


def shown(value: object, limit: int = LIMIT) -> str:
    """A client's value for a log line: escaped, and cut to `limit` characters with how much was left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}…(+{len(text) - limit} chars)"
    return escaped(text)


class SafeFormatter(logging.Formatter):
    """A formatter whose lines cannot be split by what a message holds: the message's control characters
    are escaped before the line is made (an exception's traceback, added by the formatter, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:    # noqa: N802 - logging's name
        record.message = escaped(record.message)
        return super().formatMessage(record)
