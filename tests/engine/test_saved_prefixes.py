"""Saved prefixes: KV states kept in RAM and on disk when slots move on, restored instead of evaluated.

Greedy answers after a restore are compared with the answers of a cache that kept the prefix in a
live slot: the same KV bits then meet the same remaining prompt.
"""

import logging
import os
import shutil
import stat

import pytest

from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Done, Model
from llamabridge.engine.fingerprint import Fingerprint
from llamabridge.engine.prefix_file import token_bytes
from llamabridge.engine.prefix_store import PrefixStore, Tier, shared_tokens

MB = 1 << 20
SYSTEM = "You are a careful assistant. " + " ".join(f"Rule {i}: answer briefly and cite rule {i}." for i in range(40))


def conversation(name: str, turns: int = 1, max_tokens: int = 8, system: str = SYSTEM) -> ChatRequest:
    messages = [{"role": "system", "content": system}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"{name} asks question {t}: " + "details " * 30})
        if t < turns - 1:
            messages.append({"role": "assistant", "content": f"Answer {t} for {name}."})
    return ChatRequest(messages, sampling=GREEDY, max_tokens=max_tokens)


def run(cache, request: ChatRequest, session: str | None = None) -> Done:
    return cache.complete(request, session=session)


def test_shared_tokens_counts_whole_tokens():
    a = token_bytes([1, 2, 3, 4, 5])
    assert shared_tokens(a, token_bytes([1, 2, 3, 4, 5, 6])) == 5
    assert shared_tokens(a, token_bytes([1, 2, 3, 9])) == 3
    assert shared_tokens(a, token_bytes([7])) == 0
    assert shared_tokens(a, token_bytes([1, 2, 3, 4 + 256])) == 3      # differs in a higher byte
    assert shared_tokens(b"", a) == 0


def test_three_sessions_rotating_through_one_slot_come_back_from_ram(qwen3, caplog):
    caplog.set_level(logging.INFO, logger="llamabridge.engine")
    names = ["alice", "bob", "carol"]
    params = CacheParams(n_ctx=2048, n_parallel=1)
    expected = {}
    with qwen3.cache(params) as plain:            # no store: each second turn follows its first in the slot
        for n in names:
            run(plain, conversation(n), n)
            expected[n] = run(plain, conversation(n, 2), n).raw_text
    store = PrefixStore(ram_bytes=256 * MB)
    with qwen3.cache(params, store=store) as cache:
        first = {n: run(cache, conversation(n), n) for n in names}
        assert store.info()["ram"]["entries"] == 2          # alice and bob left the slot; carol holds it
        second = {n: run(cache, conversation(n, 2), n) for n in names}
    for n in names:
        # each conversation's second turn starts from its own first turn: the whole first prompt at least
        assert second[n].usage.cached_tokens >= first[n].usage.prompt_tokens - 1, n
        assert second[n].raw_text == expected[n], n
    restores = [r.message for r in caplog.records if "restored" in r.message]
    # carol's first turn left the slot when alice's second came: every second turn came back from RAM
    assert len(restores) == 3 and all("from ram" in m for m in restores)
    assert store.stats[Tier.RAM].restores == 3


def test_ram_bound_is_respected_and_overflow_goes_to_disk(qwen3, tmp_path):
    params = CacheParams(n_ctx=2048, n_parallel=1)
    with qwen3.cache(params) as probe:
        run(probe, conversation("size"))
        one_entry = len(probe.scheduler.slots[0].seq.snapshot())
    store = PrefixStore(ram_bytes=int(1.5 * one_entry), state_dir=tmp_path, disk_bytes=int(2.5 * one_entry))
    with qwen3.cache(params, store=store) as cache:
        for name in ["a", "b", "c", "d", "e"]:
            run(cache, conversation(name), name)
        store.wait_writes()
        info = store.info()
        assert info["ram"]["entries"] == 1 and info["ram"]["bytes"] <= store.ram_bytes
        assert info["disk"]["bytes"] <= store.disk_bytes
        files = list(tmp_path.glob("*.lbkv"))
        assert len(files) == info["disk"]["entries"] == 2         # the two newest that left RAM
        assert sum(f.stat().st_size for f in files) <= store.disk_bytes
    store.close()


def test_restart_restores_from_disk_and_answers_as_without_restart(qwen3_path, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="llamabridge.engine")
    params = CacheParams(n_ctx=2048, n_parallel=2)
    with Model(qwen3_path) as model, model.cache(params) as cache:
        first = run(cache, conversation("dana"), "s1")
        expected = run(cache, conversation("dana", 2), "s1")
    with Model(qwen3_path) as model:
        store = PrefixStore(ram_bytes=64 * MB, state_dir=tmp_path, disk_bytes=512 * MB)
        with model.cache(params, store=store) as cache:
            assert run(cache, conversation("dana"), "s1").raw_text == first.raw_text
        store.close()                                          # shutdown: the slot's state goes to disk
        assert len(list(tmp_path.glob("*.lbkv"))) == 1
    with Model(qwen3_path) as model:
        store = PrefixStore(ram_bytes=64 * MB, state_dir=tmp_path, disk_bytes=512 * MB)
        with model.cache(params, store=store) as cache:
            assert cache.restore_saved() == 1                    # the warm-up after a restart
            done = run(cache, conversation("dana", 2), "s1")
        store.close()
    assert done.usage.cached_tokens >= first.usage.prompt_tokens - 1
    assert done.raw_text == expected.raw_text
    assert any("from disk" in r.message for r in caplog.records)


def test_disk_entry_is_read_for_a_request_without_warm_up(qwen3, tmp_path):
    params = CacheParams(n_ctx=2048, n_parallel=1)
    store = PrefixStore(state_dir=tmp_path, disk_bytes=512 * MB)     # no RAM tier: evictions go to disk
    with qwen3.cache(params, store=store) as cache:
        first = run(cache, conversation("erin"), "e")
        run(cache, conversation("fred", system="Another system prompt entirely."), "f")
        store.wait_writes()
        prepared = cache.prepare(conversation("erin", 2))
        assert prepared.saved is not None and prepared.saved.tier is Tier.DISK
        done = run(cache, prepared, "e")
    store.close()
    assert done.usage.cached_tokens >= first.usage.prompt_tokens - 1
    assert store.stats[Tier.DISK].restores == 1


def _saved_file(model_path, tmp_path, params=CacheParams(n_ctx=2048, n_parallel=1)):
    with Model(model_path) as model:
        store = PrefixStore(state_dir=tmp_path, disk_bytes=512 * MB)
        with model.cache(params, store=store) as cache:
            run(cache, conversation("gina"), "g")
        store.close()
    (path,) = tmp_path.glob("*.lbkv")
    return path


def test_truncated_and_corrupt_files_are_skipped_with_a_warning(qwen3_path, tmp_path, caplog):
    path = _saved_file(qwen3_path, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])                       # truncated
    bad = tmp_path / ("0" * 16 + "-corrupt.lbkv")
    bad.write_bytes(data[:-10] + bytes(10))                      # right size, wrong bytes
    (tmp_path / "notes.txt").write_text("not ours")
    caplog.set_level(logging.WARNING)
    store = PrefixStore(state_dir=tmp_path, disk_bytes=512 * MB)
    assert any("truncated" in r.message for r in caplog.records)
    assert not path.exists() and (tmp_path / "notes.txt").exists()
    with Model(qwen3_path) as model, model.cache(CacheParams(n_ctx=2048, n_parallel=1), store=store) as cache:
        assert cache.restore_saved() == 0                         # the corrupt one fails its checksum
        assert any("checksum" in r.message for r in caplog.records)
        done = run(cache, conversation("gina", 2))
    assert done.usage.cached_tokens == 0
    assert not bad.exists()
    store.close()


def test_anything_else_in_the_state_dir_is_skipped_and_never_stops_the_store(qwen3_path, tmp_path, caplog):
    path = _saved_file(qwen3_path, tmp_path)
    (tmp_path / "x.lbkv").mkdir()                                 # a directory with our suffix
    (tmp_path / "x.lbkv" / "inner").write_text("kept")
    os.mkfifo(tmp_path / "pipe.lbkv")                             # opening it would block for ever
    (tmp_path / "link.lbkv").symlink_to(path)
    with open(tmp_path / "huge.lbkv", "wb") as f:                 # 8 GiB, sparse: not ours
        f.truncate(8 << 30)
    caplog.set_level(logging.WARNING)
    store = PrefixStore(state_dir=tmp_path, disk_bytes=512 * MB)
    lines = [r.getMessage() for r in caplog.records]
    assert any("x.lbkv skipped: a directory" in line for line in lines)
    assert any("pipe.lbkv skipped: not a regular file" in line for line in lines)
    assert any("link.lbkv skipped: a symlink" in line for line in lines)
    assert any("huge.lbkv skipped: not a saved prefix" in line for line in lines)
    assert (tmp_path / "x.lbkv" / "inner").exists() and (tmp_path / "pipe.lbkv").exists()
    assert not (tmp_path / "huge.lbkv").exists() and path.exists()
    with Model(qwen3_path) as model, model.cache(CacheParams(n_ctx=2048, n_parallel=1), store=store) as cache:
        assert cache.restore_saved() == 1                         # the good file still serves
    store.close()


def test_saved_prefixes_are_private_to_the_user(qwen3_path, tmp_path):
    state_dir = tmp_path / "kv"
    state_dir.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        path = _saved_file(qwen3_path, state_dir)
    finally:
        os.umask(old)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_for_another_model_or_n_ctx_is_ignored_with_a_warning(qwen3_path, scripted_path, tmp_path, caplog):
    model_path = tmp_path / "model.gguf"
    shutil.copyfile(qwen3_path, model_path)
    state_dir = tmp_path / "kv"
    _saved_file(model_path, state_dir)
    shutil.copyfile(scripted_path, model_path)     # the same path now holds another model (a re-download)
    caplog.set_level(logging.WARNING)
    with Model(model_path) as model:
        store = PrefixStore(state_dir=state_dir, disk_bytes=512 * MB)
        with model.cache(CacheParams(n_ctx=2048, n_parallel=1), store=store) as cache:
            store.report_unmatched([cache.fingerprint])
            assert any("another model file" in r.message for r in caplog.records)
            assert cache.restore_saved() == 0
        with model.cache(CacheParams(n_ctx=1024, n_parallel=1), store=store) as other:
            caplog.clear()
            store.report_unmatched([other.fingerprint])
            assert any("n_ctx" in r.message for r in caplog.records)
        store.close()


def test_fingerprint_differences_name_the_field():
    base = Fingerprint("/m.gguf", 10, "h", 4096, "f16", "f16", "auto", "t", "c", "b")
    other = Fingerprint("/m.gguf", 10, "h", 8192, "q8_0", "f16", "auto", "t2", "c", "b")
    assert base.differences(other) == ["n_ctx 8192 (here 4096)", "type_k q8_0 (here f16)", "another chat template"]
    assert base.key != other.key and Fingerprint.from_dict(base.as_dict()) == base
    with pytest.raises(ValueError):
        Fingerprint.from_dict({"model_path": "/m.gguf"})


def test_sessions_rotating_concurrently_through_two_slots_are_complete(qwen3):
    """Six conversations, two slots, all at once for three turns: every answer complete, the KV
    consistent, and later turns start from their own earlier turn (live, copied or restored)."""
    import asyncio

    from .test_scheduler import assert_kv_consistent

    store = PrefixStore(ram_bytes=256 * MB)

    async def main():
        with qwen3.cache(CacheParams(n_ctx=2048, n_parallel=2), store=store) as cache:
            async def client(i):
                dones = []
                for turn in (1, 2, 3):
                    events = [e async for e in cache.achat(conversation(f"user{i}", turn, 4), session=f"s{i}")]
                    dones.append(events[-1])
                return dones
            results = await asyncio.gather(*(client(i) for i in range(6)))
            assert_kv_consistent(cache)
            return results

    for dones in asyncio.run(main()):
        assert [d.stop_reason for d in dones] == ["max_tokens"] * 3
        for before, after in zip(dones, dones[1:]):
            assert after.usage.cached_tokens >= 0.9 * before.usage.prompt_tokens
    assert store.stats[Tier.RAM].restores > 0


def test_a_restore_makes_room_when_the_kv_is_smaller_than_all_slots(qwen3):
    store = PrefixStore(ram_bytes=256 * MB)
    first = {}
    with qwen3.cache(CacheParams(n_ctx=1024, n_parallel=2, kv_size=1024), store=store) as cache:
        for name in ("hugo", "iris", "jack"):
            first[name] = run(cache, conversation(name), name)
        done = run(cache, conversation("hugo", 2), "hugo")
        assert sum(len(s.seq) for s in cache.scheduler.slots) <= 1024
    assert done.usage.cached_tokens >= 0.9 * first["hugo"].usage.prompt_tokens


def test_a_state_the_context_refuses_is_dropped_and_the_prompt_evaluated(qwen3, caplog):
    params = CacheParams(n_ctx=2048, n_parallel=1)
    with qwen3.cache(params) as plain:
        expected = run(plain, conversation("kate"))
    store = PrefixStore(ram_bytes=256 * MB)
    caplog.set_level(logging.WARNING)
    with qwen3.cache(params, store=store) as cache:
        prompt = cache.prepare(conversation("kate")).prompt
        entry = store.put(cache.fingerprint, token_bytes(prompt[:-1]), b"\x00" * 4096, None)   # not a KV state
        assert store.find(cache.fingerprint, token_bytes(prompt))[0] is entry
        done = run(cache, conversation("kate"))
        assert store.info()["ram"]["entries"] == 0
    assert done.raw_text == expected.raw_text and done.usage.cached_tokens == 0
    assert any("could not be restored" in r.message for r in caplog.records)


def test_a_restore_is_chosen_only_when_faster_than_evaluating(qwen3):
    store = PrefixStore(ram_bytes=256 * MB)
    with qwen3.cache(CacheParams(n_ctx=512), store=store) as cache:
        slots = cache.scheduler.slots
        assert slots.worth_restoring(100, 10**12)            # nothing measured yet: restoring wins
        assert not slots.worth_restoring(8, 1)               # too few tokens to bother
        slots.prompt_rate = 1000.0                           # 100 tokens: 0.1 s to evaluate
        assert slots.worth_restoring(100, 1 * MB)            # 1 ms at the default 1 GB/s from RAM
        assert not slots.worth_restoring(100, 1000 * MB)     # 1 s
        assert not slots.worth_restoring(100, 50 * MB, Tier.DISK)   # 0.25 s at 200 MB/s from disk
