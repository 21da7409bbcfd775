"""The Scheduler owns one llama_context: its worker thread is the only code that decodes or touches the KV.

Each request is a Job, queued until a slot is free. Every step builds one batch from one token per
generating slot plus prompt chunks of the slots still evaluating their prompts (oldest job first, up to
n_batch), decodes it once, and samples each generating slot at its own batch index (continuous batching).
Cancelling a job touches only that job; the next step ends it and frees its slot. A step's events wake
their consumers as the next decode starts, without the GIL, at most once per stream interval (see
mailbox.py). Which slot a job runs on and which prefix it starts from is slots.py's policy; a job is a
record the scheduler posts its events to, and other threads see the slots through a published view.
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
from .prefix_store import PrefixStore
from .request import Done, PromptProgress, PromptReady, Timings, Usage
from .slots import Slot, Slots, SlotsView

log = logging.getLogger("llamabridge.engine")


class EngineClosedError(EngineError):
    status = 503
    type = "overloaded_error"


class Scheduler:
    def __init__(self, context, native, n_parallel: int, kv_size: int, name: str, store: PrefixStore | None = None,
                 fingerprint=None, stream_interval: float = 0.0, speculator=None) -> None:
        """`speculator`: a _core.Speculator drafting for every slot (None: no speculation)."""
        self.context = context
        self.native = native
        self.name = name
        self.slots = Slots(context, n_parallel, kv_size, name, store, fingerprint)    # the worker's alone
        self.speculator = speculator
        self._stats = {"jobs": 0, "cancelled": 0, "failed": 0, "prompt_evaluated": 0, "prompt_reused": 0,
                       "generated": 0, "drafts": 0, "drafted": 0, "draft_accepted": 0}
        self._drafts: dict[str, list[int]] = {}      # per speculation type: drafts, tokens drafted, accepted
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
    def view(self) -> SlotsView:
        """The slots as the worker last published them (read-only: for any thread)."""
        return self.slots.view

    @property
    def stats(self) -> dict[str, int]:
        """Jobs run, cancelled and failed; prompt tokens evaluated, reused and restored; tokens generated; drafts,
        tokens drafted and accepted (speculative decoding)."""
        return {**self._stats, "prompt_restored": self.slots.restored}

    @property
    def draft_stats(self) -> dict[str, dict[str, int]]:
        """Per speculation type (each the speculator has): its drafts, the tokens drafted and accepted."""
        types = self.speculator.types if self.speculator is not None else ()
        counts = {t: list(self._drafts.get(t, (0, 0, 0))) for t in types}
        return {t: {"drafts": c[0], "drafted": c[1], "accepted": c[2]} for t, c in counts.items()}

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

    def _emit(self, job: Job, items: list, *, now: bool = False, urgent: bool = False) -> None:
        """Post events (or an exception) to a job's consumer, woken as one of the next decodes starts (the
        very next if `urgent`), or at once with `now` (a job's last items)."""
        if job.post(items) or now or urgent:
            self.wake(job.mailbox, now=now, urgent=urgent)

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
        if not already and any(slot.job is not None for slot in self.view):
            self.context.cancel()             # abort a long decode in flight
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # ------------------------------------------------------------ the worker

    def _run(self) -> None:
        computed = False
        while True:
            with self._cond:
                while not (self._closing or self._calls or self.slots.busy or (self._queue and self._free_slot())):
                    self._wake_all()
                    if computed:      # idle: its CPU threads go, so another cache's decode is not throttled
                        _core.release_compute_threads()
                        computed = False
                    self._cond.wait()
                if self._closing and not self.slots.busy:
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
        return self.slots.free() > 0

    def _admissible(self) -> list[Job]:
        """Pop the queued jobs that get a slot now, in arrival order (called under the lock)."""
        admitted: list[Job] = []
        free = self.slots.free()
        while self._queue and free > 0 and self.slots.fits(admitted + [self._queue[0]]):
            admitted.append(self._queue.popleft())
            free -= 1
        return admitted

    # -- binding a job to a slot

    def _bind(self, job: Job) -> None:
        slot = self.slots.place(job)
        job.prompt_started = time.perf_counter()
        spec = job.spec
        try:
            job.generation = Generation(self.native, spec.request, spec.rendered, spec.sampling, spec.max_tokens,
                                        spec.stop, spec.sampler)
        except Exception as exc:  # noqa: BLE001 - e.g. a grammar llama.cpp rejects: this job only
            self._fail(slot, exc)
            return
        self._emit(job, [PromptReady(len(job.prompt), job.cached_tokens, spec.max_tokens)], urgent=True)

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
                generating.append(slot)
        if self.speculator is not None and generating:
            self._draft(generating)
        for slot in generating:
            slot.batch_index = slot.seq.stage([slot.next_token, *slot.draft], True, logits_all=bool(slot.draft))
        budget = self.context.batch_capacity - self.context.batch_pending
        for slot in sorted((s for s in self.slots if s.job is not None and s.job.state is JobState.PROMPT),
                           key=lambda s: s.running.id):
            job = slot.running
            if job.follow is not None and not self.slots.follow(slot):
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
                slot.draft = []
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
                    self._emit(job, [PromptProgress(len(slot.seq), len(job.prompt))])
                continue
            job.prompt_seconds = now - job.prompt_started
            self.slots.measured_prompt(len(job.prompt) - job.cached_tokens, job.prompt_seconds)
            if job.cancelled:
                self._end(slot, cancelled=True)
                continue
            job.state = JobState.GENERATE
            self.slots.evaluated(slot)
            if self.speculator is not None:
                self.speculator.begin(slot.id, slot.seq.tokens)
                slot.spec_held = len(slot.seq)
            self._sample(slot)
        for slot in generating:
            self._sample(slot)
        self.slots.publish()

    def _draft(self, generating: list[Slot]) -> None:
        """The speculator's drafts (slot.draft, maybe none) to follow the generating slots' next tokens: each at
        most what its job may still generate after it and what the batch still holds beside the others. The
        speculator is handed the tokens its history lacks (a job's tokens before that never change while it
        generates: a rejected draft is cut back only to the token before it)."""
        speculator = self.speculator
        assert speculator is not None
        room = self.context.batch_capacity - self.context.batch_pending - len(generating)
        for slot in generating:
            job = slot.running
            left = job.spec.max_tokens - len(job.generation.tokens) - 1 if job.generation is not None else 0
            n_max = max(0, min(speculator.n_max, left, room))
            room -= n_max
            added, slot.spec_held = slot.seq.tokens[slot.spec_held:], len(slot.seq)
            speculator.want(slot.id, added, slot.next_token, n_max)
        drafts = speculator.draft()
        for slot in generating:
            slot.draft_type, slot.draft = drafts.get(slot.id, ("", []))

    def _sample(self, slot: Slot) -> None:
        job = slot.running
        draft, slot.draft = slot.draft, []
        try:
            if job.generation is None:
                raise AssertionError("a job samples after its generation began")
            if draft:
                token, events = self._verify(slot, job, draft)
            else:
                token, events = job.generation.step(self.context, slot.batch_index)
        except Exception as exc:  # noqa: BLE001 - sampling failed for this job only
            self._fail(slot, exc)
            return
        if token is None:
            self._end(slot, events=events)
            return
        slot.next_token = token
        if events:
            self._emit(job, events, urgent=not job.answered)      # until the client sees output: time to first token

    def _verify(self, slot: Slot, job: Job, draft: list[int]) -> tuple[int | None, list]:
        """Sample over a decoded draft: the tokens accepted stay in the KV, the rest leave it (so does one
        accepted past the generation's end, as a last token is never decoded without a draft)."""
        assert job.generation is not None and self.speculator is not None
        held = len(slot.seq) - len(draft)             # up to the token before the draft
        token, events, accepted, used = job.generation.step_draft(self.context, slot.batch_index - len(draft),
                                                                  draft)
        self.speculator.accept(slot.id, accepted)
        slot.seq.keep(held + min(accepted, used - 1))
        self._stats["drafts"] += 1
        self._stats["drafted"] += len(draft)
        self._stats["draft_accepted"] += accepted
        counts = self._drafts.setdefault(slot.draft_type, [0, 0, 0])
        counts[0] += 1
        counts[1] += len(draft)
        counts[2] += accepted
        return token, events

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
                self._stats["cancelled"] += 1
                log.info("cache %s slot %d: job %d%s cancelled (client left) after %d/%d prompt tokens, "
                         "%d generated", self.name, slot.id, job.id, f" ({job.label})" if job.label else "",
                         min(len(slot.seq), len(job.prompt)), len(job.prompt), generated)
                elapsed = time.perf_counter() - job.prompt_started
                items.append(Done("cancelled", usage, Timings(job.prompt_seconds or elapsed, 0.0), slot=slot.id))
            elif generation is not None:
                items.extend(generation.finish(usage, job.prompt_seconds, slot.id))
        except Exception as exc:  # noqa: BLE001 - this job only
            items.append(exc)
        self._stats["generated"] += generated
        self._finish(slot, items)

    def _fail(self, slot: Slot, exc: Exception) -> None:
        self._stats["failed"] += 1
        log.warning("cache %s slot %d: job %d failed: %s", self.name, slot.id, slot.running.id, exc)
        self._finish(slot, [exc])

    def _finish(self, slot: Slot, items: list) -> None:
        """Free the slot (its tokens stay for later prompts) and hand the job's last items over."""
        job = slot.running
        self._stats["jobs"] += 1
        self._stats["prompt_reused"] += job.cached_tokens
        self._stats["prompt_evaluated"] += max(0, min(len(slot.seq), len(job.prompt)) - job.cached_tokens)
        self.slots.release(slot)
        if job.generation is not None:
            job.generation.close()
        job.state = JobState.DONE
        self._emit(job, items, now=True)
        job.ended.set()

    def _drop_queued(self, job: Job) -> None:
        """End a job that never reached a slot (called under the lock)."""
        job.state = JobState.DONE
        self._stats["cancelled"] += 1
        self._emit(job, [Done("cancelled", Usage(len(job.prompt), 0, 0), Timings())], now=True)
        job.ended.set()
