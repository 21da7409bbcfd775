"""A Sequence is one sequence id of a context's KV cache and the tokens it holds, position by position.

It is the only code that calls llama_memory_* on a sequence or edits its token record, so the
invariant "`tokens` == what the KV holds for this sequence" lives here. Tokens are staged into
the context's pending batch, then committed once the batch decoded (or repaired when it failed).
"""

from __future__ import annotations

from collections.abc import Sequence as Tokens
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .. import _core


def common_prefix_length(a: Tokens[int], b: Tokens[int]) -> int:
    """How many leading tokens two token sequences of the same type (both lists or both tuples) share."""
    n = min(len(a), len(b))
    i = 0
    step = 256                           # compare slices in C; walk one token at a time in the last one
    while i + step <= n and a[i:i + step] == b[i:i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Sequence:
    def __init__(self, context: _core.Context, seq_id: int) -> None:
        self.context = context
        self.id = seq_id
        self.tokens: list[int] = []      # what the KV holds for this sequence, position by position
        self._staged: list[int] = []     # added to the pending batch, not decoded yet

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def next_pos(self) -> int:
        """The position the next staged token gets."""
        return len(self.tokens) + len(self._staged)

    def shared_with(self, prompt: list[int]) -> int:
        return common_prefix_length(self.tokens, prompt)

    # -- KV edits

    def keep(self, n: int) -> None:
        """Forget every position from n on."""
        if n >= len(self.tokens):
            return
        if not self.context.memory_seq_rm(self.id, n, -1):
            # a partial removal the memory cannot do (recurrent models): drop the whole sequence
            self.context.memory_seq_rm(self.id, -1, -1)
            n = 0
        del self.tokens[n:]

    def clear(self) -> None:
        self.keep(0)

    def reuse(self, prompt: list[int]) -> int:
        """Keep the longest prefix shared with `prompt` (at least its last token is left to evaluate,
        for logits); return how many tokens are kept."""
        self.keep(min(self.shared_with(prompt), len(prompt) - 1))
        return len(self.tokens)

    def copy_from(self, source: "Sequence", n: int) -> None:
        """Make this sequence hold the first n tokens of `source` (cells shared in the unified KV)."""
        if source is self:
            self.keep(n)
            return
        self.clear()
        if n > 0:
            self.context.memory_seq_cp(source.id, self.id, 0, n)
            self.tokens = source.tokens[:n]

    # -- the KV state as bytes (saved prefixes)

    def snapshot(self) -> bytearray:
        """This sequence's KV state (restore() puts it back, here or in another sequence)."""
        return self.context.state_seq_get(self.id)

    def restore(self, tokens: list[int], state) -> bool:
        """Replace what this sequence holds with a saved state of `tokens`; False (and the sequence
        empty) when the context refuses it."""
        self.clear()
        if not self.context.state_seq_set(self.id, state):
            return False
        if self.context.memory_seq_pos_max(self.id) != len(tokens) - 1:
            self.context.memory_seq_rm(self.id, -1, -1)
            return False
        self.tokens = list(tokens)
        return True

    # -- decoding through the context's pending batch

    def stage(self, tokens: list[int], logits_last: bool, logits_all: bool = False) -> int:
        """Add tokens at this sequence's next positions to the pending batch; their last batch index (the
        others' just before it, each with logits when `logits_all`: a draft to verify)."""
        index = self.context.batch_add(tokens, self.next_pos, self.id, logits_last, logits_all)
        self._staged.extend(tokens)
        return index

    @property
    def staged(self) -> bool:
        return bool(self._staged)

    def commit(self) -> None:
        """The pending batch decoded: the staged tokens are in the KV now."""
        self.tokens.extend(self._staged)
        self._staged.clear()

    def repair(self) -> None:
        """The pending batch failed: ubatches decoded before the failure stay in the KV, the rest
        do not. Make the record match what the KV holds."""
        wanted = self.tokens + self._staged
        self._staged.clear()
        held = self.context.memory_seq_pos_max(self.id) + 1
        self.tokens = wanted[:max(0, min(held, len(wanted)))]
        if held > len(self.tokens):
            self.context.memory_seq_rm(self.id, len(self.tokens), -1)
