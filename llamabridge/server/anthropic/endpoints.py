"""The Anthropic Messages API as the server serves it: /v1/messages and /v1/messages/count_tokens."""

from __future__ import annotations

import anyio
from litestar import Request, post

from ..api import Api, Call, ChatEndpoint
from ..routes import read_request, state_of
from . import serving
from .protocol import CountTokensRequest, MessagesRequest, error_body

API = Api("anthropic", error_body)


class MessagesEndpoint(ChatEndpoint):
    api = API
    path = "/v1/messages"
    schema = MessagesRequest

    def to_chat(self, call: Call):
        return serving.to_chat_request(call.body, clamp_max_tokens=call.clamp)

    def session(self, call: Call) -> str | None:
        return serving.session_key(call.body, call.headers)

    def stream(self, call: Call):
        return serving.MessageStream(serving.new_message_id(), call.body.model, call.ready.prompt_tokens)

    def build(self, call: Call, events: list) -> dict:
        return serving.build_message(serving.new_message_id(), call.body.model, events)


@post("/v1/messages/count_tokens", status_code=200, opt={"api": API})
async def count_tokens(request: Request) -> dict:
    state = state_of(request)
    req, _ = await read_request(request, state, API, CountTokensRequest)
    _, cache = state.cache_for(req.model)
    chat = serving.to_chat_request(req)
    return {"input_tokens": await anyio.to_thread.run_sync(cache.count_tokens, chat)}


API.endpoints.append(MessagesEndpoint())
API.routes.append(count_tokens)
