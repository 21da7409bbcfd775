"""Connection time limits: a request that never arrives whole, and an idle connection, are closed; an
answer that takes longer than the limits is never cut.

Nothing here asserts how fast this machine is: a close is awaited as an event (with a hang guard far
beyond any limit), and only its lower bound, which a slow machine cannot break, is checked."""

import json
import select
import socket
import time

import openai
import pytest

from llamabridge.engine.params import CacheParams
from llamabridge.runtime.config import single_model_config
from llamabridge.server.background import BackgroundServer
from llamabridge.server.http import HEAD_LIMIT, HTTP_PROTOCOLS
from llamabridge.server.state import ServerState

LIMIT = 0.5
HANG_GUARD = 300.0      # seconds a socket read may wait: only a hang outlasts it, never a slow answer
BODY = b'{"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}'


@pytest.fixture(scope="module", params=sorted(HTTP_PROTOCOLS))
def server(qwen3_path, request):
    # one update per token: a stream whose client stops reading fills the socket's buffers sooner
    state = ServerState(single_model_config(str(qwen3_path), CacheParams(n_ctx=4096, stream_interval_ms=0)),
                        heartbeat_seconds=0.05)
    with BackgroundServer(state, read_timeout=LIMIT, keep_alive=LIMIT, write_timeout=LIMIT,
                          http=request.param) as running:
        yield running


def connect(server) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.settimeout(HANG_GUARD)
    return conn


def closed_after(conn: socket.socket) -> float:
    """Seconds until the server closes the connection (what it sent first is read and dropped)."""
    started = time.monotonic()
    while conn.recv(65536):
        pass
    return time.monotonic() - started


def request(body: bytes = BODY, length: int | None = None) -> bytes:
    return (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length)) + body


@pytest.mark.parametrize("sent", [
    b"",                                                        # connects, says nothing
    request()[:30],                                             # headers that never end
    request(BODY[:10], length=len(BODY)),                       # a body that never ends
])
def test_a_request_that_never_arrives_is_closed(server, http_ok, sent):
    with connect(server) as conn:
        conn.sendall(sent)
        assert closed_after(conn) > LIMIT * 0.5           # closed by the server (a hang raises), not at once
    http_ok()


def test_trickled_headers_do_not_extend_the_deadline(server, http_ok):
    # a byte every quarter of the limit, of headers that would take 300 limits to send: if each byte
    # restarted the deadline, the server would never close the connection before the headers end
    data = request(BODY).replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * 1200 + b"\r\n\r\n", 1)
    sent = 0
    with connect(server) as conn:
        try:
            for sent in range(len(data)):
                conn.sendall(data[sent:sent + 1])
                readable, _, _ = select.select([conn], [], [], LIMIT / 4)
                if readable and conn.recv(1) == b"":
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < len(data) - 1, "the headers were sent whole: the deadline was extended by each byte"
    http_ok()


def test_headers_that_never_end_are_refused_before_they_fill_memory(server, http_ok):
    sent, limit = 0, 16 * 2**20
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            while sent < limit:
                conn.sendall(b"a" * 65536)
                sent += 65536
            answer = conn.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""                          # refused and closed while we were still sending
    assert sent < limit
    assert answer in (b"",) or answer.startswith(b"HTTP/1.1 400")
    http_ok()


@pytest.mark.parametrize("size", [HEAD_LIMIT - 2048, HEAD_LIMIT + 2048, 100 * 1024, 126 * 1024])
def test_headers_over_the_limit_are_refused_also_when_they_arrive_whole(server, size):
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    with connect(server) as conn:
        conn.sendall(head + b"a" * (size - len(head) - 4) + b"\r\n\r\n")      # one write, headers complete
        status = conn.makefile("rb").readline()
    assert status.startswith(b"HTTP/1.1 200" if size <= HEAD_LIMIT else b"HTTP/1.1 4"), (size, status)


def test_a_body_far_larger_than_the_header_limit_is_read(server):
    body = b'{"model": "x", "max_tokens": 1, "messages": [{"role": "user", "content": "' + b"a" * 300_000 + b'"}]}'
    with connect(server) as conn:
        conn.sendall(request(body) + request())         # one write: a big body, then a pipelined request
        stream = conn.makefile("rb")
        first, second = read_response(stream), read_response(stream)
    # a prompt beyond the context: the body was read whole and answered in the API's shape
    assert first[0].startswith(b"HTTP/1.1 400") and b"invalid_request_error" in first[1]
    assert second[0].startswith(b"HTTP/1.1 200")


def test_idle_keep_alive_connection_is_closed(server):
    with connect(server) as conn:
        conn.sendall(request())
        answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        assert closed_after(conn) > LIMIT * 0.5


def test_a_stream_longer_than_the_limits_is_not_cut(server):
    client = openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)
    started = time.monotonic()
    chunks = list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=1000, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    elapsed = time.monotonic() - started
    if elapsed < LIMIT * 2:
        pytest.skip(f"the stream took {elapsed:.1f}s: too fast to outlast the {LIMIT}s limits here")
    assert chunks[-1].usage.completion_tokens == 1000
    assert chunks[-2].choices[0].finish_reason == "length"


def test_a_client_that_stops_reading_its_stream_is_cut_and_its_request_cancelled(server, http_ok):
    cache = next(iter(server.state.pool.caches.values()))
    cancelled = cache.scheduler.stats["cancelled"]
    # 20 alternatives a token: about 2 KB a chunk, so that the answer outgrows what the kernel's socket
    # buffers take (several MB on loopback) long before it ends
    body = json.dumps({"model": "x", "max_tokens": 4000, "stream": True, "temperature": 0, "logprobs": True,
                       "top_logprobs": 20, "messages": [{"role": "user", "content": "Write"}]}).encode()
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)       # a reader that takes nothing
    conn.settimeout(HANG_GUARD)
    conn.connect(("127.0.0.1", server.port))
    with conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: cache.scheduler.stats["cancelled"] > cancelled)     # it never read a byte
    http_ok()


def wait_for(condition) -> None:
    """Until `condition()` holds (checked every 50 ms), at most HANG_GUARD seconds."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def read_response(stream) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length from a socket's file: status line and body."""
    status = stream.readline()
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, stream.read(length)


def test_a_pipelined_request_is_not_cut_while_it_runs(server):
    # the second request is read before the first answer ends; its answer outlasts the limits
    # greedy: the random model's sampled answer may end early (886 tokens in one busy run), its greedy one
    # runs to max_tokens
    slow = BODY.replace(b'"max_tokens": 5', b'"max_tokens": 1000, "temperature": 0')
    with connect(server) as conn:
        conn.sendall(request() + request(slow))
        stream = conn.makefile("rb")
        started = time.monotonic()
        first, second = read_response(stream), read_response(stream)
        elapsed = time.monotonic() - started
    assert first[0].startswith(b"HTTP/1.1 200") and second[0].startswith(b"HTTP/1.1 200")
    if elapsed < LIMIT * 2:
        pytest.skip(f"the answers took {elapsed:.1f}s: too fast to outlast the {LIMIT}s limits here")
    answer = json.loads(second[1])
    assert answer["stop_reason"] == "max_tokens" and answer["usage"]["output_tokens"] == 1000


@pytest.fixture
def http_ok(server):
    """After each case: the server still answers."""
    def check() -> None:
        client = openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)
        assert client.models.list().data
    return check
