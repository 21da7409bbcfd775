"""`llamabridge hfd`: download a model from the Hugging Face Hub into models/<repo_id>."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import exit_on_error


def hfd(
    repo: Annotated[str, typer.Argument(help="Hub repository id, e.g. Qwen/Qwen3-8B-GGUF.")],
    include: Annotated[Optional[list[str]], typer.Option("--include", "-i",
                                                         help="Glob of files to download (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x",
                                                         help="Glob of files to skip (repeatable).")] = None,
    local_dir: Annotated[Optional[Path], typer.Option(help="Where to put the files "
                                                           "(default models/<repo_id>).")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Branch, tag or commit.")] = None,
) -> None:
    """Download a model from the Hugging Face Hub (resumable; honours HF_TOKEN and HF_ENDPOINT).

    Examples:

      llamabridge hfd Qwen/Qwen3-8B-GGUF --include "*Q4_K_M*"

      llamabridge hfd unsloth/MiMo-V2-Flash-GGUF --include "UD-Q6_K_XL/*" --exclude "*mmproj*"

      llamabridge serve --model Qwen/Qwen3-8B-GGUF     # then serve it from models/
    """
    from ..runtime.hub import download

    with exit_on_error():
        folder, files = download(repo, include=include or [], exclude=exclude or [], local_dir=local_dir,
                                 revision=revision)
    typer.echo(f"{len(files)} file(s) in {folder}", err=True)
    typer.echo(str(folder))
