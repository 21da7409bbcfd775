"""Concurrent streaming clients: llamabridge's slots next to llama-server's, same model, same run.

    make bench-parallel            (builds llama-server from the same vendored tree first)
    uv run python benchmarks/parallel_stream.py --llama-server build/llama.cpp/bin/llama-server \
        [--size bench|small] [--clients 4] [--tokens 64] [--reps 3] [--threads 2]

Both servers get the same GGUF file, --clients slots of 2048 tokens each and the same threads,
and are measured alternately, rep by rep, through the same OpenAI streaming client. For each
rep: aggregate generated tokens/s of --clients concurrent streams (all tokens over the wall
time from the first request to the last token), each stream's time to first token, and one
stream alone. Every request has a new prompt, so no prefix is reused. Ratios, not absolute
figures, are what carries over between machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server_stream import start_llama_server, start_server, wait_until_idle  # noqa: E402  (beside this script)

from llamabridge import synthetic  # noqa: E402
from llamabridge.cli.bench_runner import measure  # noqa: E402
from llamabridge.cli.client import RemoteChat  # noqa: E402

N_CTX = 2048


def start_llamabridge(model: Path, slots: int, threads: int):
    return start_server(model, N_CTX, "--n-parallel", str(slots), "--n-threads", str(threads))


def streams(url: str, n: int, tokens: int, tag: str, prompt: str = "tell me a long story") -> dict:
    """n concurrent streams of `prompt` (each a new conversation: its tag, number and time first); aggregate
    tok/s, each one's TTFT, and one stream's decode tok/s."""
    results: list = [None] * n
    barrier = threading.Barrier(n + 1)

    def one(i: int) -> None:
        client = RemoteChat(url, "openai")
        try:
            messages = [{"role": "user", "content": f"{tag} client {i} {time.time_ns()}: {prompt}"}]
            barrier.wait()
            started = time.perf_counter()
            result = measure(client.stream("bench", messages, max_tokens=tokens, temperature=0), started)
            results[i] = (started, time.perf_counter(), result)
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join()
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    generated = sum(r[2].completion_tokens for r in results)
    return {"aggregate": generated / (end - start), "ttft": [r[2].ttft for r in results],
            "decode": [r[2].decode_tps for r in results], "generated": generated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", type=Path, default=ROOT / "build" / "llama.cpp" / "bin" / "llama-server")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", choices=["small", "bench"], default="bench")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.llama_server.is_file():
        sys.exit(f"{args.llama_server} not found: run `make llama-server` first")
    path = args.model or synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)

    servers = {}
    procs = []
    try:
        proc, servers["llamabridge"] = start_llamabridge(path, args.clients, args.threads)
        procs.append(proc)
        proc, servers["llama-server"] = start_llama_server(args.llama_server, path, args.clients, args.threads, N_CTX)
        procs.append(proc)
        for url in servers.values():          # warm up: weights paged in, first-request costs paid
            streams(url, 1, 8, "warm")
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        singles: dict[str, list[dict]] = {name: [] for name in servers}
        for rep in range(args.reps):
            for name, url in servers.items():
                wait_until_idle(procs)        # the other server's threads may still spin (server_stream.py)
                runs[name].append(streams(url, args.clients, args.tokens, f"{name} rep {rep}"))
                wait_until_idle(procs)
                singles[name].append(streams(url, 1, args.tokens, f"{name} single {rep}"))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)

    print(f"model {path.name} ({path.stat().st_size / 1e6:.1f} MB), {args.clients} concurrent streams x "
          f"{args.tokens} tokens, {args.threads} threads, median of {args.reps}")
    print(f"{'':14} {'aggregate tok/s':>16} {'single tok/s':>13} {'TTFT median ms':>15} {'TTFT max ms':>12}")
    summary = {}
    for name in servers:
        aggregate = statistics.median(r["aggregate"] for r in runs[name])
        single = statistics.median(statistics.median(r["decode"]) for r in singles[name])
        ttfts = [t for r in runs[name] for t in r["ttft"]]
        summary[name] = (aggregate, single)
        print(f"{name:14} {aggregate:16.1f} {single:13.1f} {statistics.median(ttfts) * 1000:15.1f} "
              f"{max(ttfts) * 1000:12.1f}")
    lb, ls = summary["llamabridge"], summary["llama-server"]
    print(f"llamabridge / llama-server, {args.clients} streams: {lb[0] / ls[0]:.2f}x; "
          f"single stream: {lb[1] / ls[1]:.2f}x")
    print(f"llamabridge {args.clients} streams / its single stream: {lb[0] / lb[1]:.2f}x")


if __name__ == "__main__":
    main()
