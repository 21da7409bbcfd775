"""The CPU backend's compute threads (OpenMP teams) are held only by a thread that is computing.

libgomp throttles every team once the process holds more OpenMP threads than it has CPUs: waits at ggml's
barriers sleep on a futex instead of spinning, and one stream decoded at half llama-bench's speed on two
cores. A team stayed behind on the thread that loaded the model (the weights' conversion to the AMX and
repacked buffers computes there) and on an idle cache's worker. Seen here as the process's threads (by id:
others may end meanwhile), each check on a fresh thread, which starts with no team of its own. A thread
handed back exits a moment later: the checks wait for it (a hang guard, not a timing).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from llamabridge import _core
from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Model
from llamabridge.synthetic import families

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")


def threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def gone(tids: set[int], within: float = 120.0) -> bool:
    """Whether these threads have all exited (waiting for them up to `within` seconds)."""
    deadline = time.monotonic() + within
    while tids & threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not tids & threads()


def on_fresh_thread(fn):
    """fn() on a new thread (no OpenMP team yet); its result, or its exception raised here."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - raised again by the caller
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_a_thread_hands_its_team_back(qwen3):
    def decode_then_release() -> tuple[int, bool, bool]:
        with _core.Context(qwen3.native, n_ctx=256, n_threads=2) as ctx:
            before = threads()
            ctx.decode(qwen3.tokenize("Hello there, how are you?"), 0)     # a team of two: one more thread
            team = threads() - before
            released = _core.release_compute_threads()
            return len(team), released, gone(team)      # checked while this thread lives (its exit frees all)

    team, released, team_gone = on_fresh_thread(decode_then_release)
    if not released:
        pytest.skip("ggml runs without OpenMP here: no team to hand back")
    assert team == 1
    assert team_gone


def test_loading_a_model_leaves_no_team():
    """A family model's Q4_0 weights: converted for the AMX or repacked CPU buffers where the CPU has them,
    on a team."""
    path, _ = families.ensure_family_model(families.FAMILIES["qwen3-coder"])

    def load() -> bool:
        before = threads()
        model = _core.Model(str(path))
        try:
            return gone(threads() - before)             # checked while this thread lives (its exit frees all)
        finally:
            model.close()

    assert on_fresh_thread(load)


def test_an_idle_worker_hands_its_team_back(tool_caller_path):
    with Model(tool_caller_path) as model, model.cache(CacheParams(n_ctx=512, n_threads=2)) as cache:
        idle = threads()                                   # the worker, waiting, with no team
        done = cache.complete(ChatRequest([{"role": "user", "content": "hi"}], sampling=GREEDY, max_tokens=8))
        assert done.usage.completion_tokens > 0
        assert gone(threads() - idle)                      # its team, handed back as the worker goes idle
