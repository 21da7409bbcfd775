"""Two caches decoding at once (Claude Code's side requests on a `*haiku*` cache beside the main one)
next to the same two requests one after the other, same model, same run.

    make bench
    uv run python benchmarks/two_caches.py [--size small|bench] [--tokens 128] [--threads N] [--reps 3]

Each cache has its own llama_context and its default threads (the physical cores), so at once their
decode threads outnumber the cores. The build's threading decides what that costs: OpenMP's waits
back off, while ggml's own pool (a build with GGML_OPENMP=OFF) spins at every barrier for a thread
the scheduler put aside, which made 2 x 128 tokens take 5.5-6.3 s at once against 0.4 s one after
the other on 2 cores. "at once / one after the other" near 1 or below is what a build should show.
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

from llamabridge import synthetic  # noqa: E402
from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Model  # noqa: E402


def request(tag: str, tokens: int) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": f"{tag} {time.time_ns()}: tell me a long story"}],
                       sampling=GREEDY, max_tokens=tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["small", "bench"], default="small")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="decode threads per cache (0 = physical cores)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    path = synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)

    params = CacheParams(n_ctx=2048, n_threads=args.threads)
    sequential, concurrent = [], []
    with Model(path) as model, model.cache(params, name="main") as main_cache, \
            model.cache(params, name="haiku") as side_cache:
        caches = (main_cache, side_cache)
        for cache in caches:                               # warm up
            cache.complete(request("warm", 8))
        for rep in range(args.reps):
            started = time.perf_counter()
            for cache in caches:
                cache.complete(request(f"{cache.name} alone {rep}", args.tokens))
            sequential.append(time.perf_counter() - started)

            threads = [threading.Thread(target=cache.complete, args=(request(f"{cache.name} at once {rep}",
                                                                              args.tokens),))
                       for cache in caches]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            concurrent.append(time.perf_counter() - started)
        n_threads = main_cache.params.n_threads

    one, both = statistics.median(sequential), statistics.median(concurrent)
    print(f"model {path.name} ({path.stat().st_size / 1e6:.1f} MB), 2 caches x {args.tokens} tokens, "
          f"{n_threads} threads each, median of {args.reps}")
    print(f"one after the other {one * 1000:8.0f} ms")
    print(f"at once             {both * 1000:8.0f} ms")
    print(f"at once / one after the other: {both / one:.2f}")


if __name__ == "__main__":
    main()
