"""The route factory: every API's chat endpoints run through one flow, and every handler knows its API.

The flow: check the key, decode the body, route the model name to a cache, map the request
to a ChatRequest, template and tokenize it (all before any header, so a bad request is a
real HTTP error), then stream or collect the engine's events.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import AsyncIterator

import anyio
from litestar import MediaType, Request, Response, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.response import Stream

from ..engine.request import Done, Idle, PromptProgress, PromptReady
from ..errors import BridgeError
from .api import Api, Call, ChatEndpoint
from .debug import DebugTrace
from .errors import AuthenticationError, ClientDisconnectedError, InternalError, decode_body
from .logtext import shown
from .metrics import CACHE_KEY, STARTED_KEY
from .state import ServerState
from .streaming import render_stream

log = logging.getLogger("llamabridge.server")

TRACE_KEY = "llamabridge.trace"     # the request state's key of a request's --debug trace
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def state_of(request: ASGIConnection) -> ServerState:
    return request.app.state.bridge


def api_of(request: Request) -> Api | None:
    """The API of the route that is answering; None where the route serves every API's clients
    (model lists) or no route matched (404, 405)."""
    handler = request.scope.get("route_handler")
    return handler.opt.get("api") if handler is not None else None


def check_key(request: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The app's guard: one of the server's API keys, from x-api-key or Authorization: Bearer, on every
    route but those marked public (/health, HEAD /). Every key is compared, in constant time."""
    keys = state_of(request).api_keys
    if not keys or handler.opt.get("public"):
        return
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    if not matched:
        raise AuthenticationError("invalid or missing API key (x-api-key or Authorization: Bearer)")


def log_fault(exc: BaseException) -> BridgeError:
    log.error("internal error", exc_info=exc)
    return InternalError()


async def read_request(request: Request, state: ServerState, api: Api, schema: type):
    """The decoded body, and the request's --debug trace (kept in the scope: an error is written to it too)."""
    body = await request.body()
    trace = DebugTrace(state.debug_dir, api.name) if state.debug_dir else None
    if trace:
        request.state[TRACE_KEY] = trace
        trace.request(request.method, request.url.path, request.url.query, dict(request.headers), body)
    return decode_body(body, schema), trace


def chat_route(endpoint: ChatEndpoint):
    """The Litestar handler of one chat endpoint."""
    @post(endpoint.path, status_code=200, opt={"api": endpoint.api},
          name=f"{endpoint.api.name}:{endpoint.path}")
    async def handler(request: Request) -> Response:
        state = state_of(request)
        body, trace = await read_request(request, state, endpoint.api, endpoint.schema)
        return await run_chat(Call(state, request, body), endpoint, trace)
    return handler


async def run_chat(call: Call, endpoint: ChatEndpoint, trace) -> Response:
    state, model = call.state, endpoint.model(call.body)
    call.cache, cache = state.cache_for(model)
    call.request.state[CACHE_KEY] = call.cache.name
    early = endpoint.early_answer(call)
    if early is not None:
        return Response(early, media_type=MediaType.JSON)
    chat = endpoint.to_chat(call)
    call.prepared = await anyio.to_thread.run_sync(cache.prepare, chat)
    session = endpoint.session(call)
    state.note_system_prompt(call.cache.name, chat, session)
    if trace:
        trace.prompt(call.prepared)
    api = endpoint.api.name
    streams = endpoint.streams(call.body)
    job_events = cache.achat(call.prepared, session=session, label=f"{api} {shown(model)}",
                             idle=state.heartbeat_seconds if streams else None,     # a stream's keep-alive
                             stop=state.ending)
    started = call.request.state.get(STARTED_KEY) or time.perf_counter()     # no metrics wrapper: from here
    events = _observe(job_events, api, model, call.cache.name, trace, state, started)
    if streams:
        renderer = endpoint.stream(call)
        chunks = render_stream(renderer, events, log_fault)
        return Stream(_traced(chunks, trace) if trace else chunks, media_type=endpoint.media_type,
                      headers=STREAM_HEADERS)
    result = endpoint.build(call, await _collect(call.request, events))
    if trace:
        trace.response(result)
    return Response(result, media_type=MediaType.JSON)


async def _observe(events: AsyncIterator, api: str, model: str, cache_name: str, trace, state: ServerState,
                   started: float) -> AsyncIterator:
    """Pass events through; count the first output and the finished request for /metrics, and log the
    request's one line (and the debug output) when it is done. The chat counts as running meanwhile."""
    metrics = state.metrics
    state.running += 1
    try:
        first = True
        async for event in events:
            if first and not isinstance(event, (PromptReady, PromptProgress, Idle, Done)):
                first = False
                metrics.first_output(cache_name, time.perf_counter() - started)
            if isinstance(event, Done):
                usage, timings = event.usage, event.timings
                rate = timings.decode_tokens_per_second(usage.completion_tokens)
                metrics.chat_done(cache_name, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, rate)
                drafts = f", {event.draft_accepted}/{event.drafted} drafted accepted" if event.drafted else ""
                log.info("%s %s -> %s slot %s: prompt %d (reused %d) + %d generated%s, %.1f tok/s, %.2fs, %s",
                         api, shown(model), cache_name, event.slot, usage.prompt_tokens, usage.cached_tokens,
                         usage.completion_tokens, drafts, rate, time.perf_counter() - started, event.stop_reason)
                if trace:
                    trace.output(event.raw_text)
            yield event
    finally:
        state.running -= 1


async def _traced(chunks: AsyncIterator[bytes], trace) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            trace.stream_chunk(chunk)
            yield chunk
    finally:
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


def log_rejected(method: str, path: str, exc: BridgeError, client, user_agent: str | None = None) -> None:
    """The one line of a request answered with an error status (a fault is logged apart, with its traceback)."""
    if isinstance(exc, InternalError):
        return                                   # log_fault wrote it, with the traceback
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    who = ("%s:%s" % tuple(client)) if client else "a client"
    log.log(level, "%s %s -> %d: %s (%s%s)", method, shown(path), exc.status, shown(exc.message, 300), who,
            f", {shown(user_agent)}" if user_agent else "")


def error_response(api: Api, exc: BridgeError) -> Response:
    return Response(api.error_body(exc), status_code=exc.status, media_type=MediaType.JSON)


