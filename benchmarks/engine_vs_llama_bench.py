"""Decode and prefill speed of the llamabridge engine next to llama-bench, same tree, same run.

    uv run python benchmarks/engine_vs_llama_bench.py [--model PATH | --size small|bench] [--tokens 128]

`small` is the ~20 MB synthetic test model, `bench` a synthetic model shaped like a 0.5B
Qwen (generated once, ~1 GB). Reports tokens/s for: llama-bench (pp/tg), the raw _core loop
(sample + decode per token), and the full engine path (Cache.chat: template, sampler,
detokenizing, stop strings, incremental parsing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamabridge import _core, synthetic  # noqa: E402
from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Model  # noqa: E402


def llama_bench(model: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    binary = Path(os.environ.get("LLAMA_BUILD_DIR") or ROOT / "build" / "llama.cpp") / "bin" / "llama-bench"
    if not binary.exists():
        return {"error": f"{binary} not built (make libs)"}
    out = subprocess.run(
        [str(binary), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
         "-r", str(reps), "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    results = {}
    for row in json.loads(out):
        kind = "prefill" if row["n_prompt"] else "decode"
        results[kind] = row["avg_ts"]
    return results


def raw_loop(model: Model, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    native = model.native
    prompt = (native.tokenize("the quick brown fox jumps over the lazy dog " * 200))[:n_prompt]
    prefill, decode = [], []
    with _core.Context(native, n_ctx=64, n_threads=threads) as warm:   # as llama-bench does: touch the weights first
        warm.decode(prompt[:16], 0)
    for _ in range(reps):
        with _core.Context(native, n_ctx=n_prompt + n_gen + 16, n_batch=n_prompt, n_ubatch=512,
                           n_threads=threads) as ctx:
            start = time.perf_counter()
            ctx.decode(prompt, 0)
            prefill.append(n_prompt / (time.perf_counter() - start))
            sampler = _core.Sampler(native, {"temperature": 0.0})
            pos = n_prompt
            start = time.perf_counter()
            for _ in range(n_gen):
                token = sampler.sample_accept(ctx)
                ctx.decode_one(token, pos)
                pos += 1
            decode.append(n_gen / (time.perf_counter() - start))
            sampler.close()
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode)}


def engine_chat(model: Model, threads: int, n_gen: int, reps: int) -> dict:
    rates, generated = [], []
    with model.cache(CacheParams(n_ctx=4096, n_threads=threads)) as cache:
        for i in range(reps):
            request = ChatRequest([{"role": "user", "content": f"Write a long story number {i}."}],
                                  sampling=GREEDY, max_tokens=n_gen)
            done = cache.complete(request)
            rates.append(done.timings.decode_tokens_per_second(done.usage.completion_tokens))
            generated.append(done.usage.completion_tokens)
    return {"decode": statistics.median(rates), "tokens": generated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", choices=["small", "bench"], default="small")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    path = args.model or synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)

    with Model(path) as model:
        info = {"model": str(path), "size_mb": round(path.stat().st_size / 1e6, 1), "threads": args.threads}
        bench = llama_bench(path, args.threads, args.prompt, args.tokens, args.reps)
        raw = raw_loop(model, args.threads, args.prompt, args.tokens, args.reps)
        _core.release_compute_threads()   # this thread computed; a cache computes on its worker (see shim/threads.cpp)
        chat = engine_chat(model, args.threads, args.tokens, args.reps)
    rows = [
        ("llama-bench", bench.get("prefill"), bench.get("decode")),
        ("llamabridge _core loop", raw["prefill"], raw["decode"]),
        ("llamabridge Cache.chat", None, chat["decode"]),
    ]
    print(f"model {info['model']} ({info['size_mb']} MB), {args.threads} threads, "
          f"pp{args.prompt} / tg{args.tokens}, median of {args.reps}")
    print(f"{'':26} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for name, pp, tg in rows:
        print(f"{name:26} {pp or float('nan'):14.1f} {tg or float('nan'):13.1f}")
    print(json.dumps({"info": info, "llama_bench": bench, "core_loop": raw, "cache_chat": chat}))


if __name__ == "__main__":
    main()
