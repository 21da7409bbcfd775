"""A cache's automatic sizes: n_ctx from the model (within free memory) and threads from the cores."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .params import CacheParams
from .system import available_memory, physical_cores

log = logging.getLogger("llamabridge.engine")

# bytes per element of each KV cache type (block types: block bytes / 32 elements)
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                 "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}
# the share of available memory an automatic context's KV cache may take
KV_MEMORY_SHARE = 0.5
MIN_AUTO_CTX = 4096


def kv_bytes_per_token(native, type_k: str = "f16", type_v: str = "f16") -> float:
    """KV cache bytes one token takes in one sequence (every layer's K and V row)."""
    meta = native.metadata()
    arch = native.architecture
    head_dim = native.n_embd // max(1, native.n_head)
    k_len = int(meta.get(f"{arch}.attention.key_length", head_dim))
    v_len = int(meta.get(f"{arch}.attention.value_length", head_dim))
    return native.n_layer * native.n_head_kv * (k_len * KV_TYPE_BYTES.get(type_k, 2.0)
                                                 + v_len * KV_TYPE_BYTES.get(type_v, 2.0))


def resolve(native, params: CacheParams, name: str, available: int | None = None) -> CacheParams:
    """`params` with n_ctx 0 made the model's training context (lowered, with a warning, until the KV
    cache of every slot fits in half the available memory) and n_threads 0 the physical cores."""
    changes: dict[str, Any] = {}
    if params.n_threads == 0:
        changes["n_threads"] = physical_cores()
    if params.n_ctx == 0:
        wanted = native.n_ctx_train or 4096
        per_token = kv_bytes_per_token(native, params.type_k, params.type_v)
        cells = params.kv_size or wanted * params.n_parallel
        budget = KV_MEMORY_SHARE * (available if available is not None else available_memory())
        n_ctx = wanted
        if per_token * cells > budget:
            fit = int(budget / per_token / (params.n_parallel if not params.kv_size else 1))
            n_ctx = max(MIN_AUTO_CTX, min(wanted, fit // 1024 * 1024))
            log.warning("cache %s: the model's context of %d tokens needs %.1f GiB of KV cache for %d slot(s), "
                        "more than half the free memory; using n_ctx %d (set n_ctx to choose)", name, wanted,
                        per_token * cells / (1 << 30), params.n_parallel, n_ctx)
        changes["n_ctx"] = n_ctx
        if params.kv_size and params.kv_size < n_ctx:
            changes["kv_size"] = n_ctx
    return dataclasses.replace(params, **changes) if changes else params
