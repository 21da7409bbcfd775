"""Pure request planning: the overflow guard's arithmetic and prefix matching."""

import pytest

from llamabridge.engine import common_prefix_length, plan_max_tokens
from llamabridge.errors import ContextLimitExceededError


def test_fits():
    assert plan_max_tokens(100, 50, 200, clamp=False) == 50


def test_exact_fit_is_allowed():
    assert plan_max_tokens(150, 50, 200, clamp=False) == 50


def test_overflow_raises_with_fields():
    with pytest.raises(ContextLimitExceededError) as info:
        plan_max_tokens(150, 51, 200, clamp=False)
    assert (info.value.prompt_tokens, info.value.max_tokens, info.value.n_ctx) == (150, 51, 200)


def test_clamp_lowers_max_tokens_to_free_space():
    assert plan_max_tokens(150, 64000, 200, clamp=True) == 50


def test_prompt_alone_too_long_raises_even_when_clamping():
    for prompt in (200, 250):
        with pytest.raises(ContextLimitExceededError) as info:
            plan_max_tokens(prompt, 10, 200, clamp=True)
        assert info.value.prompt_alone_too_long


def test_unset_max_tokens_fills_the_context():
    assert plan_max_tokens(120, None, 200, clamp=False) == 80


def test_common_prefix_length():
    assert common_prefix_length([], [1, 2]) == 0
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2


class _CountingVocab:
    """A vocabulary with one token per `chars` characters, recording how much text it counted and
    what it tokenized."""

    def __init__(self, chars: int = 4):
        self.chars = chars
        self.read = 0
        self.tokenized: list[int] = []

    def count_tokens(self, text, *, add_special, parse_special):
        self.read += len(text)
        return len(text) // self.chars + add_special

    def tokenize(self, text, *, add_special, parse_special):
        self.tokenized.append(len(text))
        return [0] * (len(text) // self.chars + add_special)


def test_a_huge_text_is_refused_after_reading_about_the_limits_worth():
    from llamabridge.engine.planning import PIECE_CHARS, count_past

    vocab = _CountingVocab()
    text = "word word word word\n" * 3_000_000            # 60 MB
    over = count_past(vocab, [text], 65536)
    assert over is not None and 65536 < over <= 65536 + PIECE_CHARS // 4
    assert vocab.read <= 4 * 65536 + 2 * PIECE_CHARS


def test_texts_that_may_fit_are_left_to_the_exact_count():
    from llamabridge.engine.planning import count_past

    short = _CountingVocab()
    assert count_past(short, ["x" * 600, "y" * 200], 100) is None and short.read == 0   # 8 chars a token
    sparse = _CountingVocab(chars=20)
    assert count_past(sparse, ["x" * 1200, "y" * 800], 100) is None                    # 100 tokens: fits
    assert sparse.read == 2000
    assert count_past(_CountingVocab(), ["x" * 1200, "y" * 800], 100) is not None


def test_a_prompt_that_fits_is_tokenized_once():
    from llamabridge.engine.planning import tokenize_prompt

    vocab = _CountingVocab()
    assert len(tokenize_prompt(vocab, "x" * 12_000, 4096)) == 3001         # 3x the context in characters
    assert vocab.read == 0 and vocab.tokenized == [12_000]
    with pytest.raises(ContextLimitExceededError):
        tokenize_prompt(vocab, "x" * 200_000, 4096)                         # far too long: counted first
    assert vocab.read <= 4 * 4096 + 2 * (1 << 16) and vocab.tokenized == [12_000]


def test_a_conversation_too_long_for_the_context_is_refused_before_templating(qwen3):
    from llamabridge.engine import CacheParams, ChatRequest
    from llamabridge.errors import ContextLimitExceededError

    with qwen3.cache(CacheParams(n_ctx=4096)) as cache:
        request = ChatRequest([{"role": "system", "content": "be brief"},
                               {"role": "user", "content": "many words here\n" * 500_000}], max_tokens=5)
        with pytest.raises(ContextLimitExceededError) as caught:
            cache.prepare(request)
        assert caught.value.prompt_tokens > 4096 and caught.value.prompt_alone_too_long
        with pytest.raises(ContextLimitExceededError):
            cache.count_tokens(request)
