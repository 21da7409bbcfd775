"""The model pool: the models and caches a config names, loaded once, routed to by model name.

The server and the in-process CLI commands (`chat --model/--config`) share it; it knows no
protocol. It owns the saved-prefix store every cache uses, restores saved prefixes into empty
slots after a restart (in the background, while requests are already served), and writes
them back at close.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from ..engine.choices import Choice
from ..engine.params import DRAFT_MODEL_TYPE, ParamError
from ..errors import BridgeError, ModelLoadError, ModelNotFoundError, OverloadedError
from .config import CacheConfig, ConfigError, ServerConfig
from .served_cache import ServedCache

if TYPE_CHECKING:
    from ..engine import Cache, Model
    from ..engine.prefix_store import PrefixStore

log = logging.getLogger("llamabridge.server")


class PoolStatus(Choice):
    """Where loading stands (a str: /health and /info show the value)."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class ModelPool:
    def __init__(self, config: ServerConfig, *, mock: bool = False) -> None:
        self.config = config
        self.mock = mock                      # caches that answer without a model (mock.py)
        self.status = PoolStatus.LOADING
        self.error: str | None = None
        self.models: dict[str, Model] = {}
        self.model_caches: dict[str, list[Cache]] = {}   # each loaded model's caches, in config order
        self.caches: dict[str, ServedCache] = {}
        self.failed: dict[str, str] = {}      # model name -> why it did not load (the others still serve)
        self.store: PrefixStore | None = None  # the PrefixStore every cache saves its slots' states to
        self.warm_up: threading.Thread | None = None
        self.load_seconds = 0.0
        self.model_load_seconds: dict[str, float] = {}

    # -- loading (the server runs it in a thread so /health can answer 503 meanwhile)

    def load(self, progress=None, load_progress=None) -> None:
        """Load every model and open every cache. `progress(message)` hears each step,
        `load_progress(model_name, fraction)` the weights loading."""
        started = time.perf_counter()
        try:
            if self.mock:
                from .mock import MockCache
                self.caches = {name: MockCache(cfg) for name, cfg in self.config.caches.items()}
            else:
                self._load_models(progress, load_progress)
            self.status = PoolStatus.READY
        except BridgeError as exc:
            self.status, self.error = PoolStatus.FAILED, exc.message
            raise
        except Exception as exc:
            self.status, self.error = PoolStatus.FAILED, str(exc)
            raise
        finally:
            self.load_seconds = time.perf_counter() - started

    def _load_models(self, progress, load_progress) -> None:
        """Each model, then its caches, one model after the other: a model's layers and automatic contexts
        are fitted to the devices' free memory (engine/placement.py) once the models before it hold theirs."""
        from ..engine import Model, placement
        from .model_files import resolve_model_path

        store = self.store = open_store(self.config)
        opened: list[Cache] = []
        caches = self.config.caches
        drafts = {cc.params.draft_model for cc in caches.values() if cc.params.draft_model}
        # draft models first: the caches that draft with one open it beside their own context
        order = sorted(self.config.models.items(), key=lambda item: item[0] not in drafts)
        for name, cfg in order:
            cache_cfgs = {c: cc for c, cc in caches.items() if cc.model == name}
            # the contexts it will hold: its own caches' and the draft contexts of the caches drafting with it
            fitted = [cc.params for cc in cache_cfgs.values()] + \
                [cc.params for cc in caches.values() if cc.params.draft_model == name]
            if progress:
                progress(f"loading model {name}")
            report = (lambda fraction, name=name: load_progress(name, fraction)) if load_progress else None
            started = time.perf_counter()
            try:
                model = self.models[name] = Model(resolve_model_path(cfg.path), cfg.params, name=name,
                                                  progress=report, caches=fitted)
            except BridgeError as exc:
                if len(self.config.models) == 1:
                    raise
                self.failed[name] = exc.message
                log.error("model %s failed to load: %s; its caches (%s) answer 503, the other models serve",
                          name, exc.message, ", ".join(cache_cfgs) or "none")
                continue
            self.model_load_seconds[name] = time.perf_counter() - started
            mine = self.model_caches[name] = []
            for cache_name, cache_cfg in cache_cfgs.items():
                if progress:
                    progress(f"opening cache {cache_name} (n_ctx={cache_cfg.params.n_ctx or 'auto'})")
                cache = self._open_cache(model, cache_name, cache_cfg, store)
                self.caches[cache_name] = cache
                mine.append(cache)
                if progress and cache.params != cache_cfg.params:
                    progress(f"cache {cache_name}: n_ctx {cache.n_ctx}, {cache.params.n_threads} threads")
            opened += mine
            if mine:
                log.info("%s", placement.layers_line(name, model.placement, model.native.n_layer, mine[0].memory()))
                for cache in mine:
                    log.info("%s", placement.cache_line(cache.name, cache.params, cache.memory(),
                                                        cache.context.flash_attn))
        if not self.models:
            raise ModelLoadError("no model could be loaded: " + "; ".join(f"{n}: {m}" for n, m in self.failed.items()))
        if store.enabled:
            store.report_unmatched([c.fingerprint for c in opened])
            self.warm_up = threading.Thread(target=self._restore_saved, args=(opened,), name="llamabridge-warm-up",
                                            daemon=True)
            self.warm_up.start()

    def _open_cache(self, model, name: str, cfg: CacheConfig, store) -> Cache:
        """A cache on its loaded model, with its draft model's context if it names one (a draft model that did
        not load leaves the cache without it, said in the log)."""
        params, draft = cfg.params, None
        if params.draft_model:
            draft = self.models.get(params.draft_model)
            if draft is None:
                log.error("cache %s: its draft model %s did not load (%s): it decodes without it", name,
                          params.draft_model, self.failed.get(params.draft_model, "not loaded"))
                params = dataclasses.replace(params, draft_model="",
                                             speculative=",".join(t for t in params.speculative_types
                                                                  if t != DRAFT_MODEL_TYPE))
        try:
            return model.cache(params, name=name, store=store, draft=draft)
        except ParamError as exc:
            raise ConfigError(f"{self.config.source}: caches.{name}.{exc.field}: {exc.message}") from None

    @staticmethod
    def _restore_saved(caches: list[Cache]) -> None:
        """After a restart: each cache's newest saved prefixes back into its empty slots, while serving."""
        for cache in caches:
            try:
                cache.restore_saved()
            except Exception as exc:  # noqa: BLE001 - e.g. closed meanwhile; serving goes on regardless
                log.debug("cache %s: warm-up stopped: %s", cache.name, exc)

    def close(self) -> None:
        """Close the caches (their slots' states go to the store), the models, then write the store to disk."""
        for cache in self.caches.values():
            cache.close()
        for model in self.models.values():
            model.close()
        self.caches.clear()
        self.models.clear()
        if self.store is not None and self.store.enabled:
            started = time.perf_counter()
            self.store.close()
            disk = self.store.info()["disk"]
            if disk["dir"]:
                log.info("saved prefixes: %d in %s (%.0f MB), written in %.1fs", disk["entries"], disk["dir"],
                         disk["bytes"] / (1 << 20), time.perf_counter() - started)

    # -- routing and what the pool holds

    def cache_for(self, model_name: str) -> tuple[CacheConfig, ServedCache]:
        cfg = self.config.route_for_model(model_name)
        if cfg is None:
            raise ModelNotFoundError(model_name, list(self.config.model_names()))
        if self.status is not PoolStatus.READY:
            raise OverloadedError("models are still loading" if self.status is PoolStatus.LOADING
                                  else f"model loading failed: {self.error}")
        if cfg.model in self.failed:
            raise OverloadedError(f"model {cfg.model} (cache {cfg.name}) failed to load: {self.failed[cfg.model]}")
        return cfg, self.caches[cfg.name]

    def n_ctx(self, cache_name: str) -> int:
        """The context of a cache: its real one once loaded (n_ctx 0 = the model's is resolved then)."""
        cache = self.caches.get(cache_name)
        return cache.n_ctx if cache is not None else self.config.caches[cache_name].params.n_ctx

    def store_info(self) -> dict | None:
        return self.store.info() if self.store is not None and self.store.enabled else None

    def placement(self, model_name: str) -> dict:
        """Where a loaded model's layers are (placement.info); {} before loading and for --mock."""
        from ..engine import placement

        model, caches = self.models.get(model_name), self.model_caches.get(model_name)
        if model is None or not caches:
            return {}
        return placement.info(model.placement, model.native.n_layer, caches[0].memory())

    def cache_placement(self, cache_name: str) -> dict:
        """A loaded cache's KV bytes on each device and its flash attention as resolved; {} before loading and
        for --mock."""
        from ..engine import placement

        for caches in self.model_caches.values():
            for cache in caches:
                if cache.name == cache_name:
                    return {"kv_on": placement.kv_on(cache.memory()), "flash_attn": cache.context.flash_attn}
        return {}

    def cache_activity(self, cache_name: str) -> dict:
        """A loaded cache's slots (state, tokens held, hashed session key), queue and speculation; {} before
        loading."""
        cache = self.caches.get(cache_name)
        if cache is None:
            return {}
        activity: dict = {"waiting": cache.waiting, "slots": cache.slots()}
        speculation = cache.speculation()
        if speculation is not None:
            activity["speculation"] = speculation
        return activity


def open_store(config: ServerConfig):
    """The saved-prefix store the config asks for (RAM and disk bounds resolved now)."""
    from ..engine.prefix_store import PrefixStore

    state_dir, ram_bytes, disk_bytes = config.store.resolve()
    return PrefixStore(ram_bytes, state_dir, disk_bytes, stall_save=_stall_from_env())


def _stall_from_env():
    """Fault injection for tests: LLAMABRIDGE_FAULT_STALL_SAVE=N stops the Nth disk save halfway, for good
    (a test then kills the process there)."""
    nth = int(os.environ.get("LLAMABRIDGE_FAULT_STALL_SAVE") or 0)
    if nth <= 0:
        return None
    count = iter(range(1, nth + 1))

    def stall(written: int, total: int) -> None:
        if next(count, None) == nth:
            log.warning("fault injection: save stalled after %d of %d bytes", written, total)
            threading.Event().wait()
    return stall
