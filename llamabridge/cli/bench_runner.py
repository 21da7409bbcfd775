"""Benchmarks: startup, cold and hot first response, prefill and decode speed; an agent-session replay.

Local runs drive the engine directly; `url` runs go through a server's HTTP API with the
same measurements, so llamabridge can be compared with another server on the same model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..engine.request import Done, Event, ReasoningDelta, TextDelta, ToolCallDelta

FILLER = ("The repository contains a Python web service with a plugin system, a test suite and "
          "a build pipeline. Each module documents its public functions and raises typed errors. ")


def filler_text(tokens: int) -> str:
    """Roughly `tokens` tokens of plausible English (about 4.5 characters a token)."""
    text = FILLER * (tokens * 9 // (2 * len(FILLER)) + 1)
    return text[: tokens * 9 // 2]


@dataclass
class Measure:
    """One request, as seen by its caller."""

    ttft: float                  # seconds from the call to the first generated text
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    prompt_seconds: float        # engine-reported; 0 when unknown (HTTP)
    decode_tps: float
    text: str = ""
    draft_accepted: int = 0      # generated tokens that were drafted (speculative decoding), engine-reported

    @property
    def tokens_per_step(self) -> float:
        """Tokens generated per decode step: 1 plus the draft tokens accepted per step."""
        steps = self.completion_tokens - self.draft_accepted
        return self.completion_tokens / steps if steps > 0 else 1.0

    @property
    def prefill_tps(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        seconds = self.prompt_seconds or self.ttft
        return evaluated / seconds if seconds > 0 else 0.0


def measure(events: Iterable[Event], started: float) -> Measure:
    first = last = None
    n = 0
    text = []
    done: Done | None = None
    for event in events:
        if isinstance(event, (TextDelta, ReasoningDelta, ToolCallDelta)):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
            if isinstance(event, TextDelta):
                text.append(event.text)
        elif isinstance(event, Done):
            done = event
    if done is None:
        raise RuntimeError("the generation ended without a Done event")
    end = time.perf_counter()
    first = first or end
    decode = (done.usage.completion_tokens - 1) / (last - first) if last and last > first else 0.0
    return Measure(first - started, done.usage.prompt_tokens, done.usage.cached_tokens, done.usage.completion_tokens,
                   done.timings.prompt_seconds, decode, "".join(text), done.draft_accepted)


@dataclass
class Stat:
    median: float
    spread: float    # half the range (max - min) / 2
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        return cls(statistics.median(values), (max(values) - min(values)) / 2, list(values))

    def show(self, scale: float = 1.0, digits: int = 1) -> str:
        if len(self.values) < 2:
            return f"{self.median * scale:.{digits}f}"
        return f"{self.median * scale:.{digits}f} ±{self.spread * scale:.{digits}f}"


@dataclass
class BenchResult:
    name: str
    size_bytes: int | None
    quant: str
    startup: Stat | None
    cold: Stat
    hot: Stat
    prefill_tps: Stat
    decode_tps: Stat
    prompt_tokens: int
    hot_reused: int
    tokens_per_step: Stat | None = None     # with speculative decoding: 1 + draft tokens accepted per step

    def to_json(self) -> dict:
        return asdict(self)


Runner = Callable[[list[dict], str, int], Iterator[Event]]   # (messages, system, max_tokens) -> events


def bench_runner(name: str, run: Runner, reps: int, prompt_tokens: int, gen_tokens: int,
                 clear: Callable[[], None] | None, size_bytes: int | None = None, quant: str = "",
                 startup: list[float] | None = None, speculative: bool = False) -> BenchResult:
    """Cold (nothing reused) then hot (same prompt plus one turn) requests, `reps` times; `speculative`: the
    runner's engine drafts (tokens per step measured)."""
    colds, hots = [], []
    for rep in range(reps):
        if clear is not None:
            clear()
        # a new first line each time, so no run reuses another's prompt on a server we cannot clear
        system = f"Session {rep} {time.time_ns()}. You are a careful coding assistant. " + filler_text(prompt_tokens)
        first = [{"role": "user", "content": "Summarise the repository in three sentences."}]
        started = time.perf_counter()
        cold = measure(run(first, system, gen_tokens), started)
        second = first + [{"role": "assistant", "content": cold.text or "The repository is a web service."},
                          {"role": "user", "content": "Now list its main modules."}]
        started = time.perf_counter()
        hot = measure(run(second, system, gen_tokens), started)
        colds.append(cold)
        hots.append(hot)
    return BenchResult(
        name=name, size_bytes=size_bytes, quant=quant, startup=Stat.of(startup) if startup else None,
        cold=Stat.of([m.ttft for m in colds]), hot=Stat.of([m.ttft for m in hots]),
        prefill_tps=Stat.of([m.prefill_tps for m in colds]),
        decode_tps=Stat.of([m.decode_tps for m in colds + hots if m.decode_tps > 0] or [0.0]),
        prompt_tokens=colds[-1].prompt_tokens, hot_reused=hots[-1].cached_tokens,
        tokens_per_step=Stat.of([m.tokens_per_step for m in colds + hots]) if speculative else None,
    )


def engine_runner(cache, thinking: bool = False) -> Runner:
    from ..engine import GREEDY, ChatRequest, ThinkingParams

    def run(messages, system, max_tokens):
        request = ChatRequest(([{"role": "system", "content": system}] if system else []) + messages, sampling=GREEDY,
                              max_tokens=max_tokens, thinking=ThinkingParams(enabled=thinking),
                              clamp_max_tokens=True)
        return cache.chat(request)
    return run


def remote_runner(client, model: str) -> Runner:
    def run(messages, system, max_tokens):
        return client.stream(model, messages, system=system, max_tokens=max_tokens, temperature=0)
    return run


def bench_local(config, reps: int, prompt_tokens: int, gen_tokens: int, progress=None) -> list[BenchResult]:
    """Every cache of a config: its model loaded fresh (startup timed), then cold/hot runs."""
    from ..engine import Model
    from ..runtime.model_files import resolve_model_path

    results = []
    for cache_cfg in config.caches.values():
        model_cfg = config.models[cache_cfg.model]
        path = resolve_model_path(model_cfg.path)
        if progress:
            progress(f"{cache_cfg.name}: loading {path.name}")
        started = time.perf_counter()
        draft = None
        if cache_cfg.params.draft_model:
            draft_cfg = config.models[cache_cfg.params.draft_model]
            draft = Model(resolve_model_path(draft_cfg.path), draft_cfg.params, name=draft_cfg.name,
                          caches=[cache_cfg.params])
        model = Model(path, model_cfg.params, name=model_cfg.name, caches=[cache_cfg.params])
        try:
            cache = model.cache(cache_cfg.params, name=cache_cfg.name, draft=draft)
            startup = time.perf_counter() - started
            quant = model.native.description.split()[-1]
            results.append(bench_runner(f"{model_cfg.name}/{cache_cfg.name}", engine_runner(cache), reps,
                                        prompt_tokens, gen_tokens, cache.clear, Path(path).stat().st_size, quant,
                                        [startup], speculative=cache.speculation() is not None))
        finally:
            model.close()
            if draft is not None:
                draft.close()
    return results


# ---------------------------------------------------------------- agent scenario

AGENT_TOOLS = ["read_file", "write_file", "run_tests", "search_code", "list_directory", "git_diff", "run_command",
               "open_url"]


def agent_system(tokens: int) -> str:
    tools = "\n".join(f"- {name}(path: string, options: object): {FILLER}" for name in AGENT_TOOLS)
    return ("You are an autonomous coding agent working in a repository.\n\n# Tools\n" + tools
            + "\n\n# Guidelines\n" + filler_text(tokens))


@dataclass
class TurnResult:
    turn: int
    prompt_tokens: int
    reused_tokens: int
    ttft: float
    decode_tps: float
    background_ttft: float | None


def agent_scenario(client, model: str, background_model: str, turns: int, system_tokens: int,
                   gen_tokens: int) -> list[TurnResult]:
    """A growing agent session (long system prompt with tools, tool results between turns) with a
    background request on another model name between turns, as Claude Code's haiku calls are."""
    system = agent_system(system_tokens)
    messages: list[dict] = []
    results = []
    for turn in range(1, turns + 1):
        messages.append({"role": "user", "content": f"Step {turn}: inspect the next module and report problems."
                         if turn == 1 else f"Tool result for step {turn - 1}:\n{filler_text(150)}\n"
                                           f"Step {turn}: continue."})
        started = time.perf_counter()
        main = measure(client.stream(model, messages, system=system, max_tokens=gen_tokens, temperature=0), started)
        messages.append({"role": "assistant", "content": main.text or f"Checked step {turn}."})
        background = None
        if turn < turns:
            started = time.perf_counter()
            background = measure(client.stream(background_model, [{"role": "user", "content": messages[0]["content"]}],
                                               system="Write a 5-word title for this session.", max_tokens=16,
                                               temperature=0), started).ttft
        results.append(TurnResult(turn, main.prompt_tokens, main.cached_tokens, main.ttft, main.decode_tps,
                                  background))
    return results
