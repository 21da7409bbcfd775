"""The `llamabridge` command line (Typer). Heavy imports stay inside the commands, so --help is instant."""

from __future__ import annotations

import typer

from .bench import bench
from .cc import cc
from .chat import chat
from .codex import codex
from .devices import devices
from .hfd import hfd
from .rpc_server import rpc_server
from .serve import serve

app = typer.Typer(
    name="llamabridge",
    help="Serve local GGUF models over the Anthropic Messages, OpenAI Chat Completions and Responses, and "
         "Ollama APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Serve local GGUF models over the Anthropic Messages, OpenAI Chat Completions and Responses, and Ollama
    APIs."""


app.command(help=serve.__doc__)(serve)
app.command(help=cc.__doc__, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(cc)
app.command(help=codex.__doc__, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(codex)
app.command(help=hfd.__doc__)(hfd)
app.command(help=chat.__doc__)(chat)
app.command(help=bench.__doc__)(bench)
app.command(help=devices.__doc__)(devices)
app.command("rpc-server", help=rpc_server.__doc__)(rpc_server)


def main() -> None:
    app()


def _alias(command, **settings) -> typer.Typer:
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(help=command.__doc__, context_settings=settings)(command)
    return single


def hfd_main() -> None:
    """`hfd`: alias of `llamabridge hfd`."""
    _alias(hfd)()
