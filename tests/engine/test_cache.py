"""Caches: prefix reuse, isolation of two caches on one model, overflow guard, clamping."""

import os

import psutil
import pytest

from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Done, PromptReady
from llamabridge.errors import ContextLimitExceededError

SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 20}


def turn(*texts):
    messages = [SYSTEM]
    for i, text in enumerate(texts):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return ChatRequest(messages, sampling=GREEDY, max_tokens=8)


def run(cache, request) -> Done:
    return cache.complete(request)


def test_prefix_reuse_counts(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048)) as cache:
        first = run(cache, turn("What is 2+2?"))
        assert first.usage.cached_tokens == 0
        second = run(cache, turn("What is 2+2?", "4", "And 3+3?"))
        # everything up to the end of the first user turn is already in the KV
        assert second.usage.cached_tokens >= first.usage.prompt_tokens - 5
        again = run(cache, turn("What is 2+2?", "4", "And 3+3?"))
        assert again.usage.cached_tokens == again.usage.prompt_tokens - 1
        assert again.raw_text == second.raw_text


def test_reuse_after_divergence_keeps_the_common_part(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048)) as cache:
        a = run(cache, turn("Question A?"))
        b = run(cache, turn("Question B?"))
        system_tokens = len(qwen3.tokenize(cache.render(ChatRequest([SYSTEM]))[0].prompt))
        assert system_tokens - 5 <= b.usage.cached_tokens < a.usage.prompt_tokens


def test_two_caches_on_one_model_are_isolated(qwen3):
    main = qwen3.cache(CacheParams(n_ctx=2048), name="main")
    fast = qwen3.cache(CacheParams(n_ctx=512), name="fast")
    try:
        conversation = turn("Long main conversation?")
        reference = run(main, conversation)
        background = run(fast, ChatRequest([{"role": "user", "content": "Summarise: x"}], sampling=GREEDY,
                                           max_tokens=8))
        assert background.usage.cached_tokens == 0
        again = run(main, conversation)
        assert again.usage.cached_tokens == again.usage.prompt_tokens - 1, "the main cache kept its KV"
        assert again.raw_text == reference.raw_text
    finally:
        main.close()
        fast.close()


def test_second_cache_grows_rss_by_its_kv_not_the_weights(qwen3_path):
    from llamabridge.engine import Model

    process = psutil.Process(os.getpid())
    with Model(qwen3_path) as model:
        first = model.cache(CacheParams(n_ctx=512, n_batch=64, n_ubatch=64))
        run(first, turn("warm every weight"))
        before = process.memory_info().rss
        second = model.cache(CacheParams(n_ctx=512, n_batch=64, n_ubatch=64))
        run(second, turn("use the second cache"))
        growth = process.memory_info().rss - before
        weights = model.native.size
        # another copy of the weights would add ~`weights` bytes; a KV cache of 512 tokens is tiny
        assert growth < weights / 2, f"RSS grew by {growth} bytes for a model of {weights} bytes"


def test_overflow_is_refused_before_anything_is_decoded(qwen3):
    with qwen3.cache(CacheParams(n_ctx=256)) as cache:
        warm = run(cache, turn("hello"))
        kv_before = list(cache.slot_tokens())
        request = ChatRequest(turn("hello").messages, sampling=GREEDY, max_tokens=10_000)
        with pytest.raises(ContextLimitExceededError) as info:
            list(cache.chat(request))
        err = info.value
        assert (err.prompt_tokens, err.max_tokens, err.n_ctx) == (warm.usage.prompt_tokens, 10_000, 256)
        assert cache.slot_tokens() == kv_before
        assert cache.context.memory_seq_pos_max(0) == len(kv_before) - 1
        # the cache keeps serving, with its prefix intact
        again = run(cache, turn("hello"))
        assert again.usage.cached_tokens == again.usage.prompt_tokens - 1


def test_clamp_generates_what_fits_and_stops_with_max_tokens(qwen3):
    with qwen3.cache(CacheParams(n_ctx=256)) as cache:
        request = ChatRequest(turn("hello").messages, sampling=GREEDY, max_tokens=64_000, clamp_max_tokens=True)
        events = list(cache.chat(request))
        ready, done = events[0], events[-1]
        assert isinstance(ready, PromptReady)
        assert ready.max_tokens == 256 - ready.prompt_tokens
        assert done.stop_reason == "max_tokens"
        assert done.usage.completion_tokens == 256 - ready.prompt_tokens


def test_prompt_that_alone_does_not_fit_always_raises(qwen3):
    with qwen3.cache(CacheParams(n_ctx=256)) as cache:
        huge = ChatRequest([{"role": "user", "content": "word " * 400}], max_tokens=1, clamp_max_tokens=True)
        with pytest.raises(ContextLimitExceededError) as info:
            list(cache.chat(huge))
        assert info.value.prompt_alone_too_long
        assert "prompt is too long" in info.value.message
        assert cache.slot_tokens() == []


def test_count_tokens_matches_prompt_usage(qwen3):
    with qwen3.cache(CacheParams(n_ctx=1024)) as cache:
        request = turn("count me")
        assert cache.count_tokens(request) == run(cache, request).usage.prompt_tokens


def test_long_prompt_is_evaluated_in_chunks(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_batch=128, n_ubatch=64)) as cache:
        request = ChatRequest([{"role": "user", "content": "lorem ipsum " * 200}], sampling=GREEDY, max_tokens=2)
        events = list(cache.chat(request))
        progress = [e for e in events if type(e).__name__ == "PromptProgress"]
        assert len(progress) >= 3
        assert [p.evaluated for p in progress] == sorted(p.evaluated for p in progress)
        assert len(cache.slot_tokens()) == events[0].prompt_tokens + 1  # prompt + the one decoded generated token
