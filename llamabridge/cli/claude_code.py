"""Starting Claude Code against a llamabridge server: find it, check the server, set its environment."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import httpx

from ..errors import BridgeError
from ..runtime.config import Route
from .client import key_headers, server_key

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL = "claude-opus-4-8"          # what Claude Code asks for when ANTHROPIC_MODEL is not set
INSTALL_HINT = "install it with: npm install -g @anthropic-ai/claude-code"
MIN_COMPACT_WINDOW = 100_000               # Claude Code raises smaller auto-compact windows to this


# Claude Code's system prompt and tools alone: 11.9k tokens (2.1.331) to 18.8k (2.1.197) with Qwen's tokenizer
OPENING_PROMPT_TOKENS = 19_000


class ClaudeCodeError(BridgeError):
    """Claude Code cannot be started: not installed, or no server answering."""


@dataclass(frozen=True)
class ServerInfo:
    url: str
    n_ctx: int            # context of the cache Claude Code's main requests are routed to
    cache: str


def server_url(url: str | None) -> str:
    return (url or os.environ.get("LLAMABRIDGE_URL") or DEFAULT_URL).rstrip("/")


def find_claude() -> str:
    path = shutil.which("claude")
    if path is None:
        raise ClaudeCodeError(f"Claude Code (`claude`) is not on PATH; {INSTALL_HINT}")
    return path


def check_server(url: str, model: str, wait_seconds: float = 120.0) -> ServerInfo:
    """The server's health and the context of the cache `model` routes to (waits while it loads)."""
    deadline = time.monotonic() + wait_seconds
    with httpx.Client(base_url=url, timeout=5, headers=key_headers(server_key())) as http:
        while True:
            try:
                health = http.get("/health")
            except httpx.HTTPError:
                raise ClaudeCodeError(f"no llamabridge server answers at {url}; start one with "
                                      "`llamabridge serve --model PATH` (or pass --url)") from None
            if health.status_code == 200:
                break
            status = health.json().get("status") if health.headers.get("content-type", "").startswith(
                "application/json") else None
            if status != "loading" or time.monotonic() > deadline:
                raise ClaudeCodeError(f"the server at {url} is not ready ({status or health.status_code})")
            time.sleep(1.0)   # polling a loading server: nothing to wait on but its answer
        info = http.get("/info")
        if info.status_code == 401:
            raise ClaudeCodeError(f"the server at {url} requires an API key: set LLAMABRIDGE_API_KEY to it")
        if info.status_code != 200:
            raise ClaudeCodeError(f"{url} answers, but it is not a llamabridge server (no /info)")
    data = info.json()
    for route in data["routes"]:
        if Route(route["match"], route["cache"]).matches(model):
            cache = route["cache"]
            return ServerInfo(url, data["caches"][cache]["n_ctx"], cache)
    raise ClaudeCodeError(f"the server at {url} routes no cache for model {model!r}; add a route for it "
                          "(e.g. match = \"claude-*\") or set ANTHROPIC_MODEL")


def claude_environment(base: dict[str, str], server: ServerInfo) -> dict[str, str]:
    """Claude Code's environment: the server's URL and settings that fit its context and cache.

    - no attribution header: its per-session value would defeat the server's prefix cache;
    - output tokens and auto-compaction sized from the main cache's n_ctx, so Claude Code
      compacts before the context is full instead of hitting the server's limit;
    - telemetry and other traffic to Anthropic off (this machine may have no network).
    """
    env = dict(base)
    env["ANTHROPIC_BASE_URL"] = server.url
    if not env.get("ANTHROPIC_API_KEY") and not env.get("ANTHROPIC_AUTH_TOKEN"):
        env["ANTHROPIC_API_KEY"] = server_key() or "sk-ant-none"      # the server's key, if it wants one
    max_output = max(1024, min(32_000, server.n_ctx // 4))
    window = max(server.n_ctx, MIN_COMPACT_WINDOW)
    compact_at = max(1, min(95, int(100 * (server.n_ctx - max_output) / window)))
    defaults = {
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(max_output),
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(window),
        "CLAUDE_AUTOCOMPACT_PCT_OVERRIDE": str(compact_at),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)     # what the user set themselves wins
    return env
