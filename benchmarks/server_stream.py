"""Streaming speed through the HTTP server (both APIs) next to the engine's own loop, same model, same run.

    uv run python benchmarks/server_stream.py [--model PATH | --size small|bench] [--tokens 256] [--reps 5]

Time to first token: from the call to the first generated delta (the server: HTTP + JSON +
templating + prompt evaluation; the engine: Cache.chat from the call). Decode tokens/s:
completion tokens over the time from the first to the last delta. Every run uses a new
prompt, so no prefix is reused. Measured with the same code as `llamabridge bench`.
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
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    while "ready in" not in lines.get(timeout=600):
        pass
    return proc, f"http://127.0.0.1:{port}"


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
    args = parser.parse_args()
    path = args.model or synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)

    results = {}
    with Model(path) as model, model.cache(CacheParams(n_ctx=4096)) as cache:
        results["engine Cache.chat"] = run(engine_runner(cache), "engine", args.tokens, args.reps)
    proc, url = start_server(path, 4096)
    try:
        for api, label in (("anthropic", "anthropic /v1/messages"), ("openai", "openai /v1/chat/completions")):
            client = RemoteChat(url, api)
            try:
                results[label] = run(remote_runner(client, "bench"), label, args.tokens, args.reps)
            finally:
                client.close()
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"model {path.name} ({path.stat().st_size / 1e6:.1f} MB), {args.tokens} tokens, median of {args.reps}")
    print(f"{'':30} {'TTFT ms':>9} {'decode tok/s':>13}")
    for name, (ttft, rates) in results.items():
        print(f"{name:30} {statistics.median(ttft) * 1000:9.1f} {statistics.median(rates):13.1f}")


if __name__ == "__main__":
    main()
