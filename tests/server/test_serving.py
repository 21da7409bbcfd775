"""Routing across models and caches, concurrency, disconnects, loading, mock and debug modes."""

import json
import logging
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest

from llamabridge.runtime.config import load_config
from llamabridge.server.state import ServerState
from llamabridge.synthetic import SCRIPTED_REPLY

from ..support import sse_events, start_server

HI = [{"role": "user", "content": "Hi"}]


def test_two_models_in_one_config_are_routed(http):
    def count(model):
        return http.post("/v1/messages/count_tokens", json={"model": model, "messages": HI}).json()["input_tokens"]

    # different tokenizers and templates: the request reached each model
    assert count("llama-3.1") != count("claude-x")
    llama = http.post("/v1/messages", json={"model": "llama-3.1", "max_tokens": 8, "messages": HI}).json()
    scripted = http.post("/v1/messages", json={"model": "claude-x", "max_tokens": 50, "messages": HI}).json()
    assert scripted["content"][0]["text"] == SCRIPTED_REPLY
    assert llama["stop_reason"] == "max_tokens" and llama["content"] != scripted["content"]
    assert http.post("/v1/messages", json={"model": "mistral", "max_tokens": 8, "messages": HI}).status_code == 404


def test_route_matching_is_first_match_wins(server):
    config = server.state.config
    assert config.route_for_model("claude-haiku-4-5-20251001").name == "fast"
    assert config.route_for_model("claude-opus-4-8").name == "main"
    assert config.route_for_model("CLAUDE-SONNET-4-5").name == "main"
    assert config.route_for_model("gpt-4o") is None


def test_health_answers_during_a_long_generation(server, http):
    body = {"model": "random", "max_tokens": 3000, "stream": True, "messages": [{"role": "user", "content": "Go"}]}
    with http.stream("POST", "/v1/messages", json=body) as response:
        lines = response.iter_lines()
        for line in lines:
            if "content_block_delta" in line:
                break
        with httpx.Client(base_url=server.url, timeout=300) as other:      # a hang guard, not a speed
            assert other.get("/health").json() == {"status": "ok"}
            # another cache generates meanwhile
            done = other.post("/v1/messages", json={"model": "claude-x", "max_tokens": 50, "messages": HI}).json()
            assert done["content"][0]["text"] == SCRIPTED_REPLY


def settled(cache) -> int:
    """The cache's count of cancelled jobs once an earlier test's requests there have ended (a client that
    left is noticed when the server next writes to it, which may be after that test returned)."""
    wait_until(lambda: cache.waiting == 0 and all(s["state"] == "idle" for s in cache.slots()), timeout=300)
    return cache.scheduler.stats["cancelled"]


def test_client_disconnect_cancels_generation(server, http):
    cache = server.state.pool.caches["random"]                 # one slot
    cancelled = settled(cache)
    body = {"model": "random", "max_tokens": 60000, "stream": True,
            "messages": [{"role": "user", "content": "Write forever"}]}
    prompt = http.post("/v1/messages/count_tokens", json={"model": "random", "messages": body["messages"]}).json()
    with http.stream("POST", "/v1/messages", json=body) as response:
        for line in response.iter_lines():
            if "content_block_delta" in line:
                break
    # the stream is closed. This request queues behind it on the one slot: it is answered only
    # because the ~60000-token generation stopped
    again = http.post("/v1/messages", json={**body, "stream": False, "max_tokens": 2}).json()
    assert again["usage"]["cache_read_input_tokens"] == prompt["input_tokens"] - 1
    assert cache.scheduler.stats["cancelled"] == cancelled + 1


def test_non_streaming_client_that_leaves_is_cancelled(server, http, caplog):
    cache = server.state.pool.caches["random"]
    cancelled = settled(cache)
    body = json.dumps({"model": "random", "max_tokens": 60000, "stream": False,
                       "messages": [{"role": "user", "content": "Write a book"}]}).encode()
    # INFO is captured before the connection closes: the worker may log the cancel at once
    with caplog.at_level(logging.INFO, logger="llamabridge.engine"):
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_until(lambda: any(s["state"] == "generate"
                                   for s in http.get("/info").json()["caches"]["random"]["slots"]))
        # the connection is closed: the queued request below runs only once that generation stopped
        again = http.post("/v1/messages", json={"model": "random", "max_tokens": 2, "messages": HI})
    assert again.status_code == 200
    assert cache.scheduler.stats["cancelled"] == cancelled + 1
    assert any("client left" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_info_shows_each_cache_s_slots(http):
    caches = http.get("/info").json()["caches"]
    assert caches["parallel"]["n_parallel"] == 4
    assert [s["id"] for s in caches["parallel"]["slots"]] == [0, 1, 2, 3]
    assert {"state", "tokens", "session"} <= set(caches["parallel"]["slots"][0])


def test_info_says_where_each_model_s_layers_and_each_cache_s_kv_are(http):
    """On this CPU-only build: every layer on the CPU, the KV in RAM (tests/device checks a device)."""
    info = http.get("/info").json()
    for model in info["models"].values():
        placed = model["placement"]
        assert placed["layers"].startswith("0/") and placed["fitted"] is False and placed["weights"]["CPU"] > 0
    for cache in info["caches"].values():
        assert set(cache["kv_on"]) == {"CPU"} and cache["flash_attn"] in ("on", "off")


def test_eight_clients_over_both_apis_get_complete_answers_equal_to_solo(server):
    anthropic_client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    openai_client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    prompts = [f"Client {i} asks question number {i * 7}" for i in range(8)]

    def ask(i):
        if i % 2:
            reply = openai_client.chat.completions.create(
                model="parallel-openai", max_tokens=6, temperature=0,
                messages=[{"role": "user", "content": prompts[i]}])
            return reply.choices[0].finish_reason, reply.usage.completion_tokens, reply.choices[0].message.content
        reply = anthropic_client.messages.create(model="parallel-anthropic", max_tokens=6,
                                                 extra_body={"temperature": 0},
                                                 messages=[{"role": "user", "content": prompts[i]}])
        return reply.stop_reason, reply.usage.output_tokens, reply.content[0].text if reply.content else ""

    expected = [ask(i) for i in range(8)]                  # one at a time
    assert all(e[0] in ("length", "max_tokens") and e[1] == 6 for e in expected)
    with ThreadPoolExecutor(8) as pool:
        rounds = [list(pool.map(ask, range(8))) for _ in range(8)]
    assert rounds == [expected] * 8


def test_a_session_key_keeps_each_session_on_its_slot(server, http):
    system = "You are a careful assistant. " * 40
    history = {"s1": [], "s2": []}
    previous = {}
    for turn in range(3):
        for session in ("s1", "s2"):
            history[session].append({"role": "user", "content": f"{session} turn {turn}"})
            body = {"model": "parallel-x", "max_tokens": 4, "temperature": 0, "system": system,
                    "messages": history[session]}
            reply = http.post("/v1/messages", json=body, headers={"X-Claude-Code-Session-Id": session}).json()
            history[session].append({"role": "assistant", "content": reply["content"][0]["text"] or "ok"})
            usage = reply["usage"]
            if turn:
                assert usage["cache_read_input_tokens"] >= 0.95 * previous[session], (session, turn, usage)
            previous[session] = usage["input_tokens"] + usage["cache_read_input_tokens"]


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_parallel_requests_on_one_cache_queue_in_order(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    results = [None] * 4

    def ask(i):
        results[i] = client.messages.create(model="claude-x", max_tokens=50,
                                            messages=[{"role": "user", "content": f"Q{i}"}])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.content[0].text == SCRIPTED_REPLY for r in results)


def test_health_is_503_while_loading(config_path):
    state = ServerState(load_config(config_path))
    running = start_server(state, load=False, background=False)
    try:
        with httpx.Client(base_url=running.url) as http:
            response = http.get("/health")
            assert response.status_code == 503 and response.json()["status"] == "loading"
            err = http.post("/v1/messages", json={"model": "claude-x", "max_tokens": 5, "messages": HI})
            assert err.status_code == 503 and err.json()["error"]["type"] == "overloaded_error"
            err = http.post("/v1/chat/completions", json={"model": "scripted", "messages": HI})
            assert err.status_code == 503 and "loading" in err.json()["error"]["message"]
    finally:
        running.stop()


@pytest.fixture(scope="module")
def mock_server(config_path):
    running = start_server(ServerState(load_config(config_path), mock=True))
    yield running
    running.stop()


def test_mock_mode_answers_without_a_model(mock_server):
    assert not mock_server.state.pool.models
    a = anthropic.Anthropic(base_url=mock_server.url, api_key="x", max_retries=0)
    message = a.messages.create(model="claude-x", max_tokens=100, messages=HI)
    assert message.content[0].type == "text" and "mock" in message.content[0].text
    with a.messages.stream(model="claude-x", max_tokens=100, messages=HI,
                           tools=[{"name": "run", "input_schema": {"type": "object",
                                                                   "properties": {"cmd": {"type": "string"}},
                                                                   "required": ["cmd"]}}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input == {"cmd": "mock"}
    o = openai.OpenAI(base_url=mock_server.v1, api_key="x", max_retries=0)
    chunks = list(o.chat.completions.create(model="scripted", messages=HI, stream=True))
    assert "mock" in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert o.chat.completions.create(model="scripted", messages=HI).choices[0].finish_reason == "stop"


def test_debug_mode_writes_four_files_without_secrets(config_path, tmp_path):
    running = start_server(ServerState(load_config(config_path), debug_dir=str(tmp_path)))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            headers = {"x-api-key": "sk-ant-SECRET1", "authorization": "Bearer SECRET2"}
            http.post("/v1/messages", headers=headers,
                      json={"model": "claude-x", "max_tokens": 50, "messages": HI})
            with http.stream("POST", "/v1/chat/completions", headers=headers,
                             json={"model": "scripted", "stream": True, "messages": HI}) as response:
                sse_events(response)
    finally:
        running.stop()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 8
    for suffix in ("1-request.json", "2-prompt.txt", "3-output.txt"):
        assert sum(f.endswith(suffix) for f in files) == 2
    assert any(f.endswith("4-response.json") for f in files) and any(f.endswith("4-response.sse") for f in files)
    everything = "".join(p.read_text() for p in tmp_path.iterdir())
    assert "SECRET1" not in everything and "SECRET2" not in everything
    prompt = next(p for p in tmp_path.iterdir() if p.name.endswith("2-prompt.txt")).read_text()
    assert "<|im_start|>user\nHi<|im_end|>" in prompt
    assert SCRIPTED_REPLY in next(p for p in tmp_path.iterdir() if p.name.endswith("3-output.txt")).read_text()
    request = json.loads(next(p for p in tmp_path.iterdir() if p.name.endswith("1-request.json")).read_text())
    assert request["headers"]["x-api-key"] == "<redacted>"


def test_debug_traces_hold_the_errors_answered_and_are_private(config_path, tmp_path):
    trace_dir = tmp_path / "traces"
    running = start_server(ServerState(load_config(config_path), debug_dir=str(trace_dir)))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            answer = http.post("/v1/messages?key=SECRET3&beta=true", json={"model": "claude-x", "messages": HI})
            assert answer.status_code == 400
    finally:
        running.stop()
    files = {p.name.split("-", 4)[-1]: p for p in trace_dir.iterdir()}     # date-time-n-api-file
    assert set(files) == {"1-request.json", "4-response.json"}
    assert json.loads(files["4-response.json"].read_text()) == answer.json()
    request = json.loads(files["1-request.json"].read_text())
    assert request["path"] == "/v1/messages" and request["query"] == {"key": "<redacted>", "beta": "<redacted>"}
    assert "SECRET3" not in files["1-request.json"].read_text()
    assert stat.S_IMODE(trace_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in files.values()} == {0o600}


def test_api_key_is_checked_when_configured(config_path):
    running = start_server(ServerState(load_config(config_path), mock=True, api_keys=("sk-local", "sk-team")))
    try:
        with httpx.Client(base_url=running.url) as http:
            body = {"model": "claude-x", "max_tokens": 5, "messages": HI}
            assert http.post("/v1/messages", json=body).status_code == 401
            assert http.post("/v1/messages", json=body, headers={"x-api-key": "sk-local"}).status_code == 200
            assert http.post("/v1/messages", json=body,
                             headers={"Authorization": "Bearer sk-local"}).status_code == 200
            assert http.post("/v1/messages", json=body, headers={"x-api-key": "sk-team"}).status_code == 200
            for path in ("/info", "/metrics", "/v1/models", "/v1/models/claude-x", "/api/tags", "/api/version", "/",
                         "/v1/responses/resp_x"):
                assert http.get(path).status_code == 401, path
                assert http.get(path, headers={"x-api-key": "sk-team"}).status_code in (200, 404), path
            assert http.get("/health").status_code == 200 and http.head("/").status_code == 200
            error = http.get("/info").json()
            assert error["error"]["type"] == "authentication_error" and "sk-" not in str(error)
            error = http.get("/api/tags").json()
            assert set(error) == {"error"}                                   # Ollama's shape
    finally:
        running.stop()


def test_the_background_server_runs_on_uvloop_where_installed(mock_server):
    """Tests, benchmarks and the chat REPL serve on the loop `llamabridge serve` uses."""
    uvloop = pytest.importorskip("uvloop")
    assert isinstance(mock_server.server.servers[0].get_loop(), uvloop.Loop)
    assert httpx.get(mock_server.url + "/health").status_code == 200
