"""Finding a GGUF file from what a user typed: a file, a directory, a path under models/, a Hub repo id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import NotFoundError

MODELS_DIR = Path(os.environ.get("LLAMABRIDGE_MODELS_DIR", "models"))
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class ModelFileNotFound(NotFoundError):
    """No GGUF file where the user pointed; the message says what was searched."""


def resolve_model_path(spec: str | os.PathLike, models_dir: Path | None = None) -> Path:
    """The .gguf file `spec` names.

    `spec` may be a file, a directory (its single .gguf, or the first shard of a split
    model), or either of those relative to the models directory — which is where
    `llamabridge hfd REPO` puts `models/<repo_id>`.
    """
    models_dir = models_dir or MODELS_DIR
    raw = Path(os.path.expanduser(str(spec)))
    candidates = [raw] if raw.is_absolute() else [raw, models_dir / raw]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            return _gguf_in_directory(candidate)
    searched = ", ".join(str(c) for c in candidates)
    raise ModelFileNotFound(
        f"no model at {spec!r} (searched {searched}); download one with `llamabridge hfd REPO` "
        f"or pass the path of a .gguf file"
    )


def _gguf_in_directory(directory: Path) -> Path:
    files = sorted(p for p in directory.rglob("*.gguf") if not p.name.startswith("mmproj"))
    if not files:
        raise ModelFileNotFound(f"no .gguf file in {directory}")
    whole = [p for p in files if not _SHARD.search(p.name)]
    first_shards = [p for p in files if (m := _SHARD.search(p.name)) and int(m.group(1)) == 1]
    choices = whole + first_shards
    if len(choices) == 1:
        return choices[0]
    if not choices:
        raise ModelFileNotFound(f"{directory} holds split .gguf files but not their first shard (-00001-of-...)")
    listing = ", ".join(str(p.relative_to(directory)) for p in choices[:6])
    raise ModelFileNotFound(f"{directory} holds several models ({listing}); name the file")
