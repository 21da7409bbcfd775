"""The Python engine over _core: models, caches, one chat request type, one event stream.

Names are imported on first use: `from llamabridge.engine.params import ...` (or request, for the
HTTP schemas' mapping) does not load the native extension; Model, Cache and the rest do.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "BatchResult": "batch", "generate_batch": "batch",
    "Cache": "cache", "ChatStream": "cache", "plan_max_tokens": "planning",
    "Job": "job", "JobSpec": "job", "JobState": "job",
    "Model": "model",
    "GREEDY": "params", "CacheParams": "params", "ModelParams": "params", "SamplingParams": "params",
    "ThinkingParams": "params",
    "ChatRequest": "request", "Done": "request", "Event": "request", "Idle": "request",
    "PreparedChat": "request",
    "PromptProgress": "request", "PromptReady": "request", "ReasoningDelta": "request", "TextDelta": "request",
    "Timings": "request", "TokenLogprob": "request", "ToolCallDelta": "request", "ToolCallEnd": "request",
    "ToolCallStart": "request", "Usage": "request",
    "PrefixStore": "prefix_store",
    "Sequence": "sequence", "common_prefix_length": "sequence",
    "StopMatcher": "stops",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
