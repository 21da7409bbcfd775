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
