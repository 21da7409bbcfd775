"""_core: model loading and metadata, tokens, deterministic free, decode errors."""

import codecs

import pytest

from llamabridge import _core
from llamabridge.errors import ContextFullError, InvalidRequestError, ModelLoadError


def test_metadata(qwen3):
    native = qwen3.native
    assert native.architecture == "llama"
    assert native.n_vocab == 151936
    assert native.n_ctx_train == 32768
    assert native.n_embd == 64 and native.n_layer == 2
    assert "<tool_call>" in native.chat_template and "enable_thinking" in native.chat_template
    assert native.metadata()["tokenizer.ggml.pre"] == "qwen2"
    assert native.is_eog(native.tokenize("<|im_end|>")[0])
    assert native.size > 15_000_000


@pytest.mark.parametrize("text", [
    "Hello, world!",
    "def f(x):\n    return x ** 2  # ünïcödé",
    "日本語のテキストと emoji 🦙🔥 mixed",
    "  leading and trailing spaces  ",
])
def test_tokenize_round_trip(qwen3, llama31, text):
    for model in (qwen3, llama31):
        tokens = model.tokenize(text)
        assert tokens and model.detokenize(tokens) == text


def test_special_tokens_parse_only_when_asked(qwen3):
    assert qwen3.tokenize("<|im_start|>") == [151644]
    assert len(qwen3.tokenize("<|im_start|>", parse_special=False)) > 1


def test_utf8_split_across_tokens_streams_correctly(qwen3):
    text = "🦙 and 🔥 and 日本"
    tokens = qwen3.tokenize(text)
    pieces = [qwen3.native.token_to_piece(t) for t in tokens]
    assert any(_not_utf8(p) for p in pieces), "test needs a character split across tokens"
    decoder = codecs.getincrementaldecoder("utf-8")()
    streamed = "".join(decoder.decode(p) for p in pieces) + decoder.decode(b"", final=True)
    assert streamed == text


def _not_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_close_is_deterministic_and_idempotent(qwen3_path):
    model = _core.Model(str(qwen3_path))
    ctx = _core.Context(model, n_ctx=256)
    ctx.close()
    ctx.close()
    assert ctx.closed
    with pytest.raises(ValueError, match="closed"):
        ctx.decode([1, 2], 0)
    model.close()
    model.close()
    with pytest.raises(ValueError, match="closed"):
        model.tokenize("x")


def test_closing_a_model_keeps_weights_until_its_contexts_and_samplers_close(qwen3_path):
    """Model.close() with a context and a sampler still open: they keep working on the weights,
    the model itself says closed, and the weights go with the last of them."""
    model = _core.Model(str(qwen3_path))
    prompt = model.tokenize("Hello there, how are")
    ctx = _core.Context(model, n_ctx=256)
    sampler = _core.Sampler(model, {"temperature": 0.0})
    model.close()
    assert model.closed
    with pytest.raises(ValueError, match="model is closed"):
        model.tokenize("x")
    with pytest.raises(ValueError, match="model is closed"):
        _core.Context(model, n_ctx=256)
    with pytest.raises(ValueError, match="model is closed"):
        _core.Sampler(model, {})
    index = ctx.decode(prompt, 0)
    token = sampler.sample_accept(ctx, index)
    ctx.decode_one(token, len(prompt))
    assert sampler.sample_accept(ctx, 0) >= 0
    ctx.close()
    sampler.close()
    assert model.closed


def test_token_logprobs_are_a_log_softmax_of_the_logits(qwen3):
    import math
    with _core.Context(qwen3.native, n_ctx=256) as ctx:
        index = ctx.decode(qwen3.tokenize("The capital of France is"), 0)
        greedy = _core.Sampler(qwen3.native, {"temperature": 0.0})
        token = greedy.sample(ctx, index)
        greedy.close()
        logprob, top = ctx.token_logprobs(index, token, 5)
        assert len(top) == 5 and top[0] == (token, logprob)
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert all(lp <= 0 for _, lp in top)
        _, wide = ctx.token_logprobs(index, token, 3000)
        assert wide[:5] == top
        assert 0.0 < sum(math.exp(lp) for _, lp in wide) <= 1.0 + 1e-4
        other = wide[-1][0]
        assert ctx.token_logprobs(index, other, 0) == (wide[-1][1], [])
        with pytest.raises(ValueError, match="not in the vocabulary"):
            ctx.token_logprobs(index, qwen3.native.n_vocab, 1)


def test_logit_bias_steers_and_bans_tokens(qwen3):
    with _core.Context(qwen3.native, n_ctx=256) as ctx:
        index = ctx.decode(qwen3.tokenize("The capital of France is"), 0)
        greedy = _core.Sampler(qwen3.native, {"temperature": 0.0})
        token = greedy.sample(ctx, index)
        banned = _core.Sampler(qwen3.native, {"temperature": 0.0, "logit_bias": [[token, -100.0]]})
        assert banned.sample(ctx, index) != token
        forced = _core.Sampler(qwen3.native, {"temperature": 0.0, "logit_bias": [[4242, 100.0]]})
        assert forced.sample(ctx, index) == 4242
        for sampler in (greedy, banned, forced):
            sampler.close()
    with pytest.raises(InvalidRequestError, match="logit_bias: token 999999 is not in the vocabulary"):
        _core.Sampler(qwen3.native, {"logit_bias": [[999999, 1.0]]})


def test_contexts_dropped_without_close_do_not_free_weights_first(qwen3_path):
    import gc
    model = _core.Model(str(qwen3_path))
    ctx = _core.Context(model, n_ctx=256)
    sampler = _core.Sampler(model, {"temperature": 0.0})
    cycle = [ctx, sampler]
    cycle.append(cycle)
    del model, ctx, sampler
    with pytest.warns(ResourceWarning):
        del cycle
        gc.collect()


def test_every_method_of_a_closed_sampler_or_context_raises(qwen3):
    ctx = _core.Context(qwen3.native, n_ctx=256)
    sampler = _core.Sampler(qwen3.native, {"temperature": 0.0})
    index = ctx.decode(qwen3.tokenize("Hello"), 0)
    sampler.close()
    sampler.close()
    for call in (lambda: sampler.sample(ctx, index), lambda: sampler.sample_accept(ctx, index),
                 lambda: sampler.accept(1), lambda: sampler.reset()):
        with pytest.raises(ValueError, match="sampler is closed"):
            call()
    ctx.close()
    live = _core.Sampler(qwen3.native, {"temperature": 0.0})
    calls = [lambda: ctx.n_ctx, lambda: ctx.n_batch, lambda: ctx.n_ubatch, lambda: ctx.n_seq_max,
             lambda: ctx.set_n_threads(1), lambda: ctx.memory_clear(), lambda: ctx.memory_seq_rm(0, 0),
             lambda: ctx.memory_seq_cp(0, 1), lambda: ctx.memory_seq_pos_max(0), lambda: ctx.state_seq_get(0),
             lambda: ctx.state_seq_set(0, b"x"), lambda: ctx.decode([1], 0), lambda: ctx.decode_one(1, 0),
             lambda: ctx.batch_add([1], 0, 0, True), lambda: ctx.batch_decode(),
             lambda: ctx.token_logprobs(0, 1, 2), lambda: live.sample(ctx, 0)]
    for call in calls:
        with pytest.raises(ValueError, match="context is closed"):
            call()
    live.close()
    parser = _core.ChatParser({"format": 0, "parser": "", "generation_prompt": "", "reasoning_format": "none",
                               "parse_tool_calls": False})
    parser.close()
    for call in (lambda: parser.feed("x"), lambda: parser.message()):
        with pytest.raises(ValueError, match="parser is closed"):
            call()


def test_context_manager_frees(qwen3_path):
    with _core.Model(str(qwen3_path)) as model:
        with _core.Context(model, n_ctx=256) as ctx:
            assert ctx.n_ctx == 256
        assert ctx.closed
    assert model.closed


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        _core.Model(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file")
    with pytest.raises(ModelLoadError, match="failed to load"):
        _core.Model(str(bad))


def test_context_options_validated(qwen3):
    with pytest.raises(ValueError, match="flash_attn"):
        _core.Context(qwen3.native, flash_attn="maybe")
    with pytest.raises(ValueError, match="type_k"):
        _core.Context(qwen3.native, type_k="q3")


def test_decode_past_the_context_raises_typed_error(qwen3):
    with _core.Context(qwen3.native, n_ctx=256, n_batch=64, n_ubatch=64) as ctx:
        assert ctx.n_ctx == 256
        ctx.decode(list(range(100, 350)), 0)
        with pytest.raises(ContextFullError, match="no KV cache slot"):
            ctx.decode(list(range(400, 420)), 250)
        assert ctx.memory_seq_pos_max(0) == 249  # a failed decode leaves the KV as it was


def test_contexts_options(qwen3):
    with _core.Context(qwen3.native, n_ctx=512, n_batch=256, n_ubatch=128, n_seq_max=2,
                       flash_attn="off", type_k="q8_0", type_v="f16") as ctx:
        assert (ctx.n_ctx, ctx.n_batch, ctx.n_ubatch, ctx.n_seq_max) == (512, 256, 128, 2)
        ctx.decode(qwen3.tokenize("hello world"), 0)


def test_extension_imports_from_anywhere_without_library_path(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH", "DYLD_LIBRARY_PATH")}
    code = "import llamabridge._core as c, os; print(os.path.dirname(c.__file__))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    package = result.stdout.strip()
    # the llama.cpp libraries travel with the package, found through the extension's $ORIGIN rpath
    assert any(name.startswith("libllama.") for name in os.listdir(package))
