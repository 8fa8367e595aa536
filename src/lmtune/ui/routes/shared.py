"""What the app's routers share: the workspace and its jobs, and how a posted config is read, checked and kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastapi.responses import JSONResponse

from lmtune.run_dir import RunDir
from lmtune.ui.form import to_yaml
from lmtune.ui.jobs import Jobs
from lmtune.ui.options import UiOptions
from lmtune.ui.searches import Searches
from lmtune.ui.trying import Tryouts
from lmtune.ui.workspace import UiError, Workspace

Problems = Callable[[dict[str, Any]], list[tuple[str, str]]]


@dataclass
class AppState:
    """The workspace, the jobs started from the app, its searches and the models served to try."""

    options: UiOptions
    ws: Workspace = field(init=False)
    jobs: Jobs = field(init=False)
    searches: Searches = field(init=False)
    tryouts: Tryouts = field(init=False)

    def __post_init__(self) -> None:
        self.ws = Workspace(self.options.workspace)
        self.jobs = Jobs(self.ws)
        self.searches = Searches(self.ws, self.jobs)
        self.tryouts = Tryouts(self.ws)

    def run(self, path: str) -> RunDir:
        return RunDir(self.ws.path(path))

    def new_folder(self, given: Any, what: str, instead: str) -> Path:
        """The folder a new run or search writes to: inside the workspace, and empty or not there yet."""
        name = str(given or "").strip()
        if not name:
            raise UiError(f"name the {what} folder (it is created inside the workspace)")
        folder = self.ws.path(name)
        if not RunDir(folder).is_empty():
            raise UiError(f"{name} already holds files; pick a new {what} folder name, or {instead}", 409)
        return folder

    def launch(self, body: dict[str, Any], config: dict[str, Any], problems_of: Problems, kind: str,
               instead: str) -> dict[str, Any] | JSONResponse:
        """Start a run (`kind` "run") or a search in the body's new folder, unless its config has problems (422).

        The folder is named by the body's `run` or `folder`; `instead` says what to do with one in use.
        """
        folder = self.new_folder(body.get(kind if kind == "run" else "folder"), kind, instead)
        problems = problems_of({**config, "output": {**config.get("output", {}), "dir": str(folder)}})
        if problems:
            return refused(f"the {'config' if kind == 'run' else 'search config'} is not valid", problems)
        saved, where = self.saved_config(folder.name, config), self.ws.relative(folder)
        job = self.jobs.start(saved, where) if kind == "run" else self.jobs.start_search(saved, where)
        return {kind: job.run, "pid": job.pid}

    def saved_config(self, name: str, config: dict[str, Any]) -> Path:
        """The config a job is started with, kept in the app's folder (a resume or more trials use it again)."""
        configs = self.ws.app_folder / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        config_file = configs / f"{name}-{len(list(configs.iterdir()))}.yaml"
        config_file.write_text(to_yaml(config), encoding="utf-8")
        return config_file


def config_of(body: dict[str, Any]) -> dict[str, Any]:
    """The config of a posted body: from the YAML box (`yaml`) or from the form (`config`)."""
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


def checked(config: dict[str, Any], problems_of: Problems) -> dict[str, Any]:
    """What a check answers: the config, its YAML and its problems, each at its key."""
    return {"config": config, "yaml": to_yaml(config), "problems": [{"key": k, "message": m} for k, m in problems_of(config)]}


def refused(error: str, problems: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse({"error": error, "problems": [{"key": k, "message": m} for k, m in problems]}, status_code=422)
