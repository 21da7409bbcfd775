"""Request planning, pure of any native call: what fits the context, and counting a huge prompt cheaply."""

from __future__ import annotations

from ..errors import ContextLimitExceededError

# Prompts longer than the context are counted in pieces of this many characters, cut at line ends,
# so rejecting a huge one costs time and memory for the context's worth of text, not for all of it.
PIECE_CHARS = 1 << 16
# How far a cut between two pieces can move the count (a merge across the cut, a split character).
CUT_SLACK = 8
# Texts of up to this many characters per context token are tokenized whole, once, without being
# counted first: text and code take 3-5 characters per token, so a prompt that fits is read once (a
# 12k-token Claude Code prompt of 49k characters took 20 ms per pass); one that does not costs at most
# this many characters per token of the context. Only longer texts are counted in pieces first.
WHOLE_CHARS_PER_TOKEN = 8


def count_past(native, texts: list[str], limit: int) -> int | None:
    """A lower bound of the tokens in `texts` once it surely exceeds `limit`; None when they may fit,
    or are short enough to be tokenized whole and counted exactly (WHOLE_CHARS_PER_TOKEN).

    Counted piece by piece (no token list is built), stopping as soon as the count passes the
    limit: time and memory for the limit's worth of text, however long the texts are.
    """
    if sum(map(len, texts)) <= WHOLE_CHARS_PER_TOKEN * limit:
        return None
    counted, cuts = 0, 0
    for i, text in enumerate(texts):
        start = 0
        while start < len(text):
            end = len(text) if len(text) - start <= PIECE_CHARS else text.rfind("\n", start, start + PIECE_CHARS) + 1
            if end <= start:
                end = start + PIECE_CHARS
            counted += native.count_tokens(text[start:end], add_special=i == 0 and start == 0, parse_special=True)
            start, cuts = end, cuts + 1
            if counted - CUT_SLACK * cuts > limit:
                return counted - CUT_SLACK * cuts
    return None


def tokenize_prompt(native, text: str, n_ctx: int) -> list[int]:
    """The tokens of a templated prompt, or ContextLimitExceededError once it surely exceeds n_ctx
    (a huge prompt is not tokenized whole to find out)."""
    too_many = count_past(native, [text], n_ctx)
    if too_many is not None:
        raise ContextLimitExceededError(too_many, 0, n_ctx)
    return native.tokenize(text, add_special=True, parse_special=True)


def plan_max_tokens(prompt_tokens: int, max_tokens: int | None, n_ctx: int, clamp: bool) -> int:
    """How many tokens a request may generate, or ContextLimitExceededError.

    A prompt that alone fills the context always raises; otherwise prompt + max_tokens over
    n_ctx raises unless `clamp`, which lowers max_tokens to the free space.
    """
    free = n_ctx - prompt_tokens
    if free <= 0:
        raise ContextLimitExceededError(prompt_tokens, max_tokens or 0, n_ctx)
    if max_tokens is None:
        return free
    if max_tokens > free:
        if not clamp:
            raise ContextLimitExceededError(prompt_tokens, max_tokens, n_ctx)
        return free
    return max_tokens
