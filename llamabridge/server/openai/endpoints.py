"""The OpenAI Chat Completions API as the server serves it: /v1/chat/completions."""

from __future__ import annotations

from ..api import Api, Call, ChatEndpoint
from . import serving
from .protocol import ChatCompletionRequest, error_body

API = Api("openai", error_body)


class ChatCompletionsEndpoint(ChatEndpoint):
    api = API
    path = "/v1/chat/completions"
    schema = ChatCompletionRequest

    def to_chat(self, call: Call):
        return serving.to_chat_request(call.body, clamp_max_tokens=call.clamp)

    def session(self, call: Call) -> str | None:
        return serving.session_key(call.body, call.headers)

    def stream(self, call: Call):
        body = call.body
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return serving.CompletionStream(serving.new_completion_id(), body.model, include_usage,
                                        logprobs=bool(body.logprobs))

    def build(self, call: Call, events: list) -> dict:
        return serving.build_completion(serving.new_completion_id(), call.body.model, events,
                                        logprobs=bool(call.body.logprobs))


API.endpoints.append(ChatCompletionsEndpoint())
