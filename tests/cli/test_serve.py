"""`llamabridge serve` as a user runs it: a real process, real port, clean errors."""

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
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and str(config) in lines[0] and "models.a.size" in lines[0]


def test_missing_model_is_a_clear_error(tmp_path):
    result = run("serve", "--model", str(tmp_path / "nope.gguf"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no model at" in result.stderr and "llamabridge hfd" in result.stderr


def test_no_model_given():
    result = run("serve")
    assert result.returncode == 2 and "--model" in result.stderr and "Traceback" not in result.stderr


def test_a_negative_stream_interval_is_refused(scripted_path):
    result = run("serve", "--model", str(scripted_path), "--stream-interval-ms", "-1")
    assert result.returncode == 2 and "--stream-interval-ms" in result.stderr and "Traceback" not in result.stderr


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
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    try:
        seen = []
        while not any("ready in" in l for l in seen):
            seen.append(lines.get(timeout=60))
        assert any(f"http://127.0.0.1:{port}" in l for l in seen), "the startup summary names the URL"
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
