"""The scheduler: a job per request on parallel slots, continuous batching, per-job cancel, slot choice.

Greedy answers are compared with solo runs where the batches a job shares are the same every
run. llama.cpp's CPU kernels sum in another order for one row than for several (ggml's vec_dot
for a batch of one, tinyBLAS for more), so a random-weight model's near-tied logits can tip the
other way when a job shares its steps with others: only completeness is checked there.
"""

import asyncio
import threading

import pytest

from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Done, PromptProgress, TextDelta


def ask(text: str, max_tokens: int = 8) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], sampling=GREEDY, max_tokens=max_tokens)


def solo(model, requests: list[ChatRequest], params: CacheParams = CacheParams(n_ctx=4096)) -> list[str]:
    """Each request's greedy answer, run alone on a fresh cache."""
    with model.cache(params) as cache:
        return [cache.complete(r).raw_text for r in requests]


def assert_kv_consistent(cache) -> None:
    """No job left on a slot, nothing queued, each slot's record equal to what its KV sequence holds."""
    assert cache.waiting == 0
    for slot in cache.scheduler.slots:
        assert slot.job is None
        assert cache.context.memory_seq_pos_max(slot.id) == len(slot.seq) - 1


def test_four_concurrent_jobs_equal_each_job_alone(qwen3):
    requests = [ask(f"Tell me about topic {i}", 24) for i in range(4)]
    expected = solo(qwen3, requests)
    with qwen3.cache(CacheParams(n_ctx=1024, n_parallel=4)) as cache:
        streams = [cache.chat(r) for r in requests]          # all four submitted before any is read
        dones = [[e for e in s if isinstance(e, Done)][0] for s in streams]
        assert [d.raw_text for d in dones] == expected
        assert all(d.stop_reason == "max_tokens" and d.usage.completion_tokens == 24 for d in dones)
        assert sorted(d.slot for d in dones) == [0, 1, 2, 3]
        assert_kv_consistent(cache)


def test_eight_clients_sixty_rounds_every_answer_complete_and_equal_to_solo(qwen3):
    """The regression: answers cut short with no disconnect, reported as a normal end."""
    requests = [ask(f"Client {i} asks question number {i * 7}", 6) for i in range(8)]
    expected = solo(qwen3, requests)

    async def main():
        with qwen3.cache(CacheParams(n_ctx=512, n_parallel=4)) as cache:
            async def client(i):
                answers = []
                for _ in range(60):
                    events = [e async for e in cache.achat(requests[i])]
                    done = events[-1]
                    answers.append((done.stop_reason, done.usage.completion_tokens, done.raw_text))
                return answers
            results = await asyncio.gather(*(client(i) for i in range(8)))
            assert_kv_consistent(cache)
            return results

    for i, answers in enumerate(asyncio.run(main())):
        assert answers == [("max_tokens", 6, expected[i])] * 60


def test_a_queued_client_that_leaves_leaves_the_running_job_alone(qwen3):
    long_request = ask("Write a long story", 300)
    expected = solo(qwen3, [long_request])[0]

    async def main():
        with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=1)) as cache:
            running = cache.achat(long_request)
            first = await running.__anext__()          # PromptReady: the running job holds the slot
            queued = cache.achat(ask("I will leave", 300))
            pending = asyncio.ensure_future(queued.__anext__())
            while cache.waiting == 0:                  # the queued job reached the scheduler
                await asyncio.sleep(0)
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
            await queued.aclose()
            assert cache.waiting == 0                  # removed from the queue: it never runs
            events = [first] + [e async for e in running]
            done = events[-1]
            assert done.stop_reason == "max_tokens" and done.usage.completion_tokens == 300
            assert done.raw_text == expected
            assert cache.scheduler.stats["jobs"] == 1  # the queued job never reached a slot
            assert_kv_consistent(cache)
    asyncio.run(main())


def test_waiting_counts_queued_jobs_and_close_cancels_them(qwen3):
    cache = qwen3.cache(CacheParams(n_ctx=2048, n_parallel=1))
    running = cache.chat(ask("Go on and on", 1500))
    next(running)                                       # PromptReady: it holds the only slot
    queued = [cache.chat(ask(f"Queued {i}", 1500)) for i in range(3)]
    assert cache.waiting == 3
    cache.close()                                       # returns once every job has ended
    for stream in queued:
        assert [type(e).__name__ for e in stream] == ["Done"]
    done = [e for e in running if isinstance(e, Done)][0]
    assert done.stop_reason == "cancelled" and done.usage.completion_tokens < 1500


def test_a_cancel_before_the_job_starts_is_honoured(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=1)) as cache:
        running = cache.chat(ask("Keep going", 200))
        next(running)
        queued = cache.chat(ask("Never mind", 200))
        queued.cancel()                                 # still queued: removed, never started
        assert [e.stop_reason for e in queued] == ["cancelled"]
        assert [e for e in running if isinstance(e, Done)][0].usage.completion_tokens == 200


def test_cancelling_one_of_four_running_jobs_leaves_the_others_complete(qwen3):
    requests = [ask(f"Explain idea {i}", 40) for i in range(4)]
    with qwen3.cache(CacheParams(n_ctx=1024, n_parallel=4)) as cache:
        streams = [cache.chat(r) for r in requests]
        for event in streams[2]:
            if isinstance(event, TextDelta):
                break
        streams[2].cancel()
        cancelled = [e for e in streams[2] if isinstance(e, Done)][0]
        assert cancelled.stop_reason == "cancelled" and cancelled.usage.completion_tokens < 40
        for i in (0, 1, 3):
            done = [e for e in streams[i] if isinstance(e, Done)][0]
            assert (done.stop_reason, done.usage.completion_tokens) == ("max_tokens", 40)
        assert_kv_consistent(cache)


def test_a_client_leaving_during_its_prompt_stops_at_once_when_others_wait(qwen3):
    long_prompt = ChatRequest([{"role": "user", "content": "lorem ipsum dolor " * 600}], sampling=GREEDY,
                              max_tokens=4)

    async def main():
        with qwen3.cache(CacheParams(n_ctx=4096, n_batch=64, n_ubatch=64)) as cache:
            prepared = cache.prepare(long_prompt)
            leaving = cache.achat(prepared)
            async for event in leaving:
                if isinstance(event, PromptProgress):
                    break
            retry = cache.achat(prepared)               # waits for the slot
            pending = asyncio.ensure_future(retry.__anext__())
            while cache.waiting == 0:
                await asyncio.sleep(0)
            await leaving.aclose()                      # someone waits: the prompt is not finished
            events = [await pending] + [e async for e in retry]
            done = events[-1]
            assert done.stop_reason == "max_tokens"
            assert done.usage.cached_tokens < prepared.prompt_tokens - 64
    asyncio.run(main())


def test_two_sessions_alternating_on_two_slots_each_reuse_their_prompt(qwen3):
    system = {"role": "system", "content": "You are a helpful assistant. " * 30}
    histories = {"a": [system], "b": [system]}
    previous = {}
    with qwen3.cache(CacheParams(n_ctx=4096, n_parallel=2)) as cache:
        for turn in range(4):
            for session in ("a", "b"):
                history = histories[session]
                history.append({"role": "user", "content": f"Session {session}, turn {turn}: go on."})
                done = cache.complete(ChatRequest(list(history), sampling=GREEDY, max_tokens=8), session=session)
                history.append({"role": "assistant", "content": done.raw_text})
                if turn:
                    assert done.usage.cached_tokens >= 0.95 * previous[session], (session, turn, done.usage)
                previous[session] = done.usage.prompt_tokens
        assert len({s["session"] for s in cache.slots()}) == 2


def test_a_shared_prefix_of_a_busy_slot_is_copied_not_recomputed(qwen3):
    shared = [{"role": "system", "content": "Tools and rules of the agent. " * 300}]   # > 2k tokens
    main_request = ChatRequest(shared + [{"role": "user", "content": "Main task"}], sampling=GREEDY, max_tokens=200)
    sub_request = ChatRequest(shared + [{"role": "user", "content": "Subagent task"}], sampling=GREEDY, max_tokens=8)
    with qwen3.cache(CacheParams(n_ctx=4096, n_parallel=2)) as cache:
        main = cache.chat(main_request, session="main")
        for event in main:
            if isinstance(event, TextDelta):
                break                                    # main's prompt is in slot 0, and it is generating
        sub = cache.complete(sub_request, session="sub")
        n_prompt = cache.count_tokens(sub_request)
        assert n_prompt > 2000
        assert sub.slot != [e for e in main if isinstance(e, Done)][0].slot
        assert sub.usage.cached_tokens >= n_prompt - 20  # copied from the busy slot: only its tail evaluated
        assert sub.stop_reason == "max_tokens" and sub.usage.completion_tokens == 8
        assert_kv_consistent(cache)


def test_parallel_subagents_wait_for_the_shared_prefix_and_copy_it(qwen3):
    shared = [{"role": "system", "content": "Shared system prompt of every subagent. " * 100}]
    requests = [ChatRequest(shared + [{"role": "user", "content": f"Subtask {i}"}], sampling=GREEDY, max_tokens=6)
                for i in range(3)]
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=3, n_batch=256, n_ubatch=256)) as cache:
        streams = [cache.chat(r) for r in requests]
        dones = [[e for e in s if isinstance(e, Done)][0] for s in streams]
        assert_kv_consistent(cache)
    assert all(d.stop_reason == "max_tokens" and d.usage.completion_tokens == 6 for d in dones)
    assert sorted(d.usage.cached_tokens > 500 for d in dones) == [False, True, True]


def test_soak_of_mixed_concurrent_requests_leaks_no_slot(qwen3):
    async def main():
        with qwen3.cache(CacheParams(n_ctx=1024, n_parallel=4, n_batch=128, n_ubatch=128)) as cache:
            async def one(i):
                request = ask(("a long question " * (i % 7) * 10) + f"number {i}", 4 + i % 9)
                stream = cache.achat(request, session=f"s{i % 5}")
                async for event in stream:
                    if i % 4 == 3 and isinstance(event, (TextDelta, PromptProgress)):
                        break                              # a client that leaves early
                await stream.aclose()
            await asyncio.gather(*(one(i) for i in range(200)))
            assert_kv_consistent(cache)
            assert cache.scheduler.stats["jobs"] + cache.scheduler.stats["cancelled"] >= 200
    asyncio.run(main())


def test_a_kv_smaller_than_all_slots_makes_jobs_wait_for_room(qwen3):
    requests = [ask(f"Room {i}", 300) for i in range(3)]
    with qwen3.cache(CacheParams(n_ctx=512, n_parallel=3, kv_size=768)) as cache:
        assert cache.n_ctx == 512
        streams = [cache.chat(r) for r in requests]
        next(streams[0])
        assert cache.waiting >= 1                       # two need 2 x ~320 cells: only one runs at first
        dones = [[e for e in s if isinstance(e, Done)][0] for s in streams]
        assert_kv_consistent(cache)
    assert all(d.stop_reason == "max_tokens" and d.usage.completion_tokens == 300 for d in dones)


def test_threads_cancel_only_their_own_job(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=2)) as cache:
        keep = cache.chat(ask("Keep writing", 100))
        stop = cache.chat(ask("Stop soon", 1000))
        started = threading.Event()

        def canceller():
            started.wait()
            stop.cancel()

        thread = threading.Thread(target=canceller)
        thread.start()
        for event in stop:
            if isinstance(event, TextDelta):
                started.set()
            if isinstance(event, Done):
                assert event.stop_reason == "cancelled"
        thread.join()
        assert [e for e in keep if isinstance(e, Done)][0].usage.completion_tokens == 100


@pytest.mark.parametrize("n_parallel", [1, 3])
def test_generation_prompt_progress_and_done_order(qwen3, n_parallel):
    with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=n_parallel, n_batch=64, n_ubatch=64)) as cache:
        events = list(cache.chat(ChatRequest([{"role": "user", "content": "word " * 300}], sampling=GREEDY,
                                             max_tokens=3)))
    names = [type(e).__name__ for e in events]
    assert names[0] == "PromptReady" and names[-1] == "Done"
    assert names.count("PromptProgress") >= 4


def test_other_threads_see_the_slots_as_a_published_snapshot(qwen3):
    """The worker publishes the slots (state, count, tokens, session) for other threads; a snapshot taken
    while a job runs stays as it was, and the tokens published when the job ends are what its KV holds."""
    with qwen3.cache(CacheParams(n_ctx=1024, n_parallel=2)) as cache:
        stream = cache.chat(ask("Count the stars", 32), session="user-1")
        running = None
        for event in stream:
            if isinstance(event, TextDelta) and running is None:
                running = cache.scheduler.view
        assert running is not None
        seen = [s.info() for s in running]
        busy = next(s for s in running if s.state != "idle")
        assert busy.state == "generate" and busy.job == stream.job.id
        assert list(busy.tokens) == stream.job.prompt             # published once the prompt was in the KV
        ended = cache.scheduler.view
        slot = ended[busy.id]
        assert slot.state == "idle" and slot.job is None and slot.session is not None
        assert list(slot.tokens) == cache.scheduler.slots[busy.id].seq.tokens
        assert slot.n_tokens == len(slot.tokens) == len(stream.job.prompt) + 31   # the last token is not decoded
        assert cache.slot_tokens(busy.id) == list(slot.tokens)
        assert [s.info() for s in running] == seen                                # a snapshot does not change
        assert cache.slots() == [s.info() for s in ended]
        assert_kv_consistent(cache)
