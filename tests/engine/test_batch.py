"""Batch generation: a shared prefix evaluated once, results equal to one-by-one greedy runs."""

import pytest

from llamabridge.engine import CacheParams, generate_batch
from llamabridge.errors import ContextLimitExceededError, InvalidRequestError

PREFIX = "You are a code reviewer. Review the following snippet and reply briefly.\n"
PROMPTS = [PREFIX + s for s in ("x = 1", "def f(): pass", "print('hi')", "import os")]


def test_batch_equals_sequential(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=4)) as cache:
        batch = generate_batch(cache, PROMPTS, max_tokens=16)
    sequential = []
    for prompt in PROMPTS:
        with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=4)) as cache:
            sequential.append(generate_batch(cache, [prompt], max_tokens=16)[0])
    assert [r.tokens for r in batch] == [r.tokens for r in sequential]
    assert [r.text for r in batch] == [r.text for r in sequential]
    assert all(len(r.tokens) == 16 and r.stop_reason == "max_tokens" for r in batch)


def test_batch_again_reuses_every_prompt_from_its_slot(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=4)) as cache:
        first = generate_batch(cache, PROMPTS, max_tokens=4)
        again = generate_batch(cache, PROMPTS, max_tokens=4)
    assert [r.tokens for r in again] == [r.tokens for r in first]
    assert [r.cached_tokens for r in again] == [r.prompt_tokens - 1 for r in again]


def test_a_long_shared_prefix_is_evaluated_once_and_copied(qwen3):
    shared = "You review code carefully and answer in one line. " * 20
    prompts = [shared + tail for tail in ("x = 1", "def f(): pass", "import os")]
    n_shared = len(qwen3.tokenize(shared, add_special=True)) - 2      # the tails may merge with its last tokens
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=4)) as cache:
        batch = generate_batch(cache, prompts, max_tokens=8)
    solo = []
    for prompt in prompts:
        with qwen3.cache(CacheParams(n_ctx=2048)) as cache:
            solo.append(generate_batch(cache, [prompt], max_tokens=8)[0])
    assert batch[0].cached_tokens == 0
    assert all(r.cached_tokens >= n_shared for r in batch[1:])      # copied from the first slot
    assert [r.tokens for r in batch] == [r.tokens for r in solo]


def test_scripted_batch_ends_turns(scripted):
    prompt = scripted.native.apply_chat_template({"messages": [{"role": "user", "content": "hi"}]})["prompt"]
    with scripted.cache(CacheParams(n_ctx=1024, n_parallel=2)) as cache:
        results = generate_batch(cache, [prompt, prompt + "x"], max_tokens=50)
    assert results[0].stop_reason == "end_turn"
    assert results[0].text == "Hello from llamabridge! How can I help?"


def test_batch_limits(qwen3):
    with qwen3.cache(CacheParams(n_ctx=256, n_parallel=2)) as cache:
        with pytest.raises(InvalidRequestError, match="n_parallel"):
            generate_batch(cache, PROMPTS, max_tokens=4)
        with pytest.raises(ContextLimitExceededError):
            generate_batch(cache, PROMPTS[:2], max_tokens=250)
