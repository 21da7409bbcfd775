"""Streaming speed through the HTTP server (both APIs) next to the engine's own loop, same model, same run.

    uv run python benchmarks/server_stream.py [--model PATH | --size small|bench] [--tokens 256] [--reps 5]

Time to first token: from sending the request to the first content delta (the server:
HTTP + JSON + templating + prompt evaluation; the engine: Cache.chat from the call).
Decode tokens/s: completion tokens over the time from the first to the last delta.
Every run uses a new prompt, so no prefix is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamabridge import synthetic  # noqa: E402
from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Model, TextDelta, ReasoningDelta  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, n_ctx: int):
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "llamabridge"), "serve", "--model", str(model),
                             "--port", str(port), "--n-ctx", str(n_ctx)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    while "ready in" not in lines.get(timeout=600):
        pass
    return proc, f"http://127.0.0.1:{port}"


def measure_stream(http: httpx.Client, path: str, body: dict, is_delta) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = last = None
    n = 0
    with http.stream("POST", path, json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            data = json.loads(line[5:])
            if is_delta(data):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    return first - start, (n - 1) / (last - first) if n > 1 and last > first else 0.0, n


def anthropic_delta(data: dict) -> bool:
    return data.get("type") == "content_block_delta"


def openai_delta(data: dict) -> bool:
    choices = data.get("choices") or []
    delta = choices[0].get("delta", {}) if choices else {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))


def engine(model: Model, tokens: int, reps: int) -> tuple[list, list]:
    ttft, rates = [], []
    with model.cache(CacheParams(n_ctx=4096)) as cache:
        for i in range(reps):
            request = ChatRequest([{"role": "user", "content": f"engine run {i}: tell me a long story"}],
                                  sampling=GREEDY, max_tokens=tokens)
            start = time.perf_counter()
            first = last = None
            n = 0
            for event in cache.chat(request):
                if isinstance(event, (TextDelta, ReasoningDelta)):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    n += 1
            ttft.append(first - start)
            rates.append((n - 1) / (last - first))
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
    with Model(path) as model:
        results["engine Cache.chat"] = engine(model, args.tokens, args.reps)
    proc, url = start_server(path, 4096)
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            for api, route, is_delta in (("anthropic /v1/messages", "/v1/messages", anthropic_delta),
                                         ("openai /v1/chat/completions", "/v1/chat/completions", openai_delta)):
                ttft, rates = [], []
                for i in range(args.reps):
                    body = {"model": "bench", "max_tokens": args.tokens, "stream": True, "temperature": 0,
                            "messages": [{"role": "user", "content": f"{api} run {i}: tell me a long story"}]}
                    first, rate, _ = measure_stream(http, route, body, is_delta)
                    ttft.append(first)
                    rates.append(rate)
                results[api] = (ttft, rates)
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"model {path.name} ({path.stat().st_size / 1e6:.1f} MB), {args.tokens} tokens, median of {args.reps}")
    print(f"{'':30} {'TTFT ms':>9} {'decode tok/s':>13}")
    for name, (ttft, rates) in results.items():
        print(f"{name:30} {statistics.median(ttft) * 1000:9.1f} {statistics.median(rates):13.1f}")


if __name__ == "__main__":
    main()
