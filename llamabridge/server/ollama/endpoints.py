"""Ollama's native API as the server serves it: /api/chat, /api/generate, /api/tags, /api/show, /api/ps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from litestar import Request, get, post

from ...errors import InvalidRequestError, ModelNotFoundError
from ...runtime.pool import PoolStatus
from ..api import Api, Call, ChatEndpoint
from ..routes import read_request, state_of
from . import serving
from .protocol import VERSION, ChatRequest, GenerateRequest, ModelRequest, error_body

API = Api("ollama", error_body)


class _OllamaEndpoint(ChatEndpoint):
    api = API
    media_type = "application/x-ndjson"
    chat = True

    def model(self, body) -> str:
        return serving.routed_name(body.model)

    def to_chat(self, call: Call):
        return serving.to_chat_request(call.body, clamp_max_tokens=call.clamp)

    def stream(self, call: Call):
        return serving.NdjsonStream(call.body.model, self.chat, call.body.logprobs)

    def build(self, call: Call, events: list) -> dict:
        return serving.build(call.body.model, self.chat, events, call.body.logprobs)


class OllamaChatEndpoint(_OllamaEndpoint):
    path = "/api/chat"
    schema = ChatRequest

    def early_answer(self, call: Call) -> dict | None:
        return None if call.body.messages else serving.load_answer(call.body.model, chat=True)


class OllamaGenerateEndpoint(_OllamaEndpoint):
    path = "/api/generate"
    schema = GenerateRequest
    chat = False

    def early_answer(self, call: Call) -> dict | None:
        return None if call.body.prompt else serving.load_answer(call.body.model, chat=False)


def _listed(state) -> list[dict]:
    return [serving.model_details(state, name, cache) for name, cache in state.config.listed_models()]


def _public(details: dict) -> dict:
    return {k: details[k] for k in ("name", "model", "modified_at", "size", "digest", "details")}


@get("/api/tags", opt={"api": API})
async def tags(request: Request) -> dict:
    return {"models": [_public(d) for d in _listed(state_of(request))]}


@get("/api/ps", opt={"api": API})
async def running(request: Request) -> dict:
    state = state_of(request)
    if state.pool.status is not PoolStatus.READY:
        return {"models": []}
    expires = (datetime.now(timezone.utc) + timedelta(days=3650)).isoformat().replace("+00:00", "Z")
    return {"models": [{**_public(d), "expires_at": expires, "size_vram": 0, "context_length": d["n_ctx"]}
                       for d in _listed(state)]}


@post("/api/show", status_code=200, opt={"api": API})
async def show(request: Request) -> dict:
    state = state_of(request)
    req, _ = await read_request(request, state, API, ModelRequest)
    name = req.model or req.name
    if not name:
        raise InvalidRequestError("model is required", param="model")
    cache = state.config.route_for_model(serving.routed_name(name))
    if cache is None:
        raise ModelNotFoundError(name)
    d = serving.model_details(state, name, cache)
    info = {"general.architecture": d["architecture"]}
    if d["architecture"]:
        info[f"{d['architecture']}.context_length"] = d["n_ctx"]
    params = cache.params
    return {"modelfile": f"# served by llamabridge from cache {cache.name}\n", "template": d["template"],
            "parameters": f"num_ctx {d['n_ctx']}\nnum_batch {params.n_batch}",
            "details": d["details"], "model_info": info, "capabilities": serving.capabilities(d["template"]),
            "modified_at": d["modified_at"]}


@get("/api/version", opt={"api": API})
async def version(request: Request) -> dict:
    return {"version": VERSION}


API.endpoints.extend([OllamaChatEndpoint(), OllamaGenerateEndpoint()])
API.routes.extend([tags, show, version, running])
