"""The engine on a device: layers and KV offloaded by default, fitted to the device's memory, and everything a
cache does (parallel slots, prefix copies, saved prefixes across a restart, two caches, flash attention,
cancel, overflow) working there as on the CPU."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from llamabridge.engine import GREEDY, CacheParams, ChatRequest, Done, Model, ModelParams, PrefixStore, placement
from llamabridge.errors import ContextLimitExceededError, ModelLoadError
from llamabridge.synthetic import QWEN3_SCRIPTED, ModelSpec, ensure_model

CPU_ONLY = ModelParams(devices=())
HI = [{"role": "user", "content": "Hi"}]


def ask(text: str, max_tokens: int = 24, **kw) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], sampling=GREEDY, max_tokens=max_tokens, **kw)


def on_device(memory: dict, device: str) -> dict:
    return memory["memory"].get(device, {})


@pytest.fixture(scope="module")
def scripted_path():
    return ensure_model(QWEN3_SCRIPTED)


def test_a_model_is_offloaded_whole_by_default_with_its_kv(scripted_path, device):
    params = CacheParams(n_ctx=1024, n_parallel=2)
    with Model(scripted_path, caches=[params]) as model:
        assert model.placement["fitted"] and model.placement["status"] == "fits"
        cache = model.cache(params)
        memory = cache.memory()
        offloaded, total = placement.layers_on(model.placement, model.native.n_layer)
        assert offloaded == total
        assert on_device(memory, device)["model"] > 0 and on_device(memory, device)["context"] > 0
        assert placement.kv_on(memory) == {device: on_device(memory, device)["context"]}
        line = placement.layers_line("m", model.placement, model.native.n_layer, memory)
        assert f"{total}/{total} layers on {device}" in line and "fitted to free memory" in line
        assert f"KV {placement.size(memory['memory'][device]['context'])} on {device}" in \
            placement.cache_line("c", cache.params, memory)
        done = cache.complete(ask("Hi"))
        assert done.raw_text == QWEN3_SCRIPTED.reply and done.stop_reason == "end_turn"


def test_an_automatic_context_is_fitted_to_the_device(scripted_path, device):
    """n_ctx 0 on a device: llama.cpp's fitting chooses it (the training context here, as it fits), per slot."""
    auto = CacheParams(n_parallel=2)
    with Model(scripted_path, caches=[auto]) as model:
        fitted = model.fitted(auto)
        assert fitted.n_ctx == QWEN3_SCRIPTED.n_ctx_train
        cache = model.cache(auto)
        assert cache.n_ctx == fitted.n_ctx
        assert on_device(cache.memory(), device)["context"] > 0


def test_a_model_opened_without_its_caches_is_fitted_beside_a_default_one(scripted_path, device):
    """The library's Model(path): layers fitted beside one automatic cache, which cache() then opens as fitted."""
    with Model(scripted_path) as model:
        assert model.placement["fitted"] and model.fitted(CacheParams()).n_ctx == QWEN3_SCRIPTED.n_ctx_train
        cache = model.cache()
        assert cache.n_ctx == QWEN3_SCRIPTED.n_ctx_train and on_device(cache.memory(), device)["context"] > 0


def test_greedy_output_matches_the_cpu(scripted_path, device):
    """Scripted weights (a wide margin between the best token and the next): the same tokens on the device
    as on the CPU, streamed through 4 parallel slots at once."""
    params = CacheParams(n_ctx=512, n_parallel=4)
    texts = ["Hi", "What is 2+2?", "Write a haiku", "Explain KV caches"]
    answers = {}
    for where in (ModelParams(), CPU_ONLY):
        with Model(scripted_path, where, caches=[params]) as model:
            cache = model.cache(params)
            streams = [cache.chat(ask(t, 40)) for t in texts]
            answers[where.devices] = [next(e for e in s if isinstance(e, Done)).raw_text for s in streams]
    assert answers[None] == answers[()] == [QWEN3_SCRIPTED.reply] * 4


def test_drafts_are_verified_on_the_device(scripted_path, device):
    """Speculative decoding with the KV on the device: drafts accepted in the shared batch of 2 slots, the
    answers the CPU's without drafts, the KV after them the same."""
    again = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": QWEN3_SCRIPTED.reply},
             {"role": "user", "content": "Hi again"}]
    request = ChatRequest(again, sampling=GREEDY, max_tokens=40)
    drafting = CacheParams(n_ctx=512, n_parallel=2, speculative="ngram-simple", draft_ngram=2, draft_max=16)
    with Model(scripted_path, caches=[drafting]) as model:
        cache = model.cache(drafting)
        dones = [next(e for e in s if isinstance(e, Done)) for s in [cache.chat(request), cache.chat(request)]]
        held = [cache.slot_tokens(d.slot) for d in dones]
        assert cache.scheduler.stats["draft_accepted"] > 0
    with Model(scripted_path, CPU_ONLY) as model:
        alone = model.cache(CacheParams(n_ctx=512)).complete(request)
    assert [d.raw_text for d in dones] == [alone.raw_text] * 2 == [QWEN3_SCRIPTED.reply] * 2
    assert all(len(h) == alone.usage.prompt_tokens + alone.usage.completion_tokens - 1 for h in held)


def test_a_draft_model_drafts_on_the_device(scripted_path, device):
    """A draft model on the device, its context beside the target's: 2 slots drafted and verified there, the
    answers the CPU's without drafts."""
    from llamabridge.synthetic import QWEN3_SCRIPTED_DRAFT, ensure_model

    request = ChatRequest([{"role": "user", "content": "Hi"}], sampling=GREEDY, max_tokens=40)
    drafting = CacheParams(n_ctx=512, n_parallel=2, draft_model="draft", draft_max=4)
    with Model(ensure_model(QWEN3_SCRIPTED_DRAFT), caches=[drafting]) as draft, \
            Model(scripted_path, caches=[drafting]) as model:
        cache = model.cache(drafting, draft=draft)
        assert cache.draft_context is not None and any(
            d != "CPU" and use["context"] > 0 for d, use in cache.draft_context.memory()["memory"].items())
        dones = [next(e for e in s if isinstance(e, Done)) for s in [cache.chat(request), cache.chat(request)]]
        assert cache.speculation()["accepted"] >= 16
    assert [d.raw_text for d in dones] == [QWEN3_SCRIPTED.reply] * 2


def test_random_weights_differ_from_the_cpu_only_at_near_ties(qwen3_path, device):
    """Random weights give nearly flat logits: where the device's greedy token differs from the CPU's, the two
    best tokens were within float error of each other (the device computes in other orders and precisions).
    The documented tolerance: up to the first difference, the same tokens; there, a top-2 gap under 0.05 nats."""
    params = CacheParams(n_ctx=1024)
    runs = {}
    for where in (ModelParams(), CPU_ONLY):
        with Model(qwen3_path, where, caches=[params]) as model:
            with model.cache(params).chat(ask("Write a poem about the sea", 48, logprobs=2)) as stream:
                runs[where.devices] = [p for e in stream for p in getattr(e, "logprobs", ())]
    device_run, cpu_run = runs[None], runs[()]
    assert len(cpu_run) > 10
    for got, want in zip(device_run, cpu_run):
        if got.token != want.token:
            (_, best), (_, second) = want.top[:2]
            assert best - second < 0.05, (got, want)
            break
        assert abs(got.logprob - want.logprob) < 0.05


def test_a_shared_prefix_is_copied_between_slots_on_the_device(scripted_path, device):
    params = CacheParams(n_ctx=2048, n_parallel=2)
    long = "Please read this carefully. " * 60
    with Model(scripted_path, caches=[params]) as model:
        cache = model.cache(params)
        first = cache.complete(ask(long + "First question?"), session="a")
        second = cache.complete(ask(long + "Second question?"), session="b")
        assert first.usage.cached_tokens == 0
        assert second.usage.cached_tokens > 300          # copied from the other slot (seq_cp), not evaluated
        assert second.raw_text == QWEN3_SCRIPTED.reply


def test_saved_prefixes_are_written_from_and_restored_into_device_kv_across_a_restart(scripted_path, device,
                                                                                     tmp_path):
    params = CacheParams(n_ctx=2048, n_parallel=1)
    prompt = ask("Remember this: " + "the quick brown fox jumps over the lazy dog. " * 40)
    store = PrefixStore(64 << 20, tmp_path, 256 << 20)
    with Model(scripted_path, caches=[params]) as model:
        cache = model.cache(params, store=store)
        cache.complete(prompt, session="s")
        cache.close()                                   # the slot's state is saved (device -> RAM -> disk)
    store.close()
    store = PrefixStore(64 << 20, tmp_path, 256 << 20)
    with Model(scripted_path, caches=[params]) as model:
        cache = model.cache(params, store=store)
        assert cache.restore_saved() == 1               # disk -> device KV
        done = cache.complete(prompt, session="s")
        assert done.usage.cached_tokens > 300 and done.raw_text == QWEN3_SCRIPTED.reply
        cache.close()
    store.close()


def test_two_caches_of_one_model_share_its_weights_on_the_device(scripted_path, device):
    a, b = CacheParams(n_ctx=1024), CacheParams(n_ctx=2048, n_parallel=2)
    with Model(scripted_path, caches=[a, b]) as model:
        first, second = model.cache(a, name="a"), model.cache(b, name="b")
        assert on_device(first.memory(), device)["context"] < on_device(second.memory(), device)["context"]
        results = {}

        def run(cache):
            results[cache.name] = cache.complete(ask("Hi")).raw_text

        threads = [threading.Thread(target=run, args=(c,)) for c in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {"a": QWEN3_SCRIPTED.reply, "b": QWEN3_SCRIPTED.reply}


def test_flash_attention_on(scripted_path, device):
    params = CacheParams(n_ctx=1024, flash_attn="on")
    with Model(scripted_path, caches=[params]) as model:
        cache = model.cache(params)
        assert cache.context.flash_attn == "on"
        assert cache.complete(ask("Hi")).raw_text == QWEN3_SCRIPTED.reply


def test_flash_attention_auto_is_resolved_for_the_device_and_said(scripted_path, device):
    params = CacheParams(n_ctx=1024)
    with Model(scripted_path, caches=[params]) as model:
        cache = model.cache(params)
        assert cache.context.flash_attn in ("on", "off")          # as llama.cpp resolved it, not "auto"
        assert f"flash attention {cache.context.flash_attn} (auto)" in \
            placement.cache_line("c", cache.params, cache.memory(), cache.context.flash_attn)


def test_a_cancel_mid_decode_frees_the_slot(qwen3_path, device):
    params = CacheParams(n_ctx=2048)
    with Model(qwen3_path, caches=[params]) as model:
        cache = model.cache(params)
        with cache.chat(ask("Hi", 1500)) as stream:
            for n, event in enumerate(stream):
                if n == 5:
                    stream.cancel()
                if isinstance(event, Done):
                    assert event.stop_reason == "cancelled"
                    break
        assert cache.complete(ask("Hi", 4)).usage.completion_tokens == 4


def test_an_overflowing_request_is_refused_before_it_runs(scripted_path, device):
    params = CacheParams(n_ctx=256)
    with Model(scripted_path, caches=[params]) as model:
        cache = model.cache(params)
        with pytest.raises(ContextLimitExceededError):
            cache.complete(dataclasses.replace(ask("Hi"), max_tokens=4096, clamp_max_tokens=False))
        assert cache.complete(ask("Hi")).raw_text == QWEN3_SCRIPTED.reply


# a model of about 100 MiB: its layers fill what is left of a small device once the margin is raised
WIDE = ModelSpec(n_embd=512, n_layer=12, n_head=8, n_head_kv=2, n_ff=2048, seed=3)


def test_layers_that_do_not_all_fit_are_split_with_the_cpu(device, monkeypatch):
    path = ensure_model(WIDE)
    free = next(d.free for d in placement.devices() if d.name == device)
    monkeypatch.setattr(placement, "MARGIN", free - (40 << 20))   # leave 40 MiB of the device to this model
    params = CacheParams(n_ctx=512)
    with Model(path, caches=[params]) as model:
        offloaded, total = placement.layers_on(model.placement, model.native.n_layer)
        assert model.placement["status"] == "fits" and 0 < offloaded < total
        cache = model.cache(params)
        memory = cache.memory()
        assert on_device(memory, device)["model"] > 0 and memory["memory"]["CPU"]["model"] > 0
        assert cache.complete(ask("Hi", 4)).usage.completion_tokens == 4


def test_a_context_that_cannot_fit_is_one_clear_error_at_load(scripted_path, device, monkeypatch):
    """All layers asked for, an automatic context, and no room for even MIN_CTX tokens per slot beside them."""
    free = next(d.free for d in placement.devices() if d.name == device)
    monkeypatch.setattr(placement, "MARGIN", free)
    auto = CacheParams(n_parallel=4)
    with pytest.raises(ModelLoadError, match="does not fit"):
        Model(scripted_path, ModelParams(n_gpu_layers="all"), caches=[auto])


def test_serve_offloads_by_default_and_says_where(scripted_path, device, tmp_path):
    """`serve --model X` on a device build: one log line per model and cache says what went where, /info
    shows it, answers come back, and an overflowing request is the API's 400."""
    import httpx

    from tests.support import ServeProcess

    with ServeProcess("--model", str(scripted_path), "--n-ctx", "1024", "--n-parallel", "2", "--state-dir", "",
                      ) as server:
        layers = server.wait_for(f"layers on {device}")
        assert "fitted to free memory" in layers
        assert f"on {device}" in server.wait_for("n_ctx 1024 x 2 slots, KV")
        info = httpx.get(server.url + "/info").json()
        (model,) = info["models"].values()
        offloaded, total = model["placement"]["layers"].split("/")
        assert offloaded == total and model["placement"]["weights"][device] > 0
        (cache,) = info["caches"].values()
        assert set(cache["kv_on"]) == {device}
        body = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
        answer = httpx.post(server.url + "/v1/messages", json=body, timeout=None).json()
        assert answer["content"][-1]["text"] == QWEN3_SCRIPTED.reply.split("</think>")[-1]
        too_long = httpx.post(server.url + "/v1/chat/completions", timeout=None,
                              json={"model": "m", "messages": [{"role": "user", "content": "word " * 2000}]})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
