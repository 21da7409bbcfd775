"""Server configuration: a TOML file (or --model flags) turned into typed, validated settings once.

    state_dir, cache_ram_mb, cache_disk_mb   (top-level keys: where saved prefixes are kept)
    [models.NAME]   path = "..."   (+ n_gpu_layers = "auto" | "all" | N, devices = ["Vulkan0"] | "none",
                    split_mode, tensor_split = [3, 1], main_gpu, rpc = ["host:50052"], use_mmap, use_mlock,
                    chat_template_file)
    [caches.NAME]   model = "NAME", n_ctx, n_parallel, kv_size, n_batch, n_ubatch, n_threads,
                    flash_attn, type_k, type_v, offload_kqv, stream_interval_ms,
                    speculative = "ngram-mod,ngram-simple", draft_model = "NAME", draft_max, draft_min,
                    draft_ngram, draft_p_min,
                    overflow = "clamp" | "reject", description
    [[routes]]      match = "*haiku*", cache = "NAME"     (glob on the request's model; first match wins)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..engine.choices import Choice
from ..engine.params import CacheParams, ModelParams, ParamError
from ..engine.system import available_memory
from ..errors import BridgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(BridgeError):
    """A mistake in the configuration; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: str
    params: ModelParams = ModelParams()


class Overflow(Choice):
    """What a cache does when a request's prompt plus max_tokens exceed its context."""

    CLAMP = "clamp"      # lower max_tokens to what fits (stop with max_tokens when full)
    REJECT = "reject"    # a 400 before anything runs


@dataclass(frozen=True)
class CacheConfig:
    name: str
    model: str
    params: CacheParams = CacheParams()
    overflow: Overflow = Overflow.CLAMP    # clamp: lower max_tokens to what fits; reject: 400
    description: str = ""


@dataclass(frozen=True)
class Route:
    match: str
    cache: str

    def matches(self, model_name: str) -> bool:
        return fnmatch.fnmatchcase(model_name.lower(), self.match.lower())


MB = 1 << 20
RAM_SHARE, RAM_MAX_MB = 0.25, 8192          # the RAM tier's default: a quarter of available memory, at most 8 GiB
DISK_SHARE, DISK_MAX_MB = 0.25, 20480       # the disk tier's default: a quarter of the free space, at most 20 GiB


def _user_cache_dir() -> str:
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "llamabridge")


def default_state_dir() -> str:
    """$LLAMABRIDGE_STATE_DIR (empty: no disk tier), else the user's cache directory's llamabridge/kv."""
    if "LLAMABRIDGE_STATE_DIR" in os.environ:
        return os.environ["LLAMABRIDGE_STATE_DIR"]
    return os.path.join(_user_cache_dir(), "kv")


def default_debug_dir() -> str:
    """Where `serve --debug` writes its traces: the user's cache directory's llamabridge/debug, beside the
    saved prefixes (never the current directory, which may be a repository the traces would end up in)."""
    return os.path.join(_user_cache_dir(), "debug")


@dataclass(frozen=True)
class StoreConfig:
    """Saved prefixes: KV states of conversations that left their slots, kept in RAM and on disk."""

    state_dir: str | None = None     # None: default_state_dir(); "": no disk tier
    ram_mb: int | None = None        # None: a share of available memory; 0: no RAM tier
    disk_mb: int | None = None       # None: a share of the free disk space; 0: no disk tier

    def resolve(self) -> tuple[Path | None, int, int]:
        """(state directory or None, RAM bound, disk bound) in bytes, the automatic values filled in."""
        state_dir = default_state_dir() if self.state_dir is None else self.state_dir
        path = Path(state_dir).expanduser() if state_dir else None
        ram_mb = self.ram_mb if self.ram_mb is not None else min(RAM_MAX_MB, int(RAM_SHARE * available_memory() / MB))
        if path is None:
            disk_mb = 0
        elif self.disk_mb is None:
            disk_mb = min(DISK_MAX_MB, int(DISK_SHARE * _free_disk_mb(path)))
        else:
            disk_mb = self.disk_mb
        return (path if disk_mb > 0 else None), ram_mb * MB, disk_mb * MB


def _free_disk_mb(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free // MB
    except OSError:
        return 0


@dataclass(frozen=True)
class ServerConfig:
    models: dict[str, ModelConfig]
    caches: dict[str, CacheConfig]
    routes: tuple[Route, ...]
    source: str = "command line"
    store: StoreConfig = StoreConfig()

    def route_for_model(self, model_name: str) -> CacheConfig | None:
        """The cache the first matching route names, or None."""
        for route in self.routes:
            if route.matches(model_name):
                return self.caches[route.cache]
        return None

    def model_names(self) -> list[str]:
        """Names a client can use: the routes' literal patterns, else the models' names."""
        literal = [r.match for r in self.routes if not any(ch in r.match for ch in "*?[")]
        return literal or list(self.models)

    def listed_models(self) -> list[tuple[str, CacheConfig]]:
        """What model lists show: each name a client can use with the cache it routes to
        (a name no route matches is left out)."""
        return [(name, cache) for name in self.model_names() if (cache := self.route_for_model(name)) is not None]


_MODEL_KEYS = {"path", "n_gpu_layers", "devices", "split_mode", "tensor_split", "main_gpu", "rpc", "use_mmap",
               "use_mlock", "chat_template_file", "description"}
_CACHE_KEYS = {"model", "overflow", "description"} | {f.name for f in fields(CacheParams)}
_ROUTE_KEYS = {"match", "cache"}
_STORE_KEYS = {"state_dir", "cache_ram_mb", "cache_disk_mb"}
_TOP_KEYS = {"models", "caches", "routes"} | _STORE_KEYS


DRAFT_MODEL_NAME = "draft"      # `serve --draft-model PATH`'s model


def single_model_config(model_path: str, cache: CacheParams, model: ModelParams = ModelParams(),
                        overflow: str = "clamp", name: str | None = None,
                        draft_model: str | None = None) -> ServerConfig:
    """`serve --model PATH`: one model, one cache, every model name routed to it; with `draft_model` (a path),
    that model drafts for it (cache.draft_model names it)."""
    name = name or Path(model_path.rstrip("/")).name.removesuffix(".gguf") or "default"
    if name == DRAFT_MODEL_NAME:
        name = "target"
    models = {name: ModelConfig(name, model_path, model)}
    if draft_model:
        models[DRAFT_MODEL_NAME] = ModelConfig(DRAFT_MODEL_NAME, draft_model, model)
    return ServerConfig(
        models=models,
        caches={name: CacheConfig(name, name, cache, Overflow(overflow), "all requests")},
        routes=(Route("*", name),),
    )


def load_config(path: str | Path) -> ServerConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, str(path), base_dir=path.parent)


def parse_config(data: dict[str, Any], source: str, base_dir: Path | None = None) -> ServerConfig:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {message}")

    _unknown(data, _TOP_KEYS, "", fail)
    models: dict[str, ModelConfig] = {}
    for name, table in _tables(data, "models", fail).items():
        key = f"models.{name}"
        _unknown(table, _MODEL_KEYS, key, fail)
        if "path" not in table:
            raise fail(key, "missing required key 'path'")
        template = None
        if "chat_template_file" in table:
            template_path = Path(_typed(table, "chat_template_file", str, key, fail))
            if base_dir is not None and not template_path.is_absolute():
                template_path = base_dir / template_path
            if not template_path.is_file():
                raise fail(f"{key}.chat_template_file", f"file not found: {template_path}")
            template = template_path.read_text()
        devices = _typed(table, "devices", (list, str), key, fail, None)
        try:
            model_params = ModelParams(
                n_gpu_layers=_typed(table, "n_gpu_layers", (int, str), key, fail, ModelParams.n_gpu_layers),
                devices=tuple(devices) if isinstance(devices, list) else devices,
                split_mode=_typed(table, "split_mode", str, key, fail, ModelParams.split_mode),
                tensor_split=tuple(_typed(table, "tensor_split", list, key, fail, [])),
                main_gpu=_typed(table, "main_gpu", int, key, fail, ModelParams.main_gpu),
                rpc=tuple(_typed(table, "rpc", list, key, fail, [])),
                use_mmap=_typed(table, "use_mmap", bool, key, fail, ModelParams.use_mmap),
                use_mlock=_typed(table, "use_mlock", bool, key, fail, ModelParams.use_mlock),
                chat_template=template,
            )
        except ParamError as exc:
            raise fail(f"{key}.{exc.field}", exc.message) from None
        models[name] = ModelConfig(name, _typed(table, "path", str, key, fail), model_params)
    if not models:
        raise fail("models", "at least one [models.NAME] table is required")

    caches: dict[str, CacheConfig] = {}
    for name, table in _tables(data, "caches", fail).items():
        key = f"caches.{name}"
        _unknown(table, _CACHE_KEYS, key, fail)
        model = _typed(table, "model", str, key, fail, None)
        if model is None:
            raise fail(key, "missing required key 'model'")
        if model not in models:
            raise fail(f"{key}.model", f"no [models.{model}] (models: {', '.join(models)})")
        overflow = _typed(table, "overflow", str, key, fail, "clamp")
        if overflow not in {o.value for o in Overflow}:
            raise fail(f"{key}.overflow", f"must be 'clamp' or 'reject', not {overflow!r}")
        defaults = CacheParams()
        values = {}
        for f in fields(CacheParams):
            default = getattr(defaults, f.name)
            kind = str if isinstance(default, str) else type(default)      # an enum's members are given by value
            values[f.name] = _typed(table, f.name, kind, key, fail, default)
        try:
            cache_params = CacheParams(**values)
        except ParamError as exc:
            raise fail(f"{key}.{exc.field}", exc.message) from None
        draft = cache_params.draft_model
        if draft and draft not in models:
            raise fail(f"{key}.draft_model", f"no [models.{draft}] (models: {', '.join(models)})")
        if draft == model:
            raise fail(f"{key}.draft_model", f"is the cache's own model ({model}): a draft model is a smaller one "
                                             "on the same vocabulary")
        caches[name] = CacheConfig(name, model, cache_params, Overflow(overflow),
                                   _typed(table, "description", str, key, fail, ""))
    if not caches:  # one cache per model, named after it
        caches = {name: CacheConfig(name, name) for name in models}

    routes = []
    raw_routes = data.get("routes", [])
    if not isinstance(raw_routes, list):
        raise fail("routes", "must be an array of tables ([[routes]])")
    for i, table in enumerate(raw_routes):
        key = f"routes[{i}]"
        if not isinstance(table, dict):
            raise fail(key, "must be a table with 'match' and 'cache'")
        _unknown(table, _ROUTE_KEYS, key, fail)
        match = _typed(table, "match", str, key, fail, None)
        cache = _typed(table, "cache", str, key, fail, None)
        if match is None or cache is None:
            raise fail(key, "needs both 'match' and 'cache'")
        if cache not in caches:
            raise fail(f"{key}.cache", f"no [caches.{cache}] (caches: {', '.join(caches)})")
        routes.append(Route(match, cache))
    if not routes:
        routes = [Route(name, name) for name in caches] if len(caches) > 1 else [Route("*", next(iter(caches)))]

    store = StoreConfig(_typed(data, "state_dir", str, "", fail, None),
                        _typed(data, "cache_ram_mb", int, "", fail, None),
                        _typed(data, "cache_disk_mb", int, "", fail, None))
    for key in ("cache_ram_mb", "cache_disk_mb"):
        if data.get(key, 0) < 0:
            raise fail(key, "must be 0 (off) or a positive number of MiB")
    if store.state_dir and base_dir is not None and not Path(store.state_dir).expanduser().is_absolute():
        store = dataclasses.replace(store, state_dir=str(base_dir / store.state_dir))
    return ServerConfig(models, caches, tuple(routes), source, store=store)


def _tables(data, key, fail) -> dict[str, dict]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise fail(key, f"must be tables ([{key}.NAME])")
    return value


def _unknown(table, allowed, key, fail) -> None:
    for name in table:
        if name not in allowed:
            where = f"{key}.{name}" if key else name
            raise fail(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")


_MISSING = object()


def _typed(table, name, kind, key, fail, default=_MISSING):
    if name not in table:
        if default is _MISSING:
            raise fail(key, f"missing required key {name!r}")
        return default
    value = table[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        wanted = " or ".join(k.__name__ for k in kinds)
        raise fail(f"{key}.{name}" if key else name, f"must be {wanted}, not {type(value).__name__} ({value!r})")
    return value
