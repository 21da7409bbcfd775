"""A Cache is one KV cache (llama_context) on a model, serving one request at a time.

It remembers the tokens in its KV so each request evaluates only what follows the longest
common prefix with the previous one. Different caches on one model run concurrently
(their decodes release the GIL); requests on the same cache queue in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, AsyncIterator, Iterator

from .. import _core
from ..errors import ContextLimitExceededError, DecodeAbortedError, DecodeError
from .generation import generate
from .params import CacheParams
from .request import ChatRequest, Done, Event, PreparedChat, PromptProgress, PromptReady, Timings, Usage

if TYPE_CHECKING:
    from .model import Model

log = logging.getLogger("llamabridge.engine")


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_max_tokens(prompt_tokens: int, max_tokens: int | None, n_ctx: int, clamp: bool) -> int:
    """How many tokens a request may generate, or ContextLimitExceededError.

    A prompt that alone fills the context always raises; otherwise prompt + max_tokens over
    n_ctx raises unless `clamp`, which lowers max_tokens to the free space.
    """
    free = n_ctx - prompt_tokens
    if free <= 0:
        raise ContextLimitExceededError(prompt_tokens, max_tokens or 0, n_ctx)
    if max_tokens is None:
        return free
    if max_tokens > free:
        if not clamp:
            raise ContextLimitExceededError(prompt_tokens, max_tokens, n_ctx)
        return free
    return max_tokens


class Cache:
    """One context on a model: chat completion with prefix reuse, cancellation, batches."""

    def __init__(self, model: "Model", params: CacheParams = CacheParams(), name: str = "default") -> None:
        self.model = model
        self.params = params
        self.name = name
        self.context = _core.Context(
            model.native,
            n_ctx=params.n_ctx, n_batch=params.n_batch, n_ubatch=params.n_ubatch, n_seq_max=params.n_seq_max,
            n_threads=params.n_threads, n_threads_batch=params.n_threads_batch,
            flash_attn=params.flash_attn, type_k=params.type_k, type_v=params.type_v,
        )
        self.tokens: list[int] = []       # what the KV of sequence 0 holds, position by position
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llamabridge-{name}")
        self._waiting = 0
        self._phase = "idle"              # idle | prompt | generate
        self._finish_prompt = False

    # -- lifecycle

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        with self._lock:
            self.context.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clear(self) -> None:
        """Empty the KV cache (the next request evaluates its whole prompt)."""
        with self._lock:
            self.context.memory_clear()
            self.tokens.clear()

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    @property
    def waiting(self) -> int:
        """Requests queued behind the one running."""
        return self._waiting

    def cancel(self, *, finish_prompt: bool = False) -> None:
        """Stop the running request from another thread, within one token.

        With finish_prompt, a prompt still being evaluated is completed into the cache
        (a retry of the same request then reuses it) and generation stops right after.
        """
        if finish_prompt:
            self._finish_prompt = True      # set before reading the phase: chat() re-checks it
            if self._phase == "prompt":
                return
        self.context.cancel()

    # -- chat

    def render(self, request: ChatRequest) -> tuple[dict, list[int]]:
        """The templated prompt (with grammar, parser, stops) and its tokens."""
        rendered = self.model.native.apply_chat_template(request.template_inputs())
        return rendered, self.model.native.tokenize(rendered["prompt"], add_special=True, parse_special=True)

    def count_tokens(self, request: ChatRequest) -> int:
        return len(self.render(request)[1])

    def prepare(self, request: ChatRequest) -> PreparedChat:
        """Template, tokenize and check a request, without touching the KV cache.

        Safe to call from any thread while the cache generates. Raises TemplateError or
        ContextLimitExceededError (see plan_max_tokens) for requests that cannot run.
        """
        rendered, prompt = self.render(request)
        max_tokens = plan_max_tokens(len(prompt), request.max_tokens, self.n_ctx, request.clamp_max_tokens)
        return PreparedChat(request, rendered, prompt, max_tokens)

    def chat(self, request: ChatRequest | PreparedChat) -> Iterator[Event]:
        """Complete a chat, yielding events; the last one is Done.

        Raises ContextLimitExceededError before anything is decoded when the request does
        not fit (see plan_max_tokens); the cache is then left as it was.
        """
        prepared = request if isinstance(request, PreparedChat) else self.prepare(request)
        request, rendered, prompt, max_tokens = prepared.request, prepared.rendered, prepared.prompt, prepared.max_tokens
        self._waiting += 1
        with self._lock:
            self._waiting -= 1
            self.context.clear_cancel()
            self._finish_prompt = False
            self._phase = "prompt"
            try:
                cached = self._reuse_prefix(prompt)
                yield PromptReady(len(prompt), cached, max_tokens)
                started = time.perf_counter()
                try:
                    yield from self._evaluate(prompt, cached)
                except DecodeAbortedError:
                    yield self._cancelled_done(len(prompt), cached, time.perf_counter() - started)
                    return
                prompt_seconds = time.perf_counter() - started
                self._phase = "generate"
                if self._finish_prompt:
                    yield self._cancelled_done(len(prompt), cached, prompt_seconds)
                    return
                yield from generate(self, request, rendered, len(prompt), cached, max_tokens, prompt_seconds)
            finally:
                self._phase = "idle"
                self.context.clear_cancel()

    def complete(self, request: ChatRequest | PreparedChat) -> Done:
        """Non-streaming chat: the Done event (text is in raw_text / tool_calls)."""
        done = None
        for event in self.chat(request):
            if isinstance(event, Done):
                done = event
        assert done is not None
        return done

    async def achat(self, request: ChatRequest | PreparedChat) -> AsyncIterator[Event]:
        """chat() for asyncio: runs on this cache's worker thread, requests in arrival order.

        Closing the iterator early (a client that went away) cancels the generation.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        finished = object()

        def run() -> None:
            try:
                for event in self.chat(request):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the event loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, finished)

        future = loop.run_in_executor(self._worker, run)
        try:
            while True:
                item = await queue.get()
                if item is finished:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not future.done():
                # a client that left during prompt evaluation: finish the prompt into the
                # cache (its retry reuses it) unless someone else is waiting for this cache
                self.cancel(finish_prompt=self._waiting == 0)
            await asyncio.shield(future)

    # -- KV bookkeeping

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Drop what the KV holds past the longest common prefix; return how many tokens are kept."""
        keep = min(common_prefix_length(self.tokens, prompt), len(prompt) - 1)
        if keep < len(self.tokens):
            if not self.context.memory_seq_rm(0, keep, -1):
                self.context.memory_clear()
                keep = 0
            del self.tokens[keep:]
        return keep

    def _evaluate(self, prompt: list[int], start: int) -> Iterator[PromptProgress]:
        """Decode prompt[start:] in n_batch chunks, keeping self.tokens true to the KV."""
        n_batch = self.context.n_batch
        pos = start
        try:
            while pos < len(prompt):
                end = min(pos + n_batch, len(prompt))
                self.context.decode(prompt[pos:end], pos, 0, end == len(prompt))
                self.tokens.extend(prompt[pos:end])
                pos = end
                if pos < len(prompt):
                    yield PromptProgress(pos, len(prompt))
        except DecodeError:
            # processed ubatches stay in the KV: keep our record of it exact
            kept = self.context.memory_seq_pos_max(0) + 1
            self.tokens[:] = prompt[:max(0, min(kept, len(prompt)))]
            if kept > len(self.tokens):
                self.context.memory_seq_rm(0, len(self.tokens), -1)
            raise

    def _cancelled_done(self, prompt_tokens: int, cached: int, seconds: float) -> Done:
        return Done("cancelled", Usage(prompt_tokens, 0, cached), Timings(seconds, 0.0))
