"""Grammars a request asks for are bounded: a hostile schema is a 400 naming the field on every API that takes
one, and the largest allowed one is built off the event loop while others are served."""

from concurrent.futures import ThreadPoolExecutor

import httpx

HUGE = {"type": "object", "properties": {"v": {"enum": [f"value-{i}" for i in range(100_000)]}}, "required": ["v"]}
LARGEST = {"type": "object", "properties": {"v": {"enum": [f"v{i:04d}" for i in range(1000)]}}, "required": ["v"]}
HI = [{"role": "user", "content": "Hi"}]


def test_a_huge_enum_is_a_400_naming_the_field_on_every_api(http):
    answer = http.post("/v1/chat/completions", json={
        "model": "random", "max_tokens": 5, "messages": HI,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": HUGE}}})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "response_format.json_schema.schema.properties.v.enum"
    answer = http.post("/v1/responses", json={"model": "random", "max_output_tokens": 5, "input": "Hi",
                                              "text": {"format": {"type": "json_schema", "name": "x", "schema": HUGE}}})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "text.format.schema.properties.v.enum"
    answer = http.post("/api/chat", json={"model": "random", "stream": False, "messages": HI, "format": HUGE})
    assert answer.status_code == 400 and "format.properties.v.enum" in answer.json()["error"]
    answer = http.post("/v1/messages", json={"model": "random", "max_tokens": 5, "messages": HI, "tool_choice":
                                             {"type": "any"}, "tools": [{"name": "pick", "input_schema": HUGE}]})
    assert answer.status_code == 400 and "tools[0] (pick).parameters" in answer.json()["error"]["message"]
    assert http.get("/health").json() == {"status": "ok"}


def test_the_largest_allowed_grammar_runs_while_health_and_another_cache_answer(server):
    with httpx.Client(base_url=server.url, timeout=600) as http:
        def constrained():
            return http.post("/v1/chat/completions", json={
                "model": "random", "max_tokens": 12, "temperature": 0, "messages": HI,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": LARGEST}}})

        def other():
            return http.post("/v1/messages", json={"model": "claude-x", "max_tokens": 20, "messages": HI})

        with ThreadPoolExecutor(2) as pool:
            big, fast = pool.submit(constrained), pool.submit(other)
            assert http.get("/health").json() == {"status": "ok"}
            assert fast.result().status_code == 200
            answer = big.result()
    assert answer.status_code == 200
    text = answer.json()["choices"][0]["message"]["content"]
    assert text.startswith('{"v":"v') or text.startswith('{ "v"')      # held to the schema, cut by max_tokens
