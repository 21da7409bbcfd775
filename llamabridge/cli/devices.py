"""`llamabridge devices`: the devices this build can compute on, with their memory."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def devices(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list (name, description, type, free, total "
                                                         "in bytes).")] = False,
) -> None:
    """List ggml's backend devices: what `--devices` names, and the memory fitting counts.

    A CPU-only build shows the CPU alone; a CUDA, Metal or Vulkan build its GPUs too (Mesa's software
    Vulkan driver, lavapipe, only when GGML_VK_VISIBLE_DEVICES names it).

    Examples:

      llamabridge devices

      llamabridge devices --json
    """
    from ..engine import placement

    found = placement.devices()
    if as_json:
        typer.echo(json.dumps([d.as_dict() for d in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "type", "description", "free", "total", box=None, header_style="bold")
    for d in found:
        table.add_row(d.name, d.kind, d.description, _gib(d.free), _gib(d.total))
    Console().print(table)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n else "-"
