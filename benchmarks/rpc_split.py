"""A model split over two rpc-servers on loopback (llama.cpp's RPC backend) next to the same model local, and
next to llama-server --rpc over its own two rpc-servers, same tree, same model, same run.

    make bench-rpc
    uv run python benchmarks/rpc_split.py [--model PATH | --size small|bench] [--tokens 128] [--reps 3]
        [--llama-server build/llama.cpp/bin/llama-server]

Every layer goes to the rpc-servers (`--n-gpu-layers all --tensor-split 1,1`, llama-server `-ngl 99 -ts 1,1`):
on one machine that measures what the RPC path costs (serialization, loopback TCP, a round trip per graph)
over computing the same layers in process. An rpc-server serves one client at a time, so each server gets
its own pair. Runs alternate between the servers (each run once all are idle), streamed through
/v1/chat/completions; decode tokens/s as in server_stream.py, and the ratio llamabridge / llama-server
over the same rpc setup is the goal's number (>= 1.0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from server_stream import run, start_llama_server, start_server, wait_until_idle  # noqa: E402

from llamabridge import synthetic  # noqa: E402
from llamabridge.cli.bench_runner import remote_runner  # noqa: E402
from llamabridge.cli.client import RemoteChat  # noqa: E402
from llamabridge.engine import rpc  # noqa: E402
from llamabridge.errors import ModelLoadError  # noqa: E402
from llamabridge.server.background import free_port  # noqa: E402


def start_rpc_server(cache: Path):
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "llamabridge"), "rpc-server", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "LLAMA_CACHE": str(cache)})
    endpoint = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            rpc.probe(endpoint)
            return proc, endpoint
        except ModelLoadError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", choices=["small", "bench"], default="small")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--llama-server", type=Path, default=ROOT / "build" / "llama.cpp" / "bin" / "llama-server")
    args = parser.parse_args()
    path = args.model or synthetic.ensure_model(synthetic.QWEN3 if args.size == "small" else synthetic.QWEN3_BENCH)
    cache = ROOT / ".cache" / "rpc-bench"
    cache.mkdir(parents=True, exist_ok=True)
    n_ctx = 4096

    procs, servers = [], {}
    try:
        ours = [start_rpc_server(cache) for _ in range(2)]
        procs += [p for p, _ in ours]
        proc, servers["llamabridge local"] = start_server(path, n_ctx, "--n-threads", str(args.threads),
                                                          "--state-dir", "")
        procs.append(proc)
        proc, servers["llamabridge rpc"] = start_server(path, n_ctx, "--n-threads", str(args.threads), "--state-dir",
                                                        "", "--rpc", ",".join(e for _, e in ours),
                                                        "--n-gpu-layers", "all", "--tensor-split", "1,1")
        procs.append(proc)
        if args.llama_server.exists():
            theirs = [start_rpc_server(cache) for _ in range(2)]
            procs += [p for p, _ in theirs]
            proc, servers["llama-server rpc"] = start_llama_server(
                args.llama_server, path, 1, args.threads, n_ctx, "--rpc", ",".join(e for _, e in theirs),
                "-ngl", "99", "-ts", "1,1")
            procs.append(proc)
        else:
            print(f"{args.llama_server} not found (make llama-server): llamabridge alone")
        rates: dict[str, list[float]] = {name: [] for name in servers}
        for rep in range(args.reps):
            for name, url in servers.items():
                wait_until_idle(procs)
                client = RemoteChat(url, "openai")
                try:
                    rates[name] += run(remote_runner(client, "bench"), f"{name} {rep}", args.tokens, 1)[1]
                finally:
                    client.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)

    print(f"model {path.name} ({path.stat().st_size / 1e6:.1f} MB), {args.tokens} tokens, median of {args.reps}, "
          "streamed /v1/chat/completions")
    for name, values in rates.items():
        print(f"{name:24} {statistics.median(values):8.1f} decode tok/s")
    local, split = statistics.median(rates["llamabridge local"]), statistics.median(rates["llamabridge rpc"])
    print(f"llamabridge rpc / local: {split / local:.2f}x")
    if "llama-server rpc" in rates:
        print(f"llamabridge rpc / llama-server rpc: {split / statistics.median(rates['llama-server rpc']):.2f}x")


if __name__ == "__main__":
    main()
