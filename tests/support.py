"""Test helpers: the test server config over the synthetic models, starting servers, reading SSE."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx

from llamabridge import synthetic
from llamabridge.server.background import BackgroundServer
from llamabridge.server.state import ServerState

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"   # shared/ beside the checkout


def start_server(state: ServerState, load: bool = True, background: bool = False) -> BackgroundServer:
    return BackgroundServer(state, load=load, load_in_background=background)


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

[caches.parallel]
model = "random"
n_ctx = 2048
n_parallel = 4

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
match = "parallel-*"
cache = "parallel"

[[routes]]
match = "claude-*"
cache = "main"

[[routes]]
match = "scripted"
cache = "main"
""")
    return path


def fake_program(tmp_path: Path, name: str, source: str) -> tuple[Path, Path]:
    """A program `name` in a fresh bin directory, written from `source` (a Python script template with
    {python} and {record}); returns the directory and the file it records into."""
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "record.json"
    script = bindir / name
    script.write_text(source.format(python=sys.executable, record=str(record)))
    script.chmod(0o755)
    return bindir, record


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


class ServeProcess:
    """`llamabridge serve ARGS` as a real process on a free port; its log lines are read as they come."""

    def __init__(self, *args: str, env: dict | None = None, ready: str = "ready in", timeout: float = 120) -> None:
        import os
        import queue
        import subprocess
        import sys
        import threading

        from llamabridge.server.background import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "llamabridge"), "serve", "--port", str(self.port), *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        threading.Thread(target=lambda: [self._queue.put(line) for line in self.proc.stderr] + [self._queue.put(None)],
                         daemon=True).start()
        self.wait_for(ready, timeout)

    def wait_for(self, text: str, timeout: float = 60, since: int = 0) -> str:
        """The first log line containing `text`, among those seen so far (from line `since` on) or the next ones."""
        import queue

        for line in self.lines[since:]:
            if text in line:
                return line
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no log line with {text!r} within {timeout}s:\n"
                                     + "".join(self.lines[-30:])) from None
            if line is None:
                raise AssertionError(f"the server exited before logging {text!r}:\n" + "".join(self.lines[-30:]))
            self.lines.append(line)
            if text in line:
                return line

    def stop(self) -> str:
        """SIGTERM (a clean shutdown) and wait; the remaining log."""
        self.proc.terminate()
        self.proc.wait(60)
        self.drain()
        return "".join(self.lines)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        self.drain()

    def drain(self) -> None:
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.kill()


def greedy_streams(max_tokens: int) -> dict[str, dict]:
    """A stream on each API's chat route (path: body): greedy answers to "Hi", which run past 1000 tokens on
    the random models (test_timeouts), so each is still running whatever ends it."""
    messages = [{"role": "user", "content": "Hi"}]
    return {
        "/v1/messages": {"model": "m", "max_tokens": max_tokens, "stream": True, "temperature": 0,
                         "messages": messages},
        "/v1/chat/completions": {"model": "m", "max_tokens": max_tokens, "stream": True, "temperature": 0,
                                 "messages": messages},
        "/v1/responses": {"model": "m", "max_output_tokens": max_tokens, "stream": True, "temperature": 0,
                          "input": "Hi"},
        "/api/chat": {"model": "m", "options": {"num_predict": max_tokens, "temperature": 0}, "messages": messages},
    }


def streams_ended_by(http: httpx.Client, streams: dict[str, dict], end) -> dict[str, list[str]]:
    """Open every stream, read some of each, call `end()`, then read each to the end the server gives it:
    each stream's last two non-empty lines."""
    with contextlib.ExitStack() as open_streams:
        opened = {path: open_streams.enter_context(http.stream("POST", path, json=body))
                  for path, body in streams.items()}
        lines = {path: response.iter_lines() for path, response in opened.items()}
        seen: dict[str, list[str]] = {path: [] for path in streams}
        for path, it in lines.items():                   # each has sent some of its answer
            while len(seen[path]) < 6:
                seen[path].append(next(it))
        end()
        for path, it in lines.items():
            seen[path].extend(it)                        # to the end the server gave it
    return {path: [line for line in seen[path] if line.strip()][-2:] for path in streams}
