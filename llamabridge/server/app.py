"""The Litestar app: every API's routes, one error mapping, model lists, health, /info."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timezone

import anyio
import msgspec
from litestar import HttpMethod, Litestar, MediaType, Request, Response, get, head, route
from litestar.exceptions import HTTPException

from ..errors import BridgeError, InvalidRequestError, ModelNotFoundError, NotFoundError, RequestTooLargeError
from ..runtime.pool import PoolStatus
from .anthropic.endpoints import API as ANTHROPIC
from .api import Api
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .ollama.endpoints import API as OLLAMA
from .openai.endpoints import API as OPENAI
from .responses.endpoints import API as RESPONSES
from .routes import TRACE_KEY, api_of, chat_route, check_key, error_response, log_fault, log_rejected, state_of
from .state import ServerState

log = logging.getLogger("llamabridge.server")

APIS: list[Api] = [ANTHROPIC, OPENAI, RESPONSES, OLLAMA]
GENERAL_PATHS = ["GET /v1/models", "GET /v1/models/{model}", "GET /health", "GET /info", "GET /metrics",
                 "GET /api/hello"]
MAX_BODY = 64 * 1024 * 1024
PATH_OWNERS = (("/v1/messages", ANTHROPIC), ("/api", OLLAMA))
# every read-only endpoint answers HEAD too (probes, load balancers)
READ: list[HttpMethod] = [HttpMethod.GET, HttpMethod.HEAD]


def served_paths() -> list[str]:
    paths = [f"POST {e.path}" for api in APIS for e in api.endpoints]
    paths += [f"{method} {path}" for api in APIS for route in api.routes
              for path in sorted(route.paths) for method in sorted(route.http_methods)]
    return [re.sub(r":\w+}", "}", path) for path in paths + GENERAL_PATHS]


def client_api(path: str, headers) -> Api:
    """The API whose shape an answer takes where the route does not say: Anthropic's clients
    send `anthropic-version` on every request; a path an API owns (another method on it, or an
    unknown path below Ollama's /api/) takes that API's; everyone else gets OpenAI's shape."""
    if "anthropic-version" in headers:
        return ANTHROPIC
    return next((api for prefix, api in PATH_OWNERS if path == prefix or path.startswith(prefix + "/")), OPENAI)


def _client_api(request: Request) -> Api:
    return client_api(request.url.path, request.headers)


def error_answer(scope, headers: dict[str, str], exc: BridgeError) -> tuple[int, list, bytes]:
    """An error answered before the app (AccessGuard, with the request's headers by lower-case name):
    status, headers and body in the client's API's shape."""
    path = scope.get("path", "")
    log_rejected(scope["method"], path, exc, scope.get("client"), headers.get("user-agent"))
    body = msgspec.json.encode(client_api(path, headers).error_body(exc))
    return exc.status, [(b"content-type", b"application/json")], body


def handle_bridge_error(request: Request, exc: BridgeError) -> Response:
    """Every error a route raised: its one log line, the answer in the API's shape (and --debug's copy of it)."""
    log_rejected(request.method, request.url.path, exc, request.client, request.headers.get("user-agent"))
    response = error_response(api_of(request) or _client_api(request), exc)
    trace = request.state.get(TRACE_KEY)
    if trace is not None:
        trace.response(response.content)
    return response


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    err: BridgeError
    if exc.status_code == 404:
        err = NotFoundError(f"no route for {request.method} {request.url.path}; this server serves: "
                            + ", ".join(served_paths()), code="unknown_url")
    elif exc.status_code == 405:
        err = InvalidRequestError(f"method {request.method} is not allowed on {request.url.path}")
        err.status = 405
    elif exc.status_code == 413:
        err = RequestTooLargeError(f"request body too large: this server accepts at most {MAX_BODY >> 20} MiB")
    else:
        err = InvalidRequestError(str(exc.detail))
        err.status = exc.status_code
    return handle_bridge_error(request, err)


def handle_unexpected(request: Request, exc: Exception) -> Response:
    return handle_bridge_error(request, log_fault(exc))


# ---------------------------------------------------------------- model discovery (both shapes)

def _model_entry(request: Request, name: str, n_ctx: int, created: int) -> dict:
    if _client_api(request) is ANTHROPIC:
        stamp = datetime.fromtimestamp(created, timezone.utc).isoformat().replace("+00:00", "Z")
        return {"type": "model", "id": name, "display_name": name, "created_at": stamp, "max_input_tokens": n_ctx}
    return {"id": name, "object": "model", "created": created, "owned_by": "llamabridge", "context_window": n_ctx}


@route("/v1/models", http_method=READ)      # no api of its own: answers and errors follow the client
async def list_models(request: Request) -> dict:
    """OpenAI's model list, or Anthropic's (paged with limit / after_id / before_id) for its clients."""
    state = state_of(request)
    query = request.query_params
    after_id, before_id = query.get("after_id"), query.get("before_id")
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        limit = 0
    created = int(state.started_at)
    models = [(name, state.pool.n_ctx(cache.name)) for name, cache in state.config.listed_models()]
    if _client_api(request) is not ANTHROPIC:
        return {"object": "list", "data": [_model_entry(request, n, c, created) for n, c in models]}
    if not 1 <= limit <= 1000:
        raise InvalidRequestError("limit: must be between 1 and 1000", param="limit")
    names = [n for n, _ in models]
    start, stop = 0, len(models)
    if after_id is not None:
        start = names.index(after_id) + 1 if after_id in names else len(names)
    if before_id is not None:
        stop = names.index(before_id) if before_id in names else 0
        start = max(start, stop - limit)
    page = models[start:stop][:limit]
    data = [_model_entry(request, n, c, created) for n, c in page]
    return {"data": data, "has_more": start + len(page) < stop if before_id is None else start > 0,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@route("/v1/models/{model_id:path}", http_method=READ)
async def retrieve_model(request: Request) -> dict:
    state = state_of(request)
    name = request.path_params["model_id"].lstrip("/")
    cache = state.config.route_for_model(name)
    if cache is None:
        raise ModelNotFoundError(name)
    return _model_entry(request, name, state.pool.n_ctx(cache.name), int(state.started_at))


@route("/info", http_method=READ)
async def info(request: Request) -> dict:
    """What this server routes where: for `llamabridge cc` and `chat --url` to size their requests."""
    state = state_of(request)
    config = state.config
    return {
        "name": "llamabridge", "status": state.pool.status, "mock": state.pool.mock,
        "models": {name: {"path": m.path, **({"error": state.pool.failed[name]} if name in state.pool.failed else {}),
                          **({"placement": p} if (p := state.pool.placement(name)) else {})}
                   for name, m in config.models.items()},
        "caches": {name: {"model": c.model, "n_ctx": state.pool.n_ctx(name), "n_parallel": c.params.n_parallel,
                          "overflow": c.overflow, "description": c.description, **state.pool.cache_placement(name),
                          **state.pool.cache_activity(name)} for name, c in config.caches.items()},
        "routes": [{"match": r.match, "cache": r.cache} for r in config.routes],
        "saved_prefixes": state.pool.store_info(),
    }


@route("/metrics", http_method=READ)
async def metrics(request: Request) -> Response:
    """Prometheus' text format: requests, tokens, time to first token, decode speed, queues, slots."""
    state = state_of(request)
    return Response(state.metrics.render(state), media_type=METRICS_TYPE)


@route("/health", http_method=READ, opt={"public": True})
async def health(request: Request) -> Response:
    state = state_of(request)
    if state.pool.status is PoolStatus.READY:
        return Response({"status": "ok"}, media_type=MediaType.JSON)
    body: dict[str, str] = {"status": state.pool.status}
    if state.pool.error:
        body["error"] = state.pool.error
    return Response(body, status_code=503, media_type=MediaType.JSON)


@get("/", sync_to_thread=False)
def root() -> dict:
    return {"name": "llamabridge", "endpoints": served_paths()}


@head("/", sync_to_thread=False, opt={"public": True})
def root_head() -> None:
    return None


@route("/api/hello", http_method=READ, sync_to_thread=False, opt={"public": True})
def hello() -> dict:
    """Claude Code's connectivity probe (`HEAD /api/hello`, sent unless non-essential traffic is off)."""
    return {"status": "ok"}


def create_app(state: ServerState, load_in_background: bool = True, loader=None) -> Litestar:
    """The app over `state`; its models load in a thread once serving starts (/health says 503 till then).

    `loader(state)` does the loading (default: with log lines); `serve` passes one with a progress bar.
    """
    async def start_loading(app: Litestar) -> None:
        if state.pool.status is PoolStatus.LOADING and load_in_background:
            loop = asyncio.get_running_loop()
            app.state.loader = loop.run_in_executor(None, loader or load_logged, state)

    async def shutdown(app: Litestar) -> None:
        loader = getattr(app.state, "loader", None)
        if loader is not None:
            await asyncio.wait({loader}, timeout=60)
        await anyio.to_thread.run_sync(state.close)

    app = Litestar(
        route_handlers=[*(chat_route(e) for api in APIS for e in api.endpoints),
                        *(route for api in APIS for route in api.routes),
                        list_models, retrieve_model, info, metrics, health, root, root_head, hello],
        guards=[check_key],
        exception_handlers={BridgeError: handle_bridge_error, HTTPException: handle_http_exception,
                            Exception: handle_unexpected},
        on_startup=[start_loading],
        on_shutdown=[shutdown],
        logging_config=None,
        openapi_config=None,        # no /schema: its pages load scripts from a CDN, and no client reads them
        request_max_body_size=MAX_BODY,
    )
    app.state.bridge = state
    return app


def load_logged(state: ServerState, load_progress=None) -> None:
    try:
        state.load(progress=lambda message: log.info("%s", message), load_progress=load_progress)
        log.info("ready in %.1fs", state.pool.load_seconds)
    except Exception as exc:  # noqa: BLE001 - reported through /health and each request
        log.error("loading failed: %s", exc)


__all__ = ["create_app", "load_logged", "ServerState"]
