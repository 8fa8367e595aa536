"""The Try page: serve a run's kept model with `lmtune serve` in the background, and relay calls to it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from lmtune.run_dir import find_model_dir
from lmtune.ui.routes.shared import AppState
from lmtune.ui.workspace import UiError


def try_routes(state: AppState) -> APIRouter:
    router = APIRouter()
    ws, tryouts = state.ws, state.tryouts

    @router.post("/api/try/load")
    async def try_load(path: str) -> dict[str, Any]:
        """Serve the run's kept model with `lmtune serve` (in the background: poll /api/try/status)."""
        model = find_model_dir(ws.path(path))
        if model is None:
            raise UiError(f"{path} has no saved model yet (best/ or final/): try it once it has evaluated or finished", 409)
        tryouts.start(ws.relative(state.run(path).path), model)
        return await tryouts.status(ws.relative(state.run(path).path))

    @router.get("/api/try/status")
    async def try_status(path: str) -> dict[str, Any]:
        return await tryouts.status(ws.relative(state.run(path).path))

    @router.post("/api/try/call", response_model=None)
    async def try_call(path: str, endpoint: str, body: dict[str, Any]) -> JSONResponse | StreamingResponse:
        """One call to the run's `lmtune serve` (streamed back as it comes when the body asks for `stream`)."""
        run = ws.relative(state.run(path).path)
        if body.get("stream"):
            return StreamingResponse(tryouts.stream(run, endpoint, body), media_type="text/event-stream")
        status, answer = await tryouts.call(run, endpoint, body)
        if status != 200:
            error = answer.get("error")
            raise UiError(error.get("message", str(error)) if isinstance(error, dict) else str(answer), status)
        return JSONResponse(answer)

    return router
