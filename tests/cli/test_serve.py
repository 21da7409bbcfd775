"""`llamabridge serve` as a user runs it: a real process, real port, clean errors."""

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from llamabridge.server.background import free_port
from llamabridge.synthetic import SCRIPTED_REPLY

BIN = Path(sys.executable).parent


def run(*args, timeout=60):
    return subprocess.run([str(BIN / "llamabridge"), *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0 and "serve" in result.stdout
    serve_help = run("serve", "--help")
    assert "--config" in serve_help.stdout and "llamabridge serve --model" in serve_help.stdout


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[models.a]\npath = "a.gguf"\nsize = 3\n')
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(config) in lines[0] and "models.a.size" in lines[0]


def test_missing_model_is_a_clear_error(tmp_path):
    result = run("serve", "--model", str(tmp_path / "nope.gguf"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no model at" in result.stderr and "llamabridge hfd" in result.stderr


def test_a_file_llama_cpp_cannot_read_ends_serve_with_one_line(scripted_path, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(scripted_path.read_bytes()[:100_000])
    result = run("serve", "--model", str(truncated), "--port", str(free_port()), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "loading failed: failed to load model from" in result.stderr


def test_a_config_whose_one_model_fails_serves_the_others(scripted_path, tmp_path):
    from ..support import ServeProcess

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 1000)
    config = tmp_path / "two.toml"
    config.write_text(f"""
[models.good]
path = "{scripted_path}"
[models.broken]
path = "{broken}"
[caches.good]
model = "good"
n_ctx = 512
[caches.bad]
model = "broken"
n_ctx = 512
[[routes]]
match = "bad-*"
cache = "bad"
[[routes]]
match = "*"
cache = "good"
""")
    with ServeProcess("--config", str(config)) as server:
        line = server.wait_for("model broken failed to load")
        assert "its caches (bad) answer 503" in line
        body = {"max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
        good = httpx.post(server.url + "/v1/messages", json={"model": "x", **body})
        assert good.status_code == 200 and good.json()["content"][0]["text"] == SCRIPTED_REPLY
        bad = httpx.post(server.url + "/v1/messages", json={"model": "bad-x", **body})
        assert bad.status_code == 503 and "model broken (cache bad) failed to load" in bad.json()["error"]["message"]
        assert httpx.get(server.url + "/health").json() == {"status": "ok"}
        assert "failed to load" in httpx.get(server.url + "/info").json()["models"]["broken"]["error"]
        server.stop()


def test_no_model_given():
    result = run("serve")
    assert result.returncode == 2 and "--model" in result.stderr and "Traceback" not in result.stderr


def test_a_negative_stream_interval_is_refused(scripted_path):
    result = run("serve", "--model", str(scripted_path), "--stream-interval-ms", "-1")
    assert result.returncode == 2 and "--stream-interval-ms" in result.stderr and "Traceback" not in result.stderr


def test_cache_flags_are_named_in_their_errors(scripted_path):
    for args, flag, says in ((["--n-parallel", "0"], "--n-parallel", "positive"),
                             (["--kv-size", "100", "--n-ctx", "4096"], "--kv-size", "at least --n-ctx (4096)"),
                             (["--flash-attn", "yes"], "--flash-attn", "not one of 'auto'"),
                             (["--n-gpu-layers", "most"], "--n-gpu-layers", "'auto', 'all' or a number"),
                             (["--tensor-split", "3,x"], "--tensor-split", "numbers, comma-separated"),
                             (["--split-mode", "tensor"], "--split-mode", "'tensor' is not one of")):
        result = run("serve", "--model", str(scripted_path), *args)
        assert result.returncode == 2 and flag in result.stderr and says in result.stderr, result.stderr


def test_port_in_use(scripted_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--model", str(scripted_path), "--port", str(port))
    assert result.returncode == 2 and "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_serve_starts_answers_and_stops(scripted_path):
    port = free_port()
    proc = subprocess.Popen([str(BIN / "llamabridge"), "serve", "--model", str(scripted_path), "--port", str(port),
                             "--n-ctx", "2048"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        seen = []
        while not any("ready in" in line for line in seen):
            seen.append(lines.get(timeout=60))
        assert any(f"http://127.0.0.1:{port}" in line for line in seen), "the startup summary names the URL"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.get("/health").json() == {"status": "ok"}
            reply = http.post("/v1/messages", json={"model": "anything", "max_tokens": 50,
                                                     "messages": [{"role": "user", "content": "hi"}]}).json()
            assert reply["content"][0]["text"] == SCRIPTED_REPLY
        while True:
            line = lines.get(timeout=30)
            if "anthropic anything -> " in line:
                assert "prompt" in line and "generated" in line and "tok/s" in line
                break
    finally:
        proc.terminate()
        proc.wait(30)


def test_api_key_file_and_the_banner(scripted_path, tmp_path):
    from llamabridge.cli.serve import read_key_file

    keys = tmp_path / "keys"
    keys.write_text("# the team\nsk-alice\n\n  sk-bob  \n")
    assert read_key_file(keys) == ("sk-alice", "sk-bob")
    (tmp_path / "empty").write_text("# nobody\n")
    result = run("serve", "--model", str(scripted_path), "--api-key-file", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no keys" in result.stderr

    from .. import support
    with support.ServeProcess("--model", str(scripted_path), "--api-key-file", str(keys)) as server:
        banner = "".join(server.lines)
        assert "API key required (2 accepted)" in banner and "sk-alice" not in banner and "sk-ant-none" not in banner
        assert httpx.get(server.url + "/info").status_code == 401
        assert httpx.get(server.url + "/info", headers={"x-api-key": "sk-bob"}).status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200
        log = server.stop()
    assert "sk-alice" not in log and "sk-bob" not in log


def test_serve_without_n_ctx_uses_the_models_own_context(qwen3_path):
    from llamabridge.engine.system import physical_cores

    from .. import support
    with support.ServeProcess("--model", str(qwen3_path)) as server:
        assert any("n_ctx auto" in line for line in server.lines)
        caches = httpx.get(server.url + "/info").json()["caches"]
        assert [c["n_ctx"] for c in caches.values()] == [32768]             # the synthetic model's training context
        assert any(f"n_ctx 32768, {physical_cores()} threads" in line for line in server.lines)
        server.stop()


def test_sigterm_ends_each_running_stream_with_its_apis_error_and_exits_0(qwen3_path):
    from ..support import ServeProcess, greedy_streams, streams_ended_by

    # greedy: the random model's greedy answer to "Hi" runs past 1000 tokens (test_timeouts), while a sampled
    # one may end on its own before the signal (it did once in CI)
    server = ServeProcess("--model", str(qwen3_path), "--n-ctx", "8192", "--n-parallel", "4",
                          "--shutdown-timeout", "0.5")
    with server, httpx.Client(base_url=server.url, timeout=300) as http:
        tail = streams_ended_by(http, greedy_streams(8000), server.proc.terminate)
        assert server.proc.wait(60) == 0
        log = server.stop()
    assert tail["/v1/messages"][0] == "event: error" and "shutting down" in tail["/v1/messages"][1]
    assert "shutting down" in tail["/v1/chat/completions"][0] and tail["/v1/chat/completions"][1] == "data: [DONE]"
    assert tail["/v1/responses"][0] == "event: response.failed" and "shutting down" in tail["/v1/responses"][1]
    assert json.loads(tail["/api/chat"][1])["error"].startswith("the server is shutting down")
    assert "Traceback" not in log and "timeout graceful shutdown exceeded" not in log
    assert "shutting down: 4 answers running" in log and "ended by it" in log


def test_a_second_sigterm_ends_at_once(qwen3_path):
    from ..support import ServeProcess

    server = ServeProcess("--model", str(qwen3_path), "--n-ctx", "8192", "--shutdown-timeout", "3600")
    body = {"model": "m", "max_tokens": 8000, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}
    with server, httpx.Client(base_url=server.url, timeout=300) as http, \
            http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
        server.proc.terminate()
        server.wait_for("shutting down: 1 answer running, 3600s to finish")
        server.proc.terminate()
        assert server.proc.wait(120) == 0            # not the hour of the drain
