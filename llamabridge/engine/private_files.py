"""Files only this user may read: saved KV prefixes (they hold prompt tokens) and --debug traces (whole
conversations) are written 0600 in a 0700 directory, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


def private_dir(directory: str | os.PathLike) -> Path:
    """`directory`, made if missing, readable by this user only (0700)."""
    path = Path(directory).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o700)
    return path


def _private_fd(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)            # an existing file keeps its mode through O_CREAT
    return fd


def open_private(path: Path) -> BinaryIO:
    """A new file (or an emptied one) readable by this user only (0600), opened for writing bytes."""
    return os.fdopen(_private_fd(path), "wb")


def write_private(path: Path, text: str) -> None:
    """Write a text file readable by this user only (0600)."""
    with os.fdopen(_private_fd(path), "w", encoding="utf-8") as f:
        f.write(text)
