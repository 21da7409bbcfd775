"""Many prompts in one call: the shared prefix is evaluated once, then the sequences decode together."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from .. import _core
from ..errors import ContextLimitExceededError, InvalidRequestError
from .cache import common_prefix_length
from .params import GREEDY, SamplingParams


@dataclass(frozen=True)
class BatchResult:
    text: str
    tokens: list[int]
    stop_reason: str              # end_turn | max_tokens
    prompt_tokens: int


def generate_batch(cache, prompts: list[str | list[int]], max_tokens: int,
                   sampling: SamplingParams = GREEDY) -> list[BatchResult]:
    """Complete raw prompts (text or token ids) on one cache, sequences 0..n-1 in one KV.

    The longest prefix common to every prompt is decoded once into sequence 0 and copied to
    the others with llama_memory_seq_cp; each sequence then gets its own suffix and all of
    them generate in one batch per step. Greedy results equal one-by-one greedy runs.
    """
    native = cache.model.native
    ctx = cache.context
    n = len(prompts)
    if n == 0:
        return []
    if n > ctx.n_seq_max:
        raise InvalidRequestError(f"{n} prompts but this cache holds {ctx.n_seq_max} sequences (n_seq_max)")
    token_lists = [list(p) if isinstance(p, list) else native.tokenize(p, add_special=True) for p in prompts]
    if any(len(t) == 0 for t in token_lists):
        raise InvalidRequestError("every prompt needs at least one token")

    shared = min(len(t) for t in token_lists) - 1       # each sequence keeps >= 1 token of its own
    for t in token_lists[1:]:
        shared = min(shared, common_prefix_length(token_lists[0], t))
    needed = shared + sum(len(t) - shared + max_tokens for t in token_lists)
    if needed > ctx.n_ctx:
        raise ContextLimitExceededError(shared + sum(len(t) - shared for t in token_lists), n * max_tokens, ctx.n_ctx)

    with cache._lock:
        ctx.clear_cancel()
        keep = common_prefix_length(cache.tokens, token_lists[0][:shared])
        for seq in range(1, ctx.n_seq_max):
            ctx.memory_seq_rm(seq, -1, -1)
        if not ctx.memory_seq_rm(0, keep, -1):
            ctx.memory_clear()
            keep = 0
        del cache.tokens[keep:]
        if shared > keep:
            ctx.decode(token_lists[0][keep:shared], keep, 0, False)
            cache.tokens.extend(token_lists[0][keep:shared])
        for seq in range(1, n):
            ctx.memory_seq_cp(0, seq, -1, -1)

        samplers = [_core.Sampler(native, sampling.to_native()) for _ in range(n)]
        try:
            outputs: list[list[int]] = [[] for _ in range(n)]
            reasons = ["max_tokens"] * n
            next_tokens: dict[int, int] = {}
            # each suffix, sampled right after its own decode (the next decode replaces the logits)
            for seq, tokens in enumerate(token_lists):
                ctx.decode(tokens[shared:], shared, seq, True)
                if seq == 0:
                    cache.tokens.extend(tokens[shared:])
                next_tokens[seq] = samplers[seq].sample_accept(ctx, -1)
            positions = {seq: len(t) for seq, t in enumerate(token_lists)}
            while next_tokens:
                active = []
                for seq, token in next_tokens.items():
                    outputs[seq].append(token)
                    if native.is_eog(token):
                        reasons[seq] = "end_turn"
                    elif len(outputs[seq]) < max_tokens:
                        active.append((seq, token))
                if not active or ctx.cancelled:
                    break
                ctx.decode_parallel([t for _, t in active], [positions[s] for s, _ in active], [s for s, _ in active])
                next_tokens = {}
                for idx, (seq, token) in enumerate(active):
                    positions[seq] += 1
                    if seq == 0:
                        cache.tokens.append(token)
                    next_tokens[seq] = samplers[seq].sample_accept(ctx, idx)
        finally:
            for sampler in samplers:
                sampler.close()
            for seq in range(1, n):
                ctx.memory_seq_rm(seq, -1, -1)

    results = []
    for seq, tokens in enumerate(outputs):
        visible = tokens[:-1] if reasons[seq] == "end_turn" else tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = "".join(decoder.decode(native.token_to_piece(t)) for t in visible) + decoder.decode(b"", final=True)
        results.append(BatchResult(text, visible, reasons[seq], len(token_lists[seq])))
    return results
