"""A Model is a GGUF file loaded once; caches opened on it share its weights."""

from __future__ import annotations

import os
from pathlib import Path

from .. import _core
from .cache import Cache
from .params import CacheParams, ModelParams


class Model:
    """Weights plus tokenizer and chat template of one GGUF file."""

    def __init__(self, path: str | os.PathLike, params: ModelParams = ModelParams(), name: str | None = None,
                 progress=None) -> None:
        self.path = Path(path)
        self.params = params
        self.name = name or self.path.stem
        self.native = _core.Model(
            str(self.path), n_gpu_layers=params.n_gpu_layers, use_mmap=params.use_mmap,
            use_mlock=params.use_mlock, chat_template=params.chat_template, progress=progress,
        )
        self.caches: list[Cache] = []

    def cache(self, params: CacheParams = CacheParams(), name: str = "default", store=None) -> Cache:
        """Open a new KV cache (llama_context) on this model (see Cache for `store`)."""
        cache = Cache(self, params, name, store)
        self.caches.append(cache)
        return cache

    def close(self) -> None:
        """Free every cache, then the weights. Safe to call twice."""
        for cache in self.caches:
            cache.close()
        self.caches.clear()
        self.native.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata and tokens, for callers that need no cache

    @property
    def n_ctx_train(self) -> int:
        return self.native.n_ctx_train

    @property
    def n_vocab(self) -> int:
        return self.native.n_vocab

    @property
    def architecture(self) -> str:
        return self.native.architecture

    @property
    def chat_template(self) -> str:
        return self.native.chat_template

    def metadata(self) -> dict[str, str]:
        return self.native.metadata()

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return self.native.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.native.detokenize(tokens)
