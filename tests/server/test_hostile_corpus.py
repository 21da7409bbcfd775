"""A generated corpus of malformed and hostile requests on every endpoint of every API.

Each case must get an answer below 500, an error in its API's own shape, and the server must
answer good requests afterwards. The cases: wrong types and extreme values for every field,
unknown roles and block types, NUL bytes and invalid UTF-8, truncated, non-object and deeply
nested JSON, wrong content types, unknown paths and methods.
"""

from __future__ import annotations

import json

import httpx
import pytest

HI = [{"role": "user", "content": "Hi"}]
MODEL = "small-x"          # a 256-token cache: a mutation that is valid generates little

BAD_VALUES = [None, 0, -1, 2**63, 10**40, 1e308, -1e308, "", "x" * 200_000, "\u0000\u0000", "\ud800?", [], [None],
              [[[]]], {}, {"a": {"b": [1, {"c": None}]}}, True, "NaN"]

ENDPOINTS = {
    "/v1/messages": ("anthropic", {"model": MODEL, "max_tokens": 5, "messages": HI},
                     ["system", "tools", "tool_choice", "thinking", "temperature", "top_p", "top_k", "stop_sequences",
                      "stream", "metadata"]),
    "/v1/messages/count_tokens": ("anthropic", {"model": MODEL, "messages": HI}, ["system", "tools", "thinking"]),
    "/v1/chat/completions": ("openai", {"model": MODEL, "max_tokens": 5, "messages": HI},
                             ["tools", "tool_choice", "temperature", "top_p", "stop", "stream", "n", "logprobs",
                              "top_logprobs", "logit_bias", "response_format", "seed", "stream_options",
                              "max_completion_tokens", "chat_template_kwargs", "reasoning_effort"]),
    "/v1/responses": ("openai", {"model": MODEL, "max_output_tokens": 5, "input": "Hi"},
                      ["instructions", "tools", "tool_choice", "reasoning", "text", "previous_response_id", "include",
                       "top_logprobs", "store", "stream", "temperature"]),
    "/api/chat": ("ollama", {"model": MODEL, "stream": False, "options": {"num_predict": 5}, "messages": HI},
                  ["format", "think", "tools", "keep_alive", "logprobs", "top_logprobs"]),
    "/api/generate": ("ollama", {"model": MODEL, "stream": False, "options": {"num_predict": 5}, "prompt": "Hi"},
                      ["system", "format", "think", "raw", "suffix", "images", "context"]),
    "/api/show": ("ollama", {"model": MODEL}, ["verbose"]),
}

MESSAGE_ROLES = ["wizard", "", "SYSTEM", None, 7, ["user"]]
CONTENTS = [None, 7, "", "\u0000", [{"type": "hologram"}], [{"type": "text"}], [{"type": "text", "text": 5}],
            [{"type": "tool_result"}], [{"type": "tool_use", "name": "x"}], [{"type": "image"}], [{}], [[]],
            [{"type": "text", "text": "a" * 100_000}], {"type": "text", "text": "x"}]
OPTION_VALUES = [-1, "hot", None, [], 1e308, {"x": 1}]


def body_cases(path: str) -> list[tuple[str, bytes, dict]]:
    """(what, body, headers) for one POST endpoint."""
    _, base, extra_fields = ENDPOINTS[path]
    cases = []

    def add(what: str, body, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        cases.append((what, data, {"content-type": "application/json", **(headers or {})}))

    for field in [*base, *extra_fields]:
        for value in BAD_VALUES:
            add(f"{field}={str(value)[:30]!r}", {**base, field: value})
        add(f"without {field}", {k: v for k, v in base.items() if k != field})
    messages_key = "messages" if "messages" in base else None
    if messages_key:
        for role in MESSAGE_ROLES:
            add(f"role {role!r}", {**base, "messages": [{"role": role, "content": "Hi"}]})
        for content in CONTENTS:
            add(f"content {str(content)[:30]}", {**base, "messages": [{"role": "user", "content": content}]})
        add("assistant only", {**base, "messages": [{"role": "assistant", "content": "x"}]})
        add("10k messages", {**base, "messages": HI * 10_000})
    if "options" in base:
        for option in ("temperature", "top_p", "top_k", "num_predict", "stop", "seed", "num_ctx"):
            for value in OPTION_VALUES:
                add(f"options.{option}={value!r}", {**base, "options": {option: value}})
    if path == "/v1/responses":
        for item in ({"type": "hologram"}, {"type": "function_call_output"}, {"type": "message", "role": "wizard"},
                     {"type": "item_reference", "id": "nope"}, 5, None):
            add(f"input item {item!r}", {**base, "input": [item]})
    raw = json.dumps(base).encode()
    for cut in (1, len(raw) // 3, len(raw) // 2, len(raw) - 1):
        add(f"truncated at {cut}", raw[:cut])
    for what, body in (("empty", b""), ("null", b"null"), ("array", b"[]"), ("string", b'"x"'), ("number", b"1"),
                       ("nested 50k", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
                       ("nested arrays", b"[" * 50_000 + b"]" * 50_000),
                       ("invalid UTF-8", raw.replace(b'"Hi"', b'"\xff\xfe\xc3"')),
                       ("raw NUL", raw.replace(b'"Hi"', b'"H\x00i"')),
                       ("duplicate keys", raw[:-1] + b', "model": 5}'),
                       ("trailing garbage", raw + b"}}}")):
        add(what, body)
    add("form encoded", b"model=x&max_tokens=5", {"content-type": "application/x-www-form-urlencoded"})
    add("text/plain", raw, {"content-type": "text/plain"})
    add("no content type", raw, {"content-type": ""})
    return cases


SHAPES = {"anthropic", "openai", "ollama"}


def check(shape: str, response: httpx.Response) -> str | None:
    """Why the answer is wrong, or None."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:200]}"
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"status {response.status_code} without a JSON body: {response.text[:200]!r}"
    if shape == "anthropic":
        ok = body.get("type") == "error" and set(body.get("error", {})) == {"type", "message"}
    elif shape == "openai":
        ok = isinstance(body.get("error"), dict) and set(body["error"]) == {"message", "type", "param", "code"}
    else:
        ok = set(body) == {"error"} and isinstance(body["error"], str)
    return None if ok else f"status {response.status_code}, not {shape}'s error shape: {body}"


def run(http: httpx.Client, cases) -> tuple[int, list[str]]:
    failures = []
    for shape, method, path, what, body, headers in cases:
        with http.stream(method, path, content=body, headers=headers) as response:
            response.read()
            problem = check(shape, response)
        if problem:
            failures.append(f"{method} {path} [{what}]: {problem}")
    return len(cases), failures


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_bodies(client, path):
    shape = ENDPOINTS[path][0]
    count, failures = run(client, [(shape, "POST", path, what, body, headers)
                                   for what, body, headers in body_cases(path)])
    assert count >= 30 and not failures, "\n".join(failures[:20])
    assert_still_serving(client)


def test_paths_and_methods(client):
    cases = []
    for path, (shape, _, _) in ENDPOINTS.items():
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            cases.append((shape, method, path, "wrong method", b"", {}))
    for method, path, shape in (("GET", "/v1/responses/" + "x" * 10_000, "openai"),
                                ("DELETE", "/v1/responses/resp_nope", "openai"),
                                ("GET", "/v1/responses/%ff%fe/input_items", "openai"),
                                ("GET", "/v1/models/" + "m" * 10_000, "openai"),
                                ("GET", "/v1/nope", "openai"), ("POST", "/v2/messages", "openai"),
                                ("GET", "/api/nope", "ollama"), ("POST", "/api/pull", "ollama"),
                                ("GET", "/%00", "openai"), ("GET", "/v1/messages/../../etc/passwd", "openai"),
                                ("GET", "/" + "a/" * 3000, "openai"), ("OPTIONS", "/v1/messages", "openai"),
                                ("POST", "/health", "openai"), ("POST", "/metrics", "openai")):
        cases.append((shape, method, path, "path", b"{}", {"content-type": "application/json"}))
    cases.append(("anthropic", "GET", "/v1/nope", "anthropic client", b"", {"anthropic-version": "2023-06-01"}))
    cases.append(("anthropic", "PUT", "/v1/messages", "anthropic client", b"", {"anthropic-version": "2023-06-01"}))
    count, failures = run(client, cases)
    assert count >= 40 and not failures, "\n".join(failures[:20])
    assert_still_serving(client)


def test_the_corpus_is_large():
    assert sum(len(body_cases(path)) for path in ENDPOINTS) >= 200


def assert_still_serving(http: httpx.Client) -> None:
    answer = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HI})
    assert answer.status_code == 200 and answer.json()["content"]
    answer = http.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 5, "messages": HI})
    assert answer.status_code == 200 and answer.json()["choices"]
    assert http.get("/health").json() == {"status": "ok"}
