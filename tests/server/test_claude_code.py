"""Claude Code's real requests (captured from 2.1.197) replayed against the server, and its cache behaviour."""

import copy
import json

import pytest

from ..support import FIXTURES, sse_events

CAPTURES = sorted(FIXTURES.glob("claude-code-*-request.json"))
pytestmark = pytest.mark.skipif(not CAPTURES, reason=f"captured requests not found in {FIXTURES}")
SKIP_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def replay(http, capture: dict, body: dict | None = None):
    headers = {k: v for k, v in capture["headers"].items() if k.lower() not in SKIP_HEADERS}
    with http.stream(capture["method"], capture["path"], json=body or capture["body"], headers=headers) as response:
        return response.status_code, ([e for e in sse_events(response) if e[0] != "ping"]
                                      if response.status_code == 200 else response.read())


@pytest.mark.parametrize("capture", [p.name for p in CAPTURES])
def test_captured_request_streams(http, capture):
    status, events = replay(http, load(capture))
    assert status == 200, events
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [d["index"] for n, d in events if n == "content_block_start"]
    assert starts == list(range(len(starts))), "block indices sequential from 0"
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert stops == starts
    usage = events[0][1]["message"]["usage"]
    assert usage["input_tokens"] > 5000, "the whole system prompt and tools were templated"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")


def with_billing(body: dict, version: str) -> dict:
    body = copy.deepcopy(body)
    first = body["system"][0]
    assert first["text"].startswith("x-anthropic-billing-header:")
    first["text"] = f"x-anthropic-billing-header: cc_version=2.1.197.{version}; cc_entrypoint=sdk-cli; cch=ab{version};"
    return body


def usage_of(events) -> dict:
    return [d for n, d in events if n == "message_delta"][-1]["usage"]


def total_prompt(usage: dict) -> int:
    return usage["input_tokens"] + usage["cache_read_input_tokens"]


def test_billing_header_does_not_break_the_prefix_cache(http):
    capture = load("claude-code-2.1.197-default-model-request.json")
    first_body = with_billing(capture["body"], "aaa")
    status, first = replay(http, capture, first_body)
    assert status == 200
    second_body = with_billing(capture["body"], "bbb")   # a new session's header...
    second_body["messages"] += [                            # ...and one more turn
        {"role": "assistant", "content": [{"type": "text", "text": "Hello! What can I do?"}]},
        {"role": "user", "content": [{"type": "text", "text": "List the files, please."}]},
    ]
    status, second = replay(http, capture, second_body)
    assert status == 200
    assert usage_of(second)["cache_read_input_tokens"] >= 0.95 * total_prompt(usage_of(first))


def test_haiku_request_between_turns_keeps_the_main_cache(http):
    capture = load("claude-code-2.1.197-messages-request.json")
    status, first = replay(http, capture)
    assert status == 200
    haiku = {"model": "claude-haiku-4-5-20251001", "max_tokens": 512, "stream": True,
             "system": [{"type": "text", "text": "Summarize this coding conversation in under 50 characters."}],
             "messages": [{"role": "user", "content": "List the files in the current directory"}]}
    status, background = replay(http, capture, haiku)
    assert status == 200 and usage_of(background)["cache_read_input_tokens"] < 100
    body = copy.deepcopy(capture["body"])
    body["messages"] += [{"role": "assistant", "content": [{"type": "text", "text": "Sure."}]},
                         {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}]
    status, second = replay(http, capture, body)
    assert status == 200
    assert usage_of(second)["cache_read_input_tokens"] >= 0.95 * total_prompt(usage_of(first))


def test_system_message_inside_messages_joins_the_user_turn(server):
    from llamabridge.server.anthropic.protocol import MessagesRequest
    from llamabridge.server.anthropic.serving import to_chat_request
    from llamabridge.server.errors import decode_body

    body = load("claude-code-2.1.197-tool-result-request.json")["body"]
    request = decode_body(json.dumps(body).encode(), MessagesRequest)
    chat = to_chat_request(request)
    roles = [m["role"] for m in chat.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert "billing" not in chat.messages[0]["content"]
    assert chat.messages[0]["content"].startswith("You are a Claude agent")
    user_text = " ".join(p["text"] for p in chat.messages[1]["content"])
    assert "Available agent types" in user_text       # the role-system message, kept in the user turn
    assert chat.messages[2]["tool_calls"][0]["function"]["name"] == "Bash"
    assert chat.messages[3]["tool_call_id"] == "toolu_probe_87865e0d117a418e"


def test_pings_keep_the_client_alive_during_prompt_evaluation(http):
    capture = load("claude-code-2.1.197-messages-request.json")
    body = with_billing(capture["body"], "ping")
    body["system"][1]["text"] += " (a different prefix: the whole prompt is evaluated)"
    headers = {k: v for k, v in capture["headers"].items() if k.lower() not in SKIP_HEADERS}
    with http.stream("POST", capture["path"], json=body, headers=headers) as response:
        names = [n for n, _ in sse_events(response)]
    first_block = names.index("content_block_start")
    assert names[0] == "message_start"
    assert "ping" in names[1:first_block]


def test_system_prompt_change_is_logged_per_cache(http, caplog):
    base = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level("WARNING", logger="llamabridge.server"):
        http.post("/v1/messages", json={**base, "system": "Version one."})
        caplog.clear()   # earlier tests may have used this cache with another system prompt
        http.post("/v1/messages", json={**base, "system": "Version one."})
        assert not [r for r in caplog.records if "system prompt changed" in r.getMessage()]
        http.post("/v1/messages", json={**base, "system": "Version two."})
    warnings = [r.getMessage() for r in caplog.records if "system prompt changed" in r.getMessage()]
    assert len(warnings) == 1 and "cache fast" in warnings[0]


def test_another_conversation_on_the_slot_is_not_a_system_prompt_change(http, caplog):
    """opencode and Qwen Code send a title request (its own system prompt, no tools) between the turns of
    their main conversation, on the same one-slot cache."""
    tools = [{"name": "bash", "description": "run", "input_schema": {"type": "object", "properties": {}}}]
    main = {"model": "claude-haiku-4-5", "max_tokens": 5, "system": "You are an agent.", "tools": tools,
            "messages": [{"role": "user", "content": "fix the bug"}]}
    title = {"model": "claude-haiku-4-5", "max_tokens": 5, "system": "Write a title.",
             "messages": [{"role": "user", "content": "fix the bug"}]}
    with caplog.at_level("WARNING", logger="llamabridge.server"):
        for body in (main, title, main, title):
            assert http.post("/v1/messages", json=body).status_code == 200
        assert not [r for r in caplog.records if "system prompt changed" in r.getMessage()]
        http.post("/v1/messages", json={**main, "system": "You are another agent."})
        assert len([r for r in caplog.records if "system prompt changed" in r.getMessage()]) == 1
        headers = {"X-Claude-Code-Session-Id": "s-1"}
        for system in ("One.", "Two."):        # a session is one conversation, whatever its messages
            http.post("/v1/messages", json={**title, "system": system}, headers=headers)
        assert len([r for r in caplog.records if "system prompt changed" in r.getMessage()]) == 2
