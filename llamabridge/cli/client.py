"""A small streaming client for a running server (either API), yielding the engine's own events.

`chat --url` and `bench --url` use it, so talking to a server looks like talking to a Cache.
Messages are plain text turns: [{"role": "user" | "assistant", "content": str}].
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

import httpx

from ..engine.request import (
    Done,
    Event,
    PromptReady,
    ReasoningDelta,
    StopReason,
    TextDelta,
    Timings,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ..errors import BridgeError
from ..server.anthropic import protocol as anthropic
from ..server.openai import protocol as openai


def server_key() -> str | None:
    """The key this machine's clients give a server started with --api-key: $LLAMABRIDGE_API_KEY."""
    return os.environ.get("LLAMABRIDGE_API_KEY") or None


def key_headers(key: str | None) -> dict[str, str]:
    return {"x-api-key": key, "authorization": f"Bearer {key}"} if key else {}


class RemoteError(BridgeError):
    """The server answered with an error, or could not be reached."""


class RemoteChat:
    def __init__(self, url: str, api: str = "anthropic", api_key: str | None = None, timeout: float = 600) -> None:
        """`api_key`: the server's key (default $LLAMABRIDGE_API_KEY)."""
        if api not in ("anthropic", "openai"):
            raise ValueError("api must be anthropic or openai")
        self.url = url.rstrip("/")
        self.api = api
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=key_headers(api_key or server_key()))

    def close(self) -> None:
        self.http.close()

    def stream(self, model: str, messages: list[dict], *, system: str = "", max_tokens: int = 1024,
               temperature: float | None = None, thinking: bool = False,
               tools: list[dict] | None = None) -> Iterator[Event]:
        """`tools`: OpenAI-shaped function tools (the openai API only)."""
        if self.api == "anthropic":
            # chat_template_kwargs: llama-server's /v1/messages renders the template's thinking default unless told
            # (llamabridge follows `thinking`, as Anthropic does), so both render the same prompt
            body = {"model": model, "max_tokens": max_tokens, "stream": True, "messages": messages,
                    "chat_template_kwargs": {"enable_thinking": thinking}}
            if system:
                body["system"] = system
            if thinking:
                body["thinking"] = {"type": "adaptive"}
            path = "/v1/messages"
        else:
            body = {"model": model, "max_tokens": max_tokens, "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": ([{"role": "system", "content": system}] if system else []) + messages,
                    "chat_template_kwargs": {"enable_thinking": thinking}}
            if tools:
                body["tools"] = tools
            path = "/v1/chat/completions"
        if temperature is not None:
            body["temperature"] = temperature
        started = time.perf_counter()
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise RemoteError(_error_message(response))
                parse = self._anthropic if self.api == "anthropic" else self._openai
                yield from parse(_sse(response), started)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot talk to {self.url}: {exc}") from None

    def _anthropic(self, events, started) -> Iterator[Event]:
        usage: dict[str, Any] = {}
        stop: StopReason = "end_turn"
        stop_sequence = None
        kinds: dict[int, str] = {}
        for name, data in events:
            if name == "message_start":
                usage.update(data["message"].get("usage") or {})
                yield PromptReady(usage.get("input_tokens", 0), 0, 0)
            elif name == "content_block_start":
                block = data["content_block"]
                kinds[data["index"]] = block["type"]
                if block["type"] == "tool_use":
                    yield ToolCallStart(data["index"], block["name"])
            elif name == "content_block_delta":
                delta = data["delta"]
                if delta["type"] == "text_delta":
                    yield TextDelta(delta["text"])
                elif delta["type"] == "thinking_delta":
                    yield ReasoningDelta(delta["thinking"])
                elif delta["type"] == "input_json_delta":
                    yield ToolCallDelta(data["index"], delta["partial_json"])
            elif name == "content_block_stop" and kinds.get(data["index"]) == "tool_use":
                yield ToolCallEnd(data["index"])
            elif name == "message_delta":
                usage.update(data.get("usage") or {})
                stop = anthropic.engine_stop_reason(data["delta"].get("stop_reason"))
                stop_sequence = data["delta"].get("stop_sequence")
            elif name == "error":
                raise RemoteError(data["error"]["message"])
        cached = usage.get("cache_read_input_tokens") or 0
        yield Done(stop, Usage(usage.get("input_tokens", 0) + cached, usage.get("output_tokens", 0), cached),
                   Timings(0.0, time.perf_counter() - started), stop_sequence)

    def _openai(self, events, started) -> Iterator[Event]:
        stop: StopReason = "end_turn"
        usage = {}
        open_tools: set[int] = set()
        for _, data in events:
            if data == "[DONE]":
                break
            if "error" in data:
                raise RemoteError(data["error"]["message"])
            if data.get("usage"):
                usage = data["usage"]
            for choice in data.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("reasoning_content"):
                    yield ReasoningDelta(delta["reasoning_content"])
                if delta.get("content"):
                    yield TextDelta(delta["content"])
                for call in delta.get("tool_calls") or []:
                    if call["index"] not in open_tools:
                        open_tools.add(call["index"])
                        yield ToolCallStart(call["index"], call["function"].get("name", ""))
                    if call["function"].get("arguments"):
                        yield ToolCallDelta(call["index"], call["function"]["arguments"])
                if choice.get("finish_reason"):
                    stop = openai.engine_stop_reason(choice["finish_reason"])
        for index in sorted(open_tools):
            yield ToolCallEnd(index)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        yield Done(stop, Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached),
                   Timings(0.0, time.perf_counter() - started))


def _sse(response: httpx.Response):
    name, data = None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            payload = "\n".join(data)
            yield name, payload if payload == "[DONE]" else json.loads(payload)
            name, data = None, []


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    error = body.get("error") or {}
    return f"HTTP {response.status_code}: {error.get('message') or body}"
