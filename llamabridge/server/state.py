"""What the server holds beside its model pool: API keys, request tracing, stored responses, metrics,
keep-alive timing and per-cache system-prompt fingerprints."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

from ..runtime.config import CacheConfig, ServerConfig
from ..runtime.pool import ModelPool
from .metrics import Metrics
from .responses.store import ResponseStore

log = logging.getLogger("llamabridge.server")


class ServerState:
    def __init__(self, config: ServerConfig, *, mock: bool = False, heartbeat_seconds: float = 5.0,
                 debug_dir: str | None = None, api_keys: tuple[str, ...] = ()) -> None:
        self.pool = ModelPool(config, mock=mock)
        self.heartbeat_seconds = heartbeat_seconds
        self.debug_dir = debug_dir
        self.api_keys = tuple(k for k in api_keys if k)     # any of them opens every route but /health
        self.metrics = Metrics()
        self.started_at = time.time()
        self.responses = ResponseStore()      # stored Responses API answers (previous_response_id)
        self._fingerprints: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def config(self) -> ServerConfig:
        return self.pool.config

    def load(self, progress=None, load_progress=None) -> None:
        self.pool.load(progress, load_progress)

    def close(self) -> None:
        self.pool.close()

    def cache_for(self, model_name: str) -> tuple[CacheConfig, object]:
        return self.pool.cache_for(model_name)

    def note_system_prompt(self, cache_name: str, chat) -> None:
        """Warn when a cache's system prompt changes: its prefix cache will miss."""
        first = chat.messages[0] if chat.messages else {}
        system = first.get("content") if first.get("role") == "system" else ""
        digest = hashlib.sha256(json.dumps(system, sort_keys=True).encode()).hexdigest()[:12]
        with self._lock:
            previous = self._fingerprints.get(cache_name)
            self._fingerprints[cache_name] = digest
        if previous is not None and previous != digest:
            log.warning("cache %s: system prompt changed (%s -> %s); the prefix cache will miss "
                        "and the whole prompt is evaluated again", cache_name, previous, digest)
