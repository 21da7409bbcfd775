"""The OpenAI Responses API as the server serves it: /v1/responses (Codex CLI) and stored responses."""

from __future__ import annotations

from litestar import Request, delete, get

from ...errors import NotFoundError
from ..api import Api, Call, ChatEndpoint
from ..openai import serving as openai_serving
from ..routes import state_of
from . import serving
from .protocol import ResponsesRequest, error_body

API = Api("responses", error_body)


class ResponsesEndpoint(ChatEndpoint):
    api = API
    path = "/v1/responses"
    schema = ResponsesRequest

    def to_chat(self, call: Call):
        mapped = serving.to_chat_request(call.body, call.state.responses,
                                         clamp_max_tokens=call.clamp)
        call.extra["mapped"] = mapped
        return mapped.chat

    def session(self, call: Call) -> str | None:
        return openai_serving.session_key(call.body, call.headers)     # the same keys as Chat Completions

    def stream(self, call: Call) -> serving.ResponseStream:
        req, mapped = call.body, call.extra["mapped"]
        store = call.state.responses

        def keep(response: dict) -> None:
            if req.store:
                store.put(response, mapped.history)

        return serving.ResponseStream(
            serving.response_object(serving.new_response_id(), req), mapped.tools,
            summary=req.reasoning is not None and req.reasoning.summary is not None,
            encrypted="reasoning.encrypted_content" in (req.include or []), logprobs=req.logprobs, on_done=keep)

    def build(self, call: Call, events: list) -> dict:
        return serving.build_response(self.stream(call), events)


def _stored(request: Request):
    response_id = request.path_params["response_id"]
    entry = state_of(request).responses.get(response_id)
    if entry is None:
        raise NotFoundError(f"no stored response with id {response_id!r} (responses are kept in memory while the "
                            "server runs, when the request had store: true)", param="response_id",
                            code="response_not_found")
    return entry


@get("/v1/responses/{response_id:str}", opt={"api": API})
async def retrieve_response(request: Request) -> dict:
    return _stored(request).response


@delete("/v1/responses/{response_id:str}", status_code=200, opt={"api": API})
async def delete_response(request: Request) -> dict:
    entry = _stored(request)
    state_of(request).responses.delete(entry.response["id"])
    return {"id": entry.response["id"], "object": "response", "deleted": True}


@get("/v1/responses/{response_id:str}/input_items", opt={"api": API})
async def list_input_items(request: Request) -> dict:
    items = [dict(item, id=item.get("id") or f"item_{i}") for i, item in enumerate(_stored(request).input_items)]
    if request.query_params.get("order", "desc") == "desc":
        items.reverse()
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}


API.endpoints.append(ResponsesEndpoint())
API.routes.extend([retrieve_response, delete_response, list_input_items])
