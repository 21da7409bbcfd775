"""Streaming helpers shared by every API: event formatting and keep-alive while waiting for the engine."""

from __future__ import annotations

from typing import AsyncIterator

import msgspec

from ..engine.request import Idle, PromptProgress, PromptReady
from ..errors import BridgeError


async def render_stream(stream, events: AsyncIterator, log_error) -> AsyncIterator[bytes]:
    """A streamed body for any API: `stream` (a StreamRenderer) turns engine events into that API's chunks.

    The opening chunk goes out at once, a ping whenever the engine is busy without output
    (waiting in the queue, or between prompt chunks), and an in-stream error on failure,
    since the HTTP status is already sent.
    """
    opening = stream.start()
    if opening:
        yield opening
    try:
        async for event in events:
            if isinstance(event, (Idle, PromptProgress)):
                ping = stream.ping()
                if ping:
                    yield ping
            elif not isinstance(event, PromptReady):
                for chunk in stream.event(event):
                    yield chunk
    except BridgeError as exc:
        for chunk in stream.error(exc):
            yield chunk
    except Exception as exc:  # noqa: BLE001 - a fault after headers went out: report in-stream
        for chunk in stream.error(log_error(exc)):
            yield chunk


_encoder = msgspec.json.Encoder()


def json_bytes(data) -> bytes:
    """Compact UTF-8 JSON, as every chunk of a stream is sent (a non-finite float becomes null)."""
    return _encoder.encode(data)


def sse_event(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encoder.encode(data) + b"\n\n"


def sse_data(data: dict | str) -> bytes:
    return b"data: " + (data.encode() if isinstance(data, str) else _encoder.encode(data)) + b"\n\n"
