"""Telling every running answer to end now, and why: the server's shutdown once its drain time is over, or
llama.cpp ending the process (a lost rpc-server, a device error), when the engine will never finish them."""

from __future__ import annotations

import asyncio

from ..errors import BridgeError, ShuttingDownError


class Ending:
    """Set once, on the event loop; every answer waiting on it raises `error`. With `engine_stuck`, an answer
    ends without waiting for its job to leave the engine (whose decode will not return)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.error: BridgeError = ShuttingDownError()
        self.engine_stuck = False

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def end(self, error: BridgeError | None = None, *, engine_stuck: bool = False) -> None:
        if self._event.is_set():
            return
        if error is not None:
            self.error = error
        self.engine_stuck = engine_stuck
        self._event.set()
