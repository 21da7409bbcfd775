"""`llamabridge cc`: start Claude Code against a running llamabridge server."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .child import hand_over
from .errors import exit_on_error


def cc(
    ctx: typer.Context,
    url: Annotated[Optional[str], typer.Option(help="Server URL (default $LLAMABRIDGE_URL or "
                                                    "http://127.0.0.1:8000).")] = None,
) -> None:
    """Start Claude Code against a running llamabridge server; every other argument goes to `claude`.

    Examples:

      llamabridge cc

      llamabridge cc -p "explain this repository" --output-format json

      llamabridge cc --url http://127.0.0.1:9000 --model claude-sonnet-4-5
    """
    from .claude_code import (
        DEFAULT_MODEL,
        OPENING_PROMPT_TOKENS,
        check_server,
        claude_environment,
        find_claude,
        server_url,
    )

    with exit_on_error():
        claude = find_claude()
        model = os.environ.get("ANTHROPIC_MODEL") or _model_argument(ctx.args) or DEFAULT_MODEL
        server = check_server(server_url(url), model)
    if server.n_ctx < OPENING_PROMPT_TOKENS:
        typer.echo(f"warning: cache {server.cache} holds {server.n_ctx} tokens, less than Claude Code's opening "
                   f"prompt (up to {OPENING_PROMPT_TOKENS} tokens): its first request will be refused; serve with "
                   f"--n-ctx 32768 or more", err=True)
    env = claude_environment(dict(os.environ), server)
    hand_over([claude, *ctx.args], env)


def _model_argument(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None
