"""Batch generation: a shared prefix evaluated once, results equal to one-by-one greedy runs."""

import pytest

from llamabridge.engine import CacheParams, generate_batch
from llamabridge.errors import ContextLimitExceededError, InvalidRequestError

PREFIX = "You are a code reviewer. Review the following snippet and reply briefly.\n"
PROMPTS = [PREFIX + s for s in ("x = 1", "def f(): pass", "print('hi')", "import os")]


def test_batch_equals_sequential(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_seq_max=4)) as cache:
        batch = generate_batch(cache, PROMPTS, max_tokens=16)
    sequential = []
    for prompt in PROMPTS:
        with qwen3.cache(CacheParams(n_ctx=2048, n_seq_max=4)) as cache:
            sequential.append(generate_batch(cache, [prompt], max_tokens=16)[0])
    assert [r.tokens for r in batch] == [r.tokens for r in sequential]
    assert [r.text for r in batch] == [r.text for r in sequential]
    assert all(len(r.tokens) == 16 and r.stop_reason == "max_tokens" for r in batch)


def test_batch_reuses_the_prefix_and_keeps_sequence_zero(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_seq_max=4)) as cache:
        first = generate_batch(cache, PROMPTS, max_tokens=4)
        # sequence 0 now holds prompt 0 (+ generated tokens): the same batch again agrees
        again = generate_batch(cache, PROMPTS, max_tokens=4)
        assert [r.tokens for r in again] == [r.tokens for r in first]
        assert cache.tokens[:len(qwen3.tokenize(PROMPTS[0], add_special=True))] == \
            qwen3.tokenize(PROMPTS[0], add_special=True)


def test_scripted_batch_ends_turns(scripted):
    prompt = scripted.native.apply_chat_template({"messages": [{"role": "user", "content": "hi"}]})["prompt"]
    with scripted.cache(CacheParams(n_ctx=1024, n_seq_max=2)) as cache:
        results = generate_batch(cache, [prompt, prompt + "x"], max_tokens=50)
    assert results[0].stop_reason == "end_turn"
    assert results[0].text == "Hello from llamabridge! How can I help?"


def test_batch_limits(qwen3):
    with qwen3.cache(CacheParams(n_ctx=256, n_seq_max=2)) as cache:
        with pytest.raises(InvalidRequestError, match="n_seq_max"):
            generate_batch(cache, PROMPTS, max_tokens=4)
        with pytest.raises(ContextLimitExceededError):
            generate_batch(cache, PROMPTS[:2], max_tokens=200)
