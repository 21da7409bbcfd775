"""Where a model's layers and its caches' KV go: ggml's devices and llama.cpp's own fitting.

With `n_gpu_layers = "auto"` (the default) on a build with a device to offload to, the layers and
the automatic contexts are chosen by llama.cpp's fitting (common/fit.h, what llama-server and
llama-fit-params use) from the devices' free memory, with every cache of the model counted:

- the model's caches of automatic size (n_ctx 0) are the context the fit sizes: their slots share
  what it chooses, each slot at most the model's training context and at least MIN_CTX tokens;
- every other cache (explicit n_ctx) is measured by llama.cpp (KV and compute buffers, no allocation)
  and kept free beside it (the fit's per-device margin); with no automatic cache, the first explicit one
  is the fitted context.

Models are placed one after the other, each once the previous one's weights and caches hold their
memory, so the free memory every fit sees already counts them. A CPU-only build, or a model given
`devices = []` / `n_gpu_layers = 0`, keeps the CPU sizing (sizing.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from .. import _core
from ..errors import ModelLoadError
from .params import ALL_LAYERS, AUTO_LAYERS, CacheParams, ModelParams

GiB = float(1 << 30)
MIN_CTX = 4096            # the smallest automatic context the fit may choose (llama-server's --fit-ctx)
MARGIN = 1 << 30          # bytes left free on each device (llama-server's --fit-target)
CTX_ALIGN = 256
ALL = 999                 # n_gpu_layers for "all": more than any model has, so the fit keeps it


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str             # cpu | gpu | igpu | accel | meta
    free: int             # bytes
    total: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def devices() -> list[Device]:
    """Every backend device of this build (the CPU included)."""
    return [Device(d["name"], d["description"], d["type"], d["free"], d["total"]) for d in _core.devices()]


def _context(params: CacheParams, n_ctx: int, n_seq_max: int = 1, kv_unified: bool = True) -> dict[str, Any]:
    return {"n_ctx": n_ctx, "n_seq_max": n_seq_max, "kv_unified": kv_unified, "n_batch": params.n_batch,
            "n_ubatch": params.n_ubatch, "type_k": params.type_k, "type_v": params.type_v,
            "flash_attn": params.flash_attn.value, "offload_kqv": params.offload_kqv}


def _cells(params: CacheParams) -> int:
    return params.kv_size or params.n_ctx * params.n_parallel


def default_devices(own_rpc: Sequence[str], rpc_devices: dict[str, list[str]]) -> list[str] | None:
    """The devices of a model that names none: llama.cpp's own choice (None) while no rpc-server was added
    to this process; once one was, that choice would take every server's devices for every model, so the
    list is made here the same way for this model's servers only: their devices first (fewer network
    transfers), then the local GPUs, or the integrated GPUs when there is no GPU."""
    if not rpc_devices:
        return None
    remote = {name for names in rpc_devices.values() for name in names}
    local = [d for d in devices() if d.name not in remote]
    gpus = [d.name for d in local if d.kind == "gpu"] or [d.name for d in local if d.kind == "igpu"]
    return [name for endpoint in own_rpc for name in rpc_devices.get(endpoint, [])] + gpus


def request(params: ModelParams, caches: Sequence[CacheParams],
            rpc_devices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """What _core.Model is asked for: the devices and layers, and (for a fit) the contexts to count.
    `rpc_devices`: every rpc-server added to this process and its devices."""
    layers = params.n_gpu_layers
    placement: dict[str, Any] = {
        "n_gpu_layers": -1 if layers == AUTO_LAYERS else ALL if layers == ALL_LAYERS else layers,
        "split_mode": params.split_mode.value, "main_gpu": params.main_gpu,
        "tensor_split": list(params.tensor_split), "n_ctx_min": MIN_CTX, "margin": MARGIN,
    }
    if params.devices is not None:
        placement["devices"] = list(params.devices)
    else:
        chosen = default_devices(params.rpc, rpc_devices or {})
        if chosen is not None:
            placement["devices"] = chosen
    automatic = [c for c in caches if c.n_ctx == 0]
    explicit = [c for c in caches if c.n_ctx != 0]
    offloads = params.offloads and placement.get("devices") != []
    placement["fit"] = offloads and bool(caches) and (layers == AUTO_LAYERS or bool(automatic))
    if automatic:
        slots = sum(c.n_parallel for c in automatic)
        # one stream per slot: the fit's automatic context is then n_ctx_train per slot at most
        placement["main"] = _context(automatic[0], 0, slots, kv_unified=slots == 1)
        placement["others"] = [_context(c, _cells(c)) for c in explicit]
    elif explicit:
        placement["main"] = _context(explicit[0], _cells(explicit[0]))
        placement["others"] = [_context(c, _cells(c)) for c in explicit[1:]]
    return placement


def fitted_caches(caches: Sequence[CacheParams], chosen: dict[str, Any], n_ctx_train: int,
                  model_name: str) -> list[CacheParams]:
    """The caches with the context the fit chose for the automatic ones (the others as given)."""
    automatic = [c for c in caches if c.n_ctx == 0]
    if not chosen.get("fitted") or not automatic:
        return list(caches)
    slots = sum(c.n_parallel for c in automatic)
    per_slot = min(n_ctx_train or MIN_CTX, chosen["n_ctx"] // slots // CTX_ALIGN * CTX_ALIGN)
    # reduced all the way to the minimum and still no fit (with the layers fixed: "all" or N; with "auto" the
    # fit moves layers to the CPU instead, whose memory it takes as unbounded)
    if chosen["status"] == "does not fit" and per_slot <= MIN_CTX:
        raise ModelLoadError(f"model {model_name}: even a {MIN_CTX}-token context for each of its {slots} "
                             "automatic slot(s) does not fit in the devices' free memory beside its layers; "
                             "give fewer n_gpu_layers, fewer n_parallel, a smaller n_ctx or a quantized KV "
                             "cache (type_k/type_v)")
    per_slot = max(per_slot, MIN_CTX)
    return [dataclasses.replace(c, n_ctx=per_slot, kv_size=max(c.kv_size, per_slot) if c.kv_size else 0)
            if c.n_ctx == 0 else c for c in caches]


def size(n: int) -> str:
    """Bytes as a log line shows them: GiB from 1 GiB up, MiB (KiB) below."""
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def layers_line(name: str, chosen: dict[str, Any], n_layer: int, memory: dict[str, Any]) -> str:
    """`model m: 28/29 layers on Vulkan0 (1.2 GiB), 0.1 GiB in RAM; fitted to free memory`"""
    offloaded, total = layers_on(chosen, n_layer)
    weights = weights_on(memory)
    host = weights.pop("CPU", 0)
    where = ", ".join(f"{dev} ({size(n)})" for dev, n in weights.items()) or "the CPU"
    why = {"fits": "fitted to free memory", "does not fit": "as given (not fitted)",
           "error": "fitting failed"}.get(chosen.get("status", ""), "as given")
    text = f"model {name}: {offloaded}/{total} layers on {where}"
    if weights and host:
        text += f", {size(host)} in RAM"
    if chosen.get("overrides"):
        text += f", {chosen['overrides']} expert tensors kept in RAM"
    return f"{text}; {why}" if chosen.get("offload") else text


def cache_line(name: str, params: CacheParams, memory: dict[str, Any], flash_attn: str = "") -> str:
    """`cache main: n_ctx 32768 x 4 slots, KV 3.0 GiB on Vulkan0, flash attention on (auto)`"""
    where = ", ".join(f"{size(n)} on {dev}" for dev, n in kv_on(memory).items()) or "none"
    slots = f"{params.n_parallel} slot{'s' if params.n_parallel != 1 else ''}"
    text = f"cache {name}: n_ctx {params.n_ctx} x {slots}, KV {where}"
    if flash_attn:
        text += f", flash attention {flash_attn}" + (" (auto)" if params.flash_attn == "auto" else "")
    return text


def layers_on(chosen: dict[str, Any], n_layer: int) -> tuple[int, int]:
    """(layers offloaded, layers in all) as llama.cpp counts them (the output layer is one more)."""
    total = n_layer + 1
    ngl = chosen.get("n_gpu_layers", 0)
    return (0 if not chosen.get("offload") else total if ngl < 0 else min(ngl, total)), total


def info(chosen: dict[str, Any], n_layer: int, memory: dict[str, Any]) -> dict[str, Any]:
    """A model's placement for /info: layers offloaded, the bytes of its weights on each device, how chosen."""
    offloaded, total = layers_on(chosen, n_layer)
    return {"layers": f"{offloaded}/{total}", "fitted": chosen.get("fitted", False), "status": chosen.get("status"),
            "weights": weights_on(memory)}


def weights_on(memory: dict[str, Any]) -> dict[str, int]:
    """A model's weight bytes on each device ("CPU": in RAM)."""
    return {dev: m["model"] for dev, m in memory["memory"].items() if m["model"]}


def kv_on(memory: dict[str, Any]) -> dict[str, int]:
    """A cache's KV bytes on each device."""
    return {dev: m["context"] for dev, m in memory["memory"].items() if m["context"]}
