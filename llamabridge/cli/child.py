"""Handing the terminal to another program (Claude Code, Codex CLI) and returning its exit code."""

from __future__ import annotations

import signal
import subprocess

import typer


def hand_over(argv: list[str], env: dict[str, str]) -> None:
    """Run `argv` in the foreground, Ctrl-C belonging to it while it runs; exit with its exit code."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = subprocess.call(argv, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    raise typer.Exit(code)
