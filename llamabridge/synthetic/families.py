"""Scripted models of the model families coding agents run: each family's real chat template and a
vocabulary carrying its special tokens, with weights (weights.py) whose greedy answers are scripted
in that family's own output syntax.

One model per family answers seven conversations (`CASES`), told apart by the end of the last message: plain
text, reasoning then text, one tool call, two parallel tool calls with nested, unicode and code arguments, the
answer after a tool result, and what Claude Code and Codex send (a Bash / exec_command call, then the answer
to its output). What the model says in each is what the family's
template renders for that assistant message (the rendered conversation with it, less the generation prompt),
cut at the family's end of turn: the syntax llama.cpp's parser for that template reads. Any other
conversation gets an empty answer (end of turn at once).

Needs the `gguf` and `numpy` packages (test extras).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import CACHE_DIR, CONTROL, LLAMA_CPP_DIR, USER_DEFINED, add_tokenizer, base_vocab, vocab_model, write_file

GENERATOR_VERSION = 1
PROMPT_TAIL = 64            # tokens of each prompt's end the scripts may read



@dataclass(frozen=True)
class Family:
    name: str
    template: str                        # vendor/llama.cpp/models/templates/<template>.jinja
    vocab: str                           # vendor/llama.cpp/models/ggml-vocab-<vocab>.gguf, the closest at hand
    eos: str                             # end of turn after text (the vocab's eos)
    markup: tuple[str, ...] = ()         # the template's tags the model writes: added as user-defined tokens
    control: tuple[str, ...] = ()        # role markers and ends of turn: added as control tokens
    eos_after_calls: str | None = None   # a family that ends a turn of tool calls with another token
    final_end: tuple[str, str] | None = None   # (what history shows, what the model writes) at the end
    bos: str | None = None
    notes: str = ""


THINK = ("<think>", "</think>")
TOOL_CALL = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
CHATML = ("<|im_start|>", "<|im_end|>")
MISTRAL = ("[INST]", "[/INST]", "[TOOL_CALLS]", "[ARGS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
           "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[CALL_ID]")
DEEPSEEK = ("<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
            "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>")
GLM = ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", *THINK, *TOOL_CALL)
GLM_ROLES = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<|endoftext|>")

FAMILIES = {f.name: f for f in [
    Family("qwen3-coder", "Qwen3-Coder", "qwen2", "<|im_end|>"),
    Family("qwen3.5", "Qwen3.5-4B", "qwen35", "<|im_end|>"),
    Family("gpt-oss", "openai-gpt-oss-120b", "qwen2", "<|return|>",
           markup=("<|channel|>", "<|message|>", "<|constrain|>"),
           control=("<|start|>", "<|end|>", "<|return|>", "<|call|>"), eos_after_calls="<|call|>",
           final_end=("<|end|>", "<|return|>"),
           notes="history shows a final answer's end as <|end|>, the model writes <|return|>"),
    Family("glm-4.6", "GLM-4.6", "qwen2", "<|user|>", markup=GLM, control=GLM_ROLES,
           eos_after_calls="<|observation|>"),
    Family("glm-4.7", "GLM-4.7-Flash", "qwen2", "<|user|>", markup=GLM, control=GLM_ROLES,
           eos_after_calls="<|observation|>"),
    Family("deepseek-v3.1", "deepseek-ai-DeepSeek-V3.1", "deepseek-llm", "<｜end▁of▁sentence｜>",
           markup=(*THINK, *DEEPSEEK), bos="<｜begin▁of▁sentence｜>"),
    Family("deepseek-v3.2", "deepseek-ai-DeepSeek-V3.2", "deepseek-llm", "<｜end▁of▁sentence｜>",
           markup=(*THINK, *DEEPSEEK), bos="<｜begin▁of▁sentence｜>"),
    Family("deepseek-v4", "deepseek-ai-DeepSeek-V4", "deepseek-llm", "<｜end▁of▁sentence｜>",
           markup=(*THINK, *DEEPSEEK), bos="<｜begin▁of▁sentence｜>"),
    Family("kimi-k2", "Kimi-K2-Thinking", "qwen2", "<|im_end|>",
           markup=(*THINK, "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
                   "<|tool_call_argument_begin|>", "<|tool_call_end|>"),
           control=("<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>")),
    Family("kimi-k3", "Kimi-K3", "qwen2", "<|end_of_msg|>", markup=("<|open|>", "<|close|>", "<|sep|>"),
           control=("<|end_of_msg|>", "<|begin_of_msg|>")),
    Family("minimax-m2", "MiniMax-M2", "qwen2", "[e~[",
           markup=(*THINK, "<minimax:tool_call>", "</minimax:tool_call>"), control=("]~b]", "]~!b[", "[e~[")),
    Family("minimax-m3", "MiniMax-M3", "qwen2", "[e~[", markup=("<mm:think>", "</mm:think>", "]<]minimax[>["),
           control=("]~b]", "]~!b[", "[e~[")),
    Family("devstral", "unsloth-mistral-Devstral-Small-2507", "qwen2", "</s>", markup=MISTRAL,
           control=("<s>", "</s>"), bos="<s>"),
    Family("ministral-3", "mistralai-Ministral-3-14B-Reasoning-2512", "qwen2", "</s>",
           markup=(*MISTRAL, "[THINK]", "[/THINK]"), control=("<s>", "</s>"), bos="<s>"),
    Family("gemma-4", "google-gemma-4-31B-it", "gemma-4", "<turn|>"),
    Family("nemotron-3", "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "qwen2", "<|im_end|>", markup=(*THINK, *TOOL_CALL)),
    Family("seed-oss", "ByteDance-Seed-OSS", "qwen2", "<seed:eos>",
           markup=("<seed:think>", "</seed:think>", "<seed:tool_call>", "</seed:tool_call>",
                   "<seed:cot_budget_reflect>", "</seed:cot_budget_reflect>"),
           control=("<seed:bos>", "<seed:eos>"), bos="<seed:bos>"),
    Family("granite-4.1", "ibm-granite-granite-4.1", "qwen2", "<|end_of_text|>", markup=(*THINK, *TOOL_CALL),
           control=("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>")),
    Family("llama-3.3", "meta-llama-Llama-3.3-70B-Instruct", "llama-bpe", "<|eot_id|>",
           notes="the template refuses parallel tool calls"),
    Family("hermes-3", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "llama-bpe", "<|im_end|>",
           markup=TOOL_CALL, control=CHATML),
]}


# ---------------------------------------------------------------- the conversations

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WRITE_FILE = {"type": "function", "function": {
    "name": "write_file", "description": "Write a file.",
    "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}, "content": {"type": "string"},
        "options": {"type": "object", "properties": {
            "tags": {"type": "array", "items": {}}, "mode": {"type": "string"}}}},
        "required": ["path", "content"]}}}
TOOLS = (WEATHER, WRITE_FILE)

# the arguments the scripted calls carry: nested objects, arrays, unicode, code with quotes, backslashes
# and newlines
CALL_ARGS = {"city": "Paris"}
FILE_ARGS = {"path": "src/naïve_☃.py",
             "content": "def f(x):\n    return \"a\\\\b\" + 'c'\n",
             "options": {"tags": ["x", {"deep": [1, 2.5, True]}], "mode": "w"}}
LYON_ARGS = {"city": "Lyon, France"}


BASH = {"type": "function", "function": {
    "name": "Bash", "description": "Run a shell command.",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "string"}, "timeout": {"type": "number"}, "description": {"type": "string"}},
        "required": ["command"]}}}
BASH_ARGS = {"command": "touch ran.txt && echo done", "description": "Create ran.txt"}
BASH_PROMPT = "Create ran.txt with the Bash tool.\n\nToday's date is 2026-12-07."

EXEC_COMMAND = {"type": "function", "function": {
    "name": "exec_command", "description": "Runs a command in a PTY.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
                   "required": ["cmd"]}}}
CODEX_ARGS = {"cmd": "touch ran.txt && echo done"}
CODEX_PROMPT = "Create ran.txt with exec_command. codex"
CODEX_OUTPUT = ("Chunk ID: 000000\nWall time: 0.0000 seconds\nProcess exited with code 0\nOriginal token count: 1\n"
                "Output:\ndone\n")


def _call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


@dataclass(frozen=True)
class Case:
    """One conversation and the answer scripted for it."""

    name: str
    messages: tuple[dict, ...]
    answer: dict                          # the assistant message: content, reasoning_content, tool_calls
    tools: tuple[dict, ...] = ()
    thinking: bool = False
    reasoning_optional: bool = False      # a family without reasoning answers it without


def tool_calls(message: dict) -> list[tuple[str, dict]]:
    """(name, arguments) of an OpenAI-shaped assistant message's tool calls."""
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", ())]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


CASES = {c.name: c for c in [
    Case("plain", (_user("Say hello. plain"),), {"role": "assistant", "content": "Hello from llamabridge!"}),
    Case("reason", (_user("Think first. reason"),),
         {"role": "assistant", "content": "Done thinking.", "reasoning_content": "The user wants a plan."},
         thinking=True),
    Case("call", (_user("The weather in Paris? call"),),
         {"role": "assistant", "content": "", "tool_calls": [_call("call_1", "get_weather", CALL_ARGS)]}, TOOLS),
    Case("calls", (_user("Write the file, then the weather in Lyon. calls"),),
         {"role": "assistant", "content": "", "tool_calls": [_call("call_1", "write_file", FILE_ARGS),
                                                             _call("call_2", "get_weather", LYON_ARGS)]}, TOOLS),
    Case("after", (_user("The weather in Paris? call"),
                   {"role": "assistant", "content": "", "tool_calls": [_call("call_1", "get_weather", CALL_ARGS)]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C. done"}),
         {"role": "assistant", "content": "It is sunny in Paris."}, TOOLS),
    # what Claude Code sends (its turn ends with the date of its appended system text, thinking on) and what
    # it sends back once its Bash tool ran the command: a real client's tool loop (tests/cli/test_cc.py)
    Case("bash", (_user(BASH_PROMPT),), {"role": "assistant", "content": "", "reasoning_content": "Run it.",
                                          "tool_calls": [_call("call_1", "Bash", BASH_ARGS)]},
         (BASH,), thinking=True, reasoning_optional=True),
    Case("bash-after", (_user(BASH_PROMPT),
                        {"role": "assistant", "content": "", "tool_calls": [_call("call_1", "Bash", BASH_ARGS)]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "done"}),
         {"role": "assistant", "content": "The command ran.", "reasoning_content": "It ran."}, (BASH,),
         thinking=True, reasoning_optional=True),
    # the same for Codex CLI (its exec_command tool; what its tool output looks like)
    Case("codex", (_user(CODEX_PROMPT),), {"role": "assistant", "content": "", "reasoning_content": "Run it.",
                                            "tool_calls": [_call("call_1", "exec_command", CODEX_ARGS)]},
         (EXEC_COMMAND,), thinking=True, reasoning_optional=True),
    Case("codex-after", (_user(CODEX_PROMPT),
                         {"role": "assistant", "content": "",
                          "tool_calls": [_call("call_1", "exec_command", CODEX_ARGS)]},
                         {"role": "tool", "tool_call_id": "call_1", "content": CODEX_OUTPUT}),
         {"role": "assistant", "content": "The command ran.", "reasoning_content": "It ran."}, (EXEC_COMMAND,),
         thinking=True, reasoning_optional=True),
]}


# ---------------------------------------------------------------- the model file

@dataclass(frozen=True)
class Scripted:
    """What the generator found for a family: each case's reply text, and the cases it could not script."""

    replies: dict[str, str] = field(default_factory=dict)      # case: the text the model writes
    answers: dict[str, dict] = field(default_factory=dict)     # case: the assistant message it carries
    unscripted: dict[str, str] = field(default_factory=dict)   # case: why the family cannot answer it


def model_path(family: Family, cache_dir: Path | None = None) -> Path:
    key = json.dumps({"family": family.__dict__, "cases": [c.__dict__ for c in CASES.values()],
                      "generator": GENERATOR_VERSION}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir or CACHE_DIR) / f"family-{family.name}-{digest}.gguf"


def ensure_family_model(family: Family, cache_dir: Path | None = None) -> tuple[Path, Scripted]:
    """The family's scripted model (generated on first use) and what it was scripted to say."""
    path = model_path(family, cache_dir)
    manifest = path.with_suffix(".json")
    if not (path.exists() and manifest.exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        scripted = write_family_model(family, tmp)
        manifest.write_text(json.dumps(scripted.__dict__, ensure_ascii=False))
        os.replace(tmp, path)
    data = json.loads(manifest.read_text())
    return path, Scripted(**data)


def _vocab(family: Family):
    """Tokens, token types and the other tokenizer keys of the family's vocabulary, its tags added."""
    keys, tokens, types = base_vocab(family.vocab)
    known = set(tokens)
    for kind, added in ((USER_DEFINED, family.markup), (CONTROL, family.control + (family.eos,))):
        for text in added:
            if text not in known:
                tokens.append(text)
                types.append(kind)
                known.add(text)
    for end in filter(None, (family.eos, family.eos_after_calls)):
        types[tokens.index(end)] = CONTROL
    return keys, tokens, types


def _writer(family: Family, path: Path, n_embd: int, n_head: int, n_ff: int):
    import gguf

    from .weights import HEAD_DIM, ROPE_BASE, ROPE_SCALE

    keys, tokens, types = _vocab(family)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"llamabridge scripted {family.name}")
    writer.add_context_length(131072)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(1.0 / ROPE_SCALE)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    add_tokenizer(writer, keys, tokens, types, skip=(
        "tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"))
    writer.add_eos_token_id(tokens.index(family.eos))
    writer.add_eot_token_id(tokens.index(family.eos))
    if family.eos_after_calls:
        writer.add_eom_token_id(tokens.index(family.eos_after_calls))
    if family.bos is not None:
        writer.add_bos_token_id(tokens.index(family.bos))
    elif "tokenizer.ggml.bos_token_id" in keys:
        writer.add_bos_token_id(keys["tokenizer.ggml.bos_token_id"][2])
    writer.add_chat_template((LLAMA_CPP_DIR / "models" / "templates" / f"{family.template}.jinja").read_text())
    return writer, tokens


def _replies(family: Family, vocab) -> tuple[list, Scripted]:
    """Each case's prompt tail and reply as token ids (in `vocab`, the model's vocabulary), and what was
    scripted; cases the family cannot answer as scripted are left out, with the reason."""
    from .weights import Script

    scripts, scripted = [], Scripted()
    for case in CASES.values():
        try:
            text, prompt, answer = render_reply(vocab, family, case, scripted)
        except ValueError as exc:
            scripted.unscripted[case.name] = str(exc)
            continue
        scripted.replies[case.name] = text
        scripted.answers[case.name] = answer
        scripts.append(Script(tuple(vocab.tokenize(prompt, parse_special=True)[-PROMPT_TAIL:]),
                              tuple(vocab.tokenize(text, parse_special=True))))
    return scripts, scripted


def render_reply(model, family: Family, case: Case, earlier: Scripted) -> tuple[str, str, dict]:
    """(the model's reply, the generation prompt, the answer it carries): the conversation rendered with the
    answer, less the conversation rendered for generation (what llama.cpp's own chat tests call the delta),
    cut where the family's turn ends. Where the template differs from that plain rule (an empty thinking
    block in the generation prompt that history leaves out, a turn that always thinks, history without the
    last turn's reasoning, a tool result rendered otherwise when it is last), what the model writes after
    the generation prompt is worked out as described at each step; what cannot be is a ValueError."""
    base = {"tools": list(case.tools), "enable_thinking": case.thinking}
    answer = dict(case.answer)
    try:
        prompt = model.apply_chat_template({**base, "messages": list(case.messages), "add_generation_prompt": True})
        gen = prompt["prompt"]
        if case.reasoning_optional and not prompt.get("supports_thinking"):
            answer.pop("reasoning_content", None)
        start, ends = prompt.get("thinking_start_tag") or "", list(prompt.get("thinking_end_tags") or [])
        forced_open = bool(start.strip()) and gen.rstrip().endswith(start.strip())
        if forced_open and not case.thinking and not answer.get("reasoning_content"):
            answer["reasoning_content"] = "Okay."       # the template opens a thinking block on every turn
        rendered = model.apply_chat_template({**base, "messages": [*case.messages, answer],
                                              "add_generation_prompt": False})["prompt"]
    except Exception as exc:   # noqa: BLE001 - the template's own refusal (e.g. no parallel calls)
        raise ValueError(f"the template cannot render it: {str(exc).splitlines()[-1][:200]}") from None
    reply = _after_prompt(gen, rendered, start, ends)
    if reply is None:
        if "plain" in earlier.replies and not answer.get("tool_calls") and not answer.get("reasoning_content"):
            plain = CASES["plain"].answer["content"]       # a text answer is written as the plain one is
            return earlier.replies["plain"].replace(plain, answer["content"]), gen, answer
        raise ValueError(f"history renders the turn's start differently from the generation prompt "
                         f"({gen[-40:]!r} / {rendered[len(os.path.commonprefix([gen, rendered])) - 20:][:60]!r})")
    reasoning = answer.get("reasoning_content")
    if reasoning and reasoning not in reply:
        reply = _with_reasoning(reply, reasoning, start, ends, forced_open)
    turn_ends = [e for e in (family.eos, family.eos_after_calls) if e]
    cut = min((reply.index(e) + len(e) for e in turn_ends if e in reply), default=None)
    if cut is not None:
        reply = reply[:cut]
    elif family.final_end and reply.rstrip().endswith(family.final_end[0]):
        reply = reply.rstrip()
        reply = reply[:-len(family.final_end[0])] + (family.eos_after_calls if answer.get("tool_calls")
                                                     and family.eos_after_calls else family.final_end[1])
    if not any(reply.endswith(e) for e in turn_ends):
        reply += family.eos_after_calls if answer.get("tool_calls") and family.eos_after_calls else family.eos
    missing = [c["function"]["name"] for c in answer.get("tool_calls", ()) if c["function"]["name"] not in reply]
    if missing:
        raise ValueError(f"the template writes one tool call per turn ({', '.join(missing)} left out)")
    return reply, gen, answer


def _after_prompt(gen: str, rendered: str, start: str, ends: list[str]) -> str | None:
    """What follows the generation prompt in the rendered conversation. Where the generation prompt ends
    with an empty thinking block that history leaves out or shortens, the model writes what follows it."""
    if rendered.startswith(gen):
        return rendered[len(gen):]
    for block in sorted({start + end for end in ends} | {start + "\n" + end for end in ends}
                        | {start + "\n\n" + end for end in ends}, key=len, reverse=True):
        for variant in (block, block + "\n", block + "\n\n"):
            if start and gen.endswith(variant) and rendered.startswith(gen[:-len(variant)]):
                rest = rendered[len(gen) - len(variant):]
                kept = next((n for n in range(len(variant), 0, -1) if rest.startswith(variant[-n:])), 0)
                return rest[kept:]
    return None


def _with_reasoning(reply: str, reasoning: str, start: str, ends: list[str], forced_open: bool) -> str:
    """The reply with the reasoning history left out: inside the empty block history shows, or before the
    end tag when the generation prompt opened the block."""
    for end in ends:
        for empty in (start + end, start + "\n" + end):
            if start and empty in reply:
                return reply.replace(empty, start + reasoning + end, 1)
        if forced_open and reply.lstrip().startswith(end.strip()):
            return reasoning + reply.lstrip()
    raise ValueError("the template leaves the reasoning of the last turn out of history")


def write_family_model(family: Family, path: Path) -> Scripted:
    import gguf
    import numpy as np

    from .weights import script_weights

    vocab_path = path.with_name(path.name + ".vocab")
    writer, tokens = _writer(family, vocab_path, 32, 1, 32)
    with vocab_model(writer, vocab_path) as vocab:
        scripts, scripted = _replies(family, vocab)
    weights = script_weights(scripts, np.array([len(t) for t in tokens]), tokens.index(family.eos))
    writer, _ = _writer(family, path, weights.n_embd, weights.n_head, weights.n_ff)
    q4 = gguf.GGMLQuantizationType.Q4_0
    writer.add_tensor("token_embd.weight", gguf.quants.quantize(weights.tok_embd, q4), raw_dtype=q4)
    writer.add_tensor("output_norm.weight", np.ones(weights.n_embd, np.float32))
    p = "blk.0."
    writer.add_tensor(p + "attn_norm.weight", np.ones(weights.n_embd, np.float32))
    writer.add_tensor(p + "ffn_norm.weight", np.ones(weights.n_embd, np.float32))
    for name, value in (("attn_q", weights.wq), ("attn_k", weights.wk), ("attn_v", weights.wv),
                        ("attn_output", weights.wo), ("ffn_gate", weights.gate), ("ffn_up", weights.up),
                        ("ffn_down", weights.down)):
        writer.add_tensor(p + name + ".weight", value.astype(np.float32))
    write_file(writer)
    return scripted


@dataclass(frozen=True)
class Reuse:
    """How much of a conversation's next turn (the tool call sent back, then its result) a slot that ran the
    call still holds."""

    prompt: int          # the next turn's prompt tokens
    kept: int            # the tokens the call's turn left in the slot (its prompt and its output)
    reused: int          # of them, the next turn's prompt starts with (and the engine reused)
    where: str           # where the two part, as text (the slot's side / the next prompt's side)


def next_turn_reuse(model_path: Path) -> Reuse:
    """Run CASES["call"] then CASES["after"] on one slot of a fresh cache (thinking off, greedy)."""
    from ..engine import GREEDY, CacheParams, ChatRequest, Model
    from ..engine.params import ThinkingParams

    model = Model(str(model_path))
    try:
        with model.cache(CacheParams(n_ctx=8192)) as cache:
            def ask(case: Case):
                prepared = cache.prepare(ChatRequest(list(case.messages), tools=list(case.tools), sampling=GREEDY,
                                                     max_tokens=600, thinking=ThinkingParams(enabled=False)))
                return prepared, cache.complete(prepared)

            ask(CASES["call"])
            held = cache.slot_tokens()
            prepared, done = ask(CASES["after"])
            common = len(os.path.commonprefix([held, list(prepared.prompt)]))
            where = (model.native.detokenize(held[common:common + 6], special=True) + " / "
                     + model.native.detokenize(list(prepared.prompt[common:common + 6]), special=True))
            if done.usage.cached_tokens != min(common, len(prepared.prompt) - 1):
                raise AssertionError(f"reused {done.usage.cached_tokens} of {common} tokens in common")
            return Reuse(len(prepared.prompt), len(held), done.usage.cached_tokens, where)
    finally:
        model.close()
