"""`llamabridge bench`: startup, cold/hot first response, prefill and decode speed, or an agent replay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import exit_on_error


def bench(
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="LLAMABRIDGE_MODEL",
                                                 help="GGUF file, directory, or path under models/.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Benchmark every cache of a config.")] = None,
    url: Annotated[Optional[str], typer.Option(help="Benchmark a running server over HTTP instead.")] = None,
    api: Annotated[str, typer.Option(help="API to use with --url: anthropic or openai.")] = "anthropic",
    name: Annotated[str, typer.Option(help="Model name sent in requests (--url, --scenario agent).")] =
        "claude-sonnet-4-5",
    reps: Annotated[int, typer.Option(min=1, help="Repetitions (median and ± half the range).")] = 3,
    prompt_tokens: Annotated[int, typer.Option(min=16, help="Approximate prompt length.")] = 1024,
    tokens: Annotated[int, typer.Option(min=2, help="Tokens to generate per request.")] = 128,
    n_ctx: Annotated[int, typer.Option(help="Context size with --model (0 = the model's own, within free "
                                            "memory).")] = 0,
    speculative: Annotated[str, typer.Option(
        help="With --model: speculative decoding's n-gram drafters (as serve's --speculative).")] = "",
    draft_model: Annotated[Optional[str], typer.Option(
        help="With --model: a draft model (GGUF path) drafting for it.", show_default=False)] = None,
    scenario: Annotated[str, typer.Option(help="basic, or agent: a multi-turn coding-agent session.")] = "basic",
    turns: Annotated[int, typer.Option(min=1, help="Turns of the agent scenario.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure startup, cold and hot first response, prefill and decode tokens/s.

    Examples:

      llamabridge bench --model models/Qwen3-8B-Q4_K_M.gguf

      llamabridge bench --model models/Qwen3-8B-Q4_K_M.gguf --draft-model models/Qwen3-0.6B-Q8_0.gguf

      llamabridge bench --config configs/claude-code.toml --reps 5 --json

      llamabridge bench --url http://127.0.0.1:8080 --api openai --name qwen3   # another server, same model

      llamabridge bench --config configs/claude-code.toml --scenario agent
    """
    from ..engine.params import CacheParams, ParamError
    from ..runtime.config import DRAFT_MODEL_NAME, load_config, single_model_config
    from .bench_runner import bench_local, bench_runner, remote_runner
    from .client import RemoteChat

    if api not in ("anthropic", "openai"):
        raise typer.BadParameter("must be anthropic or openai", param_hint="--api")
    if scenario not in ("basic", "agent"):
        raise typer.BadParameter("must be basic or agent", param_hint="--scenario")
    if sum(x is not None for x in (model, config, url)) != 1:
        raise typer.BadParameter("give exactly one of --model, --config or --url", param_hint="--model")

    def progress(message: str) -> None:
        typer.echo(message, err=True)

    with exit_on_error():
        server_config = None
        if config is not None:
            server_config = load_config(config)
        elif model is not None:
            try:
                cache = CacheParams(n_ctx=n_ctx, speculative=speculative,
                                    draft_model=DRAFT_MODEL_NAME if draft_model else "")
            except ParamError as exc:
                raise typer.BadParameter(exc.message, param_hint="--" + exc.field.replace("_", "-")) from None
            server_config = single_model_config(model, cache, draft_model=draft_model)
        if server_config is not None:    # nothing saved by an earlier run may be restored into this one
            server_config = dataclasses.replace(server_config,
                                                store=dataclasses.replace(server_config.store, state_dir=""))
        if scenario == "agent":
            turns_out = _run_agent(server_config, url, api, name, turns, prompt_tokens, tokens)
            _print_turns(turns_out, as_json)
            return
        if url is not None:
            client = RemoteChat(url, api)
            try:
                results = [bench_runner(f"{name} @ {url} ({api})", remote_runner(client, name), reps, prompt_tokens,
                                        tokens, clear=None)]
            finally:
                client.close()
        else:
            results = bench_local(server_config, reps, prompt_tokens, tokens, progress)
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        _print_table(results)


def _run_agent(server_config, url, api, name, turns, prompt_tokens, tokens):
    from .bench_runner import agent_scenario
    from .client import RemoteChat

    background = None
    if url is None:
        from ..server.background import BackgroundServer
        from ..server.state import ServerState

        typer.echo("loading models ...", err=True)
        background = BackgroundServer(ServerState(server_config))
        url = background.url
    client = RemoteChat(url, api)
    try:
        return agent_scenario(client, name, "claude-haiku-4-5", turns, max(prompt_tokens, 2048), min(tokens, 64))
    finally:
        client.close()
        if background is not None:
            background.stop()


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="llamabridge bench (median ± half range; times in seconds)")
    drafting = any(r.tokens_per_step is not None for r in results)     # tokens per step: 1 + accepted drafts
    for column in ("model", "size", "quant", "startup", "cold", "hot", "prefill tok/s", "decode tok/s",
                   *(("tokens per step",) if drafting else ())):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        size = f"{r.size_bytes / 1e9:.2f} GB" if r.size_bytes and r.size_bytes >= 1e9 else \
            (f"{r.size_bytes / 1e6:.0f} MB" if r.size_bytes else "-")
        per_step = (r.tokens_per_step.show(digits=2) if r.tokens_per_step else "-",) if drafting else ()
        table.add_row(r.name, size, r.quant or "-", r.startup.show(digits=2) if r.startup else "-",
                      r.cold.show(digits=2), r.hot.show(digits=2), r.prefill_tps.show(digits=0),
                      r.decode_tps.show(digits=1), *per_step)
    console = Console()
    console.print(table)
    for r in results:
        console.print(f"[dim]{r.name}: prompt {r.prompt_tokens} tokens; hot request reused {r.hot_reused}[/dim]")
    if drafting:
        console.print("[dim]tokens per step: each decode step's token plus the draft tokens accepted with it "
                      "(speculative decoding)[/dim]")


def _print_turns(turns, as_json: bool) -> None:
    if as_json:
        from dataclasses import asdict
        print(json.dumps([asdict(t) for t in turns], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="agent scenario: main turns, with a background (haiku) request between them")
    for column in ("turn", "prompt tokens", "reused", "TTFT s", "decode tok/s", "background TTFT s"):
        table.add_column(column, justify="right")
    for t in turns:
        table.add_row(str(t.turn), str(t.prompt_tokens), str(t.reused_tokens), f"{t.ttft:.2f}",
                      f"{t.decode_tps:.1f}", "-" if t.background_ttft is None else f"{t.background_ttft:.2f}")
    Console().print(table)
