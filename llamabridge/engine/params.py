"""Engine parameters defined once: the library, the CLI and the HTTP schemas share these defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .choices import Choice


class FlashAttn(Choice):
    """Whether a cache's context uses flash attention (auto: llama.cpp decides for the device)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class ParamError(ValueError):
    """A setting out of its range: `field` names it, so the config can say `caches.X.field` and the CLI
    `--field`; the message is theirs alike."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SplitMode(Choice):
    """How a model is spread over several devices (llama.cpp's split modes)."""

    NONE = "none"        # one device: main_gpu
    LAYER = "layer"      # whole layers (and their KV) per device
    ROW = "row"          # the rows of each weight across devices, where the backend supports it


AUTO_LAYERS, ALL_LAYERS = "auto", "all"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """An rpc-server's `host:port` (IPv6 as `[::1]:50052`) as (host, port); ValueError saying what is wrong."""
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port, not {endpoint!r}")
    return host.strip("[]"), int(port)
MAX_DEVICES = 16          # llama.cpp's llama_max_devices()


@dataclass(frozen=True)
class ModelParams:
    """How a GGUF file is loaded: on which devices, how many layers offloaded."""

    n_gpu_layers: int | str = AUTO_LAYERS   # "auto": as many as fit (llama.cpp's fitting, with every cache of
                                            # the model counted); "all"; or N layers (0: CPU only)
    devices: tuple[str, ...] | None = None  # devices by name ("CUDA0", "Vulkan0", "RPC[host:port]"); None:
                                            # llama.cpp's choice (GPUs, else an integrated GPU); (): none
    split_mode: SplitMode = SplitMode.LAYER
    tensor_split: tuple[float, ...] = ()    # each device's share of the layers (or rows); (): by free memory
    main_gpu: int = 0                       # the device (index in `devices`) of split_mode none
    rpc: tuple[str, ...] = ()               # rpc-servers (host:port) whose devices this model may use too
    use_mmap: bool = True
    use_mlock: bool = False
    chat_template: str | None = None  # Jinja source overriding the model's own

    def __post_init__(self) -> None:
        """Each setting checked (and given its one form) here, for the library, the config and the CLI."""
        layers = self.n_gpu_layers
        if isinstance(layers, str) and layers.strip().lstrip("-").isdigit():
            layers = int(layers)
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = ALL_LAYERS if layers < 0 else layers      # llama.cpp's -1 (any negative) means all
        elif layers not in (AUTO_LAYERS, ALL_LAYERS):
            raise ParamError("n_gpu_layers", f"must be 'auto', 'all' or a number of layers, not {layers!r}")
        object.__setattr__(self, "n_gpu_layers", layers)
        if self.devices is not None:
            devices = (self.devices,) if isinstance(self.devices, str) else tuple(self.devices)
            if devices == ("none",):
                devices = ()
            for name in devices:
                if not isinstance(name, str) or not name.strip() or name == "none":
                    raise ParamError("devices", f"must be device names (see `llamabridge devices`) or 'none', "
                                                f"not {name!r}")
            if len(devices) > MAX_DEVICES:
                raise ParamError("devices", f"at most {MAX_DEVICES} devices")
            object.__setattr__(self, "devices", tuple(d.strip() for d in devices))
        try:
            object.__setattr__(self, "split_mode", SplitMode(self.split_mode))
        except ValueError:
            raise ParamError("split_mode", f"must be 'none', 'layer' or 'row', not {self.split_mode!r}") from None
        split = tuple(self.tensor_split)
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in split) \
                or (split and not any(split)) or len(split) > MAX_DEVICES:
            raise ParamError("tensor_split", f"must be up to {MAX_DEVICES} shares >= 0, not all 0 (e.g. 3,1), "
                                             f"not {self.tensor_split!r}")
        object.__setattr__(self, "tensor_split", tuple(float(x) for x in split))
        if self.main_gpu < 0:
            raise ParamError("main_gpu", "must be a device index >= 0")
        rpc = (self.rpc,) if isinstance(self.rpc, str) else tuple(self.rpc)
        for endpoint in rpc:
            try:
                split_endpoint(endpoint)
            except (ValueError, AttributeError) as exc:
                raise ParamError("rpc", f"each server {exc}" if isinstance(exc, ValueError)
                                 else f"must be host:port strings, not {endpoint!r}") from None
        object.__setattr__(self, "rpc", tuple(e.strip() for e in rpc))

    @property
    def offloads(self) -> bool:
        """Whether these settings let layers leave the CPU (on a build with a device to take them)."""
        return self.n_gpu_layers != 0 and self.devices != ()


@dataclass(frozen=True)
class CacheParams:
    """One KV cache (llama_context) on a model."""

    n_ctx: int = 0               # tokens one request (one slot) may hold: prompt + output; 0 = the model's
                                 # training context, lowered to fit in free memory
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int = 0           # 0 = the physical cores
    n_threads_batch: int = 0     # 0 = same as n_threads
    n_parallel: int = 1          # slots: requests served at once (one KV sequence each)
    kv_size: int = 0             # KV cells in all; 0 = n_ctx * n_parallel (less makes requests wait for room)
    flash_attn: FlashAttn = FlashAttn.AUTO   # given as "auto" | "on" | "off" too
    type_k: str = "f16"
    type_v: str = "f16"
    offload_kqv: bool = True     # the KV cache (and attention) on the device of its layers; False: in RAM
    stream_interval_ms: int = 10  # a consumer is woken at most this often while its job streams (one wake
                                  # then brings several tokens); a job's start, first output and end at
                                  # once; 0 = at every token
    # speculative decoding: llama.cpp's n-gram drafters ("ngram-mod", "ngram-simple", "ngram-map-k",
    # "ngram-map-k4v") and "draft-simple" (a draft model), comma-separated, tried in llama.cpp's order: simple,
    # map-k, map-k4v, mod, the draft model; "" = off. Each generating slot's draft is verified in the shared
    # batch; the answer is the same token for token.
    speculative: str = ""
    draft_model: str = ""        # the draft model ([models.NAME] in a config): its own context beside this one's,
                                 # on the same sequences; turns on "draft-simple" (after any n-gram types)
    draft_max: int = 0           # the most tokens one draft proposes; 0 = each type's own (48, ngram-mod 64,
                                 # a draft model 3)
    draft_min: int = 0           # ngram-mod and a draft model propose no shorter draft; 0 = their own (48 at
                                 # most draft_max, 0)
    draft_ngram: int = 0         # the n-gram looked up; 0 = each type's own (12, ngram-mod 24)
    draft_p_min: float = 0.0     # a draft model's draft ends where its top token's probability is below this

    def __post_init__(self) -> None:
        """Each setting checked here, once, for the library, the config and the CLI alike."""
        try:
            object.__setattr__(self, "flash_attn", FlashAttn(self.flash_attn))
        except ValueError:
            raise ParamError("flash_attn", f"must be 'auto', 'on' or 'off', not {self.flash_attn!r}") from None
        for positive in ("n_batch", "n_ubatch", "n_parallel"):
            if getattr(self, positive) <= 0:
                raise ParamError(positive, "must be a positive integer")
        for name, zero in (("n_ctx", "the model's own context"), ("n_threads", "the physical cores"),
                           ("n_threads_batch", "n_threads"), ("kv_size", "n_ctx × n_parallel"),
                           ("stream_interval_ms", "every token")):
            if getattr(self, name) < 0:
                raise ParamError(name, f"must be 0 ({zero}) or a positive number")
        unknown = [t for t in self.speculative_types if t not in SPECULATIVE_TYPES]
        if unknown:
            raise ParamError("speculative", f"{', '.join(unknown)}: not a speculation type here (the types: "
                                            f"{', '.join(SPECULATIVE_TYPES)}, comma-separated)")
        object.__setattr__(self, "draft_model", self.draft_model.strip())
        if DRAFT_MODEL_TYPE in (t.strip() for t in self.speculative.split(",")) and not self.draft_model:
            raise ParamError("speculative", f"{DRAFT_MODEL_TYPE} drafts with a draft model: name one in draft_model")
        if not 0.0 <= self.draft_p_min <= 1.0:
            raise ParamError("draft_p_min", "must be a probability from 0 to 1")
        for name in ("draft_max", "draft_min", "draft_ngram"):
            if not 0 <= getattr(self, name) <= 1024:
                raise ParamError(name, "must be 0 (the type's own) or a number of tokens up to 1024")
        if self.kv_size and self.n_ctx and self.kv_size < self.n_ctx:
            raise ParamError("kv_size", f"must be 0 or at least n_ctx ({self.n_ctx}): one request may fill its slot")

    @property
    def speculative_types(self) -> tuple[str, ...]:
        """The types asked for, with the draft model's when draft_model names one."""
        types = tuple(t.strip() for t in self.speculative.split(",") if t.strip())
        return types + (DRAFT_MODEL_TYPE,) if self.draft_model and DRAFT_MODEL_TYPE not in types else types

    def speculator_params(self) -> dict:
        """The drafters' settings as _core.Speculator takes them (0: llama.cpp's own)."""
        params: dict[str, Any] = {"types": list(self.speculative_types)}
        for key, value in (("n_max", self.draft_max), ("n_min", self.draft_min), ("ngram_size", self.draft_ngram),
                           ("p_min", self.draft_p_min)):
            if value:
                params[key] = value
        return params


# llama.cpp's drafters (common/speculative.cpp) used here: its n-gram types, and a draft model's
DRAFT_MODEL_TYPE = "draft-simple"
SPECULATIVE_TYPES = ("ngram-mod", "ngram-simple", "ngram-map-k", "ngram-map-k4v", DRAFT_MODEL_TYPE)


@dataclass(frozen=True)
class SamplingParams:
    """Token sampling. temperature 0 is greedy and deterministic."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None      # None = random
    logit_bias: tuple[tuple[int, float], ...] = ()   # (token, bias) added to its logit; -100 bans it

    def to_native(self) -> dict:
        native: dict[str, Any] = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "penalty_last_n": self.penalty_last_n,
        }
        if self.seed is not None:
            native["seed"] = self.seed & 0xFFFFFFFF
        if self.logit_bias:
            native["logit_bias"] = [list(pair) for pair in self.logit_bias]
        return native


GREEDY = SamplingParams(temperature=0.0)


@dataclass(frozen=True)
class ThinkingParams:
    """Reasoning on/off for templates that support it, with an optional token budget."""

    enabled: bool = True
    budget_tokens: int | None = None


DEFAULT_THINKING = ThinkingParams()


@dataclass(frozen=True)
class _Defaults:
    model: ModelParams = field(default_factory=ModelParams)
    cache: CacheParams = field(default_factory=CacheParams)
    sampling: SamplingParams = field(default_factory=SamplingParams)


DEFAULTS = _Defaults()
