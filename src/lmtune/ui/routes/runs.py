"""The New run, Runs, run and Compare pages: check and launch a config, list runs, stop, resume, files, download."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from lmtune.config import config_problems
from lmtune.ui import runs as run_info
from lmtune.ui.routes.shared import AppState, checked, config_of
from lmtune.ui.workspace import UiError


def run_routes(state: AppState) -> APIRouter:
    router = APIRouter()
    ws, jobs = state.ws, state.jobs

    @router.post("/api/config/check")
    async def check(body: dict[str, Any]) -> dict[str, Any]:
        """A config from the form (`config`) or from the YAML box (`yaml`): its problems and its YAML."""
        return checked(config_of(body), config_problems)

    @router.post("/api/runs", response_model=None)
    async def launch(body: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        return state.launch(body, config_of(body), config_problems, "run", "resume that run from its page")

    @router.get("/api/runs")
    def listing() -> list[dict[str, Any]]:
        return run_info.listing(ws, jobs)

    @router.get("/api/run")
    def run_detail(path: str) -> dict[str, Any]:
        run = state.run(path)
        if not run.is_run():
            listed = [r for r in run_info.pending(ws, jobs, set()) if r["path"] == path]
            if listed:
                return listed[0]
            raise UiError(f"{path} is not a run folder (it has no config.yaml)", 404)
        return run_info.detail(ws, jobs, run)

    @router.post("/api/run/stop")
    async def stop(path: str) -> dict[str, Any]:
        job = jobs.stop(ws.relative(state.run(path).path))
        return {"run": job.run, "pid": job.pid, "signal": "SIGTERM"}

    @router.post("/api/run/resume")
    async def resume(path: str) -> dict[str, Any]:
        run = state.run(path)
        if run.is_finished():
            raise UiError(f"{path} has finished; there is nothing to resume", 409)
        if not any(run.checkpoints.glob("step-*")):
            raise UiError(f"{path} has no checkpoint to resume from", 409)
        job = jobs.start(run.config_file, ws.relative(run.path), resume=True)
        return {"run": job.run, "pid": job.pid}

    @router.get("/api/file")
    async def file(path: str) -> FileResponse:
        """A file of the workspace (a plot of a report); never one outside it."""
        target = ws.path(path)
        if not target.is_file():
            raise UiError(f"{path} is not a file in the workspace", 404)
        return FileResponse(target)

    @router.get("/api/run/download")
    def download(path: str) -> FileResponse:
        """The run's kept model folder (best/, else final/) as a zip."""
        run = state.run(path)
        model = next((p for p in (run.best, run.final) if p.is_dir()), None)
        if model is None:
            raise UiError(f"{path} has no saved model yet", 404)
        scratch = Path(tempfile.mkdtemp(prefix="lmtune-ui-"))
        archive = shutil.make_archive(str(scratch / f"{run.path.name}-{model.name}"), "zip", model)
        return FileResponse(archive, filename=Path(archive).name, background=BackgroundTask(shutil.rmtree, scratch, True))

    @router.get("/api/compare")
    def compare(paths: str) -> dict[str, Any]:
        """Runs side by side: their metrics and curves, and the config keys whose values differ."""
        runs = [state.run(p.strip()) for p in paths.split(",") if p.strip()]
        if len(runs) < 2:
            raise UiError("pick at least two runs to compare")
        for run in runs:
            if not run.is_run():
                raise UiError(f"{ws.relative(run.path)} is not a run folder (it has no config.yaml)", 404)
        return run_info.comparison(ws, jobs, runs)

    return router
