"""What a saved KV state is valid for: the model file, the context's shape, the template and the build.

A state saved from one context is restored only into a context with an equal Fingerprint; any
difference (another file at the model's path, another n_ctx, KV types or chat template, another
llama.cpp build) makes it a different cache, never a wrong answer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

# hashed from the model file: its start (the GGUF header: metadata, tensor index; and the first
# tensors), plus samples spread over the rest (fine-tunes can share a header byte for byte)
MODEL_HASH_BYTES = 16 << 20
MODEL_SAMPLES = 16
MODEL_SAMPLE_BYTES = 64 << 10


@dataclass(frozen=True)
class Fingerprint:
    model_path: str
    model_size: int
    model_hash: str          # sha256 of the file's first MODEL_HASH_BYTES and samples of the rest
    n_ctx: int
    type_k: str
    type_v: str
    flash_attn: str
    template_hash: str       # sha256 of the chat template in use
    llama_cpp: str           # commit the extension was built against
    build: str               # sha256 of the llama/ggml libraries loaded

    @functools.cached_property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Fingerprint":
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            raise ValueError("fingerprint fields differ")
        return cls(**data)

    def differences(self, other: "Fingerprint") -> list[str]:
        """What differs, in words: 'n_ctx 4096 (here 8192)'."""
        out = []
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine != theirs:
                out.append(_IN_WORDS.get(field.name) or f"{field.name} {theirs} (here {mine})")
        return list(dict.fromkeys(out))


# fields whose values mean nothing to a reader: what a difference in them says
_IN_WORDS = {"model_size": "another model file", "model_hash": "another model file",
             "template_hash": "another chat template", "build": "another llama.cpp build"}


def model_identity(path: str | os.PathLike) -> tuple[str, int, str]:
    """(resolved path, size, hash of its start and of samples of the rest) of a model file."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, _head_hash(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _head_hash(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(MODEL_HASH_BYTES))
        if size > MODEL_HASH_BYTES:
            stride = (size - MODEL_HASH_BYTES) // MODEL_SAMPLES
            for i in range(MODEL_SAMPLES):
                f.seek(MODEL_HASH_BYTES + i * stride)
                digest.update(f.read(MODEL_SAMPLE_BYTES))
    return digest.hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """A hash of the llama.cpp libraries beside the extension (the KV layout is theirs)."""
    from .. import _core

    digest = hashlib.sha256(_core.LLAMA_CPP_COMMIT.encode())
    folder = Path(_core.__file__).parent
    for lib in sorted(folder.glob("lib*")):
        if lib.name.startswith(("libllama", "libggml")) and lib.is_file():
            digest.update(lib.name.encode())
            digest.update(lib.read_bytes())
    return digest.hexdigest()[:32]


def cache_fingerprint(model_path, chat_template: str, n_ctx: int, type_k: str, type_v: str,
                      flash_attn: str) -> Fingerprint:
    from .. import _core

    path, size, head = model_identity(model_path)
    return Fingerprint(path, size, head, n_ctx, type_k, type_v, flash_attn,
                       hashlib.sha256(chat_template.encode()).hexdigest()[:32], _core.LLAMA_CPP_COMMIT, build_id())
