"""Who may reach the server from a browser: allowed Origins and Host names, and JSON bodies only.

Any web page the user visits can send a server on 127.0.0.1 a "simple" cross-origin request (a
POST with `Content-Type: text/plain`, which a browser sends without asking first), and a page whose
name is rebound to 127.0.0.1 (DNS rebinding) is same-origin with it and reads every answer. So, as
Ollama does since CVE-2024-28224:
- a request whose `Origin` is not allowed is refused (403); allowed are the local web origins
  (`http(s)://localhost`, `127.0.0.1`, `[::1]`, any port), local apps' schemes (`app://`,
  `vscode-webview://`, ...) and what `--allowed-origins` adds (`*` = every origin). Clients that are
  not browsers (SDKs, Claude Code, Codex, curl) send no Origin and are not affected;
- a server bound to a loopback address accepts only loopback `Host` names (`localhost`, `*.localhost`,
  `127.x.x.x`, `[::1]`) and `--allowed-hosts`: a rebound name is refused (403);
- a POST's body must be declared JSON (`application/json`, 415 otherwise), so no form or text/plain
  request a page can send without a CORS preflight reaches a handler;
- a CORS preflight is answered for allowed origins only, and their answers carry
  `Access-Control-Allow-Origin`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from typing import Callable

from ..errors import BridgeError, ForbiddenError, UnsupportedMediaTypeError

LOCAL_WEB_HOSTS = ("localhost", "127.0.0.1", "[::1]")
LOCAL_APP_SCHEMES = ("app", "file", "tauri", "vscode-webview", "vscode-file")   # Ollama's, for local apps
PREFLIGHT_METHODS = "GET, POST, DELETE, HEAD, OPTIONS"
PREFLIGHT_MAX_AGE = "600"


def split_list(text: str | None) -> tuple[str, ...]:
    """A comma-separated setting (`--allowed-origins a,b`, or the environment variable) as its items."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def is_loopback_address(host: str) -> bool:
    """Whether a bind address (`127.0.0.1`, `::1`, `localhost`) is reachable only from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`, `Localhost:80` -> `localhost`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):    # RFC 6761: always this machine
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    """The origins and host names a server accepts besides its local ones (`serve --allowed-origins`,
    `--allowed-hosts`). Host names are checked only on a server bound to a loopback address."""

    allowed_origins: tuple[str, ...] = ()    # origins or patterns (`https://*.example.com`); "*" = every one
    allowed_hosts: tuple[str, ...] = ()      # host names or patterns, without the port

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if self.any_origin:
            return True
        scheme, sep, rest = origin.partition("://")
        if not sep:
            return False                     # "null" (sandboxed frames, some file pages) or garbage
        if scheme in LOCAL_APP_SCHEMES:
            return True
        if scheme in ("http", "https"):
            host = rest[:rest.index("]") + 1] if rest.startswith("[") and "]" in rest else rest.split(":", 1)[0]
            if host in LOCAL_WEB_HOSTS:
                return True
        return any(fnmatch.fnmatchcase(origin, pattern.lower().rstrip("/")) for pattern in self.allowed_origins)

    def host_allowed(self, host_header: str) -> bool:
        name = host_name(host_header)
        return is_loopback_name(name) or any(fnmatch.fnmatchcase(name, pattern.lower())
                                             for pattern in self.allowed_hosts)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class AccessGuard:
    """An ASGI wrapper that applies an AccessPolicy before the app sees a request (see the module's text).

    `check_hosts`: the server is bound to a loopback address. `error_answer(scope, headers, exc)` gives
    the status, headers and body of an error in the shape of the API the request is for."""

    def __init__(self, app, policy: AccessPolicy, check_hosts: bool,
                 error_answer: Callable[[dict, dict[str, str], BridgeError], tuple[int, list, bytes]]) -> None:
        self.app = app
        self.policy = policy
        self.check_hosts = check_hosts
        self.error_answer = error_answer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refused = self._refusal(scope, headers)
        if refused is not None:
            await self._answer(send, *self.error_answer(scope, headers, refused))
            return
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._answer(send, 204, self._preflight_headers(origin, headers), b"")
            return
        cors = self._cors_headers(origin)

        async def send_with_cors(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _refusal(self, scope, headers: dict) -> BridgeError | None:
        host = headers.get("host")
        if self.check_hosts and host is not None and not self.policy.host_allowed(host):
            return ForbiddenError(f"host {host_name(host)!r} is not allowed: this server answers requests for "
                                  "localhost only (add names with --allowed-hosts)")
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_allowed(origin):
            return ForbiddenError(f"origin {origin[:200]!r} is not allowed: web pages may not use this server "
                                  "(add origins with --allowed-origins)")
        if scope["method"] == "POST" and not _is_json(headers.get("content-type", "")):
            given = headers.get("content-type") or "none"
            return UnsupportedMediaTypeError(f"Content-Type must be application/json, not {given[:100]!r} "
                                             "(curl: -H 'Content-Type: application/json')")
        return None

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        return [(b"access-control-allow-origin", origin.encode("latin-1", "replace")), (b"vary", b"Origin")]

    def _preflight_headers(self, origin: str, headers: dict) -> list[tuple[bytes, bytes]]:
        asked = headers.get("access-control-request-headers", "")
        return [*self._cors_headers(origin), (b"access-control-allow-methods", PREFLIGHT_METHODS.encode()),
                (b"access-control-allow-headers", asked.encode("latin-1", "replace")),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode())]

    @staticmethod
    async def _answer(send, status: int, headers: list, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _headers(scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found
