"""Streaming speed through the HTTP server (both APIs) next to the engine's own loop and llama-server
(built from the same vendored tree: `make llama-server`), same model, same run.

    make bench-stream
    uv run python benchmarks/server_stream.py [--model PATH | --size small|bench] [--tokens 256] [--reps 5]
        [--llama-server build/llama.cpp/bin/llama-server]

Runs alternate between llamabridge and llama-server (one process each, both up at once, only one
busy at a time), so a slow patch of this shared machine hits both alike. Each run waits until both
servers are idle: decode threads spin for a while after the last decode (OpenMP's wait, or ggml's
own pool's polling, about 0.1 s, in a build without OpenMP), and that would fall on the other
server's run.

llamabridge runs with its defaults: while an answer streams faster than one token per 10 ms, each
update carries the tokens since the last one (`--stream-interval-ms`, 0 = one update per token, as
llama-server sends them); the text and the tokens counted are the same.

Time to first token: from the call to the first generated delta (the server: HTTP + JSON +
templating + prompt evaluation; the engine: Cache.chat from the call). Decode tokens/s:
completion tokens over the time from the first to the last delta; the ratio is that of the medians,
and the median of each llamabridge run's over the llama-server run beside it. Every run uses a new
prompt, so no prefix is reused. Measured with the same code as `llamabridge bench`. Afterwards one
prompt goes to both servers on each API, and their greedy texts must be the same.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamabridge import synthetic  # noqa: E402
from llamabridge.cli.bench_runner import engine_runner, measure, remote_runner  # noqa: E402
from llamabridge.cli.client import RemoteChat  # noqa: E402
from llamabridge.engine import CacheParams, Model  # noqa: E402
from llamabridge.server.background import free_port  # noqa: E402


def start_server(model: Path, n_ctx: int, *options: str):
    """A real `llamabridge serve` process (not in this one: its GIL would be shared with the client)."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "llamabridge"), "serve", "--model", str(model),
                             "--port", str(port), "--n-ctx", str(n_ctx), *options],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    while "ready in" not in lines.get(timeout=600):
        pass
    return proc, f"http://127.0.0.1:{port}"


def start_llama_server(binary: Path, model: Path, slots: int, threads: int, n_ctx: int = 4096, *extra: str):
    """llama-server on a free port (`extra`: more of its options), once /health answers 200."""
    port = free_port()
    proc = subprocess.Popen([str(binary), "-m", str(model), "--port", str(port), "-np", str(slots),
                             "-c", str(n_ctx * slots), "-t", str(threads), "-tb", str(threads), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("llama-server did not start")
        time.sleep(0.2)


def wait_until_idle(procs, *, window: float = 0.1, deadline: float = 10.0) -> None:
    """Until these processes use under a fifth of a core over `window` seconds (or `deadline` passed)."""
    watched = [psutil.Process(proc.pid) for proc in procs]

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in watched)

    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        before = cpu()
        time.sleep(window)
        if cpu() - before < window / 5:
            return


def run(runner, label: str, tokens: int, reps: int) -> tuple[list[float], list[float]]:
    ttft, rates = [], []
    for i in range(reps):
        messages = [{"role": "user", "content": f"{label} run {i}: tell me a long story"}]
        started = time.perf_counter()
        result = measure(runner(messages, "", tokens), started)
        ttft.append(result.ttft)
        rates.append(result.decode_tps)
    return ttft, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", choices=["small", "bench"], default="small")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--llama-server", type=Path, default=ROOT / "build" / "llama.cpp" / "bin" / "llama-server")
    args = parser.parse_args()
    path = args.model or synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)

    results: dict[str, tuple[list[float], list[float]]] = {}
    with Model(path) as model, model.cache(CacheParams(n_ctx=4096, n_threads=args.threads)) as cache:
        results["engine Cache.chat"] = run(engine_runner(cache), "engine", args.tokens, args.reps)
    servers = {}
    procs = []
    same: dict[str, bool] = {}
    try:
        proc, servers["llamabridge"] = start_server(path, 4096, "--n-threads", str(args.threads))
        procs.append(proc)
        if args.llama_server.exists():
            proc, servers["llama-server"] = start_llama_server(args.llama_server, path, 1, args.threads)
            procs.append(proc)
        else:
            print(f"{args.llama_server} not found (make llama-server): llamabridge alone")
        for api, route in (("anthropic", "/v1/messages"), ("openai", "/v1/chat/completions")):
            for rep in range(args.reps):          # alternate: the machine's noise falls on both
                for name, url in servers.items():
                    wait_until_idle(procs)
                    client = RemoteChat(url, api)
                    try:
                        ttft, rates = run(remote_runner(client, "bench"), f"{name} {api} {rep}", args.tokens, 1)
                    finally:
                        client.close()
                    slot = results.setdefault(f"{name} {route}", ([], []))
                    slot[0].extend(ttft)
                    slot[1].extend(rates)
            texts = {}
            for name, url in servers.items():
                client = RemoteChat(url, api)
                try:
                    texts[name] = measure(remote_runner(client, "bench")(
                        [{"role": "user", "content": "the same prompt for both servers"}], "", args.tokens),
                        time.perf_counter()).text
                finally:
                    client.close()
            same[route] = len(set(texts.values())) == 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)

    print(f"model {path.name} ({path.stat().st_size / 1e6:.1f} MB), {args.tokens} tokens, median of {args.reps}")
    print(f"{'':40} {'TTFT ms':>9} {'decode tok/s':>13}")
    for name, (ttft, rates) in results.items():
        print(f"{name:40} {statistics.median(ttft) * 1000:9.1f} {statistics.median(rates):13.1f}")
    for route in ("/v1/messages", "/v1/chat/completions"):
        ours, theirs = results.get(f"llamabridge {route}"), results.get(f"llama-server {route}")
        if ours and theirs:
            paired = statistics.median(a / b for a, b in zip(ours[1], theirs[1]))    # run by adjacent run
            print(f"llamabridge / llama-server, streamed {route}: "
                  f"{statistics.median(ours[1]) / statistics.median(theirs[1]):.2f}x decode tok/s "
                  f"(median of run pairs {paired:.2f}x), {'same text' if same[route] else 'DIFFERENT TEXT'}")


if __name__ == "__main__":
    main()
