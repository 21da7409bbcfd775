"""Synthetic GGUF models: a real tokenizer and chat template, made-up weights.

Tests, benchmarks and the demo model are built from the vocab files and Jinja templates
that ship in llama.cpp's source (vendor/llama.cpp/models/), so nothing is downloaded from
a model hub. Two kinds:

- random: random weights. Generates plausible-looking token soup, never ends its turn.
- scripted: greedy decoding replies with a fixed sentence and then ends the turn (SPEC §7).
  Attention output and FFN-down weights are zero, so the residual stream stays the token
  embedding; the reply tokens (and the generation prompt's last token) get one-hot
  embeddings and the output matrix is a bigram table prompt end -> reply[0] -> ... ->
  end-of-turn; every other token maps to end-of-turn.

Needs the `gguf` and `numpy` packages (test extras).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR") or ROOT / "vendor" / "llama.cpp")
CACHE_DIR = Path(os.environ.get("LLAMABRIDGE_MODEL_CACHE") or ROOT / ".cache" / "models")
CONTROL, USER_DEFINED = 3, 4          # GGUF token types
# bump when the generator changes what it writes, so cached files are made again
GENERATOR_VERSION = 3


@dataclass(frozen=True)
class ModelSpec:
    """What to generate. The file name is derived from a hash of these fields."""

    vocab: str = "qwen2"                      # vendor/llama.cpp/models/ggml-vocab-<vocab>.gguf
    template: str = "Qwen-Qwen3-0.6B.jinja"   # vendor/llama.cpp/models/templates/<template>
    eos_token: str = "<|im_end|>"             # the template's end-of-turn token
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 32768
    seed: int = 0
    # scripted models: the reply text and the prompt suffix it follows
    reply: str | None = None
    # texts the generation prompt may end with (thinking on / off); their last tokens start the reply
    prompt_ends: tuple[str, ...] = ("<|im_start|>assistant\n", "</think>\n\n")
    tensor_type: str = "f16"

    @property
    def name(self) -> str:
        key = json.dumps({**asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        kind = "scripted" if self.reply is not None else "random"
        return f"{kind}-{self.vocab}-{self.n_embd}x{self.n_layer}-{digest}.gguf"


QWEN3 = ModelSpec()
LLAMA31 = ModelSpec(vocab="llama-bpe", template="meta-llama-Llama-3.1-8B-Instruct.jinja", eos_token="<|eot_id|>")
# a scripted Qwen3-templated model for end-to-end tests: whatever it is asked, with thinking
# on or off, its greedy answer is this sentence, then end of turn
SCRIPTED_REPLY = "Hello from llamabridge! How can I help?"
QWEN3_SCRIPTED = ModelSpec(n_embd=32, n_layer=2, n_ff=64, reply=SCRIPTED_REPLY, n_ctx_train=131072)
# its draft model: the same script in one layer (speculative decoding with a draft model drafts what it answers)
QWEN3_SCRIPTED_DRAFT = replace(QWEN3_SCRIPTED, n_layer=1)
# a scripted Qwen3 model that opens a tool call at once (thinking off); past "<tool_call>\n"
# it prefers end-of-turn, so a tool-call grammar leads it through a short, complete call
QWEN3_TOOL_CALLER = ModelSpec(n_embd=32, n_layer=2, n_ff=64, reply="<tool_call>\n", prompt_ends=("</think>\n\n",))
# a scripted Qwen3 model that thinks before it answers (thinking on): "<think>Plan.</think>Done!"
QWEN3_THINKER = ModelSpec(n_embd=32, n_layer=2, n_ff=64, reply="<think>Plan.</think>Done!",
                          prompt_ends=("<|im_start|>assistant\n",))
# shaped like a 0.5B model: for benchmarks only
QWEN3_BENCH = ModelSpec(n_embd=896, n_layer=24, n_head=14, n_head_kv=2, n_ff=4864)
# shaped like Llama 3.1 8B (16 GB of f16 weights): for GPU benchmarks only (scripts/device_cuda.sh)
LLAMA31_8B_SHAPE = replace(LLAMA31, n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336,
                           n_ctx_train=131072)


# Qwen2's vocab file carries [PAD...] placeholders where Qwen2.5/Qwen3 put their added
# tokens; naming them makes <think> and <tool_call> single tokens as in the real models.
QWEN3_ADDED_TOKENS = {
    151657: "<tool_call>", 151658: "</tool_call>", 151665: "<tool_response>", 151666: "</tool_response>",
    151667: "<think>", 151668: "</think>",
}


def ensure_model(spec: ModelSpec = QWEN3, cache_dir: Path | None = None) -> Path:
    """Path of the model file for `spec`, generating it on first use."""
    cache_dir = Path(cache_dir or CACHE_DIR)
    path = cache_dir / spec.name
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        write_model(spec, tmp)
        os.replace(tmp, path)
    return path


@functools.lru_cache(maxsize=4)
def vocab_keys(vocab: str) -> dict:
    """The tokenizer keys of vendor/llama.cpp/models/ggml-vocab-<vocab>.gguf (runtime.gguf_keys's shape)."""
    from ..runtime.gguf_keys import read_keys

    return read_keys(LLAMA_CPP_DIR / "models" / f"ggml-vocab-{vocab}.gguf", "tokenizer.")


def base_vocab(vocab: str) -> tuple[dict, list[str], list[int]]:
    """A vendored vocabulary's keys, tokens and token types, as the synthetic models use it: Qwen's added
    tokens named, `</s>` a control token (llama.cpp warns at every load otherwise)."""
    keys = vocab_keys(vocab)
    tokens = list(keys["tokenizer.ggml.tokens"][2])
    types = list(keys["tokenizer.ggml.token_type"][2])
    if vocab in ("qwen2", "qwen35"):
        for index, text in QWEN3_ADDED_TOKENS.items():
            tokens[index] = text
    if "</s>" in tokens:
        types[tokens.index("</s>")] = CONTROL
    return keys, tokens, types


def add_tokenizer(writer, keys: dict, tokens: list[str], types: list[int], skip: tuple[str, ...] = ()) -> None:
    """The vocabulary's keys, with these tokens and types (scores padded for tokens added), less `skip`."""
    import gguf

    scores = keys.get("tokenizer.ggml.scores", (0, 0, []))[2]
    replaced = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                "tokenizer.ggml.scores": list(scores) + [0.0] * (len(tokens) - len(scores))}
    for key, (kind, item, value) in keys.items():
        if key not in skip:
            writer.add_key_value(key, replaced.get(key, value), gguf.GGUFValueType(kind),
                                 sub_type=gguf.GGUFValueType(item) if item is not None else None)


def write_file(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@contextlib.contextmanager
def vocab_model(writer, path: Path):
    """The metadata a writer holds, opened vocab-only (to tokenize with exactly a model's vocabulary before
    its weights are made); the file is gone once open."""
    from .. import _core

    write_file(writer)
    model = _core.Model(str(path), vocab_only=True)
    path.unlink()
    try:
        yield model
    finally:
        model.close()


def _metadata_writer(spec: ModelSpec, path: Path):
    """A GGUFWriter holding every key/value of the model: hyperparameters, tokenizer, template."""
    import gguf

    keys, tokens, token_types = base_vocab(spec.vocab)
    template = (LLAMA_CPP_DIR / "models" / "templates" / spec.template).read_text()

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"llamabridge synthetic ({'scripted' if spec.reply is not None else 'random'})")
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if spec.tensor_type == "f16" else gguf.LlamaFileType.ALL_F32)
    add_tokenizer(writer, keys, tokens, token_types, skip=("tokenizer.chat_template", "tokenizer.ggml.eos_token_id"))
    writer.add_eos_token_id(tokens.index(spec.eos_token))
    writer.add_chat_template(template)
    return writer, tokens


def write_model(spec: ModelSpec, path: Path) -> None:
    import numpy as np

    writer, tokens = _metadata_writer(spec, path)
    n_vocab = len(tokens)

    rng = np.random.default_rng(spec.seed)
    dtype = np.float16 if spec.tensor_type == "f16" else np.float32
    n_embd, n_ff = spec.n_embd, spec.n_ff
    n_embd_kv = n_embd // spec.n_head * spec.n_head_kv
    scripted = spec.reply is not None

    def rand(*shape, scale=0.2):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)

    if scripted:
        embd, output = _scripted_tables(spec, path, tokens, np)
        writer.add_tensor("token_embd.weight", embd.astype(dtype))
    else:
        writer.add_tensor("token_embd.weight", rand(n_vocab, n_embd, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    if scripted:
        writer.add_tensor("output.weight", output.astype(dtype))
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", rand(n_embd, n_embd))
        writer.add_tensor(p + "attn_k.weight", rand(n_embd_kv, n_embd))
        writer.add_tensor(p + "attn_v.weight", rand(n_embd_kv, n_embd))
        writer.add_tensor(p + "attn_output.weight",
                          np.zeros((n_embd, n_embd), dtype) if scripted else rand(n_embd, n_embd))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", rand(n_ff, n_embd))
        writer.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd))
        writer.add_tensor(p + "ffn_down.weight", np.zeros((n_embd, n_ff), dtype) if scripted else rand(n_embd, n_ff))
    write_file(writer)


def _scripted_tables(spec: ModelSpec, path: Path, tokens: list[str], np):
    """Embedding and output matrices implementing the bigram chain of a scripted reply."""
    vocab_path = path.with_name(path.name + ".vocab")
    with vocab_model(_metadata_writer(spec, vocab_path)[0], vocab_path) as vocab:
        reply = vocab.tokenize(spec.reply or "", parse_special=True)
        starts = sorted({vocab.tokenize(end, parse_special=True)[-1] for end in spec.prompt_ends})
        (eot,) = vocab.tokenize(spec.eos_token, parse_special=True)
    chain = [*starts, *reply]
    if len(set(chain)) != len(chain):
        raise ValueError(f"a scripted reply needs distinct tokens, {spec.reply!r} repeats one")
    if len(chain) + 1 > spec.n_embd:
        raise ValueError(f"n_embd={spec.n_embd} is too small for a {len(reply)}-token reply")

    n_vocab = len(tokens)
    other_dim = spec.n_embd - 1  # every token outside the chain embeds here and maps to end-of-turn
    embd = np.zeros((n_vocab, spec.n_embd), np.float32)
    embd[:, other_dim] = 1.0
    output = np.zeros((n_vocab, spec.n_embd), np.float32)
    # below end-of-turn, shorter tokens rank higher (no ties): when a grammar forbids ending,
    # the model spells out what the grammar requires and stops as soon as it may
    output[:, other_dim] = -0.25 * np.array([len(t) for t in tokens], np.float32)
    for dim, token in enumerate(chain):
        embd[token] = 0.0
        embd[token, dim] = 1.0
    successors = {start: reply[0] for start in starts}
    successors.update(zip(reply, [*reply[1:], eot]))
    for dim, token in enumerate(chain):
        output[successors[token], dim] = 4.0
    output[eot, other_dim] = 4.0
    return embd, output
