"""The FastAPI app of `lmtune ui`: a JSON API over the workspace, and the page that uses it.

Everything is served from this process (no CDN, fonts or telemetry), so the app works offline.
With a token, every path asks for it: `?token=` once (which sets a cookie), the cookie, or an
`Authorization: Bearer` header. Requests whose Host is not this machine are refused, so that a
web page elsewhere cannot reach the app through DNS rebinding.
"""

from __future__ import annotations

import contextlib
import hmac
import shutil
import tempfile
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import ASGIApp, Receive, Scope, Send

from lmtune.config import DEFAULT_TASK, config_class, config_problems
from lmtune.errors import LmtuneError
from lmtune.run_dir import RunDir, SearchDir, find_model_dir
from lmtune.serve.options import is_loopback
from lmtune.tasks import TASKS
from lmtune.ui import runs as run_info
from lmtune.ui.data_summary import summarize
from lmtune.ui.form import SECTIONS, form_sections, to_yaml
from lmtune.ui.jobs import Jobs
from lmtune.ui.options import UiOptions
from lmtune.ui.searches import Searches, search_problems
from lmtune.ui.trying import Tryouts
from lmtune.ui.workspace import UiError, Workspace

COOKIE = "lmtune_ui_token"


def build_app(options: UiOptions) -> FastAPI:
    ws = Workspace(options.workspace)
    jobs = Jobs(ws)
    searches = Searches(ws, jobs)
    tryouts = Tryouts(ws)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await tryouts.close()  # the served models go with the app (training runs do not)

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
        kinds = {".js": "text/javascript", ".css": "text/css"}
        item = static / name
        if Path(name).suffix not in kinds or "/" in name or not item.is_file():
            raise UiError(f"no such file: {name}", 404)
        return Response(item.read_text(encoding="utf-8"), media_type=kinds[Path(name).suffix])

    @app.get("/api/workspace")
    def workspace() -> dict[str, Any]:
        return {"root": str(ws.root), "data_files": ws.data_files(), "tasks": list(TASKS), "default_task": DEFAULT_TASK,
                "max_upload_bytes": options.max_upload_bytes}

    @app.put("/api/upload")
    async def upload(request: Request, name: str) -> dict[str, Any]:
        target = ws.new_upload(name)
        declared = int(request.headers.get("content-length") or 0)
        if declared > options.max_upload_bytes:
            raise UiError(f"upload {name!r} is {declared:,} bytes; the limit is {options.max_upload_bytes:,}", 413)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with partial.open("wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > options.max_upload_bytes:
                        raise UiError(f"upload {name!r} is over the limit of {options.max_upload_bytes:,} bytes", 413)
                    f.write(chunk)
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)
        return {"path": ws.relative(target), "bytes": size}

    @app.get("/api/data")
    def data(path: str, header: bool = True, text_column: str | None = None, label_column: str | None = None,
             model: str | None = None, max_length: int = 256) -> dict[str, Any]:
        file = ws.path(path)
        if not file.exists():
            raise UiError(f"{path} does not exist in the workspace", 404)
        if model and not Path(model).is_absolute() and (ws.root / model).exists():  # relative: a model folder of the workspace
            model = str(ws.path(model))  # (an absolute path or a hub id is read as given, as training reads it)
        return summarize(file, path, header, text_column or None, label_column or None, model or None, max_length)

    @app.get("/api/form")
    async def form(task: str = DEFAULT_TASK, sections: str = "") -> dict[str, Any]:
        names = tuple(s for s in sections.split(",") if s) or SECTIONS
        return {"task": task, "sections": form_sections(config_class(task), names)}

    @app.post("/api/config/check")
    async def check(body: dict[str, Any]) -> dict[str, Any]:
        """A config from the form (`config`) or from the YAML box (`yaml`): its problems and its YAML."""
        return _checked(_config_of(body), config_problems)

    @app.post("/api/runs", response_model=None)
    async def launch(body: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        config = _config_of(body)
        folder = _new_folder(body.get("run"), "run", "resume that run from its page")
        problems = config_problems({**config, "output": {**config.get("output", {}), "dir": str(folder)}})
        if problems:
            return _refused("the config is not valid", problems)
        job = jobs.start(_saved_config(folder.name, config), ws.relative(folder))
        return {"run": job.run, "pid": job.pid}

    @app.get("/api/runs")
    def listing() -> list[dict[str, Any]]:
        return run_info.listing(ws, jobs)

    @app.get("/api/run")
    def run_detail(path: str) -> dict[str, Any]:
        run = _run(path)
        if not run.is_run():
            listed = [r for r in run_info.pending(ws, jobs, set()) if r["path"] == path]
            if listed:
                return listed[0]
            raise UiError(f"{path} is not a run folder (it has no config.yaml)", 404)
        return run_info.detail(ws, jobs, run)

    @app.post("/api/run/stop")
    async def stop(path: str) -> dict[str, Any]:
        job = jobs.stop(ws.relative(_run(path).path))
        return {"run": job.run, "pid": job.pid, "signal": "SIGTERM"}

    @app.post("/api/run/resume")
    async def resume(path: str) -> dict[str, Any]:
        run = _run(path)
        if run.is_finished():
            raise UiError(f"{path} has finished; there is nothing to resume", 409)
        if not any(run.checkpoints.glob("step-*")):
            raise UiError(f"{path} has no checkpoint to resume from", 409)
        job = jobs.start(run.config_file, ws.relative(run.path), resume=True)
        return {"run": job.run, "pid": job.pid}

    @app.get("/api/file")
    async def file(path: str) -> FileResponse:
        """A file of the workspace (a plot of a report); never one outside it."""
        target = ws.path(path)
        if not target.is_file():
            raise UiError(f"{path} is not a file in the workspace", 404)
        return FileResponse(target)

    @app.get("/api/run/download")
    def download(path: str) -> FileResponse:
        """The run's kept model folder (best/, else final/) as a zip."""
        run = _run(path)
        model = next((p for p in (run.best, run.final) if p.is_dir()), None)
        if model is None:
            raise UiError(f"{path} has no saved model yet", 404)
        scratch = Path(tempfile.mkdtemp(prefix="lmtune-ui-"))
        archive = shutil.make_archive(str(scratch / f"{run.path.name}-{model.name}"), "zip", model)
        return FileResponse(archive, filename=Path(archive).name, background=BackgroundTask(shutil.rmtree, scratch, True))

    @app.get("/api/compare")
    def compare(paths: str) -> dict[str, Any]:
        """Runs side by side: their metrics and curves, and the config keys whose values differ."""
        runs = [_run(p.strip()) for p in paths.split(",") if p.strip()]
        if len(runs) < 2:
            raise UiError("pick at least two runs to compare")
        for run in runs:
            if not run.is_run():
                raise UiError(f"{ws.relative(run.path)} is not a run folder (it has no config.yaml)", 404)
        return run_info.comparison(ws, jobs, runs)

    @app.post("/api/search/check")
    async def search_check(body: dict[str, Any]) -> dict[str, Any]:
        """A search config: the YAML box's (`yaml`) with the form's `search` section put in; its problems and its YAML."""
        return _checked(_search_config_of(body), search_problems)

    @app.post("/api/searches", response_model=None)
    async def launch_search(body: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        config = _search_config_of(body)
        folder = _new_folder(body.get("folder"), "search", "add trials to that search from its page")
        problems = search_problems({**config, "output": {**config.get("output", {}), "dir": str(folder)}})
        if problems:
            return _refused("the search config is not valid", problems)
        job = jobs.start_search(_saved_config(folder.name, config), ws.relative(folder))
        return {"search": job.run, "pid": job.pid}

    @app.get("/api/searches")
    def search_listing() -> list[dict[str, Any]]:
        return searches.listing()

    @app.get("/api/search")
    def search_detail(path: str) -> dict[str, Any]:
        return searches.detail(SearchDir(ws.path(path)))

    @app.post("/api/search/stop")
    async def search_stop(path: str) -> dict[str, Any]:
        job = jobs.stop(ws.relative(ws.path(path)))
        return {"search": job.run, "pid": job.pid, "signal": "SIGTERM"}

    @app.post("/api/search/more")
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

    @app.post("/api/try/load")
    async def try_load(path: str) -> dict[str, Any]:
        """Serve the run's kept model with `lmtune serve` (in the background: poll /api/try/status)."""
        model = find_model_dir(ws.path(path))
        if model is None:
            raise UiError(f"{path} has no saved model yet (best/ or final/): try it once it has evaluated or finished", 409)
        tryouts.start(ws.relative(_run(path).path), model)
        return await tryouts.status(ws.relative(_run(path).path))

    @app.get("/api/try/status")
    async def try_status(path: str) -> dict[str, Any]:
        return await tryouts.status(ws.relative(_run(path).path))

    @app.post("/api/try/call", response_model=None)
    async def try_call(path: str, endpoint: str, body: dict[str, Any]) -> JSONResponse | StreamingResponse:
        """One call to the run's `lmtune serve` (streamed back as it comes when the body asks for `stream`)."""
        run = ws.relative(_run(path).path)
        if body.get("stream"):
            return StreamingResponse(tryouts.stream(run, endpoint, body), media_type="text/event-stream")
        status, answer = await tryouts.call(run, endpoint, body)
        if status != 200:
            error = answer.get("error")
            raise UiError(error.get("message", str(error)) if isinstance(error, dict) else str(answer), status)
        return JSONResponse(answer)

    def _run(path: str) -> RunDir:
        return RunDir(ws.path(path))

    def _new_folder(given: Any, what: str, instead: str) -> Path:
        """The folder a new run or search writes to: inside the workspace, and empty or not there yet."""
        name = str(given or "").strip()
        if not name:
            raise UiError(f"name the {what} folder (it is created inside the workspace)")
        folder = ws.path(name)
        if not RunDir(folder).is_empty():
            raise UiError(f"{name} already holds files; pick a new {what} folder name, or {instead}", 409)
        return folder

    def _saved_config(name: str, config: dict[str, Any]) -> Path:
        """The config a job is started with, kept in the app's folder (a resume or more trials use it again)."""
        configs = ws.app_folder / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        config_file = configs / f"{name}-{len(list(configs.iterdir()))}.yaml"
        config_file.write_text(to_yaml(config), encoding="utf-8")
        return config_file

    app.add_middleware(TokenGate, token=options.token)
    return app


def _config_of(body: dict[str, Any]) -> dict[str, Any]:
    if "yaml" in body:
        try:
            config = yaml.safe_load(str(body["yaml"])) or {}
        except yaml.YAMLError as err:
            raise UiError(f"the YAML is not valid: {err}", 422) from None
    else:
        config = body.get("config") or {}
    if not isinstance(config, dict):
        raise UiError(f"the config must be a mapping of keys, not {type(config).__name__}", 422)
    return config


def _checked(config: dict[str, Any], problems_of: Any) -> dict[str, Any]:
    """What a check answers: the config, its YAML and its problems, each at its key."""
    return {"config": config, "yaml": to_yaml(config), "problems": [{"key": k, "message": m} for k, m in problems_of(config)]}


def _refused(error: str, problems: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse({"error": error, "problems": [{"key": k, "message": m} for k, m in problems]}, status_code=422)


def _search_config_of(body: dict[str, Any]) -> dict[str, Any]:
    config = _config_of(body)
    if "search" in body:
        if not isinstance(body["search"], dict):
            raise UiError("the search section must be a mapping of keys", 422)
        config["search"] = body["search"]
    return config


class TokenGate:
    """Every request needs the token (when one is set) and a Host that names this machine."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = urlsplit("//" + (request.headers.get("host") or "")).hostname or ""  # "[::1]:8000" -> "::1"
        if not is_loopback(host) and host != scope.get("server", ("",))[0]:
            await JSONResponse({"error": f"host {host!r} is not this machine"}, status_code=403)(scope, receive, send)
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        given = query.get("token", [None])[0]
        if given is not None and hmac.compare_digest(given, self.token):
            rest = {k: v for k, v in query.items() if k != "token"}
            target = request.url.path + ("?" + urlencode(rest, doseq=True) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        cookie = request.cookies.get(COOKIE, "")
        if any(hmac.compare_digest(v, self.token) for v in (bearer, cookie) if v):
            await self.app(scope, receive, send)
            return
        message = "a wrong or missing token: open the link `lmtune ui` printed (it ends in ?token=...)"
        if request.url.path.startswith("/api/"):
            await JSONResponse({"error": message}, status_code=401)(scope, receive, send)
        else:
            await HTMLResponse(f"<!doctype html><title>lmtune ui</title><p>{message}</p>", status_code=401)(scope, receive, send)
