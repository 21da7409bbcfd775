"""The sampler's shortcuts (argmax for greedy, one-pass top-k) draw exactly the tokens llama.cpp's full chain
draws, and step aside whenever a stage reshapes the logits."""

import pytest

from llamabridge import _core

CHAINS = [
    {"temperature": 0.0},
    {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
    {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 7},
    {"temperature": 1.5, "top_k": 40, "top_p": 1.0, "min_p": 0.0, "seed": 11},
    {"temperature": 1.0, "top_k": 256, "top_p": 0.9, "min_p": 0.0, "seed": 3},
    {"temperature": 0.7, "top_k": 1, "seed": 5},
    {"temperature": 2.0, "top_k": 5, "top_p": 0.5, "min_p": 0.2, "seed": 1},
]


@pytest.mark.parametrize("params", CHAINS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_shortcut_draws_the_full_chains_tokens(qwen3, params):
    native = qwen3.native
    fast = _core.Sampler(native, params)
    full = _core.Sampler(native, {**params, "shortcut": False})
    assert fast.shortcut == ("argmax" if params["temperature"] <= 0 else "top_k")
    assert full.shortcut == ""
    drawn = []
    with _core.Context(native, n_ctx=512) as ctx:
        index = ctx.decode(qwen3.tokenize("Once upon a time, in a land far away,"), 0)
        pos = ctx.memory_seq_pos_max(0) + 1
        for _ in range(200):
            token = fast.sample_accept(ctx, index)
            assert full.sample_accept(ctx, index) == token
            drawn.append(token)
            index = ctx.decode([token], pos)
            pos += 1
    fast.close()
    full.close()
    if params["temperature"] > 0 and params["top_k"] > 1:
        assert len(set(drawn)) > 20          # really sampled: the shared random stream was exercised


@pytest.mark.parametrize("params", [
    {"temperature": 0.0, "repeat_penalty": 1.1},
    {"temperature": 0.8, "frequency_penalty": 0.5},
    {"temperature": 0.8, "presence_penalty": 0.5},
    {"temperature": 0.0, "logit_bias": [[4242, 5.0]]},
    {"temperature": 0.8, "top_k": 0},
    {"temperature": 0.8, "top_k": 1000},
    {"temperature": 0.0, "grammar": 'root ::= "yes" | "no"'},
    {"temperature": 0.0, "thinking_start_tag": "<think>", "thinking_end_tags": ["</think>"],
     "reasoning_budget_tokens": 10},
    {"temperature": 0.0, "shortcut": False},
])
def test_full_chain_when_a_stage_reshapes_the_logits(qwen3, params):
    sampler = _core.Sampler(qwen3.native, params)
    assert sampler.shortcut == ""
    sampler.close()


def test_penalties_off_over_no_history_still_take_the_shortcut(qwen3):
    sampler = _core.Sampler(qwen3.native, {"temperature": 0.8, "repeat_penalty": 1.5, "penalty_last_n": 0})
    assert sampler.shortcut == "top_k"
    sampler.close()
