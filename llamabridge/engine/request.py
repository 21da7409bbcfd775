"""The one internal chat request every API maps into, and the event stream the engine yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .params import DEFAULT_THINKING, SamplingParams, ThinkingParams
from .schema_limits import SchemaBudget, check_grammar_text

ToolChoice = Literal["auto", "required", "none"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "cancelled"]


@dataclass(frozen=True)
class ChatRequest:
    """A chat to complete.

    messages: OpenAI-shaped dicts (role system/user/assistant/tool; content as a string or
    text parts; assistant `tool_calls` [{id, type: function, function: {name, arguments}}]
    and `reasoning_content`; tool messages with `tool_call_id`).
    tools: OpenAI-shaped function tools [{type: function, function: {name, description, parameters}}].
    max_tokens: None means "as many as fit in the context".
    clamp_max_tokens: when prompt + max_tokens exceeds the context, generate only what fits
    (stopping with max_tokens) instead of raising ContextLimitExceededError.
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    thinking: ThinkingParams = DEFAULT_THINKING
    json_schema: dict[str, Any] | None = None
    json_schema_field: str = "json_schema"      # where the client sent it (its API's name), for errors
    grammar: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    clamp_max_tokens: bool = False
    logprobs: int | None = None  # None: none; N: each text token's log-probability and its N likeliest alternatives

    def kept_texts(self) -> list[str]:
        """The texts of system, user and tool messages: every template renders them whole."""
        texts = []
        for message in self.messages:
            if message.get("role") == "assistant":
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return texts

    def check_grammar_bounds(self) -> None:
        """A 400 naming the field when the schemas or grammar that become the sampler's grammar ask more
        than schema_limits allows (before anything is built)."""
        budget = SchemaBudget()
        if self.json_schema is not None:
            budget.check(self.json_schema, self.json_schema_field)
        for i, tool in enumerate(self.tools):
            function = tool.get("function") or {}
            budget.check(function.get("parameters"), f"tools[{i}] ({function.get('name')}).parameters")
        if self.grammar:
            check_grammar_text(self.grammar, "grammar")

    def template_inputs(self) -> dict[str, Any]:
        """The inputs of llama.cpp's common_chat_templates_apply, as the shim takes them."""
        inputs: dict[str, Any] = {
            "messages": self.messages,
            "tool_choice": self.tool_choice if self.tools else "auto",
            "parallel_tool_calls": self.parallel_tool_calls,
            "enable_thinking": self.thinking.enabled,
            "chat_template_kwargs": self.chat_template_kwargs,
            "add_generation_prompt": True,
        }
        if self.tools:
            inputs["tools"] = self.tools
        if self.json_schema is not None:
            inputs["json_schema"] = self.json_schema
        if self.grammar:
            inputs["grammar"] = self.grammar
        return inputs


@dataclass(frozen=True)
class RenderedChat:
    """A conversation through the model's template (llama.cpp's common_chat_params): the prompt, and what
    sampling and parsing the answer need (its grammar, stops, thinking tags, parser)."""

    prompt: str
    format: int = 0                       # common_chat_format: how the parser reads the answer
    parser: str = ""                      # the parser's definition for that format
    generation_prompt: str = ""
    grammar: str = ""                     # "" = none (tool calls or a schema make one)
    grammar_lazy: bool = False            # enforced only after a trigger (a tool call starting)
    grammar_triggers: tuple = ()
    preserved_tokens: tuple[str, ...] = ()
    additional_stops: tuple[str, ...] = ()
    supports_thinking: bool = False
    thinking_start_tag: str = ""
    thinking_end_tags: tuple[str, ...] = ()

    @classmethod
    def from_native(cls, params: dict[str, Any]) -> "RenderedChat":
        """The record of what `_core.Model.apply_chat_template` returns."""
        return cls(params["prompt"], params["format"], params["parser"], params["generation_prompt"],
                   params["grammar"], params["grammar_lazy"], tuple(params["grammar_triggers"]),
                   tuple(params["preserved_tokens"]), tuple(params["additional_stops"]),
                   params["supports_thinking"], params["thinking_start_tag"], tuple(params["thinking_end_tags"]))


@dataclass
class PreparedChat:
    """A request templated, tokenized and checked against the context: ready to run."""

    request: ChatRequest
    rendered: RenderedChat       # the prompt's text, and its grammar, parser, stops, ...
    prompt: list[int]
    max_tokens: int
    saved: Any = None            # a saved prefix of the prompt, loaded from disk (see Cache.prepare)
    sampler: Any = None          # the native Sampler, its grammar built (taken by the one job that runs it)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0       # prompt tokens reused from the cache's KV (not evaluated again)
    reasoning_tokens: int = 0    # completion tokens spent thinking (up to the last one that produced reasoning)


@dataclass(frozen=True)
class Timings:
    prompt_seconds: float = 0.0  # evaluating the prompt tokens that were not reused
    generate_seconds: float = 0.0

    def decode_tokens_per_second(self, completion_tokens: int) -> float:
        return completion_tokens / self.generate_seconds if self.generate_seconds > 0 else 0.0


@dataclass(frozen=True)
class PromptReady:
    """The prompt is templated, tokenized and checked: nothing has been decoded yet."""

    prompt_tokens: int
    cached_tokens: int
    max_tokens: int


@dataclass(frozen=True)
class Idle:
    """Nothing else came for a while (Cache.achat's `idle`): the request is alive, queued or evaluating,
    so a stream can keep its client from timing out."""


@dataclass(frozen=True)
class PromptProgress:
    """Emitted between prompt chunks, so servers can keep clients alive during long prompts."""

    evaluated: int
    total: int


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and the likeliest tokens at its position (raw logits)."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()   # the tokens this text came from, when the request asked


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallEnd:
    index: int


@dataclass(frozen=True)
class Done:
    stop_reason: StopReason
    usage: Usage
    timings: Timings
    stop_sequence: str | None = None
    raw_text: str = ""           # the model's output as generated (for debug logs)
    tool_calls: tuple[dict[str, str], ...] = ()   # complete calls: {name, arguments}
    slot: int | None = None      # the cache slot (KV sequence) that ran the request
    drafted: int = 0             # speculative decoding: tokens drafted for this answer, and how many accepted
    draft_accepted: int = 0


Event = Union[PromptReady, PromptProgress, Idle, TextDelta, ReasoningDelta, ToolCallStart, ToolCallDelta, ToolCallEnd,
              Done]
