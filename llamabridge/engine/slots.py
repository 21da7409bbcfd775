"""A cache's slots and the policy over what their KV holds: which slot a job runs on, which prefix it starts
from, what is saved before it is dropped and what is evicted to make room.

A slot is one sequence of the context's unified KV. Slots is owned by the scheduler's worker, the only
thread that touches the KV; other threads read a SlotsView, a snapshot the worker publishes whenever what a
slot holds changes (a job placed or ended, a prefix restored, slots cleared or evicted) and, for the
counts, after every step.

Slot choice: an idle slot whose tokens the prompt continues (the conversation it already holds,
recognised by the client's session key) is reused in place; otherwise an empty or the least
recently used idle slot is taken, and the longest prefix any slot holds, busy or not, is copied
into it with llama_memory_seq_cp instead of being evaluated again. A job whose prefix another
slot is still evaluating waits for it and copies it (parallel subagents share one system prompt).

Saved prefixes (with a PrefixStore): a slot taken over by another conversation, or cleared to
make room, first saves its KV state to the store; a saved prefix longer than anything the live
slots hold is restored into the job's slot when that is faster than evaluating the difference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from .job import Job, JobState
from .prefix_file import token_bytes
from .prefix_store import MB, LoadedPrefix, PrefixStore, Tier, shared_tokens
from .sequence import Sequence, common_prefix_length

if TYPE_CHECKING:
    from .. import _core

log = logging.getLogger("llamabridge.engine")

# An idle slot is continued in place when the new prompt starts with at least this share of it.
CONTINUE_SHARE = 0.5
# Wait for a slot that is evaluating our prefix when that saves at least this many tokens.
FOLLOW_MIN_TOKENS = 64
# Restore a saved prefix when it saves at least this many tokens over the live slots (and is faster).
RESTORE_MIN_GAIN = 16
# Until measured: how fast a state is restored (bytes/s): copied into the KV from RAM; read, checked
# and copied from disk.
DEFAULT_RESTORE_RATE = {Tier.RAM: 1e9, Tier.DISK: 2e8}


def restore_gain(saved: int, prompt: int, live: int) -> int:
    """Prompt tokens a saved prefix of `saved` tokens spares beyond the `live` ones a slot already holds
    (a prompt's last token is evaluated regardless: its logits start the answer)."""
    return min(saved, prompt - 1) - live


def need(job: Job) -> int:
    """KV cells a job may fill: its prompt and every token it may generate."""
    return len(job.prompt) + job.spec.max_tokens


class Slot:
    def __init__(self, sequence: Sequence) -> None:
        self.seq = sequence
        self.id = sequence.id
        self.job: Job | None = None
        self.session: str | None = None     # session digest of the last job that ran here
        self.last_used = 0.0
        self.next_token = -1                # sampled, to be decoded in the next step
        self.draft: list[int] = []          # drafted to follow it, decoded with it in the next step
        self.draft_type = ""                # the speculation type that drafted it
        self.spec_held = 0                  # of its tokens, how many the speculator holds (their history)
        self.batch_index = -1               # where this slot's logits are in the current batch

    @property
    def state(self) -> str:
        return "idle" if self.job is None else self.job.state.value

    @property
    def running(self) -> Job:
        """The job on this slot, for the steps that only ever see a slot with one."""
        if self.job is None:
            raise AssertionError(f"slot {self.id} has no job")
        return self.job


@dataclass(frozen=True)
class SlotView:
    """One slot as the worker last published it."""

    id: int
    state: str                          # idle | prompt | generate
    n_tokens: int                       # tokens its KV holds (as of the last step)
    tokens: tuple[int, ...]             # those tokens, as of its job's start, its prompt's end or its job's end
    session: str | None
    job: int | None

    def info(self) -> dict:
        return {"id": self.id, "state": self.state, "tokens": self.n_tokens,
                "session": self.session[:12] if self.session else None, "job": self.job}


@dataclass(frozen=True)
class SlotsView:
    """Every slot, read-only, for threads other than the worker."""

    slots: tuple[SlotView, ...]

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> SlotView:
        return self.slots[index]

    def __iter__(self) -> Iterator[SlotView]:
        return iter(self.slots)

    def live(self, prompt: list[int]) -> int:
        """The longest prefix of `prompt` a slot holds."""
        wanted = tuple(prompt)
        return max((common_prefix_length(s.tokens, wanted) for s in self.slots), default=0)


class Slots:
    """The slots of one context and what goes into their KV. The worker's alone (see the module)."""

    def __init__(self, context: _core.Context, n_parallel: int, kv_size: int, name: str,
                 store: PrefixStore | None = None, fingerprint=None) -> None:
        self.name = name
        self.kv_size = kv_size
        self.store = store                        # with the fingerprint its entries must match, or None
        self.fingerprint = fingerprint
        self.all = [Slot(Sequence(context, i)) for i in range(n_parallel)]
        self.prompt_rate: float | None = None     # tokens/s of prompt evaluation, a moving average
        self.restored = 0                         # prompt tokens restored from saved prefixes
        self._tokens: list[tuple[int, ...]] = [() for _ in self.all]   # as last published
        self._changed: set[Slot] = set()          # slots whose tokens changed since (besides a step's commit)
        self.view = SlotsView(())
        self.publish()

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def __getitem__(self, index: int) -> Slot:
        return self.all[index]

    @property
    def busy(self) -> int:
        return sum(1 for s in self.all if s.job is not None)

    def free(self) -> int:
        return sum(1 for s in self.all if s.job is None)

    def publish(self) -> None:
        """A new view for other threads: the slots' states and counts, and the tokens of those whose
        tokens changed otherwise than by a step (a copy per change, not per step)."""
        for slot in self._changed:
            self._tokens[slot.id] = tuple(slot.seq.tokens)
        self._changed.clear()
        self.view = SlotsView(tuple(
            SlotView(s.id, s.state, len(s.seq), held, s.session, s.job.id if s.job is not None else None)
            for s, held in zip(self.all, self._tokens)))

    def measured_prompt(self, evaluated: int, seconds: float) -> None:
        """A prompt's evaluation: its rate, averaged, weighs restoring a saved prefix against evaluating."""
        if evaluated >= 64 and seconds > 0:
            rate = evaluated / seconds
            self.prompt_rate = rate if self.prompt_rate is None else 0.7 * self.prompt_rate + 0.3 * rate

    # -- a job's slot and the prefix it starts from

    def place(self, job: Job) -> Slot:
        """Put a job on a slot holding the longest prefix of its prompt there is (the slot's own, another
        slot's copied, or a saved one restored); job.cached_tokens says how long. The slot is the job's
        once this returns (its state PROMPT), room made for it, and job.follow set when another slot is
        still evaluating a longer shared prefix."""
        prompt = job.prompt
        slot, continued = self._choose(job)
        if not continued:
            self.save(slot)                   # another conversation takes this slot over
        source, shared = self._best_source(prompt, slot)
        own = slot.seq.shared_with(prompt)
        saved = self._saved_prefix(job, max(own, shared))
        restored = saved is not None and self._restore(slot, saved, job)
        if not restored and source is not None and shared > min(own, len(prompt) - 1):
            slot.seq.copy_from(source.seq, shared)
        job.cached_tokens = slot.seq.reuse(prompt)
        slot.job, job.state = job, JobState.PROMPT
        self.make_room()
        leader, n = self._leader(prompt, slot)
        if leader is not None and n - job.cached_tokens >= FOLLOW_MIN_TOKENS:
            job.follow = (leader, leader.job, n)
        self._changed.add(slot)
        self.publish()
        return slot

    def follow(self, slot: Slot) -> bool:
        """For a job waiting on a leader's prompt: copy the shared prefix once it is in the KV (or the
        leader went away). True when the job can evaluate the rest of its prompt now."""
        job = slot.running
        if job.follow is None:
            return True
        leader, leader_job, n = job.follow
        if leader.job is leader_job and leader_job.state is JobState.PROMPT and len(leader.seq) < n:
            return False
        job.follow = None
        shared = min(leader.seq.shared_with(job.prompt), len(job.prompt) - 1)
        if shared > len(slot.seq):
            slot.seq.copy_from(leader.seq, shared)
            job.cached_tokens = len(slot.seq)
            self._changed.add(slot)
        return True

    def evaluated(self, slot: Slot) -> None:
        """A job's prompt is in its slot's KV now: the next view shows it (others may copy it from there)."""
        self._changed.add(slot)

    def release(self, slot: Slot) -> Job:
        """A job ended on its slot: the slot is idle again, its tokens kept for later prompts."""
        job = slot.running
        slot.job = None
        slot.session = job.session
        slot.last_used = time.perf_counter()
        self._changed.add(slot)
        self.publish()
        return job

    def _choose(self, job: Job) -> tuple[Slot, bool]:
        """The slot a job runs on, and whether it continues what that slot holds."""
        prompt, session = job.prompt, job.session
        idle = [s for s in self.all if s.job is None]
        best, best_key = None, None
        for s in idle:
            n = s.seq.shared_with(prompt)
            # continue a slot in place when that loses nothing (the prompt extends all it holds),
            # or when it is the same client's conversation moving on (same session key, or none on
            # either side, and the prompt starts with most of what the slot holds)
            extends = n == len(s.seq)
            moves_on = s.session == session and n >= CONTINUE_SHARE * len(s.seq)
            if n == 0 or not (extends or moves_on):
                continue
            key = (n, session is not None and s.session == session, s.last_used)
            if best_key is None or key > best_key:
                best, best_key = s, key
        if best is not None:
            return best, True
        # nothing here continues: an empty slot, else the least recently used one, sparing the
        # job's own session's slot (its main conversation) when another will do
        chosen = min(idle, key=lambda s: (len(s.seq) > 0, session is not None and s.session == session, s.last_used))
        return chosen, False

    def _best_source(self, prompt: list[int], target: Slot) -> tuple[Slot | None, int]:
        best, n_best = None, 0
        for s in self.all:
            if s is not target:
                n = s.seq.shared_with(prompt)
                if n > n_best:
                    best, n_best = s, n
        return best, min(n_best, len(prompt) - 1)

    def _leader(self, prompt: list[int], target: Slot) -> tuple[Slot | None, int]:
        """A slot still evaluating a prompt that shares a longer prefix than what is in the KV yet."""
        best, n_best = None, 0
        for s in self.all:
            if s is not target and s.job is not None and s.job.state is JobState.PROMPT:
                n = min(common_prefix_length(s.job.prompt, prompt), len(prompt) - 1)
                if n > n_best and n > len(s.seq):
                    best, n_best = s, n
        return best, n_best

    # -- room in the KV

    def fits(self, jobs: list[Job]) -> bool:
        """Whether the KV can hold these jobs' prompts and outputs beside the running jobs' (idle slots are
        evicted as needed). Always true unless a kv_size below n_ctx × n_parallel is set."""
        return self._reserved() + sum(need(j) for j in jobs) <= self.kv_size

    def _reserved(self) -> int:
        """KV cells the running jobs may fill."""
        return sum(need(s.job) for s in self.all if s.job is not None)

    def make_room(self, extra: int = 0) -> None:
        """Evict idle slots (least recently used first, saving their states) while running jobs could
        outgrow kv_size (with `extra` more cells needed)."""
        reserved = self._reserved() + extra
        idle = sorted((s for s in self.all if s.job is None and len(s.seq)), key=lambda s: s.last_used)
        held = sum(len(s.seq) for s in idle)
        for s in idle:
            if reserved + held <= self.kv_size:
                break
            held -= len(s.seq)
            self.save(s)
            s.seq.clear()
            self._changed.add(s)

    def clear_idle(self) -> None:
        """Forget what idle slots hold (the next requests evaluate their whole prompts)."""
        for slot in self.all:
            if slot.job is None:
                slot.seq.clear()
                self._changed.add(slot)
        self.publish()

    # -- saved prefixes

    def save(self, slot: Slot) -> None:
        """Keep an idle slot's KV state in the store before its tokens are dropped (unless a live slot
        or a saved entry already holds them all)."""
        store, tokens = self.store, slot.seq.tokens
        if store is None or len(tokens) < store.min_tokens:
            return
        if any(o is not slot and o.seq.shared_with(tokens) == len(tokens) for o in self.all):
            return
        packed = token_bytes(tokens)
        if store.covers(self.fingerprint, packed):
            return
        started = time.perf_counter()
        try:
            state = slot.seq.snapshot()
        except ValueError as exc:
            log.warning("cache %s slot %d: saving its KV state failed: %s", self.name, slot.id, exc)
            return
        store.put(self.fingerprint, packed, state, slot.session)
        log.info("cache %s slot %d: saved %d tokens (%.1f MB) in %.0f ms", self.name, slot.id, len(tokens),
                 len(state) / MB, 1000 * (time.perf_counter() - started))

    def save_all(self) -> None:
        """Save every slot's state to the store (at shutdown, once the worker stopped)."""
        for slot in sorted(self.all, key=lambda s: s.last_used):
            self.save(slot)

    def worth_restoring(self, gain: int, size: int, tier: Tier = Tier.RAM) -> bool:
        """Whether restoring `size` bytes of state from `tier` beats evaluating `gain` more prompt tokens
        (by the rates measured so far). Any thread may ask."""
        if gain < RESTORE_MIN_GAIN:
            return False
        if self.prompt_rate is None:
            return True
        rate = (self.store.rate(tier) if self.store is not None else None) or DEFAULT_RESTORE_RATE[tier]
        return size / rate < gain / self.prompt_rate

    def read_saved(self, prompt: list[int]) -> LoadedPrefix | None:
        """A saved prefix on disk that beats what the slots (as last published) and RAM hold for this prompt,
        read and checked on the calling thread (a request's, before its job queues), so that the worker only
        copies it into the KV."""
        store = self.store
        if store is None or store.state_dir is None or self.fingerprint is None:
            return None
        entry, n = store.find(self.fingerprint, token_bytes(prompt))
        if entry is None or entry.data is not None:       # nothing saved, or the best is in memory already
            return None
        if not self.worth_restoring(restore_gain(n, len(prompt), self.view.live(prompt)), entry.size, Tier.DISK):
            return None
        return store.load(entry)

    def _saved_prefix(self, job: Job, live: int) -> LoadedPrefix | None:
        """A saved prefix worth restoring for this job: longer than the live slots' `live` tokens by
        enough to beat evaluating the difference (from RAM, or read from disk before the job queued)."""
        store, prompt = self.store, job.prompt
        if store is None:
            return None
        packed = token_bytes(prompt)
        entry, n = store.find(self.fingerprint, packed, in_memory=True)
        loaded = job.spec.saved              # read from disk before the job queued: it wins when longer
        n_loaded = shared_tokens(loaded.entry.tokens, packed) if loaded is not None else 0
        if n_loaded > n:
            entry, n = loaded.entry, n_loaded
        else:
            loaded = None
        if entry is None or not self.worth_restoring(restore_gain(n, len(prompt), live), entry.size):
            return None
        return loaded or store.load(entry)

    def _restore(self, slot: Slot, loaded: LoadedPrefix, job: Job | None) -> bool:
        """Put a saved prefix into a slot (making room for its cells); False when it cannot be."""
        entry, store = loaded.entry, self.store
        if store is None:
            return False
        others = sum(len(s.seq) for s in self.all if s is not slot)
        if others + entry.n_tokens > self.kv_size:
            self.make_room(entry.n_tokens)
            others = sum(len(s.seq) for s in self.all if s is not slot)
            if others + entry.n_tokens > self.kv_size:
                return False
        started = time.perf_counter()
        self._changed.add(slot)
        if not slot.seq.restore(entry.token_list(), loaded.data):
            log.warning("cache %s slot %d: a saved prefix of %d tokens could not be restored (dropped); evaluating "
                        "instead", self.name, slot.id, entry.n_tokens)
            store.discard(entry)
            return False
        total = time.perf_counter() - started + loaded.seconds      # with the disk read, if any
        store.restored(loaded, total)
        if job is None:
            slot.session = entry.session      # a warm-up: the conversation's next turn continues it in place
        self.restored += entry.n_tokens
        log.info("cache %s slot %d: restored %d tokens from %s in %.0f ms (%.0f MB/s)%s", self.name, slot.id,
                 entry.n_tokens, loaded.tier, 1000 * total, entry.size / MB / max(total, 1e-9),
                 f" for job {job.id}" if job is not None else "")
        return True

    def restore_idle(self, loaded: LoadedPrefix) -> bool:
        """Restore a saved prefix into an empty idle slot (a restart's warm-up, on the worker)."""
        tokens = loaded.entry.token_list()
        if any(s.seq.shared_with(tokens) == len(tokens) for s in self.all):
            return False                      # already held
        empty = [s for s in self.all if s.job is None and len(s.seq) == 0]
        if not empty or sum(len(s.seq) for s in self.all) + loaded.entry.n_tokens > self.kv_size:
            return False
        slot = empty[0]
        if not self._restore(slot, loaded, None):
            return False
        slot.last_used = time.perf_counter()
        self.publish()
        return True
