"""Streaming helpers shared by every API: event formatting and keep-alive while waiting for the engine."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from ..engine.request import PromptProgress, PromptReady
from ..errors import BridgeError

HEARTBEAT = object()


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
            if event is HEARTBEAT or isinstance(event, PromptProgress):
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


def sse_event(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def sse_data(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


async def with_heartbeat(events: AsyncIterator, interval: float) -> AsyncIterator:
    """Yield from `events`, and HEARTBEAT whenever nothing arrived for a while (`interval` to twice it).

    One task pumps `events` into a queue and one ticks, so an event costs a queue handoff, not a
    task and a timer of its own (this runs once per generated token). Closing this iterator
    cancels the pump, which closes `events` (and so cancels the generation behind it).
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()
    arrived = True                    # something came since the last tick

    async def pump() -> None:
        try:
            async for item in events:
                inbox.put_nowait(item)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised there
            inbox.put_nowait(_Failed(exc))
        inbox.put_nowait(_END)

    async def tick() -> None:
        nonlocal arrived
        while True:
            await asyncio.sleep(interval)
            if not arrived:
                inbox.put_nowait(HEARTBEAT)
            arrived = False

    pumping, ticking = loop.create_task(pump()), loop.create_task(tick())
    try:
        while True:
            item = await inbox.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            if item is not HEARTBEAT:
                arrived = True
            yield item
    finally:
        ticking.cancel()
        pumping.cancel()
        await asyncio.gather(pumping, ticking, return_exceptions=True)


_END = object()


class _Failed:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
