"""The HTTP server around the app: uvicorn's settings, connection time limits and the metrics wrapper.

uvicorn closes a connection idle between requests (`keep_alive` seconds) but sets no limit on a
client that connects and never finishes its request: its headers or its body can trickle in, or
never come, and hold the connection forever. The protocols here close such a connection after
`read_timeout` seconds: for the headers, counted from the connection's opening (or the end of the
previous answer); for the body, since the last bytes of it arrived. Once a request is read, no
read limit applies: a long prompt evaluation or a stream that is still sending is never cut. A client
that stops reading its answer (the socket's buffers full, uvicorn told to pause writing) is closed
after `write_timeout` seconds without reading (nginx's `send_timeout`): its request is cancelled like
a disconnect, so it cannot keep a slot generating at the pace of a socket nobody reads. A request
line and headers longer than HEAD_LIMIT are refused with a 400 as they arrive (h11 has this limit
built in; httptools keeps whatever comes until the headers end, so it is counted here).

HTTP is parsed by httptools (C, llhttp; h11, pure Python, on request) and the event loop is uvloop
where it is installed: every streamed token is one write through them, and with both the event loop
spends about a quarter less CPU per token, CPU the decode threads get back on a machine whose cores
they all use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import TYPE_CHECKING

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..engine.ending import Ending
from ..errors import BridgeError
from .access import AccessGuard, is_loopback_address
from .metrics import MetricsMiddleware

log = logging.getLogger("llamabridge.server")

READ_TIMEOUT = 30.0     # seconds a client may take to send its headers, or pause inside its body
HEAD_LIMIT = 64 * 1024  # bytes of a request line and headers: more is refused (400) before it is kept
KEEP_ALIVE = 20.0       # seconds an idle connection is kept for the next request (clients reuse theirs for 4-15 s)
WRITE_TIMEOUT = 60.0    # seconds a client may read nothing of its answer (nginx's send_timeout)

AWAITING_HEADERS, READING_BODY, REQUEST_READ = "headers", "body", "read"

if TYPE_CHECKING:        # what ReadDeadline is mixed into: both uvicorn protocols have the members it uses
    _UvicornProtocol = H11Protocol
else:
    _UvicornProtocol = object


class ReadDeadline(_UvicornProtocol):
    """The read and write deadlines of a uvicorn protocol (mixed in before it): the read deadline is armed
    for the headers when the connection opens; the protocol calls `_follow_request(phase)` after every
    piece of data and every finished answer, with where the request being read stands. The write deadline
    runs while the transport has asked to pause writing (the client reads nothing)."""

    read_timeout = READ_TIMEOUT          # set per server on a subclass (uvicorn_config)
    write_timeout = WRITE_TIMEOUT

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._headers_due = False        # the timer running is the headers' deadline (not reset by data)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(headers=True)

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._stop_write_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stop_write_timer()
        self._write_timer = self.loop.call_later(self.write_timeout, self._write_timed_out)

    def resume_writing(self) -> None:
        self._stop_write_timer()
        super().resume_writing()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        log.info("closed the connection of %s: it read nothing of its answer for %gs (its request is cancelled)",
                 self._client_name(), self.write_timeout)
        self.transport.abort()           # close() would wait for the buffer to drain, which it never does

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

    # the header limit: `_head_bytes` of a request line and headers arrived so far without their end,
    # `_head_tail` their last 3 bytes (an end of headers may straddle two pieces)
    _head_bytes = 0
    _head_tail = b""

    def _refused_long_head(self, piece: bytes) -> bool:
        """Refuse (400) headers that pass HEAD_LIMIT within this piece of them, or by its end without ending:
        found before the piece is parsed, so also when they arrive whole in one write."""
        end = (self._head_tail + piece).find(b"\r\n\r\n")
        length = self._head_bytes + (end + 4 - len(self._head_tail) if end >= 0 else len(piece))
        if length <= HEAD_LIMIT:
            return False
        self._disarm()
        log.info("refused the request of %s: its headers exceed %d bytes", self._client_name(), HEAD_LIMIT)
        self.send_400_response("Request headers too large.")
        return True

    def _count_head(self, piece: bytes, counting: bool, awaiting: bool) -> None:
        """After a piece was parsed: add it to the headers still arriving (`awaiting`), to those counted so far
        when the piece continued them (`counting`), or start over once they have ended."""
        if awaiting:
            self._head_bytes = (self._head_bytes if counting else 0) + len(piece)
            self._head_tail = (self._head_tail + piece)[-3:]
        else:
            self._head_bytes, self._head_tail = 0, b""


class TimedH11Protocol(ReadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request (see the module's text)."""

    def data_received(self, data: bytes) -> None:
        awaiting = self._phase() == AWAITING_HEADERS
        if awaiting and self._refused_long_head(data):
            return
        super().data_received(data)
        self._count_head(data, awaiting, awaiting and self._phase() == AWAITING_HEADERS)
        self._follow_request(self._phase())

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request(self._phase())

    def _phase(self) -> str:
        state = self.conn.their_state
        return AWAITING_HEADERS if state is h11.IDLE else READING_BODY if state is h11.SEND_BODY else REQUEST_READ


# H11Protocol is ReadDeadline's base only to the type checker, which then sees two unlike protocols here
class TimedHttpToolsProtocol(ReadDeadline, HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools protocol with a deadline for reading each request (see the module's text)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._phase = AWAITING_HEADERS

    def data_received(self, data: bytes) -> None:
        # fed in pieces no longer than the limit; while headers are awaited, where they would end is found
        # before a piece is fed, so that headers of more than HEAD_LIMIT bytes are refused exactly, also
        # when they arrive in one write with their end (and before httptools keeps them)
        for start in range(0, len(data), HEAD_LIMIT):
            piece = data[start:start + HEAD_LIMIT]
            if self._phase == AWAITING_HEADERS and self._refused_long_head(piece):
                return
            counting = self._phase == AWAITING_HEADERS
            super().data_received(piece)
            if self.transport.is_closing():
                return
            self._count_head(piece, counting, self._phase == AWAITING_HEADERS)
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


class Server(uvicorn.Server):
    """uvicorn's server with llamabridge's shutdown. On SIGTERM or SIGINT: stop accepting, let the answers
    running finish for `drain` seconds, then end each one still running with its API's own error event
    (or a 503), save the slots (the app's shutdown) and return, so the process exits 0, with no
    traceback. A second signal ends at once."""

    END_GRACE = 10.0      # seconds after the drain for the ended answers to write their last event

    def __init__(self, config: uvicorn.Config, state, drain: float = 5.0) -> None:
        config.timeout_graceful_shutdown = math.ceil(drain + self.END_GRACE)
        super().__init__(config)
        self.state = state
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._ended = 0                          # answers still running when the drain time was over

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.state.ending = Ending()             # this loop's (a state may be served again after a stop)
        await super().startup(sockets)

    def handle_exit(self, sig, frame) -> None:
        # not recorded for uvicorn to raise again after the shutdown: asked for by a signal, it exits 0
        if self.should_exit:
            self.force_exit = True
            self._end_answers()
        else:
            self.should_exit = True

    async def shutdown(self, sockets=None) -> None:
        running = self.state.running
        if running:
            log.info("shutting down: %d answer%s running, %gs to finish", running, "s" * (running != 1), self.drain)
        timer = asyncio.get_running_loop().call_later(self.drain, self._end_answers)
        await super().shutdown(sockets)
        timer.cancel()
        ended = self._ended
        log.info("stopped: %d answer%s finished while shutting down, %d ended by it", running - ended,
                 "s" * (running - ended != 1), ended)

    def _end_answers(self) -> None:
        """Tell every answer still running to end (from the loop, or from a signal handler)."""
        if self._loop is None or self.state.ending.is_set():
            return
        self._ended = self.state.running
        self._loop.call_soon_threadsafe(self.state.ending.end)

    def end_answers_now(self, error: BridgeError, within: float) -> None:
        """While llama.cpp ends the process (from the thread it does it in): every answer still running ends
        with `error` (its API's error event, or the error in its shape) without waiting for the engine, whose
        decode will not return; this returns once those requests have written their last bytes, or after
        `within` seconds."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return                               # not serving, or the loop itself is ending: it cannot answer
        done = threading.Event()

        async def end() -> None:
            try:
                self.state.ending.end(error, engine_stuck=True)
                running = list(self.server_state.tasks)       # each request's task: done once it has answered
                if running:
                    await asyncio.wait(running, timeout=within)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(end()))
        except RuntimeError:                     # the loop is closed
            return
        done.wait(within + 1.0)


# the HTTP protocols by name (uvicorn_config's `http`)
HTTP_PROTOCOLS = {"httptools": TimedHttpToolsProtocol, "h11": TimedH11Protocol}


def uvicorn_config(app, host: str, port: int, *, read_timeout: float = READ_TIMEOUT, keep_alive: float = KEEP_ALIVE,
                   write_timeout: float = WRITE_TIMEOUT, http: str = "httptools", **kwargs) -> uvicorn.Config:
    """uvicorn's settings for the app (`create_app`): time limits, the state's access policy (Host names
    checked when `host` is a loopback address) and every request counted for /metrics.
    `http`: a name in HTTP_PROTOCOLS. The event loop is uvloop where it is installed (uvicorn's "auto")."""
    from .app import error_answer

    base = HTTP_PROTOCOLS[http]
    protocol = type(base.__name__, (base,), {"read_timeout": read_timeout, "write_timeout": write_timeout})
    state = app.state.bridge
    guarded = AccessGuard(app, state.access, is_loopback_address(host), error_answer)
    return uvicorn.Config(MetricsMiddleware(guarded, state.metrics), host=host, port=port,
                          http=protocol, h11_max_incomplete_event_size=HEAD_LIMIT,
                          # uvicorn's hint says int; it is seconds for call_later, where a float works
                          timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
                          log_level="warning", **kwargs)
