"""The scripted transformer's weights (llamabridge.synthetic.weights), run by a numpy forward pass of the
llama architecture as llama.cpp computes it (RMS norm, RoPE on adjacent pairs, causal softmax attention, SiLU
gate, tied output): greedy decoding follows every script, repeated tokens included, whatever came before."""

from __future__ import annotations

import numpy as np
import pytest

from llamabridge.synthetic.weights import HEAD_DIM, Script, _rules, offset_margin, rope_thetas, script_weights

N_VOCAB, END = 60, 59


def forward(weights, tokens: list[int]) -> np.ndarray:
    """The logits at every position."""
    def rms(x):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)

    n, heads = len(tokens), weights.n_head
    x = weights.tok_embd[tokens].astype(np.float64)
    h = rms(x)
    angles = np.arange(n)[:, None, None] * rope_thetas()[None, None, :]

    def rope(z):
        z = z.reshape(n, heads, HEAD_DIM // 2, 2)
        c, s = np.cos(angles), np.sin(angles)
        return np.stack([z[..., 0] * c - z[..., 1] * s, z[..., 0] * s + z[..., 1] * c], -1).reshape(n, -1)

    q, k, v = rope(h @ weights.wq.T), rope(h @ weights.wk.T), h @ weights.wv.T
    out = np.zeros((n, heads * HEAD_DIM))
    for head in range(heads):
        part = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
        scores = q[:, part] @ k[:, part].T / np.sqrt(HEAD_DIM)
        scores[np.triu_indices(n, 1)] = -np.inf
        p = np.exp(scores - scores.max(1, keepdims=True))
        out[:, part] = (p / p.sum(1, keepdims=True)) @ v[:, part]
    x = x + out @ weights.wo.T
    f = rms(x)
    gate = f @ weights.gate.T
    with np.errstate(over="ignore"):
        x = x + (gate / (1 + np.exp(-gate)) * (f @ weights.up.T)) @ weights.down.T
    return rms(x) @ weights.tok_embd.T


def scripts() -> list[Script]:
    # replies that repeat tokens and whole runs of them ("5 6 7" twice, then told apart by what came before)
    return [Script((1, 2, 3), (5, 6, 7, 8, 5, 6, 7, 9, 5, 5, 5, END)),
            Script((1, 2, 4), (5, 6, 7, 9, 10, 5, 6, 7, 8, END)),
            Script((11, 2, 3), (12, END))]


def test_every_script_is_followed_token_for_token():
    weights = script_weights(scripts(), np.full(N_VOCAB, 3), END)
    for script in scripts():
        sequence = list(script.prompt + script.reply)
        for prefix in ([], [20, 21, 22, 5, 6, 7]):       # alone, or after unrelated tokens
            logits = forward(weights, prefix + sequence)
            start = len(prefix) + len(script.prompt) - 1
            assert list(logits[start:-1].argmax(-1)) == list(script.reply)


def test_rules_read_as_few_tokens_as_tell_a_step_apart():
    rules = dict(_rules(scripts()))      # contexts newest token first
    assert rules[(12,)] == END and rules[(10,)] == 5                   # one token says it
    assert rules[(3, 2, 11)] == 12 and rules[(3, 2, 1)] == 5            # the prompts part three tokens back
    assert (3,) not in rules and (3, 2) not in rules
    assert rules[(8, 7, 6, 5, 3)] == 5 and rules[(8, 7, 6, 5, 10)] == END  # "5 6 7 8" first, or after 10


def test_scripts_that_continue_the_same_context_differently_are_refused():
    with pytest.raises(ValueError, match="continue the same"):
        script_weights([Script((1, 2), (5, END)), Script((1, 2), (6, END))], np.full(N_VOCAB, 3), END)


def test_where_no_rule_matches_the_turn_ends_and_shorter_tokens_come_first():
    lengths = np.arange(N_VOCAB) % 7 + 1
    weights = script_weights(scripts(), lengths, END)
    logits = forward(weights, [30, 31, 32])[-1]
    assert logits.argmax() == END
    others = [t for t in range(N_VOCAB) if t not in {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, END, 32}]
    by_logit = sorted(others, key=lambda t: -logits[t])
    assert lengths[by_logit[0]] == 1 and lengths[by_logit[-1]] == 7


def test_the_offset_heads_keep_their_margin_over_long_contexts():
    assert offset_margin() > 0.6
