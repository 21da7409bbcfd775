"""Request decoding and the errors only the HTTP layer raises; each API renders them in its own shape."""

from __future__ import annotations

import msgspec

from ..errors import BridgeError, InvalidRequestError


def decode_body(body: bytes, schema: type):
    """Decode a JSON request body into `schema`; malformed JSON or a bad field is a 400 naming it."""
    if not body.strip():
        raise InvalidRequestError("request body is empty: expected a JSON object")
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"malformed JSON in request body: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid UTF-8: byte 0x{exc.object[exc.start]:02x} in a "
                                  f"JSON string") from None
    except RecursionError:
        raise InvalidRequestError("malformed JSON in request body: nested too deeply") from None


def validation_error(exc: msgspec.ValidationError, where: str = "") -> InvalidRequestError:
    """A 400 naming the field msgspec rejected; `where` prefixes the path (e.g. `input[3]`)."""
    message = str(exc)
    param = message.rsplit("`$", 1)[-1].rstrip("`").lstrip(".") if "`$" in message else None
    if param is not None:
        param = param.replace("[...]", "")      # a dict's value: msgspec names no key; the field is the dict
    if where:
        param = where + ("." + param if param and not param.startswith("[") else param or "")
        message = message.replace("`$", f"`{where}", 1) if "`$" in message else f"{message} - at `{where}`"
    return InvalidRequestError(f"invalid request: {message}", param=param or None)


class InternalError(BridgeError):
    """An unexpected fault: reported without details (those go to the log)."""

    def __init__(self) -> None:
        super().__init__("internal server error (see the server log)")


class AuthenticationError(BridgeError):
    status = 401
    type = "authentication_error"


class ClientDisconnectedError(BridgeError):
    """Nobody reads this answer: the status (nginx's 499) never reaches the client."""
    status = 499
