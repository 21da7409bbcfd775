"""The Scheduler owns one llama_context: its worker thread is the only code that decodes or touches the KV.

Each request is a Job, queued until a slot is free. A slot is one sequence of the context's
unified KV. Every step builds one batch from one token per generating slot plus prompt chunks
of the slots still evaluating their prompts (oldest job first, up to n_batch), decodes it once,
and samples each generating slot at its own batch index (continuous batching). Cancelling a job
touches only that job; the next step ends it and frees its slot. A step's events wake their consumers
as the next decode starts, without the GIL, at most once per stream interval (see mailbox.py).

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
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable

from .. import _core
from ..errors import DecodeAbortedError, DecodeError, EngineError
from .generation import Generation
from .job import Job, JobState
from .mailbox import Mailbox, due_wakes, wake
from .prefix_file import token_bytes
from .prefix_store import MB, LoadedPrefix, PrefixStore, Tier, shared_tokens
from .request import Done, PromptProgress, PromptReady, Timings, Usage
from .sequence import Sequence, common_prefix_length

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


class EngineClosedError(EngineError):
    status = 503
    type = "overloaded_error"


class Slot:
    def __init__(self, sequence: Sequence) -> None:
        self.seq = sequence
        self.id = sequence.id
        self.job: Job | None = None
        self.session: str | None = None     # session digest of the last job that ran here
        self.last_used = 0.0
        self.next_token = -1                # sampled, to be decoded in the next step
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

    def info(self) -> dict:
        return {
            "id": self.id, "state": self.state, "tokens": len(self.seq),
            "session": self.session[:12] if self.session else None,
            "job": self.job.id if self.job else None,
        }


class Scheduler:
    def __init__(self, context, native, n_parallel: int, kv_size: int, name: str, store: PrefixStore | None = None,
                 fingerprint=None, stream_interval: float = 0.0) -> None:
        self.context = context
        self.native = native
        self.name = name
        self.kv_size = kv_size
        self.store = store                        # with the fingerprint its entries must match, or None
        self.fingerprint = fingerprint
        self.slots = [Slot(Sequence(context, i)) for i in range(n_parallel)]
        self.stats = {"jobs": 0, "cancelled": 0, "failed": 0, "prompt_evaluated": 0, "prompt_reused": 0,
                      "prompt_restored": 0, "generated": 0}
        self.prompt_rate: float | None = None     # tokens/s of prompt evaluation, a moving average
        self._queue: deque[Job] = deque()
        self._calls: deque[tuple[Callable, Future]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.stream_interval = stream_interval    # seconds: how often a streaming job's consumer is woken
        self._wakes: dict[int, Mailbox] = {}     # consumers to wake at a coming decode (the worker's own)
        self._thread = threading.Thread(target=self._run, name=f"llamabridge-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ any thread

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                raise EngineClosedError(f"cache {self.name} is closed")
            job._scheduler = self
            if job.cancelled:                 # cancelled before it was submitted
                self._drop_queued(job)
                return
            self._queue.append(job)
            self._cond.notify()

    def cancel(self, job: Job, *, finish_prompt: bool = False) -> None:
        with self._cond:
            if job.state is JobState.DONE or job.cancelled:
                return
            job.cancelled, job.finish_prompt = True, finish_prompt
            if job.state is JobState.QUEUED and job in self._queue:
                self._queue.remove(job)
                self._drop_queued(job)
            self._cond.notify()

    @property
    def waiting(self) -> int:
        """Jobs queued for a slot."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.job is not None)

    def slot_info(self) -> list[dict]:
        return [s.info() for s in self.slots]

    def wake(self, mailbox: Mailbox, *, now: bool = False, urgent: bool = False) -> None:
        """Wake a job's consumer: from the worker, as a decode starts (after the GIL is released, so the
        consumer works while the model computes): the next one if `urgent` or the consumer was not woken
        for stream_interval, else a later one; at once if `now`. From any other thread, at once."""
        if threading.current_thread() is not self._thread:
            wake(mailbox.fd)
        elif now:
            self._wakes.pop(mailbox.fd, None)
            wake(mailbox.fd)
        else:
            if urgent:
                mailbox.hurry()
            self._wakes[mailbox.fd] = mailbox

    def call(self, fn: Callable):
        """Run fn() on the worker between two steps (it may touch idle slots); return its result."""
        future: Future = Future()
        with self._cond:
            if self._closing:
                raise EngineClosedError(f"cache {self.name} is closed")
            self._calls.append((fn, future))
            self._cond.notify()
        return future.result()

    def close(self) -> None:
        """Cancel every queued and running job, stop the worker. Safe to call twice."""
        with self._cond:
            already = self._closing
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            for job in queued:
                job.cancelled = True
                self._drop_queued(job)
            for slot in self.slots:
                if slot.job is not None:
                    slot.job.cancelled, slot.job.finish_prompt = True, False
            self._cond.notify_all()
        if not already and self.busy:
            self.context.cancel()             # abort a long decode in flight
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # ------------------------------------------------------------ the worker

    def _run(self) -> None:
        computed = False
        while True:
            with self._cond:
                while not (self._closing or self._calls or self.busy or (self._queue and self._free_slot())):
                    self._wake_all()
                    if computed:      # idle: its CPU threads go, so another cache's decode is not throttled
                        _core.release_compute_threads()
                        computed = False
                    self._cond.wait()
                if self._closing and not self.busy:
                    break
                calls = list(self._calls)
                self._calls.clear()
                admitted = self._admissible()
            if calls or admitted:
                self._wake_all()          # what they do (a KV state saved, a prefix restored) may take a while
            computed = True
            for fn, future in calls:
                self._run_call(fn, future)
            try:
                for job in admitted:
                    self._bind(job)
                self._step()
            except BaseException as exc:  # noqa: BLE001 - the worker must survive; jobs hear of it
                log.exception("cache %s: scheduler step failed", self.name)
                for slot in self.slots:
                    if slot.job is not None:
                        slot.seq.repair()
                        self._fail(slot, exc if isinstance(exc, Exception) else EngineError(str(exc)))
        self._wake_all()
        for _, future in self._calls:
            future.set_exception(EngineClosedError(f"cache {self.name} is closed"))

    def _wake_all(self) -> None:
        """Wake the consumers still waiting for a decode that is not coming."""
        for fd in self._wakes:
            wake(fd)
        self._wakes.clear()

    def _run_call(self, fn: Callable, future: Future) -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)

    def _free_slot(self) -> bool:
        return any(s.job is None for s in self.slots)

    def _admissible(self) -> list[Job]:
        """Pop the queued jobs that get a slot now, in arrival order (called under the lock)."""
        admitted: list[Job] = []
        free = sum(1 for s in self.slots if s.job is None)
        while self._queue and free > 0 and self._fits(self._queue[0], admitted):
            admitted.append(self._queue.popleft())
            free -= 1
        return admitted

    def _fits(self, job: Job, admitted: list[Job]) -> bool:
        """Whether the KV can hold this job's prompt and output beside the running jobs' (idle
        slots are evicted as needed). Always true unless a kv_size below n_ctx × n_parallel is set."""
        return self._reserved() + sum(_need(j) for j in admitted) + _need(job) <= self.kv_size

    # -- binding a job to a slot

    def _bind(self, job: Job) -> None:
        prompt = job.prompt
        slot, continued = self._choose_slot(job)
        if not continued:
            self._save(slot)                  # another conversation takes this slot over
        source, shared = self._best_source(prompt, slot)
        own = slot.seq.shared_with(prompt)
        saved = self._saved_prefix(job, max(own, shared))
        restored = saved is not None and self._restore(slot, saved, job)
        if not restored and source is not None and shared > min(own, len(prompt) - 1):
            slot.seq.copy_from(source.seq, shared)
        job.cached_tokens = slot.seq.reuse(prompt)
        slot.job, job.state = job, JobState.PROMPT
        job.prompt_started = time.perf_counter()
        self._make_room()
        leader, n = self._leader(prompt, slot)
        if leader is not None and n - job.cached_tokens >= FOLLOW_MIN_TOKENS:
            job.follow = (leader, leader.job, n)
        spec = job.spec
        try:
            job.generation = Generation(self.native, spec.request, spec.rendered, spec.sampling, spec.max_tokens,
                                        spec.stop, spec.sampler)
        except Exception as exc:  # noqa: BLE001 - e.g. a grammar llama.cpp rejects: this job only
            self._fail(slot, exc)
            return
        job.emit([PromptReady(len(prompt), job.cached_tokens, spec.max_tokens)], urgent=True)

    def _choose_slot(self, job: Job) -> tuple[Slot, bool]:
        """The slot a job runs on, and whether it continues what that slot holds."""
        prompt, session = job.prompt, job.session
        idle = [s for s in self.slots if s.job is None]
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

    # -- saved prefixes

    def _save(self, slot: Slot) -> None:
        """Keep an idle slot's KV state in the store before its tokens are dropped (unless a live slot
        or a saved entry already holds them all)."""
        store, tokens = self.store, slot.seq.tokens
        if store is None or len(tokens) < store.min_tokens:
            return
        if any(o is not slot and o.seq.shared_with(tokens) == len(tokens) for o in self.slots):
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

    def worth_restoring(self, gain: int, size: int, tier: Tier = Tier.RAM) -> bool:
        """Whether restoring `size` bytes of state from `tier` beats evaluating `gain` more prompt tokens
        (by the rates measured so far)."""
        if gain < RESTORE_MIN_GAIN:
            return False
        if self.prompt_rate is None:
            return True
        rate = (self.store.rate(tier) if self.store is not None else None) or DEFAULT_RESTORE_RATE[tier]
        return size / rate < gain / self.prompt_rate

    def _restore(self, slot: Slot, loaded: LoadedPrefix, job: Job | None) -> bool:
        """Put a saved prefix into a slot (making room for its cells); False when it cannot be."""
        entry, store = loaded.entry, self.store
        if store is None:
            return False
        others = sum(len(s.seq) for s in self.slots if s is not slot)
        if others + entry.n_tokens > self.kv_size:
            self._make_room(entry.n_tokens)
            others = sum(len(s.seq) for s in self.slots if s is not slot)
            if others + entry.n_tokens > self.kv_size:
                return False
        started = time.perf_counter()
        if not slot.seq.restore(entry.token_list(), loaded.data):
            log.warning("cache %s slot %d: a saved prefix of %d tokens could not be restored (dropped); evaluating "
                        "instead", self.name, slot.id, entry.n_tokens)
            store.discard(entry)
            return False
        total = time.perf_counter() - started + loaded.seconds      # with the disk read, if any
        store.restored(loaded, total)
        if job is None:
            slot.session = entry.session      # a warm-up: the conversation's next turn continues it in place
        self.stats["prompt_restored"] += entry.n_tokens
        log.info("cache %s slot %d: restored %d tokens from %s in %.0f ms (%.0f MB/s)%s", self.name, slot.id,
                 entry.n_tokens, loaded.tier, 1000 * total, entry.size / MB / max(total, 1e-9),
                 f" for job {job.id}" if job is not None else "")
        return True

    def restore_idle(self, loaded: LoadedPrefix) -> bool:
        """Restore a saved prefix into an empty idle slot (a restart's warm-up; run through call())."""
        tokens = loaded.entry.token_list()
        if any(s.seq.shared_with(tokens) == len(tokens) for s in self.slots):
            return False                      # already held
        empty = [s for s in self.slots if s.job is None and len(s.seq) == 0]
        if not empty or sum(len(s.seq) for s in self.slots) + loaded.entry.n_tokens > self.kv_size:
            return False
        slot = empty[0]
        if not self._restore(slot, loaded, None):
            return False
        slot.last_used = time.perf_counter()
        return True

    def save_slots(self) -> None:
        """Save every slot's state to the store (at shutdown, once the worker stopped)."""
        for slot in sorted(self.slots, key=lambda s: s.last_used):
            self._save(slot)

    def _best_source(self, prompt: list[int], target: Slot) -> tuple[Slot | None, int]:
        best, n_best = None, 0
        for s in self.slots:
            if s is not target:
                n = s.seq.shared_with(prompt)
                if n > n_best:
                    best, n_best = s, n
        return best, min(n_best, len(prompt) - 1)

    def _leader(self, prompt: list[int], target: Slot) -> tuple[Slot | None, int]:
        """A slot still evaluating a prompt that shares a longer prefix than what is in the KV yet."""
        best, n_best = None, 0
        for s in self.slots:
            if s is not target and s.job is not None and s.job.state is JobState.PROMPT:
                n = min(common_prefix_length(s.job.prompt, prompt), len(prompt) - 1)
                if n > n_best and n > len(s.seq):
                    best, n_best = s, n
        return best, n_best

    def _reserved(self) -> int:
        """KV cells the running jobs may fill."""
        return sum(_need(s.job) for s in self.slots if s.job is not None)

    def _make_room(self, extra: int = 0) -> None:
        """Evict idle slots (least recently used first, saving their states) while running jobs could
        outgrow kv_size (with `extra` more cells needed)."""
        reserved = self._reserved() + extra
        idle = sorted((s for s in self.slots if s.job is None and len(s.seq)), key=lambda s: s.last_used)
        held = sum(len(s.seq) for s in idle)
        for s in idle:
            if reserved + held <= self.kv_size:
                break
            held -= len(s.seq)
            self._save(s)
            s.seq.clear()

    # -- one step

    def _step(self) -> None:
        waiting = bool(self._queue)
        generating: list[Slot] = []
        prompting: list[Slot] = []
        for slot in self.slots:
            job = slot.job
            if job is None:
                continue
            if job.cancelled:
                finishing = job.state is JobState.PROMPT and job.finish_prompt and job.follow is None \
                    and not waiting and not self._closing
                if not finishing:
                    self._end(slot, cancelled=True)
                    continue
            if job.state is JobState.GENERATE:
                slot.batch_index = slot.seq.stage([slot.next_token], True)
                generating.append(slot)
        budget = self.context.batch_capacity - self.context.batch_pending
        for slot in sorted((s for s in self.slots if s.job is not None and s.job.state is JobState.PROMPT),
                           key=lambda s: s.running.id):
            job = slot.running
            if job.follow is not None and not self._follow(slot):
                continue
            if budget <= 0:
                break
            start = slot.seq.next_pos
            chunk = job.prompt[start:start + budget]
            slot.batch_index = slot.seq.stage(chunk, start + len(chunk) == len(job.prompt))
            budget -= len(chunk)
            prompting.append(slot)
        staged = generating + prompting
        if not staged:
            self._wake_all()
            return
        wakes = due_wakes(self._wakes, time.perf_counter(), self.stream_interval)  # held: their fds stay open
        try:
            self.context.batch_decode(tuple(wakes))
        except DecodeError as exc:
            for slot in staged:
                slot.seq.repair()
            for slot in staged:
                if isinstance(exc, DecodeAbortedError) and slot.running.cancelled:
                    self._end(slot, cancelled=True)
                else:
                    self._fail(slot, exc)
            return
        for slot in staged:
            slot.seq.commit()
        now = time.perf_counter()
        for slot in prompting:
            job = slot.running
            if len(slot.seq) < len(job.prompt):
                if not job.cancelled:
                    job.emit([PromptProgress(len(slot.seq), len(job.prompt))])
                continue
            job.prompt_seconds = now - job.prompt_started
            self._measure_prompt(job)
            if job.cancelled:
                self._end(slot, cancelled=True)
                continue
            job.state = JobState.GENERATE
            self._sample(slot)
        for slot in generating:
            self._sample(slot)

    def _measure_prompt(self, job: Job) -> None:
        evaluated = len(job.prompt) - job.cached_tokens
        if evaluated >= 64 and job.prompt_seconds > 0:
            rate = evaluated / job.prompt_seconds
            self.prompt_rate = rate if self.prompt_rate is None else 0.7 * self.prompt_rate + 0.3 * rate

    def _follow(self, slot: Slot) -> bool:
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
        return True

    def _sample(self, slot: Slot) -> None:
        job = slot.running
        try:
            if job.generation is None:
                raise AssertionError("a job samples after its generation began")
            token, events = job.generation.step(self.context, slot.batch_index)
        except Exception as exc:  # noqa: BLE001 - sampling failed for this job only
            self._fail(slot, exc)
            return
        if token is None:
            self._end(slot, events=events)
            return
        slot.next_token = token
        if events:
            job.emit(events, urgent=not job.answered)      # until the client sees output: time to first token

    # -- a job's end

    def _end(self, slot: Slot, *, cancelled: bool = False, events: list | None = None) -> None:
        """A job ended on its slot: normally (its last events, then Done) or cancelled."""
        job = slot.running
        generation = job.generation
        generated = len(generation.tokens) if generation is not None else 0
        usage = Usage(len(job.prompt), generated, job.cached_tokens)
        items: list = list(events or [])
        try:
            if cancelled:
                self.stats["cancelled"] += 1
                log.info("cache %s slot %d: job %d%s cancelled (client left) after %d/%d prompt tokens, "
                         "%d generated", self.name, slot.id, job.id, f" ({job.label})" if job.label else "",
                         min(len(slot.seq), len(job.prompt)), len(job.prompt), generated)
                elapsed = time.perf_counter() - job.prompt_started
                items.append(Done("cancelled", usage, Timings(job.prompt_seconds or elapsed, 0.0), slot=slot.id))
            elif generation is not None:
                items.extend(generation.finish(usage, job.prompt_seconds, slot.id))
        except Exception as exc:  # noqa: BLE001 - this job only
            items.append(exc)
        self.stats["generated"] += generated
        self._finish(slot, items)

    def _fail(self, slot: Slot, exc: Exception) -> None:
        self.stats["failed"] += 1
        log.warning("cache %s slot %d: job %d failed: %s", self.name, slot.id, slot.running.id, exc)
        self._finish(slot, [exc])

    def _finish(self, slot: Slot, items: list) -> None:
        """Free the slot (its tokens stay for later prompts) and hand the job's last items over."""
        job = slot.running
        self.stats["jobs"] += 1
        self.stats["prompt_reused"] += job.cached_tokens
        self.stats["prompt_evaluated"] += max(0, min(len(slot.seq), len(job.prompt)) - job.cached_tokens)
        slot.job = None
        slot.session = job.session
        slot.last_used = time.perf_counter()
        if job.generation is not None:
            job.generation.close()
        job.state = JobState.DONE
        job.emit(items, now=True)
        job.ended.set()

    def _drop_queued(self, job: Job) -> None:
        """End a job that never reached a slot (called under the lock)."""
        job.state = JobState.DONE
        self.stats["cancelled"] += 1
        job.emit([Done("cancelled", Usage(len(job.prompt), 0, 0), Timings())], now=True)
        job.ended.set()


def _need(job: Job) -> int:
    """KV cells a job may fill: its prompt and every token it may generate."""
    return len(job.prompt) + job.spec.max_tokens
