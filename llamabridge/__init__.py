"""llamabridge: local GGUF models behind the Anthropic Messages, OpenAI Chat Completions and
Responses, and Ollama APIs.

The engine (and so the native extension) is imported on first use, so the CLI's help and
the protocol code stay light.
"""

from .errors import BridgeError, ContextLimitExceededError  # noqa: F401 - re-exported (__all__)

__version__ = "0.1.0"

_ENGINE_NAMES = {
    "Cache", "CacheParams", "ChatRequest", "GREEDY", "Model", "ModelParams", "SamplingParams", "ThinkingParams",
    "generate_batch",
}


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from . import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'llamabridge' has no attribute {name!r}")


__all__ = sorted(_ENGINE_NAMES | {"BridgeError", "ContextLimitExceededError", "__version__"})
