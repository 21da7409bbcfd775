"""The exception hierarchy: statuses, types and the exact context-overflow messages."""

from llamabridge.errors import (
    BridgeError,
    ContextFullError,
    ContextLimitExceededError,
    DecodeAbortedError,
    DecodeError,
    InvalidRequestError,
    NotFoundError,
    decode_error,
)


def test_context_limit_message_matches_anthropic_wording():
    err = ContextLimitExceededError(189136, 20000, 204648)
    assert err.status == 400 and err.type == "invalid_request_error"
    assert err.message == (
        "input length and `max_tokens` exceed context limit: 189136 + 20000 > 204648, "
        "decrease input length or `max_tokens` and try again"
    )
    assert (err.prompt_tokens, err.max_tokens, err.n_ctx) == (189136, 20000, 204648)
    assert not err.prompt_alone_too_long


def test_prompt_alone_too_long_message():
    err = ContextLimitExceededError(5000, 100, 4096)
    assert err.prompt_alone_too_long
    assert err.message == "prompt is too long: 5000 tokens > 4096 maximum"


def test_decode_error_codes_map_to_typed_errors():
    assert isinstance(decode_error(1), ContextFullError)
    assert "no KV cache slot" in str(decode_error(1))
    assert isinstance(decode_error(2), DecodeAbortedError)
    invalid = decode_error(-1)
    assert type(invalid) is DecodeError and "invalid input batch" in str(invalid)
    fatal = decode_error(-3)
    assert "fatal" in str(fatal) and fatal.return_code == -3 and fatal.status == 500


def test_hierarchy():
    assert issubclass(InvalidRequestError, BridgeError)
    assert NotFoundError("x").status == 404
    assert issubclass(ContextLimitExceededError, InvalidRequestError)
