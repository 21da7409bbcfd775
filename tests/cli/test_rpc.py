"""A model split over rpc-servers (llama.cpp's RPC backend) started here on loopback, through `serve --rpc`:
the same greedy answers as the model alone, parallel slots, saved prefixes across a restart, and servers
that are not there or are not rpc-servers refused at startup in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

from llamabridge.engine import rpc
from llamabridge.errors import ModelLoadError
from llamabridge.server.background import free_port

from ..support import ServeProcess, greedy_streams, streams_ended_by
from .test_serve import BIN, run

READY_WITHIN = 120.0       # seconds an rpc-server may take to listen on a busy machine (not a speed assertion)


class RpcServer:
    """`llamabridge rpc-server` on a free loopback port, until it answers HELLO."""

    def __init__(self, cache_dir, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(BIN / "llamabridge"), "rpc-server", "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "LLAMA_CACHE": str(cache_dir)})
        deadline = time.monotonic() + READY_WITHIN
        while True:              # it prints nothing once it listens: ask it, as serve does, until it answers
            try:
                rpc.probe(self.endpoint, timeout=READY_WITHIN)
                return
            except ModelLoadError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def rpc_servers(tmp_path_factory):
    servers = [RpcServer(tmp_path_factory.mktemp("rpc-cache")) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def ask(url: str, text: str, session: str | None = None) -> dict:
    body = {"model": "m", "max_tokens": 24, "temperature": 0, "messages": [{"role": "user", "content": text}]}
    headers = {"X-Claude-Code-Session-Id": session} if session else {}
    return httpx.post(url + "/v1/messages", json=body, headers=headers, timeout=None).json()


def test_a_model_split_over_two_rpc_servers_and_the_cpu_answers_as_the_model_alone(rpc_servers, qwen3_path,
                                                                                   tmp_path):
    endpoints = ",".join(s.endpoint for s in rpc_servers)
    prompts = ["Write a poem about the sea", "What is a KV cache?"]
    with ServeProcess("--model", str(qwen3_path), "--state-dir", "") as alone:
        expected = [ask(alone.url, p)["content"] for p in prompts]
    split = ("--model", str(qwen3_path), "--rpc", endpoints, "--n-gpu-layers", "2", "--tensor-split", "1,1",
             "--n-parallel", "2", "--n-ctx", "2048", "--state-dir", str(tmp_path))
    with ServeProcess(*split) as server:
        line = server.wait_for("layers on RPC")
        assert "2/3 layers on RPC0" in line and "RPC1" in line and "in RAM" in line
        info = httpx.get(server.url + "/info").json()
        (model,) = info["models"].values()
        assert {"RPC0", "RPC1"} <= set(model["placement"]["weights"])
        answers: dict[int, list] = {}
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, ask(server.url, prompts[i])["content"]))
                   for i in range(2)]                          # both slots at once
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [answers[0], answers[1]] == expected
        long = "Remember this: " + "the quick brown fox jumps over the lazy dog. " * 30
        ask(server.url, long, session="s1")
        server.stop()                              # saves the slots: KV read back from the rpc-servers
    with ServeProcess(*split) as server:
        server.wait_for("restored")
        again = httpx.post(server.url + "/v1/messages", timeout=None, headers={"X-Claude-Code-Session-Id": "s1"},
                           json={"model": "m", "max_tokens": 4, "temperature": 0,
                                 "messages": [{"role": "user", "content": long}]}).json()
        assert again["usage"]["cache_read_input_tokens"] > 300


def test_an_rpc_server_that_is_not_there_is_one_line_at_startup(qwen3_path):
    port = free_port()
    result = run("serve", "--model", str(qwen3_path), "--rpc", f"127.0.0.1:{port}", "--port", str(free_port()),
                 timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"rpc-server 127.0.0.1:{port}: unreachable" in result.stderr


def test_a_port_that_is_not_an_rpc_server_is_refused_without_ending_the_process():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"

        def answer_nonsense():
            conn, _ = listener.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_nonsense, daemon=True).start()
        with pytest.raises(ModelLoadError, match=f"rpc-server {endpoint}: .*not an rpc-server"):
            rpc.probe(endpoint)


def test_rpc_endpoints_are_checked_where_they_are_defined():
    result = run("serve", "--model", "x.gguf", "--rpc", "nohost")
    assert result.returncode == 2 and "--rpc" in result.stderr and "host:port" in result.stderr


def test_an_rpc_server_that_dies_mid_request_turns_into_503s_until_it_is_back(qwen3_path, tmp_path):
    """llama.cpp's RPC backend cannot go on without a server it uses (it ends the process). serve runs the
    server as a child: the answers in flight end with their API's error (streams with their error event, a
    non-streamed answer with a 503 in its shape), then every request gets a 503 and /health names the server
    that is gone, and once it answers again the server starts again and answers."""
    doomed = RpcServer(tmp_path)
    streams = greedy_streams(4000)
    try:
        with ServeProcess("--model", str(qwen3_path), "--rpc", doomed.endpoint, "--n-gpu-layers", "all",
                          "--n-ctx", "8192", "--n-parallel", "5", "--state-dir", "") as server, \
                httpx.Client(base_url=server.url, timeout=None) as http:
            plain: dict = {}
            asked = threading.Thread(target=lambda: plain.update(reply=http.post("/v1/messages", json={
                **streams["/v1/messages"], "stream": False})))
            asked.start()
            tail = streams_ended_by(http, streams, doomed.stop)
            asked.join()
            lost = f"llama.cpp lost an rpc-server in use ({doomed.endpoint})"
            assert tail["/v1/messages"][0] == "event: error" and lost in tail["/v1/messages"][1]
            assert json.loads(tail["/v1/messages"][1].removeprefix("data: "))["error"]["type"] == "overloaded_error"
            assert lost in tail["/v1/chat/completions"][0] and tail["/v1/chat/completions"][1] == "data: [DONE]"
            assert tail["/v1/responses"][0] == "event: response.failed" and lost in tail["/v1/responses"][1]
            assert lost in json.loads(tail["/api/chat"][1])["error"]
            reply = plain["reply"]         # ended by the abort, or (sent after it) answered by the parent
            assert reply.status_code == 503 and reply.json()["error"]["type"] == "overloaded_error"
            assert doomed.endpoint in reply.json()["error"]["message"]
            assert f"rpc-servers in use: {doomed.endpoint}" in server.wait_for("llama.cpp ended the process")
            server.wait_for("answering 503 until every one answers")
            seen = len(server.lines)
            ask = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
            anthropic = httpx.post(server.url + "/v1/messages", json=ask, timeout=None)
            assert anthropic.status_code == 503 and anthropic.json()["type"] == "error"
            assert anthropic.json()["error"]["type"] == "overloaded_error"
            assert f"rpc-server {doomed.endpoint} gone" in anthropic.json()["error"]["message"]
            openai = httpx.post(server.url + "/v1/chat/completions", json=ask, timeout=None)
            assert openai.status_code == 503 and doomed.endpoint in openai.json()["error"]["message"]
            health = httpx.get(server.url + "/health", timeout=None)
            assert health.status_code == 503 and health.json()["rpc_gone"] == [doomed.endpoint]

            back = RpcServer(tmp_path, port=doomed.port)
            try:
                server.wait_for("every rpc-server answers again", timeout=600, since=seen)
                server.wait_for("ready in", timeout=600, since=seen)
                again = httpx.post(server.url + "/v1/messages", json=ask, timeout=None)
                assert again.status_code == 200 and again.json()["usage"]["output_tokens"] == 8
                server.stop()
                assert server.proc.returncode == 0
            finally:
                back.stop()
    finally:
        doomed.stop()
