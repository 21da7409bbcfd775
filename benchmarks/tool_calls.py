"""Streamed tokens per second while a tool call is written (the lazy tool-call grammar active) next to plain
text, llamabridge next to llama-server (built from the same tree: `make llama-server`), same model, same
requests, same run.

    make bench-tools
    uv run python benchmarks/tool_calls.py --tool-caller    # grammar misses: the suite's tool-calling model
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from server_stream import start_llama_server, start_server, wait_until_idle  # noqa: E402

from llamabridge import synthetic  # noqa: E402
from llamabridge.cli.bench_runner import measure  # noqa: E402
from llamabridge.cli.client import RemoteChat  # noqa: E402
from llamabridge.engine import ToolCallDelta, ToolCallStart  # noqa: E402
from llamabridge.synthetic import families  # noqa: E402


def stream(client: RemoteChat, case: families.Case) -> tuple[float, list]:
    """(decode tokens/s, the tool calls) of one streamed answer."""
    calls: dict[int, list[str]] = {}

    def noting(events):
        for event in events:
            if isinstance(event, ToolCallStart):
                calls[event.index] = [event.name, ""]
            elif isinstance(event, ToolCallDelta):
                calls[event.index][1] += event.arguments
            yield event

    events = client.stream("m", list(case.messages), max_tokens=600, temperature=0, thinking=case.thinking,
                           tools=list(case.tools))
    result = measure(noting(events), time.perf_counter())
    return result.decode_tps, [(name, _parsed(arguments)) for _, (name, arguments) in sorted(calls.items())]


def _parsed(arguments: str):
    """A call's arguments as JSON, or as sent when they do not parse (cut by max_tokens)."""
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="qwen3-coder", choices=sorted(families.FAMILIES))
    parser.add_argument("--tool-caller", action="store_true",
                        help="instead of a family model, the suite's tool-calling Qwen3 model (synthetic "
                             "QWEN3_TOOL_CALLER): it opens a call and then prefers to end its turn, so under the "
                             "grammar nearly every token is one the model did not want (a grammar miss)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--llama-server", type=Path, default=ROOT / "build" / "llama.cpp" / "bin" / "llama-server")
    args = parser.parse_args()
    if args.tool_caller:
        path, scripted, label = synthetic.ensure_model(synthetic.QWEN3_TOOL_CALLER), None, "tool-caller"
    else:
        path, scripted = families.ensure_family_model(families.FAMILIES[args.family])
        label = args.family

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
        clients = {name: RemoteChat(url, "openai") for name, url in servers.items()}
        rates: dict[tuple[str, str], list[float]] = {}
        calls: dict[str, list] = {}
        cases = ("calls",) if args.tool_caller else ("calls", "plain")   # its plain answer: one token
        for case_name in cases:
            case = families.CASES[case_name]
            for _ in range(args.reps):
                for name, client in clients.items():
                    wait_until_idle(procs)
                    rate, parsed = stream(client, case)
                    rates.setdefault((case_name, name), []).append(rate)
                    if case_name == "calls":
                        calls[name] = parsed
        print(f"{label}: decode tokens/s while streaming, median of {args.reps} (llamabridge's default "
              "stream interval)")
        for case_name in cases:
            ours = statistics.median(rates[case_name, "llamabridge"])
            line = f"  {case_name:6s} llamabridge {ours:8.1f}"
            if "llama-server" in servers:
                theirs = statistics.median(rates[case_name, "llama-server"])
                line += f"   llama-server {theirs:8.1f}   ratio {ours / theirs:.2f}x"
            print(line)
        want = families.tool_calls(scripted.answers["calls"]) if scripted is not None else None
        for name, got in calls.items():
            if want is None:
                print(f"  {name}: tool calls {str(got)[:200]}")
                continue
            print(f"  {name}: tool calls {'as scripted' if got == want else f'DIFFER: {got}'}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
