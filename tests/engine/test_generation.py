"""Chat generation on real synthetic models: determinism, end of turn, stops, limits, tool calls."""

import json
import threading

import pytest

from llamabridge.engine import (
    GREEDY,
    CacheParams,
    ChatRequest,
    Done,
    PromptReady,
    SamplingParams,
    TextDelta,
    ThinkingParams,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from llamabridge.engine.output import OutputReader
from llamabridge.errors import InvalidRequestError
from llamabridge.synthetic import SCRIPTED_REPLY

HI = [{"role": "user", "content": "Say hi."}]


def text_of(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def done_of(events) -> Done:
    assert isinstance(events[-1], Done)
    return events[-1]


@pytest.fixture
def cache(qwen3):
    cache = qwen3.cache(CacheParams(n_ctx=1024, n_batch=256))
    yield cache
    cache.close()


def test_greedy_is_deterministic_across_caches(qwen3):
    request = ChatRequest(HI, sampling=GREEDY, max_tokens=24)
    outputs = []
    for _ in range(2):
        with qwen3.cache(CacheParams(n_ctx=512)) as cache:
            outputs.append(done_of(list(cache.chat(request))).raw_text)
            # same cache, again (the prompt is now reused from the KV)
            outputs.append(done_of(list(cache.chat(request))).raw_text)
    assert outputs[0] and len(set(outputs)) == 1


def test_seeded_sampling_is_reproducible(cache):
    request = ChatRequest(HI, sampling=SamplingParams(temperature=1.0, seed=1234), max_tokens=16)
    first = done_of(list(cache.chat(request))).raw_text
    assert done_of(list(cache.chat(request))).raw_text == first


def test_events_and_usage(cache):
    events = list(cache.chat(ChatRequest(HI, sampling=GREEDY, max_tokens=10)))
    ready = events[0]
    assert isinstance(ready, PromptReady) and ready.max_tokens == 10
    done = done_of(events)
    assert done.stop_reason == "max_tokens"
    assert done.usage.completion_tokens == 10
    assert done.usage.prompt_tokens == ready.prompt_tokens
    assert text_of(events).strip() == done.raw_text.strip()


def test_scripted_model_ends_its_turn(scripted):
    with scripted.cache(CacheParams(n_ctx=512)) as cache:
        for thinking in (True, False):
            request = ChatRequest(HI, sampling=GREEDY, max_tokens=100, thinking=ThinkingParams(enabled=thinking))
            events = list(cache.chat(request))
            done = done_of(events)
            assert done.stop_reason == "end_turn"
            assert text_of(events) == SCRIPTED_REPLY
            assert done.usage.completion_tokens == len(scripted.tokenize(SCRIPTED_REPLY)) + 1  # + end of turn


def test_stop_sequence_never_leaks(scripted):
    with scripted.cache(CacheParams(n_ctx=512)) as cache:
        events = list(cache.chat(ChatRequest(HI, sampling=GREEDY, max_tokens=100, stop=("llamabridge!",))))
        done = done_of(events)
        assert done.stop_reason == "stop_sequence" and done.stop_sequence == "llamabridge!"
        assert text_of(events) == "Hello from "
        assert all("llam" not in e.text for e in events if isinstance(e, TextDelta))


def test_stop_sequence_that_never_completes_is_released(scripted):
    with scripted.cache(CacheParams(n_ctx=512)) as cache:
        events = list(cache.chat(ChatRequest(HI, sampling=GREEDY, max_tokens=100, stop=("help!",))))
        assert text_of(events) == SCRIPTED_REPLY
        assert done_of(events).stop_reason == "end_turn"


TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
                       "required": ["unit"], "additionalProperties": False},
    },
}]


@pytest.mark.parametrize("tool_choice, parallel", [("required", False), ("required", True), ("auto", True)])
def test_tool_call_is_streamed_and_parses(tool_caller, tool_choice, parallel):
    request = ChatRequest([{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice=tool_choice,
                          parallel_tool_calls=parallel, sampling=GREEDY, max_tokens=200,
                          thinking=ThinkingParams(enabled=False))
    with tool_caller.cache(CacheParams(n_ctx=1024)) as cache:
        events = list(cache.chat(request))
    done = done_of(events)
    assert done.stop_reason == "tool_use"
    assert len(done.tool_calls) == 1
    call = done.tool_calls[0]
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"])["unit"] in ("c", "f")
    kinds = [type(e) for e in events if isinstance(e, (ToolCallStart, ToolCallDelta, ToolCallEnd))]
    assert kinds[0] is ToolCallStart and kinds[-1] is ToolCallEnd
    streamed = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert streamed == call["arguments"]
    assert not text_of(events).strip()


def test_tool_choice_none_generates_no_call(tool_caller):
    request = ChatRequest([{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="none",
                          sampling=GREEDY, max_tokens=20, thinking=ThinkingParams(enabled=False))
    with tool_caller.cache(CacheParams(n_ctx=1024)) as cache:
        events = list(cache.chat(request))
    assert not any(isinstance(e, ToolCallStart) for e in events)
    assert done_of(events).stop_reason != "tool_use"


def test_incomplete_tool_call_comes_back_as_text(tool_caller):
    # cut off inside the call by max_tokens: no crash, the partial call is reported as generated
    request = ChatRequest([{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="required",
                          sampling=GREEDY, max_tokens=8, thinking=ThinkingParams(enabled=False))
    with tool_caller.cache(CacheParams(n_ctx=1024)) as cache:
        events = list(cache.chat(request))
    done = done_of(events)
    assert done.stop_reason == "max_tokens"
    assert done.raw_text.startswith("<tool_call>")


def test_tool_calls_are_parsed_on_the_consumers_thread(tool_caller, monkeypatch):
    # the parser re-reads the whole output each time: it runs beside the next decode, not between two
    threads = set()
    read = OutputReader.read

    def recording(self, items):
        threads.add(threading.current_thread())
        return read(self, items)

    monkeypatch.setattr(OutputReader, "read", recording)
    request = ChatRequest([{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="required",
                          sampling=GREEDY, max_tokens=200, thinking=ThinkingParams(enabled=False))
    with tool_caller.cache(CacheParams(n_ctx=1024)) as cache:
        events = list(cache.chat(request))
    assert threads == {threading.current_thread()}
    assert done_of(events).stop_reason == "tool_use"


def test_a_parser_failure_ends_that_chat_only(cache):
    request = ChatRequest(HI, sampling=GREEDY, max_tokens=16)
    stream = cache.chat(request)
    stream.job.output.parser.close()          # every feed now raises
    with pytest.raises(ValueError, match="parser is closed"):
        list(stream)
    stream.job.ended.wait(30)                 # the job was cancelled: its slot is free again
    assert done_of(list(cache.chat(request))).usage.completion_tokens == 16


def test_json_schema_output(qwen3):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    with qwen3.cache(CacheParams(n_ctx=1024)) as cache:
        done = cache.complete(ChatRequest(HI, sampling=GREEDY, max_tokens=60, json_schema=schema,
                                          thinking=ThinkingParams(enabled=False)))
    assert json.loads(done.raw_text)["ok"] in (True, False)


def logprobs_of(events):
    return [entry for e in events if isinstance(e, TextDelta) for entry in e.logprobs]


def test_logprobs_cover_each_text_token_with_its_alternatives(scripted):
    with scripted.cache(CacheParams(n_ctx=512)) as cache:
        plain = list(cache.chat(ChatRequest(HI, sampling=GREEDY, max_tokens=100)))
        events = list(cache.chat(ChatRequest(HI, sampling=GREEDY, max_tokens=100, logprobs=3)))
    assert not logprobs_of(plain)
    assert text_of(events) == text_of(plain) == SCRIPTED_REPLY
    entries = logprobs_of(events)
    assert b"".join(e.token for e in entries).decode() == SCRIPTED_REPLY
    assert len(entries) == done_of(events).usage.completion_tokens - 1     # the end of turn has none
    for entry in entries:
        assert len(entry.top) == 3 and entry.top[0] == (entry.token, entry.logprob)   # greedy: the likeliest
        assert entry.logprob <= 0


def test_logprobs_of_tokens_held_by_a_stop_or_spent_on_a_tool_call(scripted, tool_caller):
    with scripted.cache(CacheParams(n_ctx=512)) as cache:
        events = list(cache.chat(ChatRequest(HI, sampling=GREEDY, max_tokens=100, stop=("llamabridge!",),
                                             logprobs=0)))
    # the tokens of the stop sequence never reach the text, nor do their log-probabilities
    assert b"".join(e.token for e in logprobs_of(events)).decode().startswith(text_of(events))
    assert all(e.top == () for e in logprobs_of(events))
    request = ChatRequest([{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="required",
                          sampling=GREEDY, max_tokens=200, thinking=ThinkingParams(enabled=False), logprobs=1)
    with tool_caller.cache(CacheParams(n_ctx=1024)) as cache:
        events = list(cache.chat(request))
    assert done_of(events).stop_reason == "tool_use"
    assert b"".join(e.token for e in logprobs_of(events)).decode() == text_of(events)


def test_logit_bias_is_checked_and_applied(scripted):
    with scripted.cache(CacheParams(n_ctx=512)) as cache:
        first = scripted.tokenize(SCRIPTED_REPLY)[0]
        banned = SamplingParams(temperature=0.0, logit_bias=((first, -100.0),))
        events = list(cache.chat(ChatRequest(HI, sampling=banned, max_tokens=5)))
        assert not text_of(events).startswith(scripted.detokenize([first]))
        with pytest.raises(InvalidRequestError, match="logit_bias: token 10000000 is not in the vocabulary"):
            cache.prepare(ChatRequest(HI, sampling=SamplingParams(logit_bias=((10_000_000, 1.0),))))
