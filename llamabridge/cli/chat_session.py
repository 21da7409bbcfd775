"""The chat REPL's logic, apart from the terminal: history, slash commands, local or remote backends.

Generation runs on a worker thread and its events come back through a queue, so the terminal
thread stays free to take Ctrl-C and cancel it.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from ..engine.request import Done, Event, Timings, Usage
from ..errors import BridgeError, InvalidRequestError

HELP = """\
/help            this help
/reset           forget the conversation (the system prompt stays)
/system TEXT     set the system prompt (empty: remove it) and reset
/model NAME      talk to another model name (routed by the server's config)
/save FILE       save the conversation as JSON
/load FILE       load a conversation saved with /save
/exit            leave (Ctrl-D works too)
Enter sends; Alt-Enter (or Esc then Enter) starts a new line. Ctrl-C stops a reply."""


class ChatBackend(Protocol):
    """Where the REPL's turns go: this process's models (LocalBackend) or a server (RemoteBackend)."""

    def begin(self) -> None: ...

    def stream(self, model: str, messages: list[dict], system: str, max_tokens: int | None,
               thinking: bool, temperature: float | None = None) -> Iterator[Event]: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class LocalBackend:
    """Models loaded in this process (a --model or a --config), routed like the server routes."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self._stream = None
        self._cancelled = False
        self._lock = threading.Lock()

    def begin(self) -> None:
        """A new reply starts (called before its thread runs stream(): a Ctrl-C from now on counts)."""
        with self._lock:
            self._stream, self._cancelled = None, False

    def stream(self, model: str, messages: list[dict], system: str, max_tokens: int | None,
               thinking: bool, temperature: float | None = None) -> Iterator[Event]:
        from ..engine import ChatRequest, SamplingParams, ThinkingParams

        config, cache = self.pool.cache_for(model)
        sampling = SamplingParams() if temperature is None else SamplingParams(temperature=temperature)
        request = ChatRequest(([{"role": "system", "content": system}] if system else []) + messages,
                              sampling=sampling, max_tokens=max_tokens,
                              thinking=ThinkingParams(enabled=thinking), clamp_max_tokens=True)
        stream = cache.chat(request)
        with self._lock:
            self._stream = stream
            if self._cancelled:       # Ctrl-C came while the prompt was being templated
                stream.cancel()
        return stream

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._stream is not None:
                self._stream.cancel()

    def close(self) -> None:
        self.pool.close()


class RemoteBackend:
    """A running server, over either API."""

    def __init__(self, client) -> None:
        self.client = client
        self._cancelled = threading.Event()

    def begin(self) -> None:
        self._cancelled.clear()

    def stream(self, model: str, messages: list[dict], system: str, max_tokens: int | None,
               thinking: bool, temperature: float | None = None) -> Iterator[Event]:
        if self._cancelled.is_set():
            yield Done("cancelled", Usage(), Timings())
            return
        for event in self.client.stream(model, messages, system=system, max_tokens=max_tokens or 4096,
                                        thinking=thinking, temperature=temperature):
            if self._cancelled.is_set():   # leaving the stream closes the connection: the server stops
                yield Done("cancelled", Usage(), Timings())
                return
            yield event

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        self.client.close()


@dataclass
class ChatSession:
    backend: ChatBackend
    model: str
    system: str = ""
    max_tokens: int | None = None
    thinking: bool = False
    temperature: float | None = None       # None: the server's default
    messages: list[dict] = field(default_factory=list)

    # -- slash commands: (reply to show, keep going?)

    def command(self, line: str) -> tuple[str, bool]:
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return "", False
        if name == "/help":
            return HELP, True
        if name == "/reset":
            self.messages.clear()
            return "conversation cleared", True
        if name == "/system":
            self.system = arg
            self.messages.clear()
            return ("system prompt set" if arg else "system prompt removed") + "; conversation cleared", True
        if name == "/model":
            if not arg:
                return f"model: {self.model}", True
            self.model = arg
            return f"model: {arg}", True
        if name == "/save":
            if not arg:
                return "usage: /save FILE", True
            Path(arg).write_text(json.dumps({"model": self.model, "system": self.system,
                                             "messages": self.messages}, indent=2, ensure_ascii=False))
            return f"saved {len(self.messages)} messages to {arg}", True
        if name == "/load":
            if not arg:
                return "usage: /load FILE", True
            try:
                data = json.loads(Path(arg).read_text())
                messages = [{"role": m["role"], "content": m["content"]} for m in data["messages"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                return f"cannot load {arg}: {exc}", True
            self.messages = messages
            self.system = data.get("system", "")
            self.model = data.get("model", self.model)
            return f"loaded {len(messages)} messages from {arg}", True
        return f"unknown command {name}; /help lists them", True

    # -- a turn

    def send(self, text: str) -> "Reply":
        self.messages.append({"role": "user", "content": text})
        self.backend.begin()
        return Reply(self, lambda: self.backend.stream(self.model, list(self.messages), self.system,
                                                       self.max_tokens, self.thinking, self.temperature))


class Reply:
    """One assistant reply streaming on a worker thread; iterate for events, cancel() from anywhere."""

    def __init__(self, session: ChatSession, start: Callable[[], Iterator[Event]]) -> None:
        self.session = session
        self.queue: queue.Queue = queue.Queue()
        self.text: list[str] = []
        self.done: Done | None = None
        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self.thread.start()

    def _run(self, start) -> None:
        try:
            for event in start():
                self.queue.put(event)
        except BridgeError as exc:
            self.queue.put(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the REPL goes on
            self.queue.put(InvalidRequestError(f"{type(exc).__name__}: {exc}"))
        finally:
            self.queue.put(None)

    FINISHED = object()

    def next_event(self, timeout: float = 0.1):
        """The next event; None when nothing came within `timeout`; Reply.FINISHED at the end.

        Plain function, not a generator: a KeyboardInterrupt in the caller's thread leaves the
        reply intact, so the caller can cancel() and keep reading until Done.
        """
        from ..engine.request import TextDelta

        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            return Reply.FINISHED
        if isinstance(item, BridgeError):
            self.session.messages.pop()            # the turn did not happen
            raise item
        if isinstance(item, TextDelta):
            self.text.append(item.text)
        if isinstance(item, Done):
            self.done = item
            self.session.messages.append({"role": "assistant", "content": "".join(self.text)})
        return item

    def events(self) -> Iterator[Event]:
        while (event := self.next_event()) is not Reply.FINISHED:
            if event is not None:
                yield event

    def cancel(self) -> None:
        self.session.backend.cancel()
