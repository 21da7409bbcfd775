"""`llamabridge rpc-server`: llama.cpp's rpc-server from this build, with safe defaults."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_PORT = 50052


def binary() -> Path:
    """The rpc-server built with this package (setup.py puts it beside the libraries)."""
    import llamabridge

    return Path(llamabridge.__file__).parent / "ggml-rpc-server"


def rpc_server(
    host: Annotated[str, typer.Option(help="Address to listen on. The protocol has no authentication: anything "
                                           "that can reach the port can run code on this machine's devices "
                                           "and read what they hold.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    device: Annotated[Optional[str], typer.Option(
        help="Devices to offer, comma-separated (default: every GPU, else the CPU; see `llamabridge devices`).",
        show_default=False)] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for a CPU device (0 = llama.cpp's default).")] = 0,
    cache: Annotated[bool, typer.Option(help="Keep the tensors a client sends in a local file cache "
                                             "($LLAMA_CACHE/rpc), so a model loaded again is not sent again.")] = True,
) -> None:
    """Offer this machine's devices to a llamabridge server on another machine (`serve --rpc HOST:PORT`).

    Runs llama.cpp's rpc-server from this build (the same protocol version as `serve`). It listens on
    127.0.0.1 unless --host says otherwise; on another address it warns, as the protocol has no
    authentication: use it only on a network you trust (or through an SSH tunnel).

    Examples:

      llamabridge rpc-server                    # on 127.0.0.1:50052 (reach it through ssh -L from elsewhere)

      llamabridge rpc-server --host 10.0.0.2    # on a trusted LAN; then: serve --rpc 10.0.0.2:50052
    """
    from ..server.access import is_loopback_address

    path = binary()
    if not path.exists():
        typer.echo(f"error: {path} is missing: this build has no rpc-server (make build)", err=True)
        raise typer.Exit(1)
    if not is_loopback_address(host):
        logging.getLogger("llamabridge").warning(
            "rpc-server on %s:%d: the RPC protocol has no authentication; anyone who reaches this port can use "
            "this machine's devices. Use it only on a network you trust.", host, port)
    args = [str(path), "--host", host, "--port", str(port)]
    if cache:
        args.append("--cache")
    if threads:
        args += ["--threads", str(threads)]
    if device:
        args += ["--device", device]
    os.execv(str(path), args)          # its exit code, signals and output are the rpc-server's own
