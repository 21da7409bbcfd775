"""Request decoding and the one mapping of BridgeError to each API's error JSON."""

from __future__ import annotations

import msgspec

from ..errors import BridgeError, ContextLimitExceededError, InvalidRequestError, NotFoundError


def decode_body(body: bytes, schema: type):
    """Decode a JSON request body into `schema`; malformed JSON or a bad field is a 400 naming it."""
    if not body.strip():
        raise InvalidRequestError("request body is empty: expected a JSON object")
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else None
        raise InvalidRequestError(f"invalid request: {message}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"malformed JSON in request body: {exc}") from None


def anthropic_error(exc: BridgeError) -> dict:
    return {"type": "error", "error": {"type": exc.type, "message": exc.message}}


def openai_error(exc: BridgeError) -> dict:
    code = None
    if isinstance(exc, ContextLimitExceededError):
        code = "context_length_exceeded"
        message = (
            f"This model's maximum context length is {exc.n_ctx} tokens. However, you requested "
            f"{exc.prompt_tokens + exc.max_tokens} tokens ({exc.prompt_tokens} in the messages, "
            f"{exc.max_tokens} in the completion). Please reduce the length of the messages or completion."
        )
    else:
        message = exc.message
        if isinstance(exc, NotFoundError):
            code = "model_not_found"
    error_type = {"not_found_error": "invalid_request_error", "api_error": "server_error",
                  "overloaded_error": "server_error"}.get(exc.type, exc.type)
    return {"error": {"message": message, "type": error_type, "param": exc.param, "code": code}}


class InternalError(BridgeError):
    """An unexpected fault: reported without details (those go to the log)."""

    def __init__(self) -> None:
        super().__init__("internal server error (see the server log)")
