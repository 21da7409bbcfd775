"""The llamabridge exception hierarchy: raised anywhere, rendered once per API.

Pure Python and free of the native extension, so protocol code and `--help` never need
`_core` built. Each error carries the HTTP status and the error type the APIs report;
each of the server's API packages (Anthropic, OpenAI, Responses, Ollama) turns these into its own
JSON shape.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every llamabridge error: a message, an HTTP status, an API error type."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None     # a machine-readable reason, where an API reports one (OpenAI's `code`)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(BridgeError):
    """The client's request cannot be served as sent (HTTP 400)."""

    status = 400
    type = "invalid_request_error"


class RequestTooLargeError(BridgeError):
    """A request body over the server's limit (HTTP 413)."""

    status = 413
    type = "request_too_large"


class ForbiddenError(BridgeError):
    """A request from a place this server does not serve: a web page's Origin, a rebound Host (HTTP 403)."""

    status = 403
    type = "permission_error"


class UnsupportedMediaTypeError(BridgeError):
    """A body not declared as JSON (HTTP 415)."""

    status = 415
    type = "invalid_request_error"


class TemplateError(InvalidRequestError):
    """The model's chat template rejected the conversation (e.g. roles out of order)."""


class NotFoundError(BridgeError):
    """An unknown model name or path (HTTP 404)."""

    status = 404
    type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    """A model name no route matches."""

    code = "model_not_found"

    def __init__(self, name: str, available: list[str] | None = None) -> None:
        listed = f" (available: {', '.join(available)})" if available else ""
        super().__init__(f"model {name!r} not found: no route matches it{listed}", param="model")


class ContextLimitExceededError(InvalidRequestError):
    """Prompt tokens plus max_tokens do not fit the cache's context window.

    Raised before anything is decoded: the cache is left as it was.
    """

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        if prompt_tokens >= n_ctx:
            message = f"prompt is too long: {prompt_tokens} tokens > {n_ctx} maximum"
        else:
            message = (
                f"input length and `max_tokens` exceed context limit: {prompt_tokens} + {max_tokens} > {n_ctx}, "
                "decrease input length or `max_tokens` and try again"
            )
        super().__init__(message, param="messages")

    @property
    def prompt_alone_too_long(self) -> bool:
        return self.prompt_tokens >= self.n_ctx


class OverloadedError(BridgeError):
    """The server cannot take the request now (HTTP 503), e.g. models still loading."""

    status = 503
    type = "overloaded_error"


class ShuttingDownError(OverloadedError):
    """The server is shutting down: a request still running when its drain time ran out (HTTP 503)."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down: this answer was ended before it was complete")


class EngineLostError(OverloadedError):
    """llama.cpp is ending the process (GGML_ABORT: an rpc-server in use that stopped answering, a device
    error): a request still running is ended with this before the process goes (HTTP 503: a supervised
    server is back once its devices answer; retry then)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}: this answer was ended before it was complete")


class EngineError(BridgeError):
    """A fault inside the inference engine (HTTP 500)."""


class ModelLoadError(EngineError):
    """A GGUF file could not be loaded."""


class DecodeError(EngineError):
    """llama_decode failed; `return_code` is its return value."""

    reasons = {
        1: "no KV cache slot for the batch (lower n_batch or raise n_ctx)",
        2: "aborted",
        -1: "invalid input batch",
    }

    def __init__(self, code: int, where: str = "llama_decode") -> None:
        self.return_code = code
        reason = self.reasons.get(code, "fatal error" if code < -1 else "unknown error")
        super().__init__(f"{where} failed ({code}): {reason}")


class ContextFullError(DecodeError):
    """llama_decode found no KV slot (return code 1)."""


class DecodeAbortedError(DecodeError):
    """llama_decode was aborted through the abort callback (return code 2)."""


def decode_error(code: int, where: str = "llama_decode") -> DecodeError:
    """The typed exception for a non-zero llama_decode return code."""
    if code == 1:
        return ContextFullError(code, where)
    if code == 2:
        return DecodeAbortedError(code, where)
    return DecodeError(code, where)
