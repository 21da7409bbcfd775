"""Many raw prompts at once, as jobs on one cache's slots: the same scheduler and token loop as chat.

A prompt that shares a prefix with one another slot is evaluating waits for it and copies it
(llama_memory_seq_cp), so a common prefix is evaluated once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ContextLimitExceededError, InvalidRequestError
from .cache import ChatStream
from .job import JobSpec
from .params import GREEDY, SamplingParams
from .request import Done, TextDelta


@dataclass(frozen=True)
class BatchResult:
    text: str
    tokens: list[int]
    stop_reason: str              # end_turn | max_tokens
    prompt_tokens: int
    cached_tokens: int = 0        # prompt tokens reused or copied from the KV instead of evaluated


def generate_batch(cache, prompts: list[str | list[int]], max_tokens: int,
                   sampling: SamplingParams = GREEDY) -> list[BatchResult]:
    """Complete raw prompts (text or token ids, no chat template) together on one cache's slots.

    At most n_parallel prompts; each must fit in n_ctx with max_tokens. Greedy results equal
    one-by-one greedy runs.
    """
    native = cache.model.native
    if not prompts:
        return []
    if len(prompts) > cache.n_parallel:
        raise InvalidRequestError(f"{len(prompts)} prompts but this cache has {cache.n_parallel} slots (n_parallel)")
    token_lists = [list(p) if isinstance(p, list) else native.tokenize(p, add_special=True) for p in prompts]
    if any(len(t) == 0 for t in token_lists):
        raise InvalidRequestError("every prompt needs at least one token")
    for tokens in token_lists:
        if len(tokens) + max_tokens > cache.n_ctx:
            raise ContextLimitExceededError(len(tokens), max_tokens, cache.n_ctx)

    streams = [ChatStream(cache.scheduler, JobSpec(tokens, max_tokens, sampling.to_native()))
               for tokens in token_lists]
    results = []
    try:
        for stream, tokens in zip(streams, token_lists):
            text: list[str] = []
            done: Done | None = None
            for event in stream:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, Done):
                    done = event
            generation = stream.job.generation
            if done is None or generation is None:
                raise AssertionError("a chat stream ends with Done, after its generation began")
            generated = generation.tokens
            visible = generated[:-1] if done.stop_reason == "end_turn" else generated
            results.append(BatchResult("".join(text), visible, done.stop_reason, len(tokens),
                                       done.usage.cached_tokens))
    finally:
        for stream in streams:
            stream.close()
    return results
