"""What the server asks of a cache: the seam every request crosses, met by the engine's Cache and by the
`--mock` MockCache alike (a type checker holds both to it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator, Protocol

if TYPE_CHECKING:
    from ..engine.ending import Ending
    from ..engine.request import ChatRequest, Event, PreparedChat


class ServedCache(Protocol):
    """A cache as the server uses it: template and size a request in a worker thread (`prepare`,
    `count_tokens`), then stream its events on the event loop (`achat`); `slots()`, `waiting` and
    `n_ctx` for /info and /metrics."""

    name: str
    n_ctx: int
    waiting: int

    def slots(self) -> list[dict]: ...

    def speculation(self) -> dict | None: ...

    def count_tokens(self, request: "ChatRequest") -> int: ...

    def prepare(self, request: "ChatRequest") -> "PreparedChat": ...

    def achat(self, request: "PreparedChat", *, session: str | None = None, label: str = "",
              idle: float | None = None, stop: "Ending | None" = None) -> AsyncIterator["Event"]: ...

    def close(self) -> None: ...
