"""Speculative decoding with a draft model (llama.cpp's draft-simple): a smaller model on the same vocabulary
drafts on its own context, one sequence per slot; the target verifies in the shared batch.

The answer is the answer without it, token for token, whether the draft model agrees with the target (a
1-layer copy of the scripted model: nearly every draft accepted) or not (a model scripted with another
sentence: nearly every draft rejected). Float16 scripted models, as in test_speculation.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from llamabridge import synthetic
from llamabridge.engine import CacheParams, Done, Model
from llamabridge.engine.params import ParamError
from llamabridge.synthetic import SCRIPTED_REPLY

from .test_scheduler import assert_kv_consistent
from .test_speculation import AGAIN, chat

# the scripted model's script in one layer: it drafts what the target answers
AGREEING = synthetic.QWEN3_SCRIPTED_DRAFT
# another script on the same vocabulary: its drafts are wrong from the first token on
OTHER = replace(synthetic.QWEN3_SCRIPTED, n_layer=1, reply="Goodbye, see you later then.")
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def target(scripted_path):
    with Model(scripted_path) as model:
        yield model


@pytest.fixture(scope="module")
def agreeing():
    with Model(synthetic.ensure_model(AGREEING)) as model:
        yield model


@pytest.fixture(scope="module")
def other():
    with Model(synthetic.ensure_model(OTHER)) as model:
        yield model


def with_draft(**params) -> CacheParams:
    return CacheParams(**{"n_ctx": 2048, "draft_model": "draft", "draft_max": 4, **params})


def same(target: Model, draft: Model, params: CacheParams, request) -> dict:
    """The answer with the draft model is the answer without it, and the KV holds the same; the speculation
    counts of the run with it."""
    with target.cache(CacheParams(n_ctx=params.n_ctx)) as cache:
        plain = cache.complete(request)
        plain_kv = cache.scheduler.slots[plain.slot].seq.tokens[:]
    with target.cache(params, draft=draft) as cache:
        done = cache.complete(request)
        assert_kv_consistent(cache)
        kv = cache.scheduler.slots[done.slot].seq.tokens[:]
        speculation = cache.speculation()
    assert (done.raw_text, done.stop_reason, done.usage.completion_tokens) == \
        (plain.raw_text, plain.stop_reason, plain.usage.completion_tokens)
    assert kv == plain_kv
    assert speculation is not None
    return speculation


def test_an_agreeing_draft_model_is_accepted(target, agreeing):
    speculation = same(target, agreeing, with_draft(), chat(HI))
    counts = speculation["by_type"]["draft-simple"]
    assert speculation["types"] == ["draft-simple"] and speculation["draft_model"] == "draft"
    # the 12-token reply: its first token sampled after the prompt, then drafts of 4 tokens, each verified with
    # one token more (the last draft, end-of-turn after the reply's end, is not taken: llama.cpp's rule)
    assert counts["drafts"] <= 4 and counts["accepted"] >= 8


def test_a_wrong_draft_model_changes_nothing(target, other):
    speculation = same(target, other, with_draft(), chat(HI))
    counts = speculation["by_type"]["draft-simple"]
    assert counts["drafts"] > 0 and counts["accepted"] < counts["drafted"]


@pytest.mark.parametrize("max_tokens", [1, 3, 6])
def test_max_tokens_inside_a_draft_models_draft(target, agreeing, max_tokens):
    same(target, agreeing, with_draft(), chat(HI, max_tokens=max_tokens))


def test_n_gram_types_first_then_the_draft_model(target, agreeing):
    """ngram-mod drafts where the history repeats, the draft model elsewhere: each type counted apart."""
    params = with_draft(speculative="ngram-mod", draft_ngram=2, draft_min=1, draft_max=8)
    speculation = same(target, agreeing, params, chat(AGAIN))
    assert speculation["types"] == ["ngram-mod", "draft-simple"]
    by_type = speculation["by_type"]
    assert sum(c["drafts"] for c in by_type.values()) == speculation["drafts"] > 0
    assert sum(c["accepted"] for c in by_type.values()) == speculation["accepted"]


def test_p_min_stops_unsure_drafts(target, qwen3_path):
    """A random model on the same vocabulary is never sure of its next token: with p_min 0.9 it proposes
    nothing, with 0 it drafts (rejected) all the same; the answer is the same either way."""
    with Model(qwen3_path) as unsure:
        assert same(target, unsure, with_draft(draft_p_min=0.9), chat(HI))["drafts"] == 0
        assert same(target, unsure, with_draft(), chat(HI))["drafts"] > 0


def test_parallel_slots_and_later_turns(target, agreeing, other):
    """Four slots at once, then each conversation's next turn on its slot (the draft context keeps or copies
    what it holds, and catches up with the rest): every answer is its answer alone."""
    requests = [chat(HI), chat(AGAIN[:3]), chat([{"role": "user", "content": "Something else"}]), chat(AGAIN)]
    with target.cache(CacheParams(n_ctx=2048)) as cache:
        alone = [cache.complete(r).raw_text for r in requests]
    for draft in (agreeing, other):
        with target.cache(with_draft(n_parallel=4), draft=draft) as cache:
            for _ in range(2):
                streams = [cache.chat(r) for r in requests]
                dones = [[e for e in s if isinstance(e, Done)][0] for s in streams]
                assert [d.raw_text for d in dones] == alone
                assert_kv_consistent(cache)
            assert cache.speculation()["drafts"] > 0


def test_a_draft_model_on_another_vocabulary_is_refused(target, llama31_path):
    with Model(llama31_path) as llama:
        with pytest.raises(ParamError, match="does not share .*vocabulary") as raised:
            target.cache(with_draft(), draft=llama)
    assert raised.value.field == "draft_model"
    with target.cache(CacheParams(n_ctx=2048)) as cache:        # the refused cache's contexts are gone
        assert cache.complete(chat(HI)).raw_text == SCRIPTED_REPLY


def test_a_draft_model_named_but_not_given(target):
    with pytest.raises(ParamError, match="was not given"):
        target.cache(with_draft())


@pytest.mark.parametrize("field, value, message", [
    ("speculative", "draft-simple", "name one in draft_model"),
    ("draft_p_min", 1.5, "probability"),
])
def test_draft_settings_are_checked_where_they_are_defined(field, value, message):
    with pytest.raises(ParamError, match=message) as raised:
        CacheParams(**{field: value})
    assert raised.value.field == field


def test_the_draft_model_type_follows_from_draft_model():
    assert CacheParams(draft_model="small").speculative_types == ("draft-simple",)
    assert CacheParams(draft_model="small", speculative="ngram-mod").speculative_types == ("ngram-mod",
                                                                                             "draft-simple")
    assert CacheParams(draft_model="small", draft_p_min=0.5).speculator_params()["p_min"] == 0.5


def test_a_full_draft_context_drops_the_slots_not_drafting(target, agreeing):
    """A KV cache smaller than n_ctx × slots: the target drops an idle slot's tokens to make room, and so does
    the draft context when it fills up (what it held for that slot goes), instead of drafting nothing."""
    long_one = chat([{"role": "user", "content": "one " * 250}])
    long_two = chat([{"role": "user", "content": "two " * 250}])
    with target.cache(with_draft(n_ctx=512, n_parallel=2, kv_size=512), draft=agreeing) as cache:
        for request in (long_one, long_two):
            before = cache.speculation()["accepted"]
            assert cache.complete(request).raw_text == SCRIPTED_REPLY
            assert cache.speculation()["accepted"] - before >= 8        # drafted all along
        assert_kv_consistent(cache)
