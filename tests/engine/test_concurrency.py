"""Threads and asyncio: cancellation, the GIL released during decode, ordered requests per cache."""

import asyncio
import sys
import threading

from llamabridge import _core
from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Done, Idle, TextDelta

PROMPT = [{"role": "user", "content": "Write a very long essay."}]
HANG_GUARD = 300.0      # seconds after which a wait that should end at once counts as hung (not a speed limit)


def test_cancel_from_another_thread_stops_within_a_token(qwen3):
    with qwen3.cache(CacheParams(n_ctx=4096)) as cache:
        reference = cache.complete(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=12))
        first_text = threading.Event()
        result = {}
        stream = cache.chat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=3000))

        def consume():
            for event in stream:
                if isinstance(event, TextDelta):
                    first_text.set()
                    # hold here until the main thread has cancelled: the next token must not come
                    cancelled.wait()
                if isinstance(event, Done):
                    result["done"] = event

        cancelled = threading.Event()
        worker = threading.Thread(target=consume)
        worker.start()
        assert first_text.wait(30)
        stream.cancel()
        sampled = len(stream.job.generation.tokens)     # the worker does not wait for the consumer
        cancelled.set()
        worker.join(30)
        done = result["done"]
        assert done.stop_reason == "cancelled"
        assert done.usage.completion_tokens <= sampled + 1  # at most the decode in flight's token
        # the cache is consistent: the next request reuses the prompt and matches a fresh run
        after = cache.complete(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=12))
        assert after.usage.cached_tokens == after.usage.prompt_tokens - 1
        assert after.raw_text == reference.raw_text


def test_gil_is_released_during_decode(qwen3):
    """A Python thread keeps running while another thread is inside one llama_decode call."""
    sys.setswitchinterval(0.0005)
    ctx = _core.Context(qwen3.native, n_ctx=4096, n_batch=4096, n_ubatch=4096)
    tokens = qwen3.tokenize("the quick brown fox jumps over the lazy dog " * 400)[:4000]
    state = {"inside": False, "ticks": 0}
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            if state["inside"]:
                state["ticks"] += 1

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        state["inside"] = True
        ctx.decode(tokens, 0)   # one native call: 4000 tokens in one ubatch
        state["inside"] = False
    finally:
        stop.set()
        thread.join()
        ctx.close()
    assert state["ticks"] > 100, "the other thread was frozen while llama_decode ran"


def test_two_caches_generate_in_parallel_with_the_same_results(qwen3):
    caches = [qwen3.cache(CacheParams(n_ctx=1024), name=f"c{i}") for i in range(2)]
    try:
        requests = [ChatRequest([{"role": "user", "content": f"Topic {i}"}], sampling=GREEDY, max_tokens=40)
                    for i in range(2)]
        sequential = [c.complete(r).raw_text for c, r in zip(caches, requests)]
        results = [None, None]
        barrier = threading.Barrier(2)

        def work(i):
            barrier.wait()
            results[i] = caches[i].complete(requests[i]).raw_text

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == sequential
    finally:
        for c in caches:
            c.close()


def test_async_requests_on_one_cache_run_in_order(qwen3):
    async def main():
        with qwen3.cache(CacheParams(n_ctx=2048)) as cache:
            order = []

            async def one(i):
                async for event in cache.achat(ChatRequest([{"role": "user", "content": f"Q{i}"}],
                                                           sampling=GREEDY, max_tokens=5)):
                    if isinstance(event, Done):
                        order.append(i)
                        return event

            dones = await asyncio.gather(*(one(i) for i in range(3)))
            assert order == [0, 1, 2]
            assert all(d.stop_reason == "max_tokens" for d in dones)
    asyncio.run(main())


def test_async_consumer_that_leaves_cancels_generation(qwen3):
    async def main():
        with qwen3.cache(CacheParams(n_ctx=4096)) as cache:
            stream = cache.achat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=3000))
            async for event in stream:
                if isinstance(event, TextDelta):
                    break
            await stream.aclose()   # what a server does when the client disconnects
            assert len(cache.slot_tokens()) < 100 + 3000 // 2
            after = await anext_done(cache.achat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=2)))
            assert after.usage.cached_tokens == after.usage.prompt_tokens - 1
    asyncio.run(main())


async def anext_done(stream):
    async for event in stream:
        if isinstance(event, Done):
            return event


def test_client_leaving_during_prompt_evaluation_finishes_the_prompt_into_the_cache(qwen3):
    async def main():
        with qwen3.cache(CacheParams(n_ctx=8192, n_batch=256, n_ubatch=256)) as cache:
            request = ChatRequest([{"role": "user", "content": "lorem ipsum dolor " * 400}], sampling=GREEDY,
                                  max_tokens=500)
            prepared = cache.prepare(request)
            stream = cache.achat(prepared)
            async for event in stream:
                if type(event).__name__ == "PromptProgress":
                    break
            await stream.aclose()
            # nobody else waits: the prompt was evaluated to the end. (On a busy machine the first progress
            # event can reach this loop only after the last prompt chunk: then the close lands while the first
            # token is decoded, and the slot holds that one token more; nothing here may depend on speed.)
            held = cache.slot_tokens()
            assert held[:len(prepared.prompt)] == prepared.prompt and len(held) <= len(prepared.prompt) + 1
            retry = await anext_done(cache.achat(prepared))
            assert retry.usage.cached_tokens == prepared.prompt_tokens - 1
    asyncio.run(main())


def test_idle_events_while_a_request_waits_for_its_slot(qwen3):
    """achat(idle=...) says the request is alive while nothing else comes (queued behind another here)."""
    with qwen3.cache(CacheParams(n_ctx=4096)) as cache:
        running = cache.chat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=3000))
        next(iter(running))                   # it holds the only slot

        async def waiting():
            out = []
            async for event in cache.achat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=5), idle=0.01):
                out.append(event)
                if isinstance(event, Idle):
                    running.cancel()          # the slot frees: the request runs
            return out

        out = asyncio.run(waiting())
        running.close()
    assert isinstance(out[0], Idle) and isinstance(out[-1], Done)


def test_an_ending_whose_engine_is_stuck_ends_the_answer_without_waiting_for_it(qwen3):
    """When llama.cpp is ending the process, the decode in progress never returns: the answers end with the
    Ending's error at once, instead of waiting for their jobs to leave the engine."""
    from llamabridge.engine.ending import Ending
    from llamabridge.errors import EngineLostError

    async def main():
        with qwen3.cache(CacheParams(n_ctx=2048)) as cache:
            stuck, release = threading.Event(), threading.Event()
            holder = threading.Thread(target=cache.scheduler.call, args=(lambda: (stuck.set(), release.wait()),))
            holder.start()                          # the worker holds, as in a decode that never returns
            try:
                await asyncio.to_thread(stuck.wait)
                ending = Ending()
                stream = cache.achat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=5), stop=ending)
                first = asyncio.ensure_future(anext(stream))
                ending.end(EngineLostError("the device is gone"), engine_stuck=True)
                try:       # (a regression waits for the stuck engine: the guard turns that hang into a failure)
                    await asyncio.wait_for(first, HANG_GUARD)
                    raise AssertionError("the answer went on")
                except EngineLostError as exc:
                    assert "the device is gone: this answer was ended" in exc.message
                assert not release.is_set()         # it ended while the engine was still stuck
            finally:
                release.set()
                holder.join()
            done = await anext_done(cache.achat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=2)))
            assert done.stop_reason == "max_tokens"     # the engine goes on once it is back
    asyncio.run(main())
