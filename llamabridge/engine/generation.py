"""The per-token path of one job on the worker: sampling, detokenizing, stop strings.

The scheduler decodes and hands each job's Generation the batch index to sample at. The
per-token path keeps to native calls (sample+accept, token text) plus the stream bookkeeping
the protocols need. A chat's text goes out as RawText: its consumer parses it (output.py), so
the parser's cost, which grows with the answer, is not paid between two decodes.
"""

from __future__ import annotations

import time

from .. import _core
from .output import RawText
from .pieces import PieceDecoder
from .request import ChatRequest, Done, RenderedChat, StopReason, TextDelta, Timings, TokenLogprob, Usage
from .stops import StopMatcher


class Generation:
    """One job's token path: its sampler, stop strings and UTF-8 assembly.

    The scheduler decodes; a Generation samples at the batch index it is given and turns the
    token into items for the job's consumer. `rendered` is llama.cpp's chat params for a chat
    (its text goes out as RawText, for the consumer's OutputReader), or None for a raw prompt
    (generate_batch): then no template grammar, text as TextDelta as it comes.
    """

    def __init__(self, native, request: ChatRequest | None, rendered: RenderedChat | None, sampling: dict,
                 max_tokens: int, stop: tuple[str, ...] = (), sampler=None) -> None:
        self.native = native
        self.max_tokens = max_tokens
        self.tokens: list[int] = []           # every sampled token, end-of-generation included
        self.stop_reason: StopReason = "max_tokens"
        self._raw: list[str] = []
        self._utf8 = PieceDecoder()
        self._preserved: set[int] = set()
        self._chat = rendered is not None
        self._started = 0.0
        self._logprobs = request.logprobs if request is not None else None
        self.drafted = 0                      # tokens drafted for this answer (speculative decoding), accepted
        self.draft_accepted = 0
        self._pending_logprobs: list[TokenLogprob] = []    # tokens whose text has not come out yet
        if rendered is not None:
            self._preserved = {t for text in rendered.preserved_tokens
                               for t in [_single_token(native, text)] if t is not None}
            stop = tuple(stop) + rendered.additional_stops
        self._stops = StopMatcher(tuple(stop))
        self._sampler = sampler if sampler is not None else chat_sampler(native, request, rendered, sampling)

    def step(self, ctx, index: int) -> tuple[int | None, list]:
        """Sample at batch `index`; return the token to decode next (None: generation is over) and items."""
        if not self.tokens:
            self._started = time.perf_counter()
        token = self._sampler.sample_accept(ctx, index)
        ended, items = self._take(ctx, index, token)
        return (None if ended else token), items

    def step_draft(self, ctx, first: int, draft: list[int]) -> tuple[int | None, list, int, int]:
        """Verify a draft decoded at batch indices first.. (the token before it at `first`): the token to
        decode next (None: generation is over), the items, how many draft tokens the sampler accepted and
        how many of the tokens it took were used (fewer when the generation ended among them). A draft
        follows a sampled token, so step() began the clock."""
        taken = self._sampler.sample_draft(ctx, first, draft)
        self.drafted += len(draft)
        self.draft_accepted += len(taken) - 1
        items: list = []
        for used, token in enumerate(taken, 1):
            ended, more = self._take(ctx, first + used - 1, token)
            items.extend(more)
            if ended:
                return None, items, len(taken) - 1, used
        return taken[-1], items, len(taken) - 1, len(taken)

    def _take(self, ctx, index: int, token: int) -> tuple[bool, list]:
        """A sampled token (its logits at batch `index`) into the output: whether the generation ended with
        it, and the items it made."""
        self.tokens.append(token)
        if self.native.is_eog(token):
            self.stop_reason = "end_turn"
            return True, []
        items = []
        piece = self.native.token_to_piece(token, special=token in self._preserved)
        if self._logprobs is not None:
            self._pending_logprobs.append(self._token_logprob(ctx, index, token, piece))
        text = self._utf8.feed(piece)
        visible = self._stops.feed(text) if text else ""
        if visible:
            self._raw.append(visible)
            items = [self._text(visible)]
        if self._stops.matched is not None:
            self.stop_reason = "stop_sequence"
            return True, items
        return len(self.tokens) >= self.max_tokens, items

    def finish(self, usage: Usage, prompt_seconds: float, slot: int | None = None) -> list:
        """The last items: what the stop matcher held back, then Done (which a chat's OutputReader
        completes with the final parse)."""
        items: list[RawText | TextDelta | Done] = []
        self._utf8.finish()                   # a character cut by max_tokens is dropped, not U+FFFD
        tail = self._stops.flush()
        if tail:
            self._raw.append(tail)
        if tail or (self._chat and self._pending_logprobs):
            items.append(self._text(tail))
        elapsed = time.perf_counter() - self._started if self.tokens else 0.0
        items.append(Done(
            stop_reason=self.stop_reason, usage=usage, timings=Timings(prompt_seconds, elapsed),
            stop_sequence=self._stops.matched, raw_text="".join(self._raw), slot=slot,
            drafted=self.drafted, draft_accepted=self.draft_accepted,
        ))
        return items

    def _text(self, text: str) -> RawText | TextDelta:
        """Visible text with the log-probabilities of the tokens since the last text."""
        logprobs = tuple(self._pending_logprobs)
        self._pending_logprobs.clear()
        return RawText(text, len(self.tokens), logprobs) if self._chat else TextDelta(text, logprobs)

    def _token_logprob(self, ctx, index: int, token: int, piece: bytes) -> TokenLogprob:
        logprob, top = ctx.token_logprobs(index, token, self._logprobs)
        return TokenLogprob(piece, logprob, tuple((self.native.token_to_piece(t), lp) for t, lp in top))

    def close(self) -> None:
        self._sampler.close()


def chat_sampler(native, request: ChatRequest | None, rendered: RenderedChat | None, sampling: dict):
    """The native sampler of a chat (`rendered`: its template's grammar, tags and budget) or of a raw
    prompt (rendered None). Its grammar is built without the GIL, but the calling thread waits for it."""
    return _core.Sampler(native, _chat_sampling(sampling, request, rendered) if rendered is not None else sampling)


def _chat_sampling(sampling: dict, request: ChatRequest | None, rendered: RenderedChat) -> dict:
    """The sampler's parameters for a templated chat: the request's, plus the template's grammar,
    preserved tokens, generation prompt, thinking tags and budget."""
    sampling = dict(sampling)
    sampling.update({
        "preserved_tokens": list(rendered.preserved_tokens),
        "generation_prompt": rendered.generation_prompt,
        "thinking_start_tag": rendered.thinking_start_tag if rendered.supports_thinking else "",
        "thinking_end_tags": list(rendered.thinking_end_tags) if rendered.supports_thinking else [],
    })
    if rendered.grammar:
        sampling.update({
            "grammar": rendered.grammar,
            "grammar_type": "tool_calls",
            "grammar_lazy": rendered.grammar_lazy,
            "grammar_triggers": list(rendered.grammar_triggers),
        })
    if request is not None and request.thinking.budget_tokens is not None:
        sampling["reasoning_budget_tokens"] = request.thinking.budget_tokens
    return sampling


def _single_token(native, text: str) -> int | None:
    ids = native.tokenize(text, parse_special=True)
    return ids[0] if len(ids) == 1 else None
