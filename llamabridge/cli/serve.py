"""`llamabridge serve`: load models (or a config) and serve every API (Anthropic, OpenAI, Responses, Ollama)
over HTTP."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..engine.params import AUTO_LAYERS, CacheParams, FlashAttn, ModelParams, ParamError, SplitMode

_DEFAULT_CACHE = CacheParams()
SHUTDOWN_TIMEOUT = 5.0      # seconds running answers get to finish at a SIGTERM
ABORT_GRACE = 10.0          # seconds running answers get to write their error when llama.cpp ends the process
_DEFAULT_MODEL = ModelParams()


def serve(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", envvar="LLAMABRIDGE_CONFIG",
                                                   help="TOML config: models, caches and routes.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", envvar="LLAMABRIDGE_MODEL",
                                                 help="GGUF file, directory, or path under models/.")] = None,
    host: Annotated[str, typer.Option(envvar="LLAMABRIDGE_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LLAMABRIDGE_PORT", help="Port to listen on.")] = 8000,
    debug: Annotated[bool, typer.Option("--debug", help="Write each request's trace (request, prompt, output, "
                                                        "answer) under --debug-dir.")] = False,
    debug_dir: Annotated[Optional[Path], typer.Option(
        envvar="LLAMABRIDGE_DEBUG_DIR", help="Where --debug writes (default ~/.cache/llamabridge/debug; "
                                             "readable by you only).", show_default=False)] = None,
    mock: Annotated[bool, typer.Option("--mock", help="Load no model; answer with canned responses.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Serve a small generated demo model.")] = False,
    n_ctx: Annotated[int, typer.Option(help="Context size (tokens) of one request: prompt + output (0 = the "
                                            "model's own, lowered to fit in free memory).")] = _DEFAULT_CACHE.n_ctx,
    n_parallel: Annotated[int, typer.Option(envvar="LLAMABRIDGE_N_PARALLEL",
                                            help="Requests served at once (slots); the KV cache holds n_ctx "
                                                 "tokens for each.")] = _DEFAULT_CACHE.n_parallel,
    kv_size: Annotated[int, typer.Option(help="KV cache cells in all (0 = n_ctx × n_parallel); less makes "
                                              "requests wait for room.")] = _DEFAULT_CACHE.kv_size,
    n_batch: Annotated[int, typer.Option(help="Logical batch size for prompt evaluation.")] = _DEFAULT_CACHE.n_batch,
    n_ubatch: Annotated[int, typer.Option(help="Physical batch size.")] = _DEFAULT_CACHE.n_ubatch,
    n_threads: Annotated[int, typer.Option(help="CPU threads (0 = the physical cores).")] = _DEFAULT_CACHE.n_threads,
    flash_attn: Annotated[FlashAttn, typer.Option(help="Flash attention.")] = _DEFAULT_CACHE.flash_attn,
    n_gpu_layers: Annotated[str, typer.Option(
        help="Layers to offload: auto (as many as fit, with every cache's KV), all, or a number (0 = CPU "
             "only).")] = AUTO_LAYERS,
    devices: Annotated[Optional[str], typer.Option(
        help="Devices to use, by name, comma-separated (see `llamabridge devices`), or none; default: "
             "llama.cpp's choice (GPUs).", show_default=False)] = None,
    split_mode: Annotated[SplitMode, typer.Option(help="How a model spreads over several devices.")] = SplitMode.LAYER,
    tensor_split: Annotated[Optional[str], typer.Option(
        help="Each device's share of the layers, comma-separated (e.g. 3,1); default: by free memory.",
        show_default=False)] = None,
    main_gpu: Annotated[int, typer.Option(help="The device (index in --devices) of --split-mode none.")] = 0,
    rpc: Annotated[Optional[str], typer.Option(
        help="rpc-servers (host:port, comma-separated; see `llamabridge rpc-server`) whose devices the model's "
             "layers are split over too.", show_default=False)] = None,
    kv_offload: Annotated[bool, typer.Option(
        help="Keep the KV cache on the device of its layers (--no-kv-offload: in RAM).")] = _DEFAULT_CACHE.offload_kqv,
    stream_interval_ms: Annotated[int, typer.Option(
        help="Milliseconds between a stream's updates while it generates faster than that: each update "
             "then carries several tokens (0 = one update per token).")] = _DEFAULT_CACHE.stream_interval_ms,
    speculative: Annotated[str, typer.Option(
        help="Speculative decoding: llama.cpp's n-gram drafters, comma-separated (ngram-mod, ngram-simple, "
             "ngram-map-k, ngram-map-k4v; tried in llama.cpp's order); '' = off. Same answers; faster where an "
             "answer repeats what the conversation holds (code edits).")] = _DEFAULT_CACHE.speculative,
    draft_model: Annotated[Optional[str], typer.Option(
        help="A draft model (GGUF path): a smaller model on the same vocabulary drafts for --model (after any "
             "--speculative n-gram drafters), on its own context and the same devices.",
        show_default=False)] = None,
    draft_max: Annotated[int, typer.Option(
        help="The most tokens one draft proposes (0 = each drafter's own).")] = _DEFAULT_CACHE.draft_max,
    draft_min: Annotated[int, typer.Option(
        help="ngram-mod and the draft model propose no shorter draft (0 = their own).")] = _DEFAULT_CACHE.draft_min,
    draft_ngram: Annotated[int, typer.Option(
        help="The n-gram the drafters look up (0 = each drafter's own).")] = _DEFAULT_CACHE.draft_ngram,
    draft_p_min: Annotated[float, typer.Option(
        help="The draft model's draft ends where its next token is less likely than this (0-1).")
    ] = _DEFAULT_CACHE.draft_p_min,
    api_key: Annotated[Optional[str], typer.Option(envvar="LLAMABRIDGE_API_KEY",
                                                   help="Require this key (x-api-key or Bearer) on every "
                                                        "endpoint but /health.")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(
        envvar="LLAMABRIDGE_API_KEY_FILE", help="Accept any key listed in this file (one per line; # comments), "
                                                "e.g. one per person of a team.")] = None,
    state_dir: Annotated[Optional[str], typer.Option(
        help="Where saved KV prefixes are kept across restarts (default ~/.cache/llamabridge/kv; '' = "
             "nowhere).", show_default=False)] = None,
    cache_ram_mb: Annotated[Optional[int], typer.Option(
        help="MiB of RAM for KV prefixes of conversations that left their slots (default a quarter of "
             "available memory, at most 8 GiB; 0 = off).", show_default=False)] = None,
    cache_disk_mb: Annotated[Optional[int], typer.Option(
        help="MiB of disk for saved KV prefixes (default a quarter of the free space, at most 20 GiB; "
             "0 = off).", show_default=False)] = None,
    allowed_origins: Annotated[Optional[str], typer.Option(
        envvar="LLAMABRIDGE_ALLOWED_ORIGINS",
        help="Web origins allowed to call the server from a browser, comma-separated (e.g. "
             "https://chat.example.com, https://*.example.com; * = any page on the web). Local origins "
             "(http://localhost:*, 127.0.0.1, [::1]) and local apps are always allowed.",
        show_default=False)] = None,
    allowed_hosts: Annotated[Optional[str], typer.Option(
        envvar="LLAMABRIDGE_ALLOWED_HOSTS",
        help="Host names accepted besides localhost when bound to a loopback address, comma-separated "
             "(e.g. a reverse proxy's name); other names are refused, which stops DNS rebinding.",
        show_default=False)] = None,
    read_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds a client may take to send its request's headers, or pause inside its body, before "
             "its connection is closed (default 30). Answers being generated are never cut.",
        show_default=False)] = None,
    write_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds a client may read nothing of its answer before its connection is closed and its "
             "request cancelled (default 60, as nginx's send_timeout): a stalled reader frees its slot.",
        show_default=False)] = None,
    shutdown_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds the answers running at a SIGTERM or Ctrl-C may take to finish; those still running then "
             "end with their API's error event (default 5; 0 = at once; a second signal ends at once).",
        show_default=False)] = None,
    keep_alive: Annotated[Optional[float], typer.Option(
        help="Seconds an idle connection is kept open for the client's next request (default 20).",
        show_default=False)] = None,
) -> None:
    """Serve local models over the Anthropic Messages, OpenAI Chat Completions and Responses, and Ollama APIs.

    Examples:

      llamabridge serve --model models/Qwen3-8B-Q4_K_M.gguf --n-ctx 32768

      llamabridge serve --model models/Qwen3-8B-Q4_K_M.gguf --n-ctx 32768 --n-parallel 4

      llamabridge serve --config configs/claude-code.toml

      llamabridge serve --mock
    """
    from ..errors import BridgeError
    from ..runtime.config import DRAFT_MODEL_NAME, ConfigError, default_debug_dir, load_config, single_model_config
    from ..server.access import AccessPolicy, split_list
    from ..server.supervisor import LISTEN_FD_ENV, inherited_socket

    _configure_logging()
    log = logging.getLogger("llamabridge.server")
    try:
        try:
            cache = CacheParams(n_ctx=n_ctx, n_parallel=n_parallel, kv_size=kv_size, n_batch=n_batch,
                                n_ubatch=n_ubatch, n_threads=n_threads, flash_attn=flash_attn,
                                offload_kqv=kv_offload, stream_interval_ms=stream_interval_ms,
                                speculative=speculative, draft_max=draft_max, draft_min=draft_min,
                                draft_ngram=draft_ngram, draft_p_min=draft_p_min,
                                draft_model=DRAFT_MODEL_NAME if draft_model else "")
            model_params = ModelParams(n_gpu_layers=n_gpu_layers, devices=_split(devices),
                                       split_mode=split_mode, tensor_split=_shares(tensor_split),
                                       main_gpu=main_gpu, rpc=_split(rpc) or ())
        except ParamError as exc:                   # checked where it is defined; worded for the flag here
            raise typer.BadParameter(exc.message.replace("n_ctx", "--n-ctx"),
                                     param_hint="--" + exc.field.replace("_", "-")) from None
        if config is not None:
            if model is not None or demo or cache != CacheParams() or model_params != ModelParams():
                log.warning("--config %s given: --model, --demo and the model/cache flags are ignored", config)
            server_config = load_config(config)
        else:
            if model is None and demo:
                from ..synthetic import QWEN3_SCRIPTED, ensure_model
                model = str(ensure_model(QWEN3_SCRIPTED))
                if n_ctx == _DEFAULT_CACHE.n_ctx:
                    # room for Claude Code's ~20k-token prompt; the demo model's KV cache is tiny
                    cache = dataclasses.replace(cache, n_ctx=65536)
                log.info("serving the demo model (a generated model that answers one fixed sentence)")
            if model is None and not mock:
                raise typer.BadParameter("give --model PATH, --config FILE, --demo or --mock", param_hint="--model")
            server_config = single_model_config(model or "mock", cache, model_params, draft_model=draft_model)
        for flag, value in (("--cache-ram-mb", cache_ram_mb), ("--cache-disk-mb", cache_disk_mb)):
            if value is not None and value < 0:
                raise typer.BadParameter("must be 0 (off) or a positive number of MiB", param_hint=flag)
        for flag, seconds in (("--read-timeout", read_timeout), ("--keep-alive", keep_alive),
                              ("--write-timeout", write_timeout)):
            if seconds is not None and not seconds > 0:
                raise typer.BadParameter("must be a positive number of seconds", param_hint=flag)
        if shutdown_timeout is not None and not shutdown_timeout >= 0:
            raise typer.BadParameter("must be 0 (at once) or a number of seconds", param_hint="--shutdown-timeout")
        store = server_config.store
        server_config = dataclasses.replace(server_config, store=dataclasses.replace(
            store, state_dir=store.state_dir if state_dir is None else state_dir,
            ram_mb=store.ram_mb if cache_ram_mb is None else cache_ram_mb,
            disk_mb=store.disk_mb if cache_disk_mb is None else cache_disk_mb))
        if not mock:
            from ..runtime.model_files import resolve_model_path
            for entry in server_config.models.values():
                resolve_model_path(entry.path)       # a missing model is a startup error, not a 503 later
        api_keys = ((api_key,) if api_key else ()) + (read_key_file(api_key_file) if api_key_file else ())
        if LISTEN_FD_ENV not in os.environ:       # a supervised server serves on its parent's socket
            _check_port(host, port)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except BridgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None

    from ..runtime.pool import PoolStatus
    from ..server.app import create_app, load_logged
    from ..server.http import KEEP_ALIVE, READ_TIMEOUT, WRITE_TIMEOUT, Server, uvicorn_config
    from ..server.state import ServerState

    access = AccessPolicy(split_list(allowed_origins), split_list(allowed_hosts))
    if access.any_origin:
        log.warning("--allowed-origins *: any web page the user opens can use this server's models")
    rpc_servers = tuple(dict.fromkeys(e for m in server_config.models.values() for e in m.params.rpc))
    if rpc_servers and not mock and LISTEN_FD_ENV not in os.environ:
        from ..server.supervisor import Supervisor

        # llama.cpp ends the process when an rpc-server in use goes away: the server runs as a child
        raise typer.Exit(Supervisor(host, port, rpc_servers, access).run(sys.argv[1:]))
    listening = inherited_socket()
    trace_dir = str(debug_dir or default_debug_dir()) if debug else None
    state = ServerState(server_config, mock=mock, debug_dir=trace_dir, api_keys=api_keys, access=access)
    server: Server | None = None

    def load(state) -> None:
        (_load_with_progress_bar if sys.stderr.isatty() else load_logged)(state)
        if state.pool.status is PoolStatus.FAILED and server is not None:
            server.should_exit = True      # nothing to serve: leave with the line load_logged wrote

    app = create_app(state, loader=load)
    _print_summary(server_config, host, port, mock, keys=len(api_keys), debug_dir=trace_dir)
    served = uvicorn_config(app, host, port, read_timeout=READ_TIMEOUT if read_timeout is None else read_timeout,
                            keep_alive=KEEP_ALIVE if keep_alive is None else keep_alive,
                            write_timeout=WRITE_TIMEOUT if write_timeout is None else write_timeout)
    server = Server(served, state,
                    drain=SHUTDOWN_TIMEOUT if shutdown_timeout is None else shutdown_timeout)
    if not mock:
        _end_answers_on_abort(server, rpc_servers)
    server.run(sockets=[listening] if listening is not None else None)
    if state.pool.status is PoolStatus.FAILED:
        raise typer.Exit(1)
    if not server.started:
        raise typer.Exit(3)          # uvicorn said why (e.g. the port was taken meanwhile)


def _end_answers_on_abort(server, rpc_servers: tuple[str, ...]) -> None:
    """When llama.cpp ends the process (an rpc-server in use stopped answering, a device error), the answers
    still running end with a 503 in their API's shape, streams with their error event, instead of a cut
    connection; then the process ends (a supervisor, with rpc-servers, starts it again)."""
    from .. import _core
    from ..errors import EngineLostError

    if rpc_servers:
        reason = (f"llama.cpp lost an rpc-server in use ({', '.join(rpc_servers)}); the server loads the models "
                  "again once every one answers")
    else:
        reason = "llama.cpp ended the server after a fatal error (see its log)"
    _core.set_abort_hook(lambda message: server.end_answers_now(EngineLostError(reason), ABORT_GRACE))


_console = None


def _configure_logging() -> None:
    """Plain log lines, or on a terminal rich ones that share the console with the progress bars; either way
    a message cannot break its line (SafeFormatter: what a client sent may be in it)."""
    global _console
    from ..server.logtext import SafeFormatter

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        _console = Console(stderr=True)
        handler: logging.Handler = RichHandler(console=_console, show_path=False)
        handler.setFormatter(SafeFormatter("%(name)s: %(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _load_with_progress_bar(state) -> None:
    """Load the models with a progress bar per model on the terminal."""
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from ..server.app import load_logged

    bars = Progress(TextColumn("loading {task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                    console=_console, transient=True)
    tasks: dict[str, TaskID] = {}

    def on_load(name: str, fraction: float) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=1.0)
        bars.update(tasks[name], completed=fraction)

    with bars:
        load_logged(state, load_progress=on_load)


def _size(n: int) -> str:
    return "off" if n == 0 else f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def _check_port(host: str, port: int) -> None:
    from ..errors import BridgeError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BridgeError(f"cannot listen on {host}:{port}: {exc.strerror} (is another server running?)") \
                from None


def read_key_file(path: Path) -> tuple[str, ...]:
    """The keys of an --api-key-file: one per line, blank lines and # comments skipped."""
    from ..errors import BridgeError

    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BridgeError(f"--api-key-file {path}: {exc.strerror}") from None
    keys = tuple(key for key in (line.strip() for line in lines) if key and not key.startswith("#"))
    if not keys:
        raise BridgeError(f"--api-key-file {path}: no keys in it")
    return keys


def _print_summary(config, host: str, port: int, mock: bool, keys: int = 0, debug_dir: str | None = None) -> None:
    from ..server.access import is_loopback_address

    url = f"http://{host}:{port}"
    lines = [f"llamabridge {'(mock) ' if mock else ''}on {url}  [config: {config.source}]"]
    for name, m in config.models.items():
        lines.append(f"  model {name}: {m.path}")
    for name, c in config.caches.items():
        lines.append(f"  cache {name}: model {c.model}, n_ctx {c.params.n_ctx or 'auto'}, {c.params.n_parallel} slot"
                     f"{'s' if c.params.n_parallel > 1 else ''}, overflow {c.overflow}"
                     + (f" ({c.description})" if c.description else ""))
    for r in config.routes:
        lines.append(f"  route {r.match!r} -> {r.cache}")
    if not mock:
        state_dir, ram, disk = config.store.resolve()
        disk_text = f"{_size(disk)} in {state_dir}" if state_dir else "off"
        lines.append(f"  saved prefixes: RAM {_size(ram)}, disk {disk_text}")
    if debug_dir:
        lines.append(f"  debug traces: {debug_dir} (whole conversations; readable by you only)")
    if not is_loopback_address(host):
        lines.append(f"  reachable from the network on {host}:{port}: "
                     + (f"an API key is required ({keys} accepted)" if keys else
                        "NO API key is set, so anyone who can reach this port can use the models (--api-key)"))
    elif keys:
        lines.append(f"  API key required ({keys} accepted): x-api-key or Authorization: Bearer; /health stays open")
    key = "<your key>" if keys else "none"
    env_key = "LLAMABRIDGE_API_KEY=<your key> " if keys else ""
    lines.append(f"  Claude Code:  {env_key}llamabridge cc --url {url}")
    anthropic_key = key if keys else "sk-ant-none"
    lines.append(f"                (or ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY={anthropic_key} claude)")
    lines.append(f"  Codex CLI:    {env_key}llamabridge codex --url {url}")
    lines.append(f"  OpenAI SDK:   OpenAI(base_url='{url}/v1', api_key='{key}')")
    lines.append(f"  Ollama:       OLLAMA_HOST={url} (Open WebUI, Continue, the ollama packages)")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _split(devices: str | None) -> tuple[str, ...] | None:
    """--devices: names, comma-separated ("none": no device)."""
    return None if devices is None else tuple(d.strip() for d in devices.split(",") if d.strip())


def _shares(tensor_split: str | None) -> tuple:
    """--tensor-split "3,1" as numbers (ModelParams says what is wrong with them)."""
    if not tensor_split:
        return ()
    try:
        return tuple(float(x) for x in tensor_split.split(","))
    except ValueError:
        raise ParamError("tensor_split", f"must be numbers, comma-separated (e.g. 3,1), not {tensor_split!r}") \
            from None
