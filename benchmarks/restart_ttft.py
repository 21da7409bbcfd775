"""Saved KV prefixes across a restart: Claude Code's next turn after the server restarted, next to the
same request cold and next to llama-server restarted the same way, same run.

    make bench-restart                (builds llama-server from the same vendored tree first)
    uv run python benchmarks/restart_ttft.py --llama-server build/llama.cpp/bin/llama-server \
        [--size bench|small] [--threads 2]

The session: Claude Code's first request (captured from 2.1.331: ~12k tokens of system prompt and
tools), then its next one (after a tool round trip), both greedy with a short answer. Measured,
each as time to the first streamed delta:
- llamabridge cold: the next request on a server that never saw the session (what every restart
  cost before saved prefixes);
- llamabridge after a restart: the first request on a server stopped (SIGTERM) after the first turn
  and started again on the same state dir, sent as soon as /health says ok;
- llamabridge from the RAM tier: the same session back after another session took its slot;
- llama-server after a restart (it keeps nothing), and with its manual slot save/restore
  (--slot-save-path, POST /slots/0?action=save before the stop and ?action=restore after the start;
  the restore's own time is added).
Also: restore throughput of each tier (MB/s, from /info) and the server's RSS before and after the
RAM tier took the session's state. Ratios, not absolute figures, carry over between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamabridge import synthetic  # noqa: E402
from llamabridge.server.background import free_port  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"
FIRST, NEXT = "claude-code-2.1.331-first-request.json", "claude-code-2.1.331-tool-result-request.json"
N_CTX = 16384
SKIP_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


def load(name: str) -> tuple[dict, dict]:
    capture = json.loads((FIXTURES / name).read_text())
    body = {**capture["body"], "temperature": 0, "max_tokens": 8, "stream": True}
    headers = {k: v for k, v in capture["headers"].items() if k.lower() not in SKIP_HEADERS}
    return body, headers


def other_session() -> tuple[dict, dict]:
    """A different conversation (no shared prefix with Claude Code's): takes the only slot over."""
    body = {"model": "other", "max_tokens": 8, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Another session entirely. " + "words " * 1500}]}
    return body, {"anthropic-version": "2023-06-01"}


def ttft(url: str, request: tuple[dict, dict]) -> float:
    """Seconds from sending the request to the first streamed content delta."""
    body, headers = request
    started = time.perf_counter()
    with httpx.Client(timeout=3600) as http, http.stream("POST", url + "/v1/messages", json=body,
                                                          headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.read()[:300]!r}")
        first = None
        for line in response.iter_lines():
            if first is None and line.startswith("data:") and '"content_block_delta"' in line:
                first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("no content delta")
        return first


def wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 900
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {proc.args}")
        time.sleep(0.1)


def start_llamabridge(model: Path, state_dir: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "llamabridge"), "serve", "--model", str(model),
                             "--port", str(port), "--n-ctx", str(N_CTX), "--n-threads", str(threads),
                             "--state-dir", state_dir], stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    return proc, url


def start_llama_server(binary: Path, model: Path, threads: int, slot_dir: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    extra = ["--slot-save-path", slot_dir] if slot_dir else []
    proc = subprocess.Popen([str(binary), "-m", str(model), "--port", str(port), "-np", "1", "-c", str(N_CTX),
                             "-t", str(threads), "-tb", str(threads), "--jinja", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(600)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def warm_page_cache(path: Path) -> None:
    """Read the model file once, so the first server measured does not pay for reading it from disk."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", type=Path, help="llama-server built from the same tree (make llama-server)")
    parser.add_argument("--size", choices=["small", "bench"], default="bench")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if not (FIXTURES / FIRST).exists():
        sys.exit(f"captured Claude Code requests not found in {FIXTURES}")
    model = synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)
    first, following, other = load(FIRST), load(NEXT), other_session()
    warm_page_cache(model)
    results: dict[str, float] = {}
    notes: list[str] = []

    with tempfile.TemporaryDirectory() as state_dir, tempfile.TemporaryDirectory() as scratch:
        proc, url = start_llamabridge(model, scratch, args.threads)
        results["llamabridge cold"] = ttft(url, following)
        stop(proc)

        proc, url = start_llamabridge(model, state_dir, args.threads)
        results["llamabridge first turn (cold, for reference)"] = ttft(url, first)
        stop(proc)
        proc, url = start_llamabridge(model, state_dir, args.threads)
        results["llamabridge after a restart"] = ttft(url, following)
        disk = httpx.get(url + "/info").json()["saved_prefixes"]["disk"]
        before = rss_mb(proc.pid)
        ttft(url, other)                                   # takes the slot: the session's state goes to RAM
        after = rss_mb(proc.pid)
        results["llamabridge from the RAM tier"] = ttft(url, following)
        info = httpx.get(url + "/info").json()["saved_prefixes"]
        stop(proc)
        entry_mb = info["ram"]["bytes"] / (1 << 20)
        notes.append(f"disk tier: {disk['restores']} restore(s), {disk['restored_tokens']} tokens, "
                     f"{disk['restore_mb_per_s']} MB/s (read + checksum + copy into the KV)")
        notes.append(f"RAM tier: {info['ram']['restores']} restore(s), {info['ram']['restore_mb_per_s']} MB/s; "
                     f"holds {info['ram']['entries']} entries, {entry_mb:.0f} MB; "
                     f"RSS {before:.0f} -> {after:.0f} MB (+{after - before:.0f}) when the session's state moved in")

    if args.llama_server:
        proc, url = start_llama_server(args.llama_server, model, args.threads, None)
        results["llama-server first turn (cold, for reference)"] = ttft(url, first)
        stop(proc)
        proc, url = start_llama_server(args.llama_server, model, args.threads, None)
        results["llama-server after a restart"] = ttft(url, following)
        stop(proc)
        with tempfile.TemporaryDirectory() as slot_dir:
            proc, url = start_llama_server(args.llama_server, model, args.threads, slot_dir)
            ttft(url, first)
            saved = httpx.post(url + "/slots/0?action=save", json={"filename": "session.bin"}, timeout=600)
            stop(proc)
            proc, url = start_llama_server(args.llama_server, model, args.threads, slot_dir)
            started = time.perf_counter()
            restored = httpx.post(url + "/slots/0?action=restore", json={"filename": "session.bin"}, timeout=600)
            restore_s = time.perf_counter() - started
            if saved.status_code == 200 and restored.status_code == 200:
                results["llama-server manual slot save/restore"] = restore_s + ttft(url, following)
            else:
                notes.append(f"llama-server slot save/restore failed: {saved.status_code} {restored.text[:200]}")
            stop(proc)

    cold = results["llamabridge cold"]
    print(f"\nmodel {model.name}, n_ctx {N_CTX}, {args.threads} threads; time to first token of Claude Code's "
          f"next turn\n")
    for label, seconds in results.items():
        print(f"  {label:48s} {seconds:8.2f} s   {seconds / cold:6.3f}x cold")
    for note in notes:
        print("  " + note)


if __name__ == "__main__":
    main()
