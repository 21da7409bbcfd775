"""Events reach their consumer through a mailbox woken by the next decode (after the GIL is released):
in order, all of them, from many jobs at once, without leaking a descriptor; a consumer is woken at
most once per stream interval, except for a job's start, first output and end."""

import asyncio
import gc
import os
import resource
import select
import threading

import pytest

from llamabridge import _core
from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Done, TextDelta
from llamabridge.engine import scheduler as scheduler_module
from llamabridge.engine.mailbox import Mailbox, due_wakes, for_loop, wake

PROMPT = [{"role": "user", "content": "Tell me a story."}]


def _readable(mailbox: Mailbox) -> bool:
    return bool(select.select([mailbox._read_fd], [], [], 0)[0])


def test_one_wake_until_the_consumer_takes():
    mailbox = Mailbox()
    assert mailbox.post(1) is True            # the consumer must be woken
    assert mailbox.post(2) is False           # a wake is on its way already
    assert not _readable(mailbox)
    wake(mailbox.fd)
    wake(mailbox.fd)
    assert mailbox.wait(5)
    assert mailbox.take() == [1, 2]
    assert not _readable(mailbox)             # both wake bytes read
    assert mailbox.take() == []
    assert mailbox.post(3) is True            # taken: the next post wakes again


def test_a_post_racing_with_take_is_never_lost():
    mailbox = Mailbox()
    got: list[int] = []

    def producer():
        for i in range(20000):
            if mailbox.post(i):
                wake(mailbox.fd)

    thread = threading.Thread(target=producer)
    thread.start()
    while len(got) < 20000:
        assert mailbox.wait(30), "a post went unannounced"
        got.extend(mailbox.take())
    thread.join()
    assert got == list(range(20000))


def test_a_consumer_is_woken_once_per_interval_unless_its_events_are_urgent():
    recent, stale, urgent, never = Mailbox(), Mailbox(), Mailbox(), Mailbox()
    recent.woken_at, stale.woken_at, urgent.woken_at = 99.995, 99.98, 99.999
    urgent.hurry()
    pending = {m.fd: m for m in (recent, stale, urgent, never)}
    due = due_wakes(pending, 100.0, 0.01)
    assert set(due) == {stale.fd, urgent.fd, never.fd}
    assert list(pending) == [recent.fd]                    # its events wait for a later decode
    assert stale.woken_at == urgent.woken_at == never.woken_at == 100.0 and recent.woken_at == 99.995
    assert set(due_wakes(pending, 100.0, 0.0)) == {recent.fd} and pending == {}


def test_a_long_stream_interval_wakes_a_chat_at_its_start_first_output_and_end(qwen3, monkeypatch):
    """Every token's text still arrives, in fewer wakes: the prompt's decode and each token's until the
    consumer has seen output wake it at once (time to first token), then only the job's end."""
    request = ChatRequest(PROMPT, sampling=GREEDY, max_tokens=48)
    with qwen3.cache(CacheParams(n_ctx=1024, stream_interval_ms=0)) as cache:
        with cache.chat(request) as stream:
            expected = "".join(e.text for e in stream if isinstance(e, TextDelta))
    with qwen3.cache(CacheParams(n_ctx=1024, stream_interval_ms=3_600_000)) as cache:
        decodes: list[tuple[dict, int]] = []     # (consumers woken as it starts, tokens generated before it)

        def recording(pending, now, interval):
            job = cache.scheduler.slots[0].job
            decodes.append((due_wakes(pending, now, interval), len(job.generation.tokens) if job.generation else 0))
            return decodes[-1][0]

        monkeypatch.setattr(scheduler_module, "due_wakes", recording)
        with cache.chat(request) as stream:
            events = list(stream)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected and len(expected) > 48
    assert isinstance(events[-1], Done) and events[-1].usage.completion_tokens == 48
    assert len(decodes) >= 48
    woken = [tokens for due, tokens in decodes if stream._mailbox.fd in due]
    assert woken[:2] == [0, 1] and woken == list(range(len(woken))) and len(woken) <= 16


def test_decode_writes_the_wake_bytes_once_it_starts(qwen3):
    first, second = Mailbox(), Mailbox()
    with _core.Context(qwen3.native, n_ctx=256) as ctx:
        ctx.batch_add(qwen3.tokenize("Hello"), 0, 0, True)
        ctx.batch_decode(wake=(first.fd, second.fd))
        assert _readable(first) and _readable(second)
        try:
            ctx.batch_decode(wake=(first.fd,))        # nothing to decode: woken anyway, then the error
        except ValueError as exc:
            assert "empty batch" in str(exc)
        assert os.read(first._read_fd, 16) == b"\0\0"


def test_every_event_reaches_sync_and_async_consumers_of_parallel_jobs(qwen3):
    """Each consumer's text deltas add up to the whole output its job generated, every token of it. (Not the
    same text for all: greedy output of this random model may differ where its two likeliest tokens are
    within float error of each other, as the steps' batches differ from run to run; see the README.)"""
    request = ChatRequest(PROMPT, sampling=GREEDY, max_tokens=60)

    def whole(events) -> tuple[str, Done]:
        text, done = [], None
        for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, Done):
                done = event
        assert done is not None
        return "".join(text), done

    with qwen3.cache(CacheParams(n_ctx=1024, n_parallel=4)) as cache:
        async def one() -> tuple[str, Done]:
            return whole([event async for event in cache.achat(request)])

        async def many() -> list[tuple[str, Done]]:
            return await asyncio.gather(*(one() for _ in range(6)))

        results: list[tuple[str, Done]] = []

        def sync_consumer():
            with cache.chat(request) as stream:
                results.append(whole(stream))

        threads = [threading.Thread(target=sync_consumer) for _ in range(2)]
        for t in threads:
            t.start()
        results += asyncio.run(many())
        for t in threads:
            t.join()
        assert len(results) == 8
        for text, done in results:
            assert done.usage.completion_tokens == 60 and len(text) > 60
            assert text.strip() == done.raw_text.strip()     # no event lost on the way to its consumer


def test_no_descriptor_is_left_open_by_finished_chats_or_closed_loops(qwen3):
    with qwen3.cache(CacheParams(n_ctx=1024)) as cache:
        def chats():
            cache.complete(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=4))

            async def on_a_new_loop():
                assert for_loop(asyncio.get_running_loop()) is for_loop(asyncio.get_running_loop())
                async for event in cache.achat(ChatRequest(PROMPT, sampling=GREEDY, max_tokens=4)):
                    if isinstance(event, Done):
                        return event
            assert asyncio.run(on_a_new_loop()).stop_reason in ("end_turn", "max_tokens")

        chats()
        gc.collect()
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(30):
            chats()
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) <= before


def test_a_consumer_waits_on_a_descriptor_past_1024():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1100:
        if hard != resource.RLIM_INFINITY and hard <= 1100:
            pytest.skip(f"this process may open only {hard} descriptors")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    mailbox = Mailbox()
    high = os.dup2(mailbox._read_fd, 1100)
    os.close(mailbox._read_fd)
    mailbox._read_fd = high
    mailbox.post("x")
    wake(mailbox.fd)
    assert mailbox.wait(5)
    assert mailbox.take() == ["x"]
