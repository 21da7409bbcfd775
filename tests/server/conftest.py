"""A real llamabridge server on a free loopback port, in this process, over the synthetic models."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from llamabridge import synthetic
from llamabridge.config import load_config
from llamabridge.server.app import create_app
from llamabridge.server.state import ServerState

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


@dataclass
class RunningServer:
    url: str
    state: ServerState
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class _Server(uvicorn.Server):
    def __init__(self, config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self._started_event.set()

    def install_signal_handlers(self) -> None:  # not the main thread
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state: ServerState, load: bool = True, background: bool = False) -> RunningServer:
    if load:
        state.load()
    app = create_app(state, load_in_background=background)
    port = free_port()
    started = threading.Event()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"), started)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    if not started.wait(60):
        raise RuntimeError("server did not start")
    return RunningServer(f"http://127.0.0.1:{port}", state, server, thread)


def write_config(path: Path) -> Path:
    models = {
        "scripted": synthetic.ensure_model(synthetic.QWEN3_SCRIPTED),
        "tools": synthetic.ensure_model(synthetic.QWEN3_TOOL_CALLER),
        "thinker": synthetic.ensure_model(synthetic.QWEN3_THINKER),
        "llama": synthetic.ensure_model(synthetic.LLAMA31),
        "random": synthetic.ensure_model(synthetic.QWEN3),
    }
    path.write_text(f"""
[models.scripted]
path = "{models['scripted']}"

[models.tools]
path = "{models['tools']}"

[models.thinker]
path = "{models['thinker']}"

[models.llama]
path = "{models['llama']}"

[models.random]
path = "{models['random']}"

[caches.main]
model = "scripted"
n_ctx = 65536
n_batch = 2048
description = "main conversation"

[caches.fast]
model = "scripted"
n_ctx = 8192
description = "background (haiku)"

[caches.strict]
model = "scripted"
n_ctx = 256
overflow = "reject"

[caches.small]
model = "scripted"
n_ctx = 256

[caches.tools]
model = "tools"
n_ctx = 4096

[caches.thinker]
model = "thinker"
n_ctx = 2048

[caches.llama]
model = "llama"
n_ctx = 2048

[caches.random]
model = "random"
n_ctx = 65536

[[routes]]
match = "*haiku*"
cache = "fast"

[[routes]]
match = "strict-*"
cache = "strict"

[[routes]]
match = "small-*"
cache = "small"

[[routes]]
match = "tool-caller"
cache = "tools"

[[routes]]
match = "thinker"
cache = "thinker"

[[routes]]
match = "llama-3.1"
cache = "llama"

[[routes]]
match = "random"
cache = "random"

[[routes]]
match = "claude-*"
cache = "main"

[[routes]]
match = "scripted"
cache = "main"
""")
    return path


@pytest.fixture(scope="session")
def config_path(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("config") / "test.toml")


@pytest.fixture(scope="session")
def server(config_path):
    running = start_server(ServerState(load_config(config_path), heartbeat_seconds=0.05))
    yield running
    running.stop()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def sse_events(response: httpx.Response) -> list[tuple[str, dict | str]]:
    """(event name, parsed data) pairs of an SSE response; comment lines are returned as ('comment', text)."""
    import json

    events, name, data = [], None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            events.append(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            payload = "\n".join(data)
            events.append((name or "message", payload if payload == "[DONE]" else json.loads(payload)))
            name, data = None, []
    return events
