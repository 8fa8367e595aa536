"""What the app shows of a search, read from its folder (the Optuna study in study.db), so searches started from the CLI appear too.

Status: running (a live job, or a running trial whose status.json says running and its process lives),
stopped (the last trial was cut short by a signal), failed (no trial completed and none runs),
finished (otherwise). A trial's value is its metric; a pruned or running trial also shows the
last value it reported, at its step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lmtune.config import build_config, config_problems, load_config
from lmtune.errors import LmtuneError
from lmtune.run_dir import RunDir, SearchDir
from lmtune.search.importance import param_importances
from lmtune.search.space import space_problems
from lmtune.search.storage import open_storage, read_study_record
from lmtune.ui.jobs import Job, Jobs
from lmtune.ui.workspace import UiError, Workspace

DEFAULT_STUDY = "lmtune"


class Searches:
    """The workspace's searches; keeps one storage per search folder and the importances per count of complete trials."""

    def __init__(self, ws: Workspace, jobs: Jobs):
        self.ws, self.jobs = ws, jobs
        self._storages: dict[Path, Any] = {}
        self._importances: dict[tuple[Path, str, int], dict[str, float]] = {}

    def listing(self) -> list[dict[str, Any]]:
        """Every search folder of the workspace, and launched searches that have not written their study yet."""
        latest = self.jobs.latest_by_run()
        rows = []
        for folder in self.ws.search_folders():
            path = self.ws.relative(folder.path)
            try:
                info = self._read(folder, latest.get(path))
            except (LmtuneError, UiError) as err:
                rows.append({"path": path, "status": "unreadable", "error": str(err)})
                continue
            rows.append({k: v for k, v in info.items() if k not in ("trials", "best_so_far", "importances")})
        known = {r["path"] for r in rows}
        for job in latest.values():
            if job.kind == "search" and job.run not in known:
                rows.append(self._pending(job))
        return sorted(rows, key=lambda r: -r.get("modified", 0))

    def detail(self, folder: SearchDir) -> dict[str, Any]:
        path = self.ws.relative(folder.path)
        job = self.jobs.latest(path)
        if not folder.has_study():
            if job is not None and job.kind == "search":
                return self._pending(job)
            raise UiError(f"{path} is not a search folder (it has no study.db)", 404)
        info = self._read(folder, job)
        output = self._output(job) if job is not None else []
        best = folder.best_config_file
        return {**info, "best_yaml": best.read_text(encoding="utf-8") if best.is_file() else None,
                "job_output": output[-40:] if info["status"] in ("failed", "stopped") else [],
                "plots": sorted(self.ws.relative(p) for p in folder.plots.glob("*.png")) if folder.plots.is_dir() else []}

    def study(self, folder: SearchDir, job: Job | None) -> Any:
        """The folder's Optuna study: the one its job's config names, else `lmtune`, else the only one."""
        import optuna

        record = read_study_record(folder.path)
        storage = self._storages.get(folder.path)
        if storage is None:
            spec = record["storage"] if record else f"sqlite:///{folder.study_db}"
            storage = open_storage(spec, create=False)
            self._storages[folder.path] = storage
        names = [s.study_name for s in storage.get_all_studies()]
        wanted = record["study_name"] if record else _study_name(job)
        name = wanted if wanted in names else DEFAULT_STUDY if DEFAULT_STUDY in names else names[0] if names else None
        if name is None:
            raise UiError(f"{self.ws.relative(folder.path)}: its storage holds no study yet", 404)
        return optuna.load_study(study_name=name, storage=storage)

    def _read(self, folder: SearchDir, job: Job | None) -> dict[str, Any]:
        import optuna

        study = self.study(folder, job)
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        trials = [self._trial(t) for t in study.get_trials(deepcopy=False)]
        complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
        best = (min if minimize else max)(complete, key=lambda t: t["value"]) if complete else None
        best_so_far, current = [], None
        for t in complete:
            current = t["value"] if current is None else min(current, t["value"]) if minimize else max(current, t["value"])
            best_so_far.append([t["number"], current])
        counts: dict[str, int] = {}
        for t in trials:
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        key = (folder.path, study.study_name, len(complete))
        if key not in self._importances:  # fANOVA takes a moment: once per new complete trial
            self._importances[key] = param_importances(study)
        return {
            "path": self.ws.relative(folder.path), "study": study.study_name, "status": self._status(trials, job),
            "metric": study.user_attrs.get("metric", "value"), "direction": "minimize" if minimize else "maximize",
            "counts": counts, "n_trials": len(trials), "best_value": best["value"] if best else None,
            "best_trial": best["number"] if best else None, "best_params": best["params"] if best else {},
            "started_here": job is not None, "can_add": job is not None and bool(job.config) and not job.alive(),
            "modified": _modified(folder), "trials": trials, "best_so_far": best_so_far,
            "importances": self._importances[key],
        }

    def _trial(self, t: Any) -> dict[str, Any]:
        steps = sorted(t.intermediate_values)
        run = t.user_attrs.get("run_dir")
        inside = run is not None and Path(run).resolve().is_relative_to(self.ws.root)
        started = t.datetime_start.timestamp() if t.datetime_start else None
        seconds = t.duration.total_seconds() if t.duration else (time.time() - started if started else None)
        return {
            "number": t.number, "state": t.state.name.lower(), "value": t.value if t.values else None,
            "last_step": steps[-1] if steps else None, "last_value": t.intermediate_values[steps[-1]] if steps else None,
            "params": dict(t.params), "seconds": round(seconds, 1) if seconds is not None else None,
            "run": self.ws.relative(Path(run)) if inside else run, "error": t.user_attrs.get("error"),
        }

    def _status(self, trials: list[dict[str, Any]], job: Job | None) -> str:
        if job is not None and job.alive():
            return "running"
        for t in trials:
            record = RunDir(self.ws.root / t["run"]).read_status() if job is None and t["state"] == "running" and t["run"] else None
            if record is not None and record.is_live():
                return "running"  # a search started elsewhere
        if trials and str(trials[-1]["error"] or "").startswith("stopped by SIG"):
            return "stopped"
        if not any(t["state"] == "complete" for t in trials):
            return "failed"
        return "finished"

    def _pending(self, job: Job) -> dict[str, Any]:
        """A launched search before its study exists (reading the data to learn the metric), or one that failed first."""
        return {"path": job.run, "status": "starting" if job.alive() else "failed", "started_here": True, "can_add": False,
                "modified": job.started, "counts": {}, "n_trials": 0, "trials": [], "best_so_far": [], "importances": {},
                "best_value": None, "best_trial": None, "best_params": {}, "metric": None, "direction": None,
                "job_output": self._output(job)[-40:], "best_yaml": None, "plots": []}

    def _output(self, job: Job) -> list[str]:
        out = self.jobs.output(job)
        return out.read_text(encoding="utf-8", errors="replace").splitlines() if out.is_file() else []


def _study_name(job: Job | None) -> str | None:
    if job is None or not job.config or not Path(job.config).is_file():
        return None
    try:
        return load_config(job.config).search.study_name
    except LmtuneError:
        return None



def search_problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    """A search config's problems as (key, message): the schema's, then the space's (each key, its choices and ends)."""
    problems = config_problems(config)
    if problems:
        return problems
    return space_problems(build_config(config))


def _modified(folder: SearchDir) -> float:
    """When the search last wrote: its study.db, else (a shared storage) its trials.csv or study.json."""
    for file in (folder.study_db, folder.trials_file, folder.study_record):
        if file.is_file():
            return file.stat().st_mtime
    return 0.0
