"""One clean line and a non-zero exit for a user's mistake: never a traceback."""

from __future__ import annotations

import contextlib

import typer

from ..errors import BridgeError


@contextlib.contextmanager
def exit_on_error(code: int = 1):
    try:
        yield
    except BridgeError as exc:
        typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code) from None
