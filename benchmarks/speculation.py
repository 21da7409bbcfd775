"""Speculative decoding (n-gram drafts, a draft model) next to no speculation, llamabridge next to llama-server
(built from the same tree: `make llama-server`), same models, same requests, same run.

    make bench-spec
    uv run python benchmarks/speculation.py [--types ngram-mod,ngram-simple,draft] [--reps 3] [--llama-server PATH]

- edit: a model shaped like a 0.5B one (24 layers, 896 wide, float16) whose greedy answer is a "file" of
  ~850 tokens that its prompt already holds with a few words changed: the shape of Claude Code's Write/Edit
  and Codex's apply_patch, where an answer repeats what the agent just read. (The scripted model is a bigram
  chain, so the file's tokens are all distinct: no line breaks.) Streamed decode tokens/s, one stream, then
  4 parallel streams (aggregate tokens/s over the wall time).
- draft (the type "draft"): the edit, drafted by the same script in 2 layers (llama-server -md; llama.cpp's
  draft sizes on both).
- nothing to find: the random 0.5B-shaped model, whose text never repeats its prompt: what drafting that
  never hits costs.

Each server runs once per speculation type (and once without); runs alternate between the servers, each
started once both are idle. Both must answer the edit with the scripted file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from parallel_stream import streams  # noqa: E402
from server_stream import start_llama_server, start_server, wait_until_idle  # noqa: E402

from llamabridge import synthetic  # noqa: E402
from llamabridge.cli.bench_runner import measure  # noqa: E402
from llamabridge.cli.client import RemoteChat  # noqa: E402
from llamabridge.engine import Model  # noqa: E402

N_CTX = 4096
FILE_TOKENS = 850
EDITS = (97, 311, 502, 733)          # the words of the file the prompt has otherwise


def file_words() -> list[str]:
    """FILE_TOKENS + len(EDITS) distinct words, each one token of the Qwen vocabulary (with its space)."""
    with Model(synthetic.ensure_model(synthetic.QWEN3)) as model:
        native, words, seen = model.native, [], set()
        for token in range(20000, model.n_vocab):
            piece = native.token_to_piece(token)
            if not (piece.startswith(b" ") and piece[1:].isalpha() and piece[1:].islower() and len(piece) >= 5):
                continue
            word = piece.decode()
            if model.tokenize(word, parse_special=False) == [token] and token not in seen:
                words.append(word)
                seen.add(token)
            if len(words) == FILE_TOKENS + len(EDITS):
                return words
    raise RuntimeError("not enough single-token words in the vocabulary")


def edit_model() -> tuple[Path, Path, str, str]:
    """The edit model, its draft model (the same script in 2 layers), the file it answers with and the prompt
    (the file with EDITS changed)."""
    words = file_words()
    reply, spare = words[:FILE_TOKENS], words[FILE_TOKENS:]
    before = list(reply)
    for position, word in zip(EDITS, spare):
        before[position] = word
    spec = replace(synthetic.QWEN3_BENCH, reply="".join(reply).lstrip(), n_embd=896)
    prompt = "Here is the file:\n" + "".join(before).lstrip() + "\n\nFix it and write the whole file back."
    draft = synthetic.ensure_model(replace(spec, n_layer=2))
    return synthetic.ensure_model(spec), draft, spec.reply, prompt


def one_stream(url: str, prompt: str, max_tokens: int) -> tuple[float, str]:
    client = RemoteChat(url, "openai")
    events = client.stream("m", [{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0)
    result = measure(events, time.perf_counter())
    return result.decode_tps, result.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default="ngram-mod,ngram-simple,draft",
                        help="speculation types, each measured alone (draft: the draft model, on the edit)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--llama-server", type=Path, default=ROOT / "build" / "llama.cpp" / "bin" / "llama-server")
    args = parser.parse_args()
    edit_path, draft_path, reply, edit_prompt = edit_model()
    random_path = synthetic.ensure_model(synthetic.QWEN3_BENCH)
    kinds = ["off", *[t.strip() for t in args.types.split(",") if t.strip()]]
    workloads = {"edit": (edit_path, edit_prompt, FILE_TOKENS + 8), "nothing to find": (random_path, "Hi", 256)}
    results: dict[tuple[str, str, str], list[float]] = {}
    texts: dict[tuple[str, str], str] = {}
    for workload, (path, prompt, max_tokens) in workloads.items():
        for kind in kinds:
            if kind == "draft" and workload != "edit":
                continue
            procs, servers = [], {}
            try:
                ours = [] if kind == "off" else ["--draft-model", str(draft_path)] if kind == "draft" else \
                    ["--speculative", kind]
                proc, servers["llamabridge"] = start_server(path, N_CTX, "--n-threads", str(args.threads),
                                                            "--n-parallel", str(args.parallel), *ours)
                procs.append(proc)
                if args.llama_server.exists():
                    theirs = [] if kind == "off" else ["-md", str(draft_path)] if kind == "draft" else \
                        ["--spec-type", kind]
                    proc, servers["llama-server"] = start_llama_server(args.llama_server, path, args.parallel,
                                                                       args.threads, N_CTX, *theirs)
                    procs.append(proc)
                for _ in range(args.reps):
                    for name, url in servers.items():
                        wait_until_idle(procs)
                        rate, text = one_stream(url, prompt, max_tokens)
                        results.setdefault((workload, kind, name), []).append(rate)
                        texts[(workload, name)] = text
                if workload == "edit":
                    for name, url in servers.items():
                        wait_until_idle(procs)
                        rate = streams(url, args.parallel, max_tokens, name, prompt)["aggregate"]
                        results.setdefault((f"edit x{args.parallel}", kind, name), []).append(rate)
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait()
    names = ["llamabridge", "llama-server"] if args.llama_server.exists() else ["llamabridge"]
    print(f"decode tokens/s, streamed (median of {args.reps}; parallel: one run), {args.threads} threads")
    for workload in (*workloads, f"edit x{args.parallel}"):
        print(f"{workload}:")
        for kind in kinds:
            if (workload, kind, "llamabridge") not in results:
                continue
            line = f"  {kind:14s}"
            for name in names:
                rate = statistics.median(results[(workload, kind, name)])
                off = statistics.median(results[(workload, "off", name)])
                line += f"  {name} {rate:8.1f} ({rate / off:4.2f}x off)"
            if len(names) == 2:
                ours, theirs = (statistics.median(results[(workload, kind, n)]) for n in names)
                line += f"  ratio {ours / theirs:.2f}x"
            print(line)
    for name in names:
        print(f"  {name}: the edit answered {'as scripted' if texts[('edit', name)] == reply else 'DIFFERENTLY'}")


if __name__ == "__main__":
    main()
