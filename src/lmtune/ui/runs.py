"""What the app shows of a run, read from its folder alone, so runs started from the CLI appear too.

The status, the step reached, the total steps and the pace for an ETA come from the run's status.json
(`RunStatus`): running (a live job, or a running record whose process is alive), finished, stopped
(by a signal), pruned (a search trial its pruner stopped) or failed (with the reason, or a running
record whose process is gone). A folder from before status.json is finished with metrics.json, else failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.run_dir import RunDir, RunStatus, search_of
from lmtune.schema import Config
from lmtune.ui.jobs import Job, Jobs
from lmtune.ui.report_html import report_html
from lmtune.ui.workspace import Workspace


def status(run: RunDir, job: Job | None, record: RunStatus | None) -> str:
    if job is not None and job.alive():
        return "running"  # also after metrics.json: the run is still writing its report
    if record is not None:
        return record.ended
    return "finished" if run.is_finished() else "failed"


def _progress(history: list[dict[str, Any]], record: RunStatus | None, running: bool) -> dict[str, Any]:
    """Step, total steps and, while running, seconds left at the pace since the latest (re)start."""
    step = max([r["step"] for r in history if "step" in r] + ([record.step] if record else []), default=0)
    total = record.total_steps if record else None
    eta = None
    if running and record and step > record.start_step:
        eta = round((time.time() - record.started_at) / (step - record.start_step) * (record.total_steps - step))
    return {"step": step, "total_steps": total, "fraction": min(step / total, 1.0) if total else None, "eta_s": eta}


@dataclass
class RunFiles:
    """The files of a run folder the app shows, each read once per request."""

    run: RunDir
    config: Config
    record: RunStatus | None
    history: list[dict[str, Any]]

    @classmethod
    def read(cls, run: RunDir) -> RunFiles:
        return cls(run, run.read_config(), run.read_status(), run.read_history())

    def log_lines(self) -> list[str]:
        """train.log, shown as it is (nothing is worked out from it)."""
        log = self.run.log_file
        return log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []


def summary(ws: Workspace, files: RunFiles, job: Job | None) -> dict[str, Any]:
    run, history = files.run, files.history
    state = status(run, job, files.record)
    metrics = run.read_metrics() or {}
    last_eval: dict[str, Any] = next((r for r in reversed(history) if r.get("type") == "eval"), {})
    search = search_of(run)
    return {
        "path": ws.relative(run.path),
        "search": ws.relative(search.path) if search else None,  # the Runs page lists a search's trials under it
        "status": state,
        "task": files.config.task,
        "model": files.config.model.name_or_path,
        "method": files.config.method.name,
        "started_here": job is not None,
        "model_folder": next((ws.relative(p) for p in (run.best, run.final) if p.is_dir()), None),
        "resumable": state in ("stopped", "failed") and any(run.checkpoints.glob("step-*")),
        "modified": _modified(run),
        "reason": files.record.reason if files.record and state != "running" else None,
        "metrics": {k: v for k, v in (metrics or last_eval).items() if isinstance(v, int | float) and k not in ("step", "epoch")},
        **_progress(history, files.record, state == "running"),
    }


def _modified(run: RunDir) -> float:
    for path in (run.status_file, run.log_file, run.config_file):
        if path.is_file():
            return path.stat().st_mtime
    return 0.0


def listing(ws: Workspace, jobs: Jobs) -> list[dict[str, Any]]:
    """Every run of the workspace, and the launched jobs whose folder is not there (yet), newest first."""
    latest = jobs.latest_by_run()
    rows: list[dict[str, Any]] = []
    for run in ws.run_folders():
        try:
            rows.append(summary(ws, RunFiles.read(run), latest.get(ws.relative(run.path))))
        except LmtuneError as err:
            rows.append({"path": ws.relative(run.path), "status": "unreadable", "error": str(err), "metrics": {}})
    rows += pending(ws, jobs, {r["path"] for r in rows})
    return sorted(rows, key=lambda r: -r.get("modified", 0))


def detail(ws: Workspace, jobs: Jobs, run: RunDir, log_lines: int = 60) -> dict[str, Any]:
    """The summary with the history (for the curves), the log tail, the report and what the job printed."""
    files = RunFiles.read(run)
    job = jobs.latest(ws.relative(run.path))
    info = summary(ws, files, job)
    output = jobs.output(job).read_text(encoding="utf-8", errors="replace").splitlines() if job and jobs.output(job).is_file() else []
    return {
        **info,
        "history": files.history,
        "log_tail": files.log_lines()[-log_lines:],
        "job_output": output[-log_lines:] if info["status"] == "failed" else [],
        "config_yaml": run.config_file.read_text(encoding="utf-8"),
        "report": report_html(ws, run),
    }


def pending(ws: Workspace, jobs: Jobs, known: set[str]) -> list[dict[str, Any]]:
    """Jobs whose run folder is not written yet (the model is loading) or never was (the run failed first)."""
    rows: list[dict[str, Any]] = []
    for job in jobs.latest_by_run().values():
        if job.kind != "train" or job.run in known or RunDir(ws.root / job.run).is_run():
            continue
        output = jobs.output(job).read_text(encoding="utf-8", errors="replace").splitlines() if jobs.output(job).is_file() else []
        rows.append({"path": job.run, "status": "starting" if job.alive() else "failed", "started_here": True,
                     "modified": job.started, "job_output": output[-20:], "metrics": {}, "step": 0, "total_steps": None,
                     "fraction": None, "eta_s": None, "resumable": False, "model_folder": None, "task": None, "model": None, "method": None})
    return rows


def comparison(ws: Workspace, jobs: Jobs, runs: list[RunDir]) -> dict[str, Any]:
    latest = jobs.latest_by_run()
    read = [RunFiles.read(run) for run in runs]
    configs = [_flat(f.config.model_dump(mode="json")) for f in read]
    keys = sorted({k for c in configs for k in c} - {"output.dir"})
    differences = {k: [c.get(k) for c in configs] for k in keys if len({repr(c.get(k)) for c in configs}) > 1}
    shown = []
    for files, config in zip(read, configs):
        info = summary(ws, files, latest.get(ws.relative(files.run.path)))
        shown.append({"path": info["path"], "status": info["status"], "metrics": info["metrics"], "history": files.history,
                      "metric": _metric_of(files.run, config)})
    return {"runs": shown, "differences": differences}


def _metric_of(run: RunDir, config: dict[str, Any]) -> str:
    """The metric that picked the run's best model: as set, else the one its metrics.json names, else loss."""
    if config.get("eval.metric") not in (None, "auto"):
        return str(config["eval.metric"])
    return str((run.read_metrics() or {}).get("best_metric", "loss"))


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
