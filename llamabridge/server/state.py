"""What the server holds beside its model pool: API keys, who may call from a browser, request tracing,
stored responses, metrics, keep-alive timing and per-cache system-prompt fingerprints."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

from ..engine.ending import Ending
from ..runtime.config import CacheConfig, ServerConfig
from ..runtime.pool import ModelPool
from ..runtime.served_cache import ServedCache
from .access import AccessPolicy
from .metrics import Metrics
from .responses.store import ResponseStore

log = logging.getLogger("llamabridge.server")

MAX_CONVERSATIONS = 4096      # conversations whose system prompt is remembered


class ServerState:
    def __init__(self, config: ServerConfig, *, mock: bool = False, heartbeat_seconds: float = 5.0,
                 debug_dir: str | None = None, api_keys: tuple[str, ...] = (),
                 access: AccessPolicy = AccessPolicy()) -> None:
        self.pool = ModelPool(config, mock=mock)
        self.access = access                  # the web origins and host names served besides local ones
        self.heartbeat_seconds = heartbeat_seconds
        self.debug_dir = debug_dir
        self.api_keys = tuple(k for k in api_keys if k)     # any of them opens every route but /health
        self.metrics = Metrics()
        self.started_at = time.time()
        self.responses = ResponseStore()      # stored Responses API answers (previous_response_id)
        self.ending = Ending()                # set when a shutdown's drain time is over: running answers end
        self.running = 0                      # chats being answered (on the event loop only)
        self._fingerprints: dict[tuple[str, str], str] = {}   # (cache, conversation) -> system prompt digest
        self._lock = threading.Lock()

    @property
    def config(self) -> ServerConfig:
        return self.pool.config

    def load(self, progress=None, load_progress=None) -> None:
        self.pool.load(progress, load_progress)

    def close(self) -> None:
        self.pool.close()

    def cache_for(self, model_name: str) -> tuple[CacheConfig, ServedCache]:
        return self.pool.cache_for(model_name)

    def note_system_prompt(self, cache_name: str, chat, session: str | None = None) -> None:
        """Warn when a conversation's system prompt changes: its prefix cache will miss. A conversation is
        the client's session key, or without one its first user message and tools, so that another
        conversation taking the slot (a client's title request between its turns) is not a change."""
        messages = chat.messages
        first = messages[0] if messages else {}
        system = first.get("content") if first.get("role") == "system" else ""
        digest = _digest(system)
        if session is not None:
            conversation = "session " + _digest(session)
        else:
            opening = next((m.get("content") for m in messages if m.get("role") == "user"), "")
            conversation = _digest([opening, [t.get("function", {}).get("name") for t in chat.tools]])
        with self._lock:
            key = (cache_name, conversation)
            previous = self._fingerprints.pop(key, None)
            self._fingerprints[key] = digest
            while len(self._fingerprints) > MAX_CONVERSATIONS:      # the oldest conversations are forgotten
                self._fingerprints.pop(next(iter(self._fingerprints)))
        if previous is not None and previous != digest:
            log.warning("cache %s: a conversation's system prompt changed (%s -> %s); the prefix cache will "
                        "miss and the whole prompt is evaluated again", cache_name, previous, digest)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]
