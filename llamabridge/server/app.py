"""The Litestar app: routes for both APIs, one error mapping, health, request logging."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import anyio
from litestar import Litestar, MediaType, Request, Response, get, head, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from ..engine.params import SamplingParams
from ..engine.request import Done
from ..errors import BridgeError, InvalidRequestError, NotFoundError
from .anthropic import serving as anthropic
from .anthropic.protocol import CountTokensRequest, MessagesRequest
from .debug import DebugTrace
from .errors import InternalError, anthropic_error, decode_body, openai_error
from .openai import serving as openai
from .openai.protocol import ChatCompletionRequest
from .state import ServerState
from .streaming import render_stream, with_heartbeat

log = logging.getLogger("llamabridge.server")

PATHS = ["POST /v1/messages", "POST /v1/messages/count_tokens", "POST /v1/chat/completions", "GET /v1/models",
         "GET /health", "GET /info"]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class AuthenticationError(BridgeError):
    status = 401
    type = "authentication_error"


class ClientDisconnectedError(BridgeError):
    """Nobody reads this answer: the status (nginx's 499) never reaches the client."""
    status = 499


def _is_openai(request: Request) -> bool:
    return request.url.path.rstrip("/").endswith(("/chat/completions", "/models"))


def _error_response(request: Request, exc: BridgeError) -> Response:
    body = openai_error(exc) if _is_openai(request) else anthropic_error(exc)
    return Response(body, status_code=exc.status, media_type=MediaType.JSON)


def _log_fault(exc: BaseException) -> BridgeError:
    log.error("internal error", exc_info=exc)
    return InternalError()


def handle_bridge_error(request: Request, exc: BridgeError) -> Response:
    return _error_response(request, exc)


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        err = NotFoundError(f"no route for {request.method} {request.url.path}; this server serves: "
                            + ", ".join(PATHS))
    elif exc.status_code == 405:
        err = InvalidRequestError(f"method {request.method} is not allowed on {request.url.path}")
        err.status = 405
    else:
        err = InvalidRequestError(str(exc.detail))
        err.status = exc.status_code
    return _error_response(request, err)


def handle_unexpected(request: Request, exc: Exception) -> Response:
    return _error_response(request, _log_fault(exc))


def _state(request: Request) -> ServerState:
    return request.app.state.bridge


def _check_key(request: Request, state: ServerState) -> None:
    if not state.api_key:
        return
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    if given != state.api_key:
        raise AuthenticationError("invalid or missing API key (x-api-key or Authorization: Bearer)")


async def _read(request: Request, state: ServerState, api: str, schema: type):
    _check_key(request, state)
    body = await request.body()
    trace = DebugTrace(state.debug_dir, api) if state.debug_dir else None
    if trace:
        trace.request(request.method, str(request.url), dict(request.headers), body)
    return decode_body(body, schema), trace


async def _observe(events: AsyncIterator, api: str, model: str, cache_name: str, trace) -> AsyncIterator:
    """Pass events through; log the request's one line (and the debug output) when it is done."""
    started = time.perf_counter()
    async for event in events:
        if isinstance(event, Done):
            usage, timings = event.usage, event.timings
            rate = timings.decode_tokens_per_second(usage.completion_tokens)
            log.info("%s %s -> %s slot %s: prompt %d (reused %d) + %d generated, %.1f tok/s, %.2fs, %s",
                     api, model, cache_name, event.slot, usage.prompt_tokens, usage.cached_tokens,
                     usage.completion_tokens, rate, time.perf_counter() - started, event.stop_reason)
            if trace:
                trace.output(event.raw_text)
        yield event


async def _traced(chunks: AsyncIterator[bytes], trace) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            if trace:
                trace.stream_chunk(chunk)
            yield chunk
    finally:
        if trace:
            trace.stream_done()


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(request: Request, events: AsyncIterator) -> list:
    """Every event of a non-streamed answer. A client that leaves first cancels its request at once
    (closing `events` cancels the job) instead of letting it generate for nobody."""
    async def gather() -> list:
        return [e async for e in events]

    collecting = asyncio.ensure_future(gather())
    watching = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
    if not collecting.done():
        collecting.cancel()
        await asyncio.gather(collecting, return_exceptions=True)
        raise ClientDisconnectedError("the client closed the connection before the answer was ready")
    return collecting.result()


async def _chat(request: Request, state: ServerState, api: str, req, trace, to_chat, stream_body, build,
                session: str | None) -> Response:
    """The flow every API shares: route, map, template and check (all before any header), then run.

    `stream_body(prepared, events)` renders the API's SSE body, `build(events)` its JSON answer;
    `session` is the client's session key (keeps its conversation on one slot).
    """
    cfg, cache = state.cache_for(req.model)
    chat = to_chat(req, SamplingParams(), clamp_max_tokens=cfg.overflow == "clamp")
    prepared = await anyio.to_thread.run_sync(cache.prepare, chat)
    state.note_system_prompt(cfg.name, chat)
    if trace:
        trace.prompt(prepared)
    job_events = cache.achat(prepared, session=session, label=f"{api} {req.model}")
    events = _observe(job_events, api, req.model, cfg.name, trace)
    if req.stream:
        body = stream_body(prepared, with_heartbeat(events, state.heartbeat_seconds))
        return Stream(_traced(body, trace), media_type="text/event-stream", headers=SSE_HEADERS)
    result = build(await _collect(request, events))
    if trace:
        trace.response(result)
    return Response(result, media_type=MediaType.JSON)


# ---------------------------------------------------------------- Anthropic

@post("/v1/messages", status_code=200)
async def create_message(request: Request) -> Response:
    state = _state(request)
    req, trace = await _read(request, state, "anthropic", MessagesRequest)
    message_id = anthropic.new_message_id()

    def stream_body(prepared, events):
        stream = anthropic.MessageStream(message_id, req.model, prepared.prompt_tokens)
        return render_stream(stream, events, _log_fault)

    return await _chat(request, state, "anthropic", req, trace, anthropic.to_chat_request, stream_body,
                       lambda events: anthropic.build_message(message_id, req.model, events),
                       anthropic.session_key(req, request.headers))


@post("/v1/messages/count_tokens", status_code=200)
async def count_tokens(request: Request) -> dict:
    state = _state(request)
    req, _ = await _read(request, state, "anthropic", CountTokensRequest)
    _, cache = state.cache_for(req.model)
    chat = anthropic.to_chat_request(req, SamplingParams())
    return {"input_tokens": await anyio.to_thread.run_sync(cache.count_tokens, chat)}


# ---------------------------------------------------------------- OpenAI

@post("/v1/chat/completions", status_code=200)
async def create_chat_completion(request: Request) -> Response:
    state = _state(request)
    req, trace = await _read(request, state, "openai", ChatCompletionRequest)
    completion_id = openai.new_completion_id()

    def stream_body(prepared, events):
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        stream = openai.CompletionStream(completion_id, req.model, include_usage)
        return render_stream(stream, events, _log_fault)

    return await _chat(request, state, "openai", req, trace, openai.to_chat_request, stream_body,
                       lambda events: openai.build_completion(completion_id, req.model, events),
                       openai.session_key(req, request.headers))


@get("/v1/models")
async def list_models(request: Request) -> dict:
    state = _state(request)
    created = int(time.time())
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "llamabridge",
                                        "type": "model", "display_name": name}
                                       for name in state.config.model_names()]}


@get("/info")
async def info(request: Request) -> dict:
    """What this server routes where: for `llamabridge cc` and `chat --url` to size their requests."""
    state = _state(request)
    config = state.config
    return {
        "name": "llamabridge", "status": state.status, "mock": state.mock,
        "models": {name: {"path": m.path} for name, m in config.models.items()},
        "caches": {name: {"model": c.model, "n_ctx": c.params.n_ctx, "n_parallel": c.params.n_parallel,
                          "overflow": c.overflow, "description": c.description,
                          **state.cache_activity(name)} for name, c in config.caches.items()},
        "routes": [{"match": r.match, "cache": r.cache} for r in config.routes],
    }


@get("/health")
async def health(request: Request) -> Response:
    state = _state(request)
    if state.status == "ready":
        return Response({"status": "ok"}, media_type=MediaType.JSON)
    body = {"status": state.status}
    if state.error:
        body["error"] = state.error
    return Response(body, status_code=503, media_type=MediaType.JSON)


@get("/", sync_to_thread=False)
def root() -> dict:
    return {"name": "llamabridge", "endpoints": PATHS}


@head("/", sync_to_thread=False)
def root_head() -> None:
    return None


def create_app(state: ServerState, load_in_background: bool = True, loader=None) -> Litestar:
    """The app over `state`; its models load in a thread once serving starts (/health says 503 till then).

    `loader(state)` does the loading (default: with log lines); `serve` passes one with a progress bar.
    """
    async def start_loading(app: Litestar) -> None:
        if state.status == "loading" and load_in_background:
            loop = asyncio.get_running_loop()
            app.state.loader = loop.run_in_executor(None, loader or load_logged, state)

    async def shutdown(app: Litestar) -> None:
        loader = getattr(app.state, "loader", None)
        if loader is not None:
            await asyncio.wait({loader}, timeout=60)
        await anyio.to_thread.run_sync(state.close)

    app = Litestar(
        route_handlers=[create_message, count_tokens, create_chat_completion, list_models, info, health, root,
                        root_head],
        exception_handlers={BridgeError: handle_bridge_error, HTTPException: handle_http_exception,
                            Exception: handle_unexpected},
        on_startup=[start_loading],
        on_shutdown=[shutdown],
        logging_config=None,
        request_max_body_size=64 * 1024 * 1024,
    )
    app.state.bridge = state
    return app


def load_logged(state: ServerState, load_progress=None) -> None:
    try:
        state.load(progress=lambda message: log.info("%s", message), load_progress=load_progress)
        log.info("ready in %.1fs", state.load_seconds)
    except Exception as exc:  # noqa: BLE001 - reported through /health and each request
        log.error("loading failed: %s", exc)


__all__ = ["create_app", "load_logged", "ServerState"]
