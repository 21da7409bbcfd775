"""The weights of a scripted transformer: greedy decoding follows given token sequences, any token as often
as they have it, each next token chosen by as many of the last tokens as it takes to tell it apart.

The scripts are token sequences (a prompt's tail, then the reply the model is to give to it). Each position
whose next token is scripted becomes a rule "these last k tokens -> that token", k the smallest that no
position with another next token shares. One transformer layer carries out every rule at once:

- residual stream: dim 0 is 1 for every token (a bias); the *current block* is a one-hot of the token among
  the script's tokens S (or a `null` dim for any other token); block j (j = 1..K-1) holds a one-hot of the
  token j positions back, among the tokens some rule checks there (or an `other` dim). Every block of every
  position has norm 1, so RMS normalization scales every position alike.
- attention: head j attends to the position exactly j back. Its query and key are constants (read from the
  bias), spread over RoPE's 64 frequency pairs with the query's angle set back by j steps, so that q.k peaks
  at distance j; with linear RoPE scaling 3 and base 5 the next best distance up to MAX_DISTANCE scores at
  most 37% of the peak, and the scale makes that gap 32 nats. Its value maps the current block to block j's
  one-hot, written into block j.
- feed-forward (SiLU-gated): one unit per rule. Its gate is ALPHA x (offsets matching - k + 1/2): open only
  when all k match. It writes GAMMA x e(next) - e(current) into the current block. One more unit, always
  open, writes DELTA x e(end): where no rule matches, the turn ends.
- output: tied to the token embedding, so the logits read the current block. Tokens outside the scripts share
  one embedding but for a small `short` dim that ranks shorter tokens higher: where a grammar rules the script
  out, the model writes the shortest tokens the grammar allows, and ends soonest.

Pure numpy; `ScriptWeights` is what the GGUF writer (families.py) stores, checked against a numpy forward
pass and llama.cpp's greedy output in tests/families.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEAD_DIM = 128            # RoPE over all of it (llama requires n_rot = head_dim): 64 frequency pairs
ROPE_BASE = 5.0
ROPE_SCALE = 3.0          # linear scaling: positions x 3 (GGUF rope.scaling.factor = 1/3)
MAX_DISTANCE = 131072     # the offset heads are checked up to this distance
QK = 9.0                  # |q| x |k| per frequency pair (x 64 pairs / sqrt(128) at the peak)
ALPHA = 30.0              # gate slope: a rule with one offset wrong is closed by 15 (silu(-15) ~ 5e-6)
GAMMA = 8.0               # the scripted next token's logit (before the output norm's scale)
DELTA = 2.0               # end of turn's, where no rule matches (the current token's own is 1)
SHORT = 0.5               # at most this below the other tokens' logit for the longest: where a grammar rules
                          # out the script, the model writes the shortest tokens it allows and ends soonest


@dataclass(frozen=True)
class Script:
    """A prompt's tail and the reply scripted after it (token ids)."""

    prompt: tuple[int, ...]
    reply: tuple[int, ...]


@dataclass
class ScriptWeights:
    n_embd: int
    n_head: int
    n_ff: int
    tok_embd: np.ndarray     # [n_vocab, n_embd]
    wq: np.ndarray           # [n_head * HEAD_DIM, n_embd]
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray           # [n_embd, n_head * HEAD_DIM]
    gate: np.ndarray         # [n_ff, n_embd]
    up: np.ndarray
    down: np.ndarray         # [n_embd, n_ff]
    rules: int
    context: int             # the most tokens a rule reads (K)


def rope_thetas() -> np.ndarray:
    return ROPE_SCALE * ROPE_BASE ** (-np.arange(HEAD_DIM // 2) * 2.0 / HEAD_DIM)


def offset_margin(max_distance: int = MAX_DISTANCE) -> float:
    """The gap between the peak of an offset head's q.k profile and its best other distance, as a share of
    the peak (the same for every offset: the profile depends on the distance to the peak alone)."""
    thetas = rope_thetas()
    best = -np.inf
    for start in range(1, max_distance + 1, 16384):
        d = np.arange(start, min(start + 16384, max_distance + 1), dtype=np.float64)
        best = max(best, np.cos(np.outer(d, thetas)).sum(axis=1).max())
    return 1.0 - best / len(thetas)


def _rules(scripts: list[Script]) -> list[tuple[tuple[int, ...], int]]:
    """(context, next token) for every scripted step, each context the shortest that tells it apart (newest
    token first)."""
    steps = []          # (sequence, index of the current token, next token)
    for script in scripts:
        sequence = script.prompt + script.reply
        for i in range(len(script.prompt) - 1, len(sequence) - 1):
            steps.append((sequence, i, sequence[i + 1]))

    def context(step, k):
        sequence, i, _ = step
        return tuple(sequence[i - j] if i - j >= 0 else -1 for j in range(k))

    rules = {}
    for step in steps:
        k = 1
        while True:
            mine = context(step, k)
            if not any(other[2] != step[2] and context(other, k) == mine for other in steps):
                break
            if k > min(step[1] + 1, 64):
                raise ValueError(f"two scripts continue the same {k} tokens differently: {mine[::-1]}")
            k += 1
        rules[mine] = step[2]
    return list(rules.items())


def script_weights(scripts: list[Script], lengths: np.ndarray, end_token: int) -> ScriptWeights:
    """`lengths`: each token's length in characters (its row count is the vocabulary's size)."""
    n_vocab = len(lengths)
    rules = _rules(scripts)
    K = max(len(ctx) for ctx, _ in rules)
    if K > 1 and offset_margin() < 0.6:
        raise AssertionError("the RoPE offset heads lost their margin")
    current = sorted({t for ctx, _ in rules for t in ctx} | {nxt for _, nxt in rules} | {end_token})
    checked = [sorted({ctx[j] for ctx, _ in rules if len(ctx) > j}) for j in range(1, K)]

    # the residual stream's layout
    slot = {t: 1 + i for i, t in enumerate(current)}
    null = 1 + len(current)
    blocks = []                          # per offset j: ({token: dim}, other dim)
    at = null + 1
    for tokens in checked:
        if len(tokens) + 1 > HEAD_DIM:
            raise ValueError(f"{len(tokens)} tokens to tell apart at one offset: at most {HEAD_DIM - 1}")
        blocks.append(({t: at + i for i, t in enumerate(tokens)}, at + len(tokens)))
        at += len(tokens) + 1
    short = at                           # ties among the other tokens go to the shorter (see `lengths`)
    n_embd = -(-(at + 1) // 32) * 32     # rows of whole quantization blocks
    n_head = max(1, K - 1)
    n_ff = len(rules) + 1

    embd = np.zeros((n_vocab, n_embd), np.float32)
    embd[:, 0] = 1.0
    embd[:, null] = 1.0
    embd[:, short] = -SHORT * np.minimum(lengths, 16) / 16.0
    for t, s in slot.items():
        embd[t, null] = 0.0
        embd[t, short] = 0.0
        embd[t, s] = 1.0
    g_attn = np.sqrt(n_embd / 2.0)       # what RMS normalization multiplies an embedding by

    wq = np.zeros((n_head * HEAD_DIM, n_embd), np.float32)
    wk = np.zeros_like(wq)
    wv = np.zeros_like(wq)
    wo = np.zeros((n_embd, n_head * HEAD_DIM), np.float32)
    thetas = rope_thetas()
    root = np.sqrt(QK)
    for j, (dims, other) in enumerate(blocks, start=1):
        h = (j - 1) * HEAD_DIM
        angle = -j * thetas               # the query's pairs, set back j steps
        wq[h + 0:h + HEAD_DIM:2, 0] = root * np.cos(angle) / g_attn
        wq[h + 1:h + HEAD_DIM:2, 0] = root * np.sin(angle) / g_attn
        wk[h + 0:h + HEAD_DIM:2, 0] = root / g_attn
        base = min([*dims.values(), other])       # the block's first residual dim: head dim 0
        for t, s in slot.items():
            wv[h + dims.get(t, other) - base, s] = 1.0 / g_attn
        wv[h + other - base, null] = 1.0 / g_attn
        for d in [*dims.values(), other]:
            wo[d, h + d - base] = 1.0

    g_ffn = np.sqrt(n_embd / (K + 1.0)) if K > 1 else np.sqrt(n_embd / 2.0)
    gate = np.zeros((n_ff, n_embd), np.float32)
    up = np.zeros((n_ff, n_embd), np.float32)
    down = np.zeros((n_embd, n_ff), np.float32)
    opened = _silu(ALPHA / 2)
    for u, (ctx, nxt) in enumerate(rules):
        gate[u, slot[ctx[0]]] = ALPHA / g_ffn
        for j, t in enumerate(ctx[1:], start=1):
            gate[u, blocks[j - 1][0][t]] = ALPHA / g_ffn
        gate[u, 0] = -ALPHA * (len(ctx) - 0.5) / g_ffn
        up[u, 0] = 1.0 / g_ffn
        down[slot[nxt], u] += GAMMA / opened
        down[slot[ctx[0]], u] -= 1.0 / opened
        down[slot[end_token], u] -= DELTA / opened
    always = len(rules)
    gate[always, 0] = ALPHA / 2 / g_ffn
    up[always, 0] = 1.0 / g_ffn
    down[slot[end_token], always] = DELTA / opened
    down[short, always] = 1.0 / opened
    return ScriptWeights(n_embd, n_head, n_ff, embd, wq, wk, wv, wo, gate, up, down, len(rules), K)


def _silu(x: float) -> float:
    return x / (1.0 + np.exp(-x))
