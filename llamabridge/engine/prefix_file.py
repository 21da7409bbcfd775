"""The file of one saved prefix: a header binding it to what makes it valid, its tokens, its KV state.

    magic "LBKVSEQ1" | u32 header length | header (JSON) | tokens (int32 LE) | state (llama.cpp's
    per-sequence serialization)

The header holds the fingerprint, the token and state sizes and a CRC-32 of tokens + state, so a
truncated or damaged file is recognised before any of it reaches a context. Files are written
to a temporary name in the same directory and renamed: a process killed during a save leaves
the previous file whole (and a temporary file the next start removes).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

from .private_files import open_private

MAGIC = b"LBKVSEQ1"
SUFFIX = ".lbkv"
TEMP_MARK = ".tmp-"
_HEADER_LEN = struct.Struct("<I")
_PREAMBLE = len(MAGIC) + _HEADER_LEN.size
_MAX_HEADER = 1 << 20


class BadPrefixFile(Exception):
    """A file that is not a usable saved prefix; the message says why."""


class ChangedPrefixFile(BadPrefixFile):
    """The file was replaced or removed since it was indexed (by another save): not damage."""


@dataclass
class FileHeader:
    fingerprint: dict
    n_tokens: int
    state_bytes: int
    crc32: int
    session: str | None
    data_offset: int              # where the tokens start

    @property
    def file_size(self) -> int:
        return self.data_offset + 4 * self.n_tokens + self.state_bytes


def token_bytes(tokens) -> bytes:
    """Tokens as int32 little-endian bytes (how files hold them, and how prefixes are compared)."""
    packed = array("i", tokens)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed.tobytes()


def tokens_of(raw: bytes | memoryview) -> list[int]:
    packed = array("i")
    packed.frombytes(raw)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed.tolist()


def write(path: Path, fingerprint: dict, tokens: bytes, state, session: str | None, *, stall=None) -> int:
    """Write a saved prefix atomically (temporary file, then rename); the file's size.

    `stall(written, total)` is called halfway through the state (fault injection for tests)."""
    crc = zlib.crc32(state, zlib.crc32(tokens))
    header = json.dumps({"fingerprint": fingerprint, "n_tokens": len(tokens) // 4, "state_bytes": len(state),
                         "crc32": crc, "session": session}, sort_keys=True).encode()
    temp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open_private(temp) as f:
            f.write(MAGIC)
            f.write(_HEADER_LEN.pack(len(header)))
            f.write(header)
            f.write(tokens)
            view = memoryview(state)
            half = len(view) // 2
            f.write(view[:half])
            if stall is not None:
                f.flush()
                stall(half, len(view))
            f.write(view[half:])
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _PREAMBLE + len(header) + len(tokens) + len(state)


def read_header(path: Path) -> FileHeader:
    """The header of a saved prefix, checked against the file's size; BadPrefixFile otherwise."""
    try:
        with open(path, "rb") as f:
            preamble = f.read(_PREAMBLE)
            if len(preamble) < _PREAMBLE or not preamble.startswith(MAGIC):
                raise BadPrefixFile("not a saved prefix (bad magic)")
            (length,) = _HEADER_LEN.unpack(preamble[len(MAGIC):])
            if length > _MAX_HEADER:
                raise BadPrefixFile("corrupt header")
            raw = f.read(length)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise ChangedPrefixFile("removed since it was indexed") from None
    except OSError as exc:
        raise BadPrefixFile(f"unreadable: {exc.strerror}") from None
    try:
        fields = json.loads(raw)
        header = FileHeader(dict(fields["fingerprint"]), int(fields["n_tokens"]), int(fields["state_bytes"]),
                            int(fields["crc32"]), fields.get("session"), _PREAMBLE + length)
    except (ValueError, KeyError, TypeError):
        raise BadPrefixFile("corrupt header") from None
    if size != header.file_size:
        raise BadPrefixFile(f"truncated ({size} of {header.file_size} bytes)" if size < header.file_size
                            else f"wrong size ({size}, expected {header.file_size} bytes)")
    return header


def read_body(path: Path, header: FileHeader) -> tuple[bytes, memoryview]:
    """The tokens (as bytes) and the state (a read-only view of the mapped file) of a saved prefix
    whose header was read; BadPrefixFile when the file changed or its checksum fails."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != header.file_size:
                raise ChangedPrefixFile("changed since it was indexed")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise ChangedPrefixFile("removed since it was indexed") from None
    except OSError as exc:
        raise BadPrefixFile(f"unreadable: {exc.strerror}") from None
    view = memoryview(mapped)
    start = header.data_offset
    tokens = bytes(view[start:start + 4 * header.n_tokens])
    state = view[start + 4 * header.n_tokens:]
    if zlib.crc32(state, zlib.crc32(tokens)) != header.crc32:
        state.release()
        view.release()
        raise BadPrefixFile("checksum mismatch (corrupt)")
    return tokens, state


def is_temporary(path: Path) -> bool:
    return TEMP_MARK in path.name


def temporary_is_orphaned(path: Path) -> bool:
    """Whether the process writing this temporary file is gone (another live server may share the dir)."""
    try:
        pid = int(path.name.rsplit(TEMP_MARK, 1)[1])
    except ValueError:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
