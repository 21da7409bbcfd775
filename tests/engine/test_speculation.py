"""Speculative decoding: llama.cpp's n-gram drafters per slot, each draft verified in the shared batch.

The answer with drafts is the answer without them, token for token, and the KV holds the same tokens after
it. Scripted models (clear margins: a batch of several rows cannot tip a near-tie) whose answers repeat
what the conversation already holds, so that drafts are proposed and accepted; their float16 weights keep
off ggml's AMX kernels, which fault on several rows on the virtual machines this suite runs on.
"""

from __future__ import annotations

import threading

import pytest

from llamabridge.engine import (
    GREEDY,
    CacheParams,
    ChatRequest,
    Done,
    Model,
    TextDelta,
    ThinkingParams,
    ToolCallDelta,
)
from llamabridge.engine.params import ParamError
from llamabridge.synthetic import SCRIPTED_REPLY

from .test_scheduler import assert_kv_consistent

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# the scripted model's reply twice in the history: the n-grams of its next reply are all there
AGAIN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": SCRIPTED_REPLY},
         {"role": "user", "content": "Hi again"}, {"role": "assistant", "content": SCRIPTED_REPLY},
         {"role": "user", "content": "And once more"}]
TYPES = ["ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod"]


def drafting(types: str = "ngram-simple", **params) -> CacheParams:
    """A cache whose drafters find short n-grams (the scripted answers are short)."""
    settings = {"n_ctx": 2048, "speculative": types, "draft_ngram": 2, "draft_max": 16}
    if "ngram-mod" in types:
        settings["draft_min"] = 1
    settings.update(params)
    return CacheParams(**settings)


def chat(messages, max_tokens: int = 64, **fields) -> ChatRequest:
    return ChatRequest(messages, sampling=GREEDY, max_tokens=max_tokens, thinking=ThinkingParams(enabled=False),
                       **fields)


def answer(model: Model, params: CacheParams, request: ChatRequest) -> tuple[Done, list[int], dict]:
    """The Done of one request on a fresh cache, what its slot holds afterwards, and the cache's counts."""
    with model.cache(params) as cache:
        done = cache.complete(request)
        assert_kv_consistent(cache)
        return done, cache.scheduler.slots[done.slot].seq.tokens[:], cache.scheduler.stats


@pytest.fixture(scope="module")
def scripted(scripted_path):
    with Model(scripted_path) as model:
        yield model


@pytest.fixture(scope="module")
def tool_caller(tool_caller_path):
    with Model(tool_caller_path) as model:
        yield model


def same(model: Model, params: CacheParams, request: ChatRequest) -> dict:
    """Check the answer with drafts against the answer without; the counts of the run with drafts."""
    plain, plain_kv, _ = answer(model, CacheParams(n_ctx=params.n_ctx), request)
    done, kv, stats = answer(model, params, request)
    assert done.raw_text == plain.raw_text
    assert done.tool_calls == plain.tool_calls
    assert done.stop_reason == plain.stop_reason and done.stop_sequence == plain.stop_sequence
    assert done.usage.completion_tokens == plain.usage.completion_tokens
    assert kv == plain_kv                       # the KV holds what it holds without drafts
    return stats


@pytest.mark.parametrize("types", TYPES)
def test_each_drafter_gives_the_same_answer(scripted, types):
    stats = same(scripted, drafting(types), chat(AGAIN))
    if types != "ngram-map-k4v":              # it drafts only what followed a key in four different ways
        assert stats["drafts"] > 0 and stats["draft_accepted"] > 0


def test_several_drafters(scripted):
    stats = same(scripted, drafting("ngram-mod,ngram-simple"), chat(AGAIN))
    assert stats["draft_accepted"] > 0


def test_tool_calls_under_the_grammar(tool_caller):
    """The grammar's sampler verifies the draft (llama.cpp's sample-and-accept): the same call."""
    stats = same(tool_caller, drafting("ngram-mod", draft_ngram=4), chat([{"role": "user", "content": "Weather?"}],
                                                                          max_tokens=120, tools=TOOLS))
    assert stats["draft_accepted"] > 20


@pytest.mark.parametrize("max_tokens", [2, 3, 5, 8, 13])       # the reply is 12 tokens: 13 runs past it
def test_max_tokens_landing_inside_a_draft(scripted, max_tokens):
    same(scripted, drafting(), chat(AGAIN, max_tokens=max_tokens))


@pytest.mark.parametrize("stop", ["llamabridge", "!", "How can", "help?"])
def test_a_stop_string_inside_a_draft(scripted, stop):
    stats = same(scripted, drafting(), chat(AGAIN, stop=[stop]))
    assert stats["drafts"] > 0


def test_parallel_slots_never_see_each_others_drafts(scripted, tool_caller):
    """Four jobs at once, two of them drafting from the same history: each answer is its answer alone."""
    requests = [chat(AGAIN), chat(AGAIN[:3]), chat([{"role": "user", "content": "Something else"}]), chat(AGAIN)]
    alone = [answer(scripted, CacheParams(n_ctx=2048), r)[0].raw_text for r in requests]
    with scripted.cache(drafting(n_parallel=4)) as cache:
        streams = [cache.chat(r) for r in requests]
        dones = [[e for e in s if isinstance(e, Done)][0] for s in streams]
        assert [d.raw_text for d in dones] == alone
        assert cache.scheduler.stats["draft_accepted"] > 0
        assert_kv_consistent(cache)


def test_a_cancel_between_verified_drafts(tool_caller):
    """A client that leaves while its call is drafted: its job ends, the KV stays consistent, and the next
    request's answer is its answer alone."""
    request = chat([{"role": "user", "content": "Weather?"}], max_tokens=400, tools=TOOLS)
    alone = answer(tool_caller, CacheParams(n_ctx=2048), request)[0]
    with tool_caller.cache(drafting("ngram-mod", draft_ngram=4)) as cache:
        stream = cache.chat(request)
        for event in stream:
            if isinstance(event, ToolCallDelta) and cache.scheduler.stats["draft_accepted"] > 0:
                stream.cancel()
        assert isinstance(event, Done) and event.stop_reason == "cancelled"
        assert_kv_consistent(cache)
        assert cache.complete(request).raw_text == alone.raw_text


def test_the_answer_streams_the_same(scripted):
    """The events of a streamed answer add up to the same text, with drafts accepted several at a time."""
    with scripted.cache(drafting()) as cache:
        events = list(cache.chat(chat(AGAIN)))
        done = events[-1]
        assert isinstance(done, Done) and 0 < done.draft_accepted <= done.drafted     # this answer's drafts
        assert done.draft_accepted == cache.scheduler.stats["draft_accepted"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == SCRIPTED_REPLY


@pytest.mark.parametrize("field, value, message", [
    ("speculative", "ngram-bogus", "not a speculation type"),
    ("speculative", "draft-eagle3", "not a speculation type"),
    ("draft_max", -1, "up to 1024"),
    ("draft_ngram", 5000, "up to 1024"),
])
def test_settings_are_checked_where_they_are_defined(field, value, message):
    with pytest.raises(ParamError, match=message) as raised:
        CacheParams(**{field: value})
    assert raised.value.field == field


def test_concurrent_caches_with_drafts_do_not_share_state(scripted):
    """Two caches, each with its own drafters, answering at once."""
    results: dict[int, str] = {}

    def run(i: int) -> None:
        with scripted.cache(drafting()) as cache:
            results[i] = cache.complete(chat(AGAIN)).raw_text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: SCRIPTED_REPLY, 1: SCRIPTED_REPLY}
