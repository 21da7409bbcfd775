"""The `llamabridge` command line (Typer). Heavy imports stay inside the commands, so --help is instant."""

from __future__ import annotations

import typer

from .serve import serve

app = typer.Typer(
    name="llamabridge",
    help="Serve local GGUF models over the Anthropic Messages and OpenAI Chat Completions APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Serve local GGUF models over the Anthropic Messages and OpenAI Chat Completions APIs."""


app.command(help=serve.__doc__)(serve)


def main() -> None:
    app()


def serve_main() -> None:
    """`serve`: alias of `llamabridge serve`."""
    typer.run(serve)
