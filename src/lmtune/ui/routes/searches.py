"""The New search, Search and search pages: check and start a search, list searches, stop one, give it more trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from lmtune.run_dir import SearchDir
from lmtune.ui.routes.shared import AppState, checked, config_of
from lmtune.ui.searches import search_problems
from lmtune.ui.workspace import UiError


def search_config_of(body: dict[str, Any]) -> dict[str, Any]:
    """The YAML box's config with the form's `search` section put in."""
    config = config_of(body)
    if "search" in body:
        if not isinstance(body["search"], dict):
            raise UiError("the search section must be a mapping of keys", 422)
        config["search"] = body["search"]
    return config


def search_routes(state: AppState) -> APIRouter:
    router = APIRouter()
    ws, jobs = state.ws, state.jobs

    @router.post("/api/search/check")
    async def search_check(body: dict[str, Any]) -> dict[str, Any]:
        """A search config: the YAML box's (`yaml`) with the form's `search` section put in; its problems and its YAML."""
        return checked(search_config_of(body), search_problems)

    @router.post("/api/searches", response_model=None)
    async def launch_search(body: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        return state.launch(body, search_config_of(body), search_problems, "search", "add trials to that search from its page")

    @router.get("/api/searches")
    def search_listing() -> list[dict[str, Any]]:
        return state.searches.listing()

    @router.get("/api/search")
    def search_detail(path: str) -> dict[str, Any]:
        return state.searches.detail(SearchDir(ws.path(path)))

    @router.post("/api/search/stop")
    async def search_stop(path: str) -> dict[str, Any]:
        job = jobs.stop(ws.relative(ws.path(path)))
        return {"search": job.run, "pid": job.pid, "signal": "SIGTERM"}

    @router.post("/api/search/more")
    async def search_more(path: str, n_trials: int) -> dict[str, Any]:
        """Add trials to a search started here, with the config it was started with."""
        if n_trials < 1:
            raise UiError(f"n_trials must be 1 or more (got {n_trials})")
        run = ws.relative(ws.path(path))
        job = jobs.latest(run)
        if job is None or job.kind != "search" or not Path(job.config).is_file():
            raise UiError(f"{path} was not started here, so the app does not have its config: add trials with lmtune search", 409)
        started = jobs.start_search(Path(job.config), run, n_trials)
        return {"search": started.run, "pid": started.pid}

    return router
