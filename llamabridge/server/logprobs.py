"""Token log-probabilities in the shape OpenAI's APIs (and Ollama's) share."""

from __future__ import annotations

from collections.abc import Iterable

from ..engine.request import TokenLogprob

LOWEST = -9999.0         # what OpenAI reports for a token with no chance (JSON has no -inf)


def logprob_entries(logprobs: Iterable[TokenLogprob]) -> list[dict]:
    """[{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}] for the given tokens."""
    return [{**_entry(t.token, t.logprob), "top_logprobs": [_entry(token, lp) for token, lp in t.top]}
            for t in logprobs]


def _entry(token: bytes, logprob: float) -> dict:
    return {"token": token.decode("utf-8", "replace"), "logprob": max(logprob, LOWEST), "bytes": list(token)}
