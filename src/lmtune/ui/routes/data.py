"""The Data page and what every page asks first: the workspace, uploads, a data file's summary, the config form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from lmtune.config import DEFAULT_TASK, config_class
from lmtune.tasks import TASKS
from lmtune.ui.data_summary import summarize
from lmtune.ui.form import SECTIONS, form_sections
from lmtune.ui.routes.shared import AppState
from lmtune.ui.workspace import UiError


def data_routes(state: AppState) -> APIRouter:
    router = APIRouter()
    ws, options = state.ws, state.options

    @router.get("/api/workspace")
    def workspace() -> dict[str, Any]:
        return {"root": str(ws.root), "data_files": ws.data_files(), "tasks": list(TASKS), "default_task": DEFAULT_TASK,
                "max_upload_bytes": options.max_upload_bytes}

    @router.put("/api/upload")
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

    @router.get("/api/data")
    def data(path: str, header: bool = True, text_column: str | None = None, label_column: str | None = None,
             model: str | None = None, max_length: int = 256) -> dict[str, Any]:
        file = ws.path(path)
        if not file.exists():
            raise UiError(f"{path} does not exist in the workspace", 404)
        if model and not Path(model).is_absolute() and (ws.root / model).exists():  # relative: a model folder of the workspace
            model = str(ws.path(model))  # (an absolute path or a hub id is read as given, as training reads it)
        return summarize(file, path, header, text_column or None, label_column or None, model or None, max_length)

    @router.get("/api/form")
    async def form(task: str = DEFAULT_TASK, sections: str = "") -> dict[str, Any]:
        names = tuple(s for s in sections.split(",") if s) or SECTIONS
        return {"task": task, "sections": form_sections(config_class(task), names)}

    return router
