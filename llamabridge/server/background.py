"""A server running in a background thread of this process (benchmarks, the chat REPL, tests)."""

from __future__ import annotations

import socket
import threading

import uvicorn

from .app import create_app
from .http import KEEP_ALIVE, READ_TIMEOUT, WRITE_TIMEOUT, Server, uvicorn_config
from .state import ServerState


class _Server(Server):
    def __init__(self, config: uvicorn.Config, state: ServerState, started: threading.Event) -> None:
        super().__init__(config, state, drain=0.0)
        self._started = started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self._started.set()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """Serve `state` on a free loopback port until stop(); models are loaded first unless load=False."""

    def __init__(self, state: ServerState, *, load: bool = True, load_in_background: bool = False,
                 host: str = "127.0.0.1", read_timeout: float = READ_TIMEOUT, keep_alive: float = KEEP_ALIVE,
                 write_timeout: float = WRITE_TIMEOUT, http: str = "httptools") -> None:
        if load:
            state.load()
        self.state = state
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        started = threading.Event()
        config = uvicorn_config(create_app(state, load_in_background=load_in_background), host, self.port,
                                read_timeout=read_timeout, keep_alive=keep_alive, write_timeout=write_timeout,
                                http=http, lifespan="on")
        self.server = _Server(config, state, started)
        # run(): on the loop `serve` gets (uvloop where installed); signals stay with the main thread
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="llamabridge-server")
        self.thread.start()
        if not started.wait(120):
            raise RuntimeError("the background server did not start")

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
