"""What every client API provides to the server: its error shape and its chat endpoints.

Each API lives in its own package (`anthropic/`, `openai/`, `responses/`, `ollama/`) and
exposes one `Api` object. The route factory in `routes.py` turns its `ChatEndpoint`s into
Litestar handlers and tags every handler with the API, so an error is rendered in the shape
of the API whose route failed, never guessed from the URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import BridgeError
from ..runtime.config import Overflow

if TYPE_CHECKING:
    from litestar import Request

    from ..engine.request import ChatRequest, PreparedChat
    from ..runtime.config import CacheConfig
    from .state import ServerState


@dataclass(eq=False)
class Api:
    """One client API: a name (logs, debug traces), its error body (sent with the error's status),
    its chat endpoints (requests that run a generation) and its other Litestar handlers (model
    lists, token counts, stored responses). An `endpoints.py` module fills the two lists once its
    endpoint classes, which name the Api, are defined."""

    name: str
    error_body: Callable[[BridgeError], dict]
    endpoints: list["ChatEndpoint"] = field(default_factory=list)
    routes: list = field(default_factory=list)


@dataclass
class Call:
    """One chat request on its way through the server: what every step of an endpoint may need."""

    state: "ServerState"
    request: "Request"
    body: Any                               # the decoded request schema
    cache: "CacheConfig | None" = None      # the cache the model name routed to
    prepared: "PreparedChat | None" = None  # templated and tokenized
    extra: dict = field(default_factory=dict)

    @property
    def headers(self):
        return self.request.headers

    @property
    def ready(self) -> "PreparedChat":
        """The prepared chat, for the steps after it was prepared (stream, build)."""
        if self.prepared is None:
            raise AssertionError("the chat is not prepared yet")
        return self.prepared

    @property
    def clamp(self) -> bool:
        """Whether the routed cache clamps max_tokens to its free context (else overflow is a 400)."""
        return self.cache is not None and self.cache.overflow is Overflow.CLAMP


class StreamRenderer:
    """Engine events -> the bytes of one API's streamed answer.

    `start()` goes out at once, `ping()` while the engine is busy without output (None: the
    format has no keep-alive), `event(e)` for each engine event, `error(exc)` for a failure
    after the first byte was sent (the HTTP status is gone by then).
    """

    def start(self) -> bytes:
        raise NotImplementedError

    def ping(self) -> bytes | None:
        return None

    def event(self, event) -> list[bytes]:
        raise NotImplementedError

    def error(self, exc: BridgeError) -> list[bytes]:
        raise NotImplementedError


class ChatEndpoint:
    """A POST route that runs a chat: request schema, mapping, stream renderer, JSON builder."""

    api: Api
    path: str
    schema: type
    media_type = "text/event-stream"

    def model(self, body) -> str:
        return body.model

    def streams(self, body) -> bool:
        return bool(body.stream)

    def to_chat(self, call: Call) -> "ChatRequest":
        raise NotImplementedError

    def session(self, call: Call) -> str | None:
        """The client's session key: keeps its conversation on one cache slot."""
        return None

    def early_answer(self, call: Call) -> dict | None:
        """An answer that needs no generation (e.g. Ollama's load-only request), or None."""
        return None

    def stream(self, call: Call) -> StreamRenderer:
        raise NotImplementedError

    def build(self, call: Call, events: list) -> dict:
        raise NotImplementedError
