"""`llamabridge chat`: an interactive terminal chat with a model, in-process or through a server."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import exit_on_error

DEFAULT_HISTORY = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "llamabridge" / \
    "chat_history"


def chat(
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="LLAMABRIDGE_MODEL",
                                                 help="GGUF file, directory, or path under models/.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config (models, caches, routes).")] =
        None,
    url: Annotated[Optional[str], typer.Option(envvar="LLAMABRIDGE_URL", help="Talk to a running server.")] = None,
    api: Annotated[str, typer.Option(help="API to use with --url: anthropic or openai.")] = "anthropic",
    name: Annotated[Optional[str], typer.Option(help="Model name to ask for (routes by the config).")] = None,
    system: Annotated[str, typer.Option("--system", "-s", help="System prompt.")] = "",
    max_tokens: Annotated[Optional[int], typer.Option(help="Longest reply, in tokens.")] = None,
    thinking: Annotated[bool, typer.Option("--thinking/--no-thinking", help="Let the model reason first.")] = False,
    temperature: Annotated[Optional[float], typer.Option(min=0.0, max=2.0,
                                                         help="Sampling temperature (0 = greedy).")] = None,
    n_ctx: Annotated[int, typer.Option(help="Context size with --model (0 = the model's own, within free "
                                            "memory).")] = 0,
    history_file: Annotated[Path, typer.Option(envvar="LLAMABRIDGE_HISTORY", help="Where input history is kept.")] =
        DEFAULT_HISTORY,
) -> None:
    """Chat with a model in the terminal: streamed Markdown, history, slash commands (/help).

    Examples:

      llamabridge chat --model models/Qwen3-8B-Q4_K_M.gguf

      llamabridge chat --url http://127.0.0.1:8000 --api openai

      echo "Explain SSE in one line" | llamabridge chat -m models/Qwen3-8B-Q4_K_M.gguf
    """
    import signal

    # Ctrl-C stops a reply: take SIGINT even when started with it ignored (e.g. from a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from ..engine.params import CacheParams
    from ..runtime.config import load_config, single_model_config
    from .chat_session import ChatBackend, ChatSession, LocalBackend, RemoteBackend
    from .client import RemoteChat

    if api not in ("anthropic", "openai"):
        raise typer.BadParameter("must be anthropic or openai", param_hint="--api")
    if sum(x is not None for x in (model, config, url)) != 1:
        raise typer.BadParameter("give exactly one of --model, --config or --url", param_hint="--model")
    logging.getLogger("llamabridge.llama").setLevel(logging.ERROR)   # llama.cpp's load chatter: not for a REPL
    with exit_on_error():
        backend: ChatBackend
        if url is not None:
            backend = RemoteBackend(RemoteChat(url, api))
            default_name = name or "default"
        else:
            from ..runtime.pool import ModelPool

            if config is not None:
                server_config = load_config(config)
            else:
                assert model is not None            # exactly one of the three was given
                server_config = single_model_config(model, CacheParams(n_ctx=n_ctx))
            typer.echo("loading ...", err=True)
            pool = ModelPool(server_config)
            pool.load()
            backend = LocalBackend(pool)
            default_name = name or server_config.model_names()[0]
    session = ChatSession(backend, default_name, system=system, max_tokens=max_tokens, thinking=thinking,
                          temperature=temperature)
    try:
        if not sys.stdin.isatty():
            _one_shot(session, sys.stdin.read())
        else:
            _repl(session, history_file)
    finally:
        backend.close()


def _one_shot(session, text: str) -> None:
    from ..engine.request import ReasoningDelta, TextDelta

    with exit_on_error():
        for event in session.send(text.strip()).events():
            if isinstance(event, TextDelta):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ReasoningDelta):
                sys.stderr.write(event.text)
    sys.stdout.write("\n")


def _repl(session, history_file: Path) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from rich.console import Console

    console = Console(highlight=False)
    history_file.parent.mkdir(parents=True, exist_ok=True)
    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    prompt: PromptSession[str] = PromptSession(history=FileHistory(str(history_file)), key_bindings=keys,
                                               multiline=False)
    console.print(f"[bold]llamabridge chat[/bold] — model [cyan]{session.model}[/cyan]. "
                  "/help for commands, Ctrl-D to leave.", highlight=False)
    while True:
        try:
            text = prompt.prompt("› ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        if not text.strip():
            continue
        if text.startswith("/"):
            reply, keep_going = session.command(text)
            if reply:
                console.print(reply, style="yellow", markup=False)
            if not keep_going:
                break
            continue
        _show_reply(console, session, text)


def _show_reply(console, session, text: str) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.markdown import Markdown
    from rich.text import Text

    from ..engine.request import Done, ReasoningDelta, TextDelta, ToolCallDelta, ToolCallStart
    from ..errors import BridgeError

    reasoning: list[str] = []
    answer: list[str] = []
    tools: list[tuple[str, list[str]]] = []
    started = time.perf_counter()
    first = None
    reply = session.send(text)
    stopped = False

    def view():
        parts = []
        if reasoning:
            parts.append(Text("".join(reasoning), style="dim italic"))
        if answer:
            parts.append(Markdown("".join(answer)))
        for name, args in tools:
            parts.append(Text(f"⚙ {name}({''.join(args)})", style="magenta"))
        return Group(*parts) if parts else Text("…", style="dim")

    console.print("●", style="green")
    drawn = 0.0
    with Live(view(), console=console, refresh_per_second=12, transient=False) as live:
        while True:
            try:
                event = reply.next_event()
                if event is reply.FINISHED or isinstance(event, Done):
                    live.update(view())
                    break
                if event is None:
                    continue
                if isinstance(event, (TextDelta, ReasoningDelta, ToolCallDelta)) and first is None:
                    first = time.perf_counter()
                if isinstance(event, TextDelta):
                    answer.append(event.text)
                elif isinstance(event, ReasoningDelta):
                    reasoning.append(event.text)
                elif isinstance(event, ToolCallStart):
                    tools.append((event.name, []))
                elif isinstance(event, ToolCallDelta) and tools:
                    tools[-1][1].append(event.arguments)
                # a view rebuilds (and parses) the whole reply: at most as often as the screen refreshes,
                # or a fast model's tokens pile up behind the drawing (and a Ctrl-C waits for them all)
                if time.perf_counter() - drawn >= 1 / 12:
                    live.update(view())
                    drawn = time.perf_counter()
            except KeyboardInterrupt:
                reply.cancel()          # the reply goes on to its Done("cancelled") within a token
                stopped = True
            except BridgeError as exc:
                live.update(Text(f"error: {exc.message}", style="red"))
                return
    done = reply.done
    if done is None:
        return
    elapsed = time.perf_counter() - (first or started)
    rate = (done.usage.completion_tokens - 1) / elapsed if first and elapsed > 0 and done.usage.completion_tokens > 1 \
        else 0.0
    status = "[stopped] " if stopped or done.stop_reason == "cancelled" else ""
    console.print(f"{status}{done.usage.completion_tokens} tokens · {rate:.1f} tok/s · prompt "
                  f"{done.usage.prompt_tokens} (reused {done.usage.cached_tokens}) · {done.stop_reason}",
                  style="dim", markup=False)
