"""Closed to web pages: Origin and Host checks, JSON bodies only, CORS preflights, and log lines a client
cannot forge. Through real HTTP, shaped as a browser (or a rebound page) would send it."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from llamabridge.server.access import AccessPolicy, host_name, is_loopback_address

from .test_hostile_corpus import check

HI = [{"role": "user", "content": "Hi"}]
CHATS = {   # path, body, the API's error shape
    "anthropic": ("/v1/messages", {"model": "small-x", "max_tokens": 5, "messages": HI}),
    "openai": ("/v1/chat/completions", {"model": "small-x", "max_tokens": 5, "messages": HI}),
    "ollama": ("/api/chat", {"model": "small-x", "stream": False, "options": {"num_predict": 5}, "messages": HI}),
}
EVIL = "http://evil.example"


def post(http: httpx.Client, shape: str, headers: dict, content_type: str | None = "application/json"):
    path, body = CHATS[shape]
    if content_type is not None:
        headers = {"content-type": content_type, **headers}
    return http.post(path, content=json.dumps(body).encode(), headers=headers)


@pytest.mark.parametrize("shape", sorted(CHATS))
def test_a_web_pages_simple_request_is_refused(http, shape):
    # a cross-origin "simple" request: the browser sends it without a preflight
    answer = post(http, shape, {"origin": EVIL}, content_type="text/plain")
    assert answer.status_code == 403 and check(shape, answer) is None
    assert "access-control-allow-origin" not in answer.headers
    answer = post(http, shape, {"origin": EVIL})                   # the same with a JSON type: still its origin
    assert answer.status_code == 403 and "not allowed" in answer.text


@pytest.mark.parametrize("shape", sorted(CHATS))
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
def test_a_body_not_declared_json_is_415_in_the_apis_shape(http, shape, content_type):
    answer = post(http, shape, {}, content_type=content_type)
    assert answer.status_code == 415 and check(shape, answer) is None
    assert "application/json" in answer.text


def test_json_with_a_charset_and_local_origins_are_served(http):
    assert post(http, "openai", {}, content_type="application/json; charset=utf-8").status_code == 200
    for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:5173", "https://localhost",
                   "vscode-webview://abc123", "app://obsidian.md"):
        answer = post(http, "anthropic", {"origin": origin})
        assert answer.status_code == 200, origin
        assert answer.headers["access-control-allow-origin"] == origin and answer.headers["vary"] == "Origin"


def test_cors_preflight_is_answered_for_allowed_origins_only(http):
    ask = {"access-control-request-method": "POST", "access-control-request-headers": "content-type,x-api-key"}
    answer = http.options("/v1/messages", headers={"origin": "http://localhost:3000", **ask})
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-allow-headers"] == "content-type,x-api-key"
    refused = http.options("/v1/messages", headers={"origin": EVIL, **ask})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


def test_a_rebound_host_name_is_refused(http):
    for path in ("/info", "/v1/models", "/api/tags", "/health"):
        answer = http.get(path, headers={"host": f"evil.example:{http.base_url.port}"})
        assert answer.status_code == 403, path
        assert ".gguf" not in answer.text                            # nothing of what the server holds
    answer = post(http, "anthropic", {"host": "evil.example"})
    assert answer.status_code == 403 and check("anthropic", answer) is None
    for host in ("localhost", f"localhost:{http.base_url.port}", "127.0.0.1:1", "[::1]:8000", "app.localhost"):
        assert http.get("/info", headers={"host": host}).status_code == 200, host


def test_a_server_bound_to_the_network_accepts_any_host_and_says_so_in_its_banner(config_path):
    from llamabridge.runtime.config import load_config
    from llamabridge.server.background import BackgroundServer
    from llamabridge.server.state import ServerState

    state = ServerState(load_config(config_path), mock=True, access=AccessPolicy(allowed_origins=("https://*.corp",)))
    with BackgroundServer(state, host="0.0.0.0") as running:
        base = f"http://127.0.0.1:{running.port}"
        assert httpx.get(base + "/info", headers={"host": "gpu-box.lan:8000"}).status_code == 200
        assert httpx.get(base + "/info", headers={"origin": "https://chat.corp"}).status_code == 200
        assert httpx.get(base + "/info", headers={"origin": EVIL}).status_code == 403


def test_the_policy_parts():
    policy = AccessPolicy(allowed_origins=("https://chat.example.com",), allowed_hosts=("proxy.lan",))
    assert policy.origin_allowed("https://chat.example.com") and policy.origin_allowed("HTTPS://Chat.Example.com/")
    assert not policy.origin_allowed("https://chat.example.com.evil.io")
    assert not policy.origin_allowed("null") and not policy.origin_allowed("http://localhost.evil.io")
    assert not policy.origin_allowed("http://127.0.0.1.nip.io:8000")
    assert AccessPolicy(allowed_origins=("*",)).origin_allowed(EVIL)
    assert policy.host_allowed("proxy.lan:443") and not policy.host_allowed("evil.example")
    assert not policy.host_allowed("127.0.0.1.evil.io") and policy.host_allowed("127.8.9.1")
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost:80") == "localhost"
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1") and is_loopback_address("localhost")
    assert not is_loopback_address("0.0.0.0") and not is_loopback_address("192.168.1.5")


def test_serve_flags_and_the_banner(scripted_path):
    from ..support import ServeProcess

    env = {"LLAMABRIDGE_ALLOWED_HOSTS": "gpu-box.lan"}
    with ServeProcess("--model", str(scripted_path), "--n-ctx", "512", "--allowed-origins", "*", env=env) as server:
        assert httpx.get(server.url + "/info", headers={"origin": EVIL}).status_code == 200
        assert httpx.get(server.url + "/info", headers={"host": "gpu-box.lan"}).status_code == 200
        assert httpx.get(server.url + "/info", headers={"host": "evil.example"}).status_code == 403
        log = server.stop()
    assert "any web page the user opens can use this server" in log
    assert "Codex CLI:" in log and "Ollama:" in log


def test_a_client_cannot_forge_a_log_line(scripted_path):
    from ..support import ServeProcess

    forged = "m\n2026-12-04 04:00:00,000 ERROR llamabridge.server: FORGED LINE"
    with ServeProcess("--model", str(scripted_path), "--n-ctx", "512") as server:
        body = {"model": forged, "max_tokens": 3, "messages": HI}
        assert httpx.post(server.url + "/v1/messages", json=body).status_code == 200       # logged when done
        body = json.dumps({"model": forged + "x" * 5000, "messages": [{"role": "wizard", "content": "x"}]}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as raw:                  # rejected: logged too
            raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"User-Agent: ua\xc2\x85\xe2\x80\xa8" + b"u" * 5000 + b"\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert raw.makefile("rb").readline().startswith(b"HTTP/1.1 400")
        server.wait_for("-> 400")
        log = server.stop()
    assert "FORGED LINE" in log and "\\n2026-12-04" in log           # escaped, on the request's own line
    assert not any(line.startswith("2026-12-04 04:00:00") for line in log.splitlines())
    assert "\x85" not in log and "\\x85" in log                  # C1 controls (NEL) escaped too
    assert max(len(line) for line in log.splitlines()) < 2000         # a long name is cut
