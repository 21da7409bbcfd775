"""`llamabridge codex`: start Codex CLI against a running llamabridge server."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .child import hand_over
from .errors import exit_on_error


def codex(
    ctx: typer.Context,
    url: Annotated[Optional[str], typer.Option(help="Server URL (default $LLAMABRIDGE_URL or "
                                                    "http://127.0.0.1:8000).")] = None,
) -> None:
    """Start Codex CLI against a running llamabridge server; every other argument goes to `codex`.

    Codex runs with a private CODEX_HOME (under ~/.cache/llamabridge) whose config points it at
    the server over the Responses API; your own Codex settings, auth and sessions are kept.
    The model is -m/--model if given, else the first one the server lists.

    Examples:

      llamabridge codex

      llamabridge codex exec "explain this repository"

      llamabridge codex --url http://127.0.0.1:9000 -m qwen3-coder
    """
    from .claude_code import check_server, server_url
    from .codex_home import (
        bundled_catalog,
        catalog_entry,
        default_model,
        find_codex,
        private_codex_home,
        user_codex_home,
        write_home,
    )

    env = dict(os.environ)
    with exit_on_error():
        binary = find_codex()
        url = server_url(url)
        model = _model_argument(ctx.args) or default_model(url)
        server = check_server(url, model)
        private = private_codex_home(env)
        entry = catalog_entry(bundled_catalog(binary, private), model, server.n_ctx)
        home = write_home(private, user_codex_home(env), server, model, entry,
                          api_key_env="LLAMABRIDGE_API_KEY" if env.get("LLAMABRIDGE_API_KEY") else None)
    env["CODEX_HOME"] = str(home)
    hand_over([binary, *ctx.args], env)


def _model_argument(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg in ("-m", "--model") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None
