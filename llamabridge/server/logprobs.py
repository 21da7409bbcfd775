"""Token log-probabilities in the shape OpenAI's APIs (and Ollama's) share."""

from __future__ import annotations

from collections.abc import Iterable

from ..engine.request import TokenLogprob

LOWEST = -9999.0         # what OpenAI reports for a token with no chance (JSON has no -inf)


def logprobs_setting(logprobs: bool, top: int | None) -> int | None:
    """The engine's `ChatRequest.logprobs` from a request's switch and its number of alternatives."""
    return (top or 0) if logprobs else None


def text_logprobs(blocks) -> list[dict]:
    """The entries of every token of an answer's text blocks (a non-streamed answer)."""
    return logprob_entries(t for b in blocks if b.kind == "text" for t in b.logprobs)


def logprob_entries(logprobs: Iterable[TokenLogprob]) -> list[dict]:
    """[{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}] for the given tokens."""
    return [{**_entry(t.token, t.logprob), "top_logprobs": [_entry(token, lp) for token, lp in t.top]}
            for t in logprobs]


def _entry(token: bytes, logprob: float) -> dict:
    return {"token": token.decode("utf-8", "replace"), "logprob": max(logprob, LOWEST), "bytes": list(token)}
