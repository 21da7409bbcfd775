"""GET /metrics: Prometheus' text format, parsed with prometheus_client's own parser."""

import time

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamabridge.synthetic import SCRIPTED_REPLY

HI = [{"role": "user", "content": "Hi"}]


def scrape(http) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape, after checking its format."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("llamabridge_")
        assert family.documentation
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_requests_tokens_and_latency_are_counted(server, http):
    before = scrape(http)
    client = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0)
    message = client.messages.create(model="claude-test", max_tokens=50, messages=HI)
    assert message.content[0].text == SCRIPTED_REPLY
    again = client.messages.create(model="claude-test", max_tokens=50, messages=HI)
    oa = openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)
    chunks = list(oa.chat.completions.create(model="claude-test", messages=HI, stream=True,
                                             stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == SCRIPTED_REPLY
    usage = chunks[-1].usage
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="claude-test", messages=HI, temperature=5)
    assert http.get("/no/such/path").status_code == 404
    after = scrape(http)

    requests = "llamabridge_requests_total"
    assert delta(before, after, requests, api="anthropic", route="/v1/messages", cache="main", status="200") == 2
    assert delta(before, after, requests, api="openai", route="/v1/chat/completions", cache="main",
                 status="200") == 1
    assert delta(before, after, requests, api="openai", route="/v1/chat/completions", cache="",
                 status="400") == 1
    assert delta(before, after, requests, api="", route="unmatched", cache="", status="404") == 1
    assert delta(before, after, "llamabridge_request_duration_seconds_count", api="anthropic",
                 route="/v1/messages") == 2

    evaluated = delta(before, after, "llamabridge_prompt_tokens_total", cache="main", source="evaluated")
    reused = delta(before, after, "llamabridge_prompt_tokens_total", cache="main", source="reused")
    assert reused == message.usage.cache_read_input_tokens + again.usage.cache_read_input_tokens + \
        usage.prompt_tokens_details.cached_tokens
    assert again.usage.cache_read_input_tokens > 0
    assert evaluated == message.usage.input_tokens + again.usage.input_tokens + \
        usage.prompt_tokens - usage.prompt_tokens_details.cached_tokens
    assert delta(before, after, "llamabridge_generated_tokens_total", cache="main") == \
        message.usage.output_tokens + again.usage.output_tokens + usage.completion_tokens
    assert delta(before, after, "llamabridge_time_to_first_token_seconds_count", cache="main") == 3
    assert delta(before, after, "llamabridge_time_to_first_token_seconds_sum", cache="main") > 0
    assert delta(before, after, "llamabridge_decode_tokens_per_second_count", cache="main") == 3
    buckets = [v for (name, labels), v in after.items() if name == "llamabridge_time_to_first_token_seconds_bucket"
               and ("cache", "main") in labels]
    assert buckets == sorted(buckets)             # cumulative


def test_gauges_describe_caches_and_models(http, server):
    samples = scrape(http)
    state = server.state
    for name, cache in state.pool.caches.items():
        assert value(samples, "llamabridge_slots", cache=name) == cache.n_parallel
        assert value(samples, "llamabridge_context_tokens", cache=name) == cache.n_ctx
        assert ("llamabridge_queue_depth", frozenset({("cache", name)})) in samples
        assert ("llamabridge_slots_busy", frozenset({("cache", name)})) in samples
    for name in state.pool.models:
        assert value(samples, "llamabridge_model_load_seconds", model=name) > 0
    assert value(samples, "llamabridge_ready") == 1
    assert http.head("/metrics").status_code == 200


def test_busy_slots_and_queue_depth_while_generating(server, http):
    """Four slots of `parallel`, six long streams held open: four busy and two queued, seen in one scrape."""
    oa = openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0)
    streams = [oa.chat.completions.create(model="parallel-x", messages=HI, max_tokens=2000, stream=True,
                                          temperature=0) for _ in range(6)]
    try:
        deadline = time.monotonic() + 30
        while True:              # the jobs reach their slots and the queue a moment after the headers
            samples = scrape(http)
            seen = (value(samples, "llamabridge_slots_busy", cache="parallel"),
                    value(samples, "llamabridge_queue_depth", cache="parallel"))
            if seen == (4, 2) or time.monotonic() > deadline:
                break
        assert seen == (4, 2)
    finally:
        for stream in streams:
            stream.close()
