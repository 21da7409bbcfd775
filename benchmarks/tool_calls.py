"""Streamed tokens per second while a tool call is written (the lazy tool-call grammar active) next to plain
text, llamabridge next to llama-server (built from the same tree: `make llama-server`), same model, same
requests, same run.

    make bench-tools
    uv run python benchmarks/tool_calls.py [--family qwen3-coder] [--reps 5] [--llama-server PATH]

The model is a family model (llamabridge.synthetic.families): its greedy answer to the "calls" conversation
is two parallel tool calls in the family's own syntax (about 110 tokens of nested, unicode and code
arguments), to "plain" a sentence. Both servers get the same OpenAI chat request with the tools, streamed;
decode tokens/s is the completion tokens over the time from the first delta to the last. Runs alternate
between the servers, each started once both are idle (server_stream.py). Afterwards the tool calls each
server returned must be the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from server_stream import start_llama_server, start_server, wait_until_idle  # noqa: E402

from llamabridge.synthetic import families  # noqa: E402


def stream(url: str, case: families.Case) -> tuple[float, int, list]:
    """(decode tokens/s, completion tokens, the tool calls) of one streamed answer."""
    body = {"model": "m", "messages": list(case.messages), "tools": list(case.tools), "stream": True,
            "temperature": 0, "max_tokens": 600, "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"enable_thinking": case.thinking}}
    first = last = None
    tokens, calls = 0, {}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
            for choice in data.get("choices", ()):
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                for piece in delta.get("tool_calls") or ():
                    call = calls.setdefault(piece["index"], {"name": "", "arguments": ""})
                    call["name"] += (piece.get("function") or {}).get("name") or ""
                    call["arguments"] += (piece.get("function") or {}).get("arguments") or ""
    parsed = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    rate = (tokens - 1) / (last - first) if first and last and last > first else float("nan")
    return rate, tokens, parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="qwen3-coder", choices=sorted(families.FAMILIES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--llama-server", type=Path, default=ROOT / "build" / "llama.cpp" / "bin" / "llama-server")
    args = parser.parse_args()
    path, scripted = families.ensure_family_model(families.FAMILIES[args.family])

    procs, servers = [], {}
    try:
        proc, servers["llamabridge"] = start_server(path, 8192, "--n-threads", str(args.threads))
        procs.append(proc)
        if args.llama_server.exists():
            proc, servers["llama-server"] = start_llama_server(args.llama_server, path, 1, args.threads, 8192,
                                                               "--jinja")
            procs.append(proc)
        else:
            print(f"{args.llama_server} not built (make llama-server): llamabridge alone")
        rates: dict[tuple[str, str], list[float]] = {}
        calls: dict[str, list] = {}
        for case_name in ("calls", "plain"):
            case = families.CASES[case_name]
            for _ in range(args.reps):
                for name, url in servers.items():
                    wait_until_idle(procs)
                    rate, tokens, parsed = stream(url, case)
                    rates.setdefault((case_name, name), []).append(rate)
                    if case_name == "calls":
                        calls[name] = parsed
        print(f"{args.family}: decode tokens/s while streaming, median of {args.reps} (llamabridge's default "
              "stream interval)")
        for case_name in ("calls", "plain"):
            ours = statistics.median(rates[case_name, "llamabridge"])
            line = f"  {case_name:6s} llamabridge {ours:8.1f}"
            if "llama-server" in servers:
                theirs = statistics.median(rates[case_name, "llama-server"])
                line += f"   llama-server {theirs:8.1f}   ratio {ours / theirs:.2f}x"
            print(line)
        want = families.tool_calls(scripted.answers["calls"])
        for name, got in calls.items():
            print(f"  {name}: tool calls {'as scripted' if got == want else f'DIFFER: {got}'}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
