"""The HTTP server around the app: uvicorn's settings, connection time limits and the metrics wrapper.

uvicorn closes a connection idle between requests (`keep_alive` seconds) but sets no limit on a
client that connects and never finishes its request: its headers or its body can trickle in, or
never come, and hold the connection forever. The protocols here close such a connection after
`read_timeout` seconds: for the headers, counted from the connection's opening (or the end of the
previous answer); for the body, since the last bytes of it arrived. Once a request is read, no
limit applies: a long prompt evaluation or a stream that is still sending is never cut. A request
line and headers longer than HEAD_LIMIT are refused with a 400 as they arrive (h11 has this limit
built in; httptools keeps whatever comes until the headers end, so it is counted here).

HTTP is parsed by httptools (C, llhttp; h11, pure Python, on request) and the event loop is uvloop
where it is installed: every streamed token is one write through them, and with both the event loop
spends about a quarter less CPU per token, CPU the decode threads get back on a machine whose cores
they all use.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .metrics import MetricsMiddleware

log = logging.getLogger("llamabridge.server")

READ_TIMEOUT = 30.0     # seconds a client may take to send its headers, or pause inside its body
HEAD_LIMIT = 64 * 1024  # bytes of a request line and headers: more is refused (400) before it is kept
KEEP_ALIVE = 20.0       # seconds an idle connection is kept for the next request (clients reuse theirs for 4-15 s)

AWAITING_HEADERS, READING_BODY, REQUEST_READ = "headers", "body", "read"


class ReadDeadline:
    """The read deadline of a uvicorn protocol (mixed in before it): armed for the headers when the
    connection opens; the protocol calls `_follow_request(phase)` after every piece of data and every
    finished answer, with where the request being read stands."""

    def __init__(self, *args, read_timeout: float = READ_TIMEOUT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self._read_timer: asyncio.TimerHandle | None = None
        self._headers_due = False        # the timer running is the headers' deadline (not reset by data)

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(headers=True)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow_request(self, phase: str) -> None:
        """Set the deadline for where the request being read stands."""
        if phase == AWAITING_HEADERS:
            if self.timeout_keep_alive_task is None and not self._headers_due:
                self._arm(headers=True)  # bytes of the next request's headers (an idle one has keep-alive)
        elif phase == READING_BODY:
            self._arm(headers=False)     # the body: restarted by each piece of it
        else:
            self._disarm()               # the request is read (or the connection is over)

    def _arm(self, headers: bool) -> None:
        self._disarm()
        self._headers_due = headers
        self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._headers_due = False

    def _timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if not self._headers_due and self.flow.read_paused:
            self._arm(headers=False)     # the app has not taken the body yet: not the client's doing
            return
        what = "headers" if self._headers_due else "body"
        log.info("closed the connection of %s: its request %s did not arrive within %gs", self._client_name(), what,
                 self.read_timeout)
        self._headers_due = False
        self.transport.close()

    def _client_name(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"


class TimedH11Protocol(ReadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request (see the module's text)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request(self._phase())

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request(self._phase())

    def _phase(self) -> str:
        state = self.conn.their_state
        return AWAITING_HEADERS if state is h11.IDLE else READING_BODY if state is h11.SEND_BODY else REQUEST_READ


class TimedHttpToolsProtocol(ReadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for reading each request (see the module's text)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._phase = AWAITING_HEADERS
        self._head_bytes = 0              # bytes of a request line and headers still arriving

    def data_received(self, data: bytes) -> None:
        # fed in pieces no longer than the limit, so that the bytes counted as headers (those of pieces
        # after which the headers are still incomplete) overstate them by less than one piece
        for start in range(0, len(data), HEAD_LIMIT):
            piece = data[start:start + HEAD_LIMIT]
            counting = self._phase == AWAITING_HEADERS
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if self._phase != AWAITING_HEADERS:
                self._head_bytes = 0
                continue
            self._head_bytes = (self._head_bytes if counting else 0) + len(piece)
            if self._head_bytes > HEAD_LIMIT:
                self._disarm()
                log.info("refused the request of %s: its headers exceed %d bytes", self._client_name(), HEAD_LIMIT)
                self.send_400_response("Request headers too large.")
                return
        self._follow_request(self._phase)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = AWAITING_HEADERS

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = READING_BODY

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = REQUEST_READ

    def on_response_complete(self) -> None:
        idle = self._phase == REQUEST_READ and not self.pipeline   # no request read or queued after this one
        super().on_response_complete()
        if idle:
            self._phase = AWAITING_HEADERS
        self._follow_request(self._phase)


# the HTTP protocols by name (uvicorn_config's `http`)
HTTP_PROTOCOLS = {"httptools": TimedHttpToolsProtocol, "h11": TimedH11Protocol}


def uvicorn_config(app, host: str, port: int, *, read_timeout: float = READ_TIMEOUT, keep_alive: float = KEEP_ALIVE,
                   http: str = "httptools", **kwargs) -> uvicorn.Config:
    """uvicorn's settings for the app (`create_app`): time limits, and every request counted for /metrics.
    `http`: a name in HTTP_PROTOCOLS. The event loop is uvloop where it is installed (uvicorn's "auto")."""
    protocol = HTTP_PROTOCOLS[http]
    return uvicorn.Config(MetricsMiddleware(app, app.state.bridge.metrics), host=host, port=port,
                          http=functools.partial(protocol, read_timeout=read_timeout),
                          h11_max_incomplete_event_size=HEAD_LIMIT, timeout_keep_alive=keep_alive,
                          log_level="warning", **kwargs)
