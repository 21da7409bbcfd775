"""Automatic cache sizes: the model's own context within free memory, threads from the physical cores."""

import logging

from llamabridge.engine import CacheParams
from llamabridge.engine.sizing import kv_bytes_per_token, resolve
from llamabridge.engine.system import available_memory, physical_cores


class FakeModel:
    """A 32-layer model with 8 KV heads of 128: 128 KiB of f16 KV per token, trained on 128k tokens."""

    n_ctx_train = 131072
    n_embd, n_head, n_head_kv, n_layer = 4096, 32, 8, 32
    architecture = "llama"

    def metadata(self):
        return {}


def test_auto_context_is_the_models_own_when_it_fits():
    params = resolve(FakeModel(), CacheParams(), "main", available=64 << 30)     # 16 GiB of KV: fits in 32
    assert params.n_ctx == 131072 and params.n_threads == physical_cores()


def test_auto_context_is_lowered_to_half_the_free_memory_with_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    params = resolve(FakeModel(), CacheParams(n_parallel=2), "main", available=8 << 30)
    # 4 GiB for the KV of 2 slots at 128 KiB per token: 16384 tokens each
    assert params.n_ctx == 16384
    assert "using n_ctx 16384" in caplog.text and "131072" in caplog.text
    assert resolve(FakeModel(), CacheParams(), "main", available=1 << 20).n_ctx == 4096    # never below 4096


def test_explicit_values_are_kept():
    params = CacheParams(n_ctx=2048, n_threads=3)
    assert resolve(FakeModel(), params, "main", available=1 << 20) is params


def test_kv_bytes_per_token_matches_what_the_context_holds(qwen3):
    with qwen3.cache(CacheParams(n_ctx=2048)) as cache:
        prompt = qwen3.tokenize("words " * 500)
        cache.context.decode(prompt, 0, 0)
        state = len(cache.scheduler.slots[0].seq.context.state_seq_get(0))
    per_token = kv_bytes_per_token(qwen3.native)
    assert 0.95 < state / len(prompt) / per_token < 1.1


def test_the_machine_is_read():
    assert physical_cores() >= 1 and available_memory() > 0


def test_a_cache_without_n_ctx_takes_the_models_training_context(qwen3):
    with qwen3.cache(CacheParams(n_parallel=1)) as cache:
        assert cache.n_ctx == qwen3.n_ctx_train and cache.params.n_threads == physical_cores()
