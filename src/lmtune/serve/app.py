"""The FastAPI app of `lmtune serve`: limits and auth in front, then the routes of the served model's task.

In front of every route, outermost first: metrics (requests by endpoint and status, latency to
the end of the response), the API key (every path but /health), the body limit (413). Errors
are OpenAI-shaped JSON with the field at fault; nothing a request sends takes the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmtune.errors import LmtuneError
from lmtune.serve.errors import ApiError, error_body
from lmtune.serve.metrics import ServerMetrics
from lmtune.serve.openai_api import add_openai_routes
from lmtune.serve.predict_api import add_predict_routes
from lmtune.serve.served import Served
from lmtune.tasks import TASKS
from lmtune.tasks.base import RecordPredictor

log = logging.getLogger("lmtune")

OPEN_PATHS = ("/health",)  # answered without the API key


def build_app(served: Served) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(served.batcher.run_forever())
        yield
        worker.cancel()  # uvicorn has drained the requests in flight by now
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        served.batcher.close()

    app = FastAPI(title=f"lmtune serve: {served.name}", lifespan=lifespan)
    endpoint = TASKS[served.task].predict_endpoint
    if endpoint:
        add_predict_routes(app, served, endpoint)
    else:
        add_openai_routes(app, served)
    _add_common_routes(app, served)
    _add_error_handlers(app)
    o = served.options
    app.add_middleware(BodyLimit, limit=o.max_body_bytes)
    if o.api_key:
        app.add_middleware(BearerAuth, key=o.api_key)
    paths = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(Metered, metrics=served.metrics, paths=paths)
    return app


def _add_common_routes(app: FastAPI, served: Served) -> None:
    posts = sorted(r.path for r in app.routes if isinstance(r, APIRoute) and "POST" in (r.methods or ()))  # the model's endpoints

    @app.get("/health", summary="the served model and how long the server has run")
    async def health() -> dict[str, Any]:
        p = served.predictor
        task = TASKS[served.task]
        taken: dict[str, Any]
        if isinstance(p, RecordPredictor):  # what each POST body's lists hold
            taken = {"inputs": {field: task.predict_inputs.get(field, "") for field in p.input_fields}}
        else:  # a translation run's instruction, which wraps a text as training wrapped it
            taken = {"prompt_template": p.meta.get("prompt_template")}
        return {"status": "ok", "model": served.name, "task": served.task, "labels": p.meta.get("labels") if task.has_labels else None,
                "adapter": bool(p.meta.get("adapter")), "device": str(p.device), "endpoints": posts, **taken,
                "uptime_s": round(time.time() - served.started, 3), "queue_depth": served.batcher.depth}

    @app.get("/v1/models", summary="the served model, as OpenAI lists models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": int(served.started),
                                            "owned_by": "lmtune", "task": served.task}]}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(served.metrics.render(), media_type=served.metrics.content_type)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in kind:  # FastAPI reads a body as JSON only when it says so
            message, param = (f"send the body as JSON with the header 'Content-Type: application/json' "
                              f"(this request says {kind or 'no content type'!r})"), None
        else:
            message, param = validation_message(list(err.errors()))
        return JSONResponse(error_body(422, message, param), status_code=422)

    @app.exception_handler(LmtuneError)
    async def bad_input(request: Request, err: LmtuneError) -> JSONResponse:
        return JSONResponse(error_body(400, str(err)), status_code=400)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"the model failed on this request: {type(err).__name__}: {err}"), status_code=500)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One sentence for FastAPI's validation errors: the first field at fault, how it is wrong, how many more are."""
    first = errors[0]
    more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in the body)" if len(errors) > 1 else ""
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})", None
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if not loc:
        return f"the request body: {first['msg']} (send a JSON object)", None
    param = ".".join(loc)
    return f"{param}: {first['msg']}{more}", param


async def _answer(send: Send, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Bodies over `limit` bytes get 413 before any route reads them."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"the request body is over this server's limit of {self.limit} bytes (--max-body-bytes)"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _answer(send, 413, too_large, code="body_too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _answer(send, 413, too_large, code="body_too_large")
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, for streamed responses
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class BearerAuth:
    """With --api-key, every path but /health needs `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                what = "has the wrong API key" if given else "needs an API key"
                return await _answer(send, 401, f"this request {what}: send the header 'Authorization: Bearer KEY' with the "
                                     "server's --api-key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await self.app(scope, receive, send)


class Metered:
    """Counts every response by endpoint and status, and times it to its last byte (streamed replies included)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, paths: set[str]):
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.paths else "other"
        start, status = time.perf_counter(), 500

        async def metered_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, metered_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
