"""`serve` with rpc-servers: a parent process that keeps the port and restarts the server when an rpc-server
in use went away.

llama.cpp's RPC backend ends the process (GGML_ABORT) when a server it uses stops answering, and nothing in
the process can go on from there. So a `serve` whose models use rpc-servers runs the server as a child on a
listening socket the parent holds. When the child ends from such an abort, the parent answers every request
with a 503 in the client's API shape (/health and /info too, naming the rpc-servers that are gone), asks the
rpc-servers for the protocol's HELLO once a second, and once every one answers, starts the server again on
the same socket: the models load again and the saved prefixes come back from the state directory. A signal
to the parent goes to the child (its drain, then exit); any other end of the child ends the parent with its
exit code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys

import msgspec
import uvicorn

from ..errors import OverloadedError
from .access import AccessGuard, AccessPolicy, is_loopback_address

log = logging.getLogger("llamabridge.server")

LISTEN_FD_ENV = "LLAMABRIDGE_LISTEN_FD"      # the listening socket a supervised child serves on
PROBE_EVERY = 1.0                            # seconds between HELLOs to the rpc-servers that are gone


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def inherited_socket() -> socket.socket | None:
    """The socket a supervising parent handed this process (None when it runs on its own)."""
    fd = os.environ.get(LISTEN_FD_ENV)
    return socket.socket(fileno=int(fd)) if fd else None


def _end_with_parent() -> None:
    """In the child, before it runs: a SIGTERM (its drain) when the parent ends, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, host: str, port: int, endpoints: tuple[str, ...], access: AccessPolicy) -> None:
        self.host, self.port, self.endpoints, self.access = host, port, endpoints, access
        self.sock = listening_socket(host, port)
        self.child: subprocess.Popen | None = None
        self._fallback: uvicorn.Server | None = None    # answering 503s while the child is gone
        self.stopping = False

    def run(self, argv: list[str]) -> int:
        """Serve `argv` (this command line) in a child until it ends for another reason than a lost rpc-server."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        while True:
            env = {**os.environ, LISTEN_FD_ENV: str(self.sock.fileno())}
            self.child = subprocess.Popen([sys.executable, "-c", "from llamabridge.cli import main; main()", *argv],
                                          env=env, pass_fds=(self.sock.fileno(),), preexec_fn=_end_with_parent)
            code = self.child.wait()
            if self.stopping or code != -signal.SIGABRT:
                return code if code >= 0 else 128 - code
            log.error("the server ended: llama.cpp's RPC backend lost an rpc-server (%s); answering 503 until "
                      "every one answers, then loading the models again", ", ".join(self.endpoints))
            if not self._answer_503_until_back():
                return 0
            log.info("every rpc-server answers again: starting the server")

    def _forward(self, sig, frame) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(sig)
        elif self._fallback is not None:
            self._fallback.should_exit = True

    def _answer_503_until_back(self) -> bool:
        """True once every rpc-server answers; False when a signal came first."""
        from .app import error_answer

        gone: list[str] = list(self.endpoints)

        def message() -> str:
            return (f"rpc-server{'s' if len(gone) > 1 else ''} {', '.join(gone)} gone: the model loads again once "
                    f"{'they answer' if len(gone) > 1 else 'it answers'} (the server restarts then)")

        async def app(scope, receive, send) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] in ("/health", "/info"):
                status, headers = 503, [(b"content-type", b"application/json")]
                body = msgspec.json.encode({"status": "unavailable", "error": message(), "rpc_gone": gone})
            else:
                heard = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                status, headers, body = error_answer(scope, heard, OverloadedError(message()))
            headers.append((b"retry-after", b"5"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        async def watch(server: uvicorn.Server) -> None:
            from ..engine import rpc

            while not server.should_exit:
                for endpoint in list(gone):
                    try:
                        await asyncio.to_thread(rpc.probe, endpoint)
                        gone.remove(endpoint)
                    except Exception:  # noqa: BLE001 - still gone
                        pass
                if not gone:
                    server.should_exit = True
                    return
                await asyncio.sleep(PROBE_EVERY)

        guarded = AccessGuard(app, self.access, is_loopback_address(self.host), error_answer)
        server = self._fallback = uvicorn.Server(uvicorn.Config(guarded, log_level="warning", lifespan="off"))

        async def serve() -> None:
            watcher = asyncio.create_task(watch(server))
            await server.serve(sockets=[self.sock.dup()])    # uvicorn closes the socket it is given: a copy
            watcher.cancel()

        asyncio.run(serve())
        self._fallback = None
        return not self.stopping and not gone
