"""A Cache is one KV cache (llama_context) on a model, serving up to n_parallel requests at once.

Each request becomes a Job run by the cache's Scheduler (one worker thread, one batch per
step, one slot per running job). A slot keeps its tokens in the KV after its job, so a later
request evaluates only what follows the longest prefix any slot holds. Different caches on one
model run concurrently too (their decodes release the GIL).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, AsyncIterator

from .. import _core
from ..errors import ContextLimitExceededError, InvalidRequestError
from . import sizing
from .ending import Ending
from .fingerprint import cache_fingerprint
from .generation import chat_sampler
from .job import Job, JobSpec
from .mailbox import Mailbox, for_loop
from .params import DRAFT_MODEL_TYPE, CacheParams, ParamError
from .planning import count_past, plan_max_tokens, tokenize_prompt
from .prefix_store import PrefixStore
from .request import ChatRequest, Done, Event, Idle, PreparedChat, RenderedChat
from .scheduler import Scheduler

if TYPE_CHECKING:
    from .model import Model

log = logging.getLogger("llamabridge.engine")


class Cache:
    """One context on a model: chat completion on parallel slots with prefix reuse and per-request cancel."""

    def __init__(self, model: "Model", params: CacheParams = CacheParams(), name: str = "default",
                 store: PrefixStore | None = None, draft: "Model | None" = None) -> None:
        """`store`: where slots save their KV states when they move on (and restore them from), shared
        with other caches; None keeps prefixes only in the live slots. `draft`: the model params.draft_model
        names (speculative decoding with a draft model)."""
        self.model = model
        self.params = params = sizing.resolve(model.native, params, name)      # n_ctx and threads, if automatic
        self.name = name
        kv_size = params.kv_size or params.n_ctx * params.n_parallel
        self.context = self._context(model, kv_size)
        # what one slot may hold: the overflow check's limit
        self.n_ctx = min(params.n_ctx, self.context.n_ctx)
        self.store = store if store is not None and store.enabled else None
        self.fingerprint = cache_fingerprint(model.path, model.chat_template, self.n_ctx, params.type_k, params.type_v,
                                             params.flash_attn.value) if self.store is not None else None
        self.draft_context: _core.Context | None = None
        try:
            speculator = self._speculator(model, draft, kv_size)
        except BaseException:
            self._close_contexts()
            raise
        self.scheduler = Scheduler(self.context, model.native, params.n_parallel, self.context.n_ctx, name,
                                   self.store, self.fingerprint, params.stream_interval_ms / 1000, speculator)

    def _context(self, model: "Model", kv_size: int) -> _core.Context:
        params = self.params
        return _core.Context(
            model.native,
            n_ctx=kv_size, n_batch=params.n_batch, n_ubatch=params.n_ubatch, n_seq_max=params.n_parallel,
            n_threads=params.n_threads, n_threads_batch=params.n_threads_batch,
            flash_attn=params.flash_attn.value, type_k=params.type_k, type_v=params.type_v,
            offload_kqv=params.offload_kqv,
        )

    def _speculator(self, model: "Model", draft: "Model | None", kv_size: int) -> _core.Speculator | None:
        """The drafters params.speculative (and draft_model) ask for, with the draft model's context; None when
        speculation is off (or cannot work on this model)."""
        params, name = self.params, self.name
        if not params.speculative_types:
            return None
        if model.native.recurrent:
            log.warning("cache %s: speculative decoding is off: the model's memory is recurrent, and a sequence of it "
                        "cannot drop the draft tokens the model rejects", name)
            return None
        if params.draft_model:
            if draft is None:
                raise ParamError("draft_model", f"cache {name} drafts with model {params.draft_model}, which it "
                                                "was not given")
            if draft.native.recurrent:
                raise ParamError("draft_model", f"{params.draft_model}'s memory is recurrent: it cannot drop the "
                                                "draft tokens the model rejects")
            # as large as the target's, on the same sequences (llama.cpp's draft context has the target's n_ctx)
            self.draft_context = self._context(draft, kv_size)
        try:
            return _core.Speculator(params.speculator_params(), params.n_parallel, self.context, self.draft_context)
        except InvalidRequestError as exc:
            reason = exc.message.removeprefix("speculation: ")
            if draft is not None and reason.startswith(DRAFT_MODEL_TYPE):
                reason = (f"the draft model {params.draft_model} ({draft.n_vocab} tokens) does not share "
                          f"{model.name}'s vocabulary ({model.n_vocab} tokens): {reason}")
            raise ParamError("speculative" if draft is None else "draft_model", reason) from None

    def _close_contexts(self) -> None:
        if self.draft_context is not None:
            self.draft_context.close()
        self.context.close()

    def memory(self) -> dict:
        """What this cache's context (and its model) hold on each device (see _core.Context.memory)."""
        return self.context.memory()

    # -- lifecycle

    def close(self) -> None:
        """Cancel queued and running requests, save the slots' states (with a store), then free the KV
        cache. Safe to call twice."""
        self.scheduler.close()
        if self.store is not None and not self.context.closed:
            self.scheduler.slots.save_all()
        if self.scheduler.speculator is not None:
            self.scheduler.speculator.close()         # it points at the contexts
        self._close_contexts()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clear(self) -> None:
        """Forget what idle slots hold (the next requests evaluate their whole prompts)."""
        self.scheduler.call(self.scheduler.slots.clear_idle)

    @property
    def n_parallel(self) -> int:
        return len(self.scheduler.view)

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return self.scheduler.waiting

    def slots(self) -> list[dict]:
        """Each slot's state, tokens held and (hashed) session key."""
        return [slot.info() for slot in self.scheduler.view]

    def speculation(self) -> dict | None:
        """Speculative decoding here: its drafters (in the order they are tried), the drafts and tokens drafted
        and accepted so far, in all and per type, and the draft model (None when speculation is off)."""
        speculator = self.scheduler.speculator
        if speculator is None:         # off, or turned off for this model
            return None
        stats = self.scheduler.stats
        by_type = {t: {**c, "acceptance": _ratio(c["accepted"], c["drafted"])}
                   for t, c in self.scheduler.draft_stats.items()}
        return {"types": list(speculator.types), "draft_model": self.params.draft_model or None,
                "drafts": stats["drafts"], "drafted": stats["drafted"], "accepted": stats["draft_accepted"],
                "acceptance": _ratio(stats["draft_accepted"], stats["drafted"]), "by_type": by_type}

    def slot_tokens(self, slot: int = 0) -> list[int]:
        """The tokens a slot's KV holds, for inspection: as of its job's start, its prompt's end or its job's
        end (a running job's output is not in it yet)."""
        return list(self.scheduler.view[slot].tokens)

    # -- chat

    def render(self, request: ChatRequest) -> tuple[RenderedChat, list[int]]:
        """The templated prompt (with grammar, parser, stops) and its tokens; ContextLimitExceededError
        for a prompt that alone exceeds the context (found without tokenizing all of a huge one)."""
        # what the template keeps of the conversation (it may drop earlier reasoning, never the
        # user's words): a conversation too long for the context is refused before templating it
        too_many = count_past(self.model.native, request.kept_texts(), self.n_ctx)
        if too_many is not None:
            raise ContextLimitExceededError(too_many, 0, self.n_ctx)
        request.check_grammar_bounds()                # the template turns schemas into grammar text
        rendered = RenderedChat.from_native(self.model.native.apply_chat_template(request.template_inputs()))
        return rendered, tokenize_prompt(self.model.native, rendered.prompt, self.n_ctx)

    def count_tokens(self, request: ChatRequest) -> int:
        return len(self.render(request)[1])

    def prepare(self, request: ChatRequest) -> PreparedChat:
        """Template, tokenize and check a request, without touching the KV cache.

        Safe to call from any thread while the cache generates. Raises TemplateError or
        ContextLimitExceededError (see plan_max_tokens) for requests that cannot run.
        """
        native = self.model.native
        for token, _ in request.sampling.logit_bias:
            if not 0 <= token < native.n_vocab:
                raise InvalidRequestError(f"logit_bias: token {token} is not in the vocabulary "
                                          f"(0-{native.n_vocab - 1})", param="logit_bias")
        rendered, prompt = self.render(request)
        max_tokens = plan_max_tokens(len(prompt), request.max_tokens, self.n_ctx, request.clamp_max_tokens)
        # built here, in the request's thread (its grammar can take a while), not between two decodes
        sampler = chat_sampler(native, request, rendered, request.sampling.to_native())
        return PreparedChat(request, rendered, prompt, max_tokens, self.scheduler.slots.read_saved(prompt), sampler)

    # -- saved prefixes

    def restore_saved(self) -> int:
        """Load this cache's most recently used saved prefixes into its empty slots (after a restart);
        how many were restored. Requests may run meanwhile: only empty idle slots are filled."""
        if self.store is None or self.fingerprint is None:
            return 0
        restored, slots = 0, self.scheduler.slots
        for entry in self.store.newest(self.fingerprint, self.n_parallel):
            loaded = self.store.load(entry)
            if loaded is not None and self.scheduler.call(lambda loaded=loaded: slots.restore_idle(loaded)):
                restored += 1
        return restored

    def chat(self, request: ChatRequest | PreparedChat, *, session: str | None = None,
             label: str = "") -> "ChatStream":
        """Start a chat; iterate the returned stream for its events, the last one Done.

        Raises ContextLimitExceededError at once when the request does not fit (see
        plan_max_tokens); nothing is queued or decoded then. `session`: the client's session key,
        which keeps its conversation on one slot. The stream's cancel() stops this request only.
        """
        return ChatStream(self.scheduler, self._spec(request), session=session, label=label)

    def complete(self, request: ChatRequest | PreparedChat, *, session: str | None = None) -> Done:
        """Non-streaming chat: the Done event (text is in raw_text / tool_calls)."""
        with self.chat(request, session=session) as stream:
            for event in stream:
                if isinstance(event, Done):
                    return event
        raise AssertionError("a chat stream ends with Done")

    async def achat(self, request: ChatRequest | PreparedChat, *, session: str | None = None,
                    label: str = "", idle: float | None = None,
                    stop: Ending | None = None) -> AsyncIterator[Event]:
        """chat() for asyncio. Closing the iterator early (a client that went away) cancels this
        request: a prompt still being evaluated is finished into its slot unless other requests
        wait (a retry then reuses it); the close returns once the request has ended. With `idle`
        (seconds), an Idle event comes whenever nothing else did for `idle` to twice that. Once `stop`
        ends (the server's shutdown, llama.cpp ending the process), the request is cancelled and the
        Ending's error raised."""
        spec = self._spec(request)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        ended = loop.create_future()
        mailbox = for_loop(loop)
        job = Job(spec, mailbox, lambda items: mailbox.call(_deliver, job, inbox, ended, items), session=session,
                  label=label)
        self.scheduler.submit(job)
        arrived = True                    # something came since the last tick

        async def tick(every: float) -> None:
            nonlocal arrived
            while True:
                await asyncio.sleep(every)
                if not arrived:
                    inbox.put_nowait(_IDLE)
                arrived = False

        async def stopping(ending: Ending) -> None:
            await ending.wait()
            inbox.put_nowait(_STOP)

        ticking = loop.create_task(tick(idle)) if idle else None
        watching = loop.create_task(stopping(stop)) if stop is not None else None
        try:
            while True:
                items = await inbox.get()
                if items is _STOP and stop is not None:
                    raise stop.error
                if items is not _IDLE:
                    arrived = True
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
                    if isinstance(item, Done):
                        return
        finally:
            for task in (ticking, watching):
                if task is not None:
                    task.cancel()
            if not ended.done():
                self.scheduler.cancel(job, finish_prompt=True)
                if stop is None or not stop.engine_stuck:      # a stuck engine would never end it
                    await asyncio.shield(ended)

    def _spec(self, request: ChatRequest | PreparedChat) -> JobSpec:
        """The job of a chat (prepared here unless it was already)."""
        prepared = request if isinstance(request, PreparedChat) else self.prepare(request)
        chat = prepared.request
        sampler, prepared.sampler = prepared.sampler, None      # a sampler has state: one job's only
        return JobSpec(prepared.prompt, prepared.max_tokens, chat.sampling.to_native(), chat, prepared.rendered,
                       tuple(chat.stop), prepared.saved, sampler)


class ChatStream:
    """The events of one running chat, for a synchronous consumer; cancel() stops this chat only."""

    def __init__(self, scheduler: Scheduler, spec: JobSpec, *, session: str | None = None, label: str = "") -> None:
        self._scheduler = scheduler
        self._mailbox = Mailbox()
        self._pending: deque = deque()
        self._finished = False
        self.job = Job(spec, self._mailbox, self._mailbox.post, session=session, label=label)
        scheduler.submit(self.job)

    def __iter__(self) -> "ChatStream":
        return self

    def __next__(self) -> Event:
        if self._finished:
            raise StopIteration
        while not self._pending:
            for items in self._mailbox.take():
                self._pending.extend(self.job.read(items))
            if not self._pending:
                self._mailbox.wait()
        item = self._pending.popleft()
        if isinstance(item, BaseException):
            self._finished = True
            self._scheduler.cancel(self.job)      # ended by an error the consumer met (its output unreadable)
            raise item
        if isinstance(item, Done):
            self._finished = True
        return item

    def cancel(self, *, finish_prompt: bool = False) -> None:
        """Stop this chat from any thread, within one decode step; the stream then ends with
        Done("cancelled")."""
        self._scheduler.cancel(self.job, finish_prompt=finish_prompt)

    def close(self) -> None:
        """Cancel the chat if it is still running and wait until it has ended."""
        if self._finished:
            return
        self._scheduler.cancel(self.job)
        self.job.ended.wait()
        self._finished = True

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._finished and hasattr(self, "job"):
            self._scheduler.cancel(self.job)     # abandoned by its consumer: free the slot


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


_IDLE = [Idle()]
_STOP: list = []          # put in an achat's inbox when its `stop` is set


def _deliver(job: Job, inbox: asyncio.Queue, ended: asyncio.Future, items: list) -> None:
    last = items[-1]
    inbox.put_nowait(job.read(items))
    if isinstance(last, (Done, BaseException)) and not ended.done():   # a job's last items end with one
        ended.set_result(None)
