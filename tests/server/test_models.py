"""Model discovery in both shapes (Claude Code and the OpenAI SDK), and errors shaped by the route that failed."""

import anthropic
import openai
import pytest

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def test_openai_shape_lists_each_route_with_its_context(server, http):
    client = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert {"tool-caller", "thinker", "scripted", "random"} <= set(models)
    assert models["scripted"].context_window == 65536 and models["thinker"].context_window == 2048
    assert client.models.retrieve("claude-sonnet-4-5").context_window == 65536   # any name a route matches
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_anthropic_shape_for_clients_that_send_anthropic_version(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    page = client.models.list(limit=1000)
    ids = [m.id for m in page.data]
    assert "scripted" in ids and all(m.type == "model" and m.display_name == m.id for m in page.data)
    assert page.first_id == ids[0] and page.last_id == ids[-1] and page.has_more is False
    first_two = client.models.list(limit=2)
    assert [m.id for m in first_two.data] == ids[:2] and first_two.has_more
    following = client.models.list(limit=2, after_id=ids[1])
    assert [m.id for m in following.data] == ids[2:4]
    assert [m.id for m in client.models.list(limit=1, before_id=ids[2]).data] == [ids[1]]
    model = client.models.retrieve("claude-opus-4-8")
    assert model.id == "claude-opus-4-8" and model.type == "model"
    with pytest.raises(anthropic.NotFoundError) as info:
        client.models.retrieve("gpt-4o")
    assert info.value.body["error"]["type"] == "not_found_error"


def test_bad_limit_is_a_400_in_anthropic_shape(http):
    response = http.get("/v1/models", params={"limit": 0}, headers=ANTHROPIC_HEADERS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "limit" in error["message"]


def test_unrouted_errors_follow_the_client(http):
    """No route answered: Anthropic's clients (anthropic-version) get its shape, others OpenAI's."""
    anthropic_shape = http.get("/v1/nothing", headers=ANTHROPIC_HEADERS).json()
    assert anthropic_shape["type"] == "error" and anthropic_shape["error"]["type"] == "not_found_error"
    openai_shape = http.get("/v1/nothing").json()
    assert set(openai_shape["error"]) == {"message", "type", "param", "code"}
    assert "POST /v1/messages" in openai_shape["error"]["message"]


def test_route_decides_the_error_shape_not_the_url(http):
    """An Anthropic route answers in Anthropic's shape even without its header (and the other way round)."""
    body = http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"}).json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    body = http.post("/v1/chat/completions", content=b"{",
                     headers={**ANTHROPIC_HEADERS, "content-type": "application/json"}).json()
    assert body["error"]["type"] == "invalid_request_error" and "param" in body["error"]
