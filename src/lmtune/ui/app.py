"""The FastAPI app of `lmtune ui`: a JSON API over the workspace (a router per page, ui/routes/), and the page that uses it.

Everything is served from this process (no CDN, fonts or telemetry), so the app works offline.
Every request passes the token gate (ui/token_gate.py): a Host that names this machine, and the
token when one is set.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from lmtune.errors import LmtuneError
from lmtune.ui.options import UiOptions
from lmtune.ui.routes.data import data_routes
from lmtune.ui.routes.runs import run_routes
from lmtune.ui.routes.searches import search_routes
from lmtune.ui.routes.shared import AppState
from lmtune.ui.routes.trying import try_routes
from lmtune.ui.token_gate import TokenGate
from lmtune.ui.workspace import UiError

ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}


def build_app(options: UiOptions) -> FastAPI:
    state = AppState(options)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.tryouts.close()  # the served models go with the app (training runs do not)

    app = FastAPI(title="lmtune ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    static = resources.files("lmtune.ui") / "static"

    @app.exception_handler(UiError)
    async def refused(request: Request, err: UiError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(LmtuneError)
    async def bad_input(request: Request, err: LmtuneError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (static / "index.html").read_text(encoding="utf-8")

    @app.get("/static/{name}")
    async def asset(name: str) -> Response:
        item = static / name
        if Path(name).suffix not in ASSET_TYPES or "/" in name or not item.is_file():
            raise UiError(f"no such file: {name}", 404)
        return Response(item.read_text(encoding="utf-8"), media_type=ASSET_TYPES[Path(name).suffix])

    for routes in (data_routes, run_routes, search_routes, try_routes):
        app.include_router(routes(state))
    app.add_middleware(TokenGate, token=options.token)
    return app
