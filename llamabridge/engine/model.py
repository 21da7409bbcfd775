"""A Model is a GGUF file loaded once; caches opened on it share its weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .. import _core
from . import placement, rpc
from .cache import Cache
from .params import CacheParams, ModelParams


class Model:
    """Weights plus tokenizer and chat template of one GGUF file."""

    def __init__(self, path: str | os.PathLike, params: ModelParams = ModelParams(), name: str | None = None,
                 progress=None, caches: Sequence[CacheParams] = ()) -> None:
        """`caches`: the caches that will be opened on it, for fitting layers and contexts to the devices'
        free memory (placement.py); `cache(p)` with one of them opens it as fitted. None given: the layers
        are fitted beside one default cache (an automatic context, one slot)."""
        self.path = Path(path)
        self.params = params
        self.name = name or self.path.stem
        caches = list(caches) or [CacheParams()]
        if params.rpc:
            rpc.add_servers(params.rpc)          # each probed first: a missing server is a ModelLoadError
        self.native = _core.Model(
            str(self.path), placement=placement.request(params, caches, rpc.added_devices()),
            use_mmap=params.use_mmap,
            use_mlock=params.use_mlock, chat_template=params.chat_template, progress=progress,
        )
        self.placement: dict[str, Any] = self.native.placement
        try:
            fitted = placement.fitted_caches(caches, self.placement, self.native.n_ctx_train, self.name)
        except Exception:
            self.native.close()
            raise
        self._fitted = dict(zip(caches, fitted))
        self.caches: list[Cache] = []

    def fitted(self, params: CacheParams) -> CacheParams:
        """A cache's settings as the fit chose them (its automatic n_ctx), if it was one of `caches`."""
        return self._fitted.get(params, params)

    def cache(self, params: CacheParams = CacheParams(), name: str = "default", store=None,
              draft: "Model | None" = None) -> Cache:
        """Open a new KV cache (llama_context) on this model (see Cache for `store` and `draft`)."""
        cache = Cache(self, self.fitted(params), name, store, draft)
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
