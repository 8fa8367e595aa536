"""What the app shows of a run, read from its folder alone, so runs started from the CLI appear too.

Status: running (a live job, or train.log written in the last minute and not ended), finished (metrics.json),
stopped (train.log ends saying a signal stopped it), pruned (a search trial its pruner stopped), failed (anything else). Progress and the ETA come from
the step records in metrics.jsonl and the times in train.log.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.run_dir import RunDir
from lmtune.schema import Config
from lmtune.ui.jobs import Job, Jobs
from lmtune.ui.workspace import Workspace

RECENT_S = 60  # a CLI run whose log moved within this long is taken to be running
TOTAL_STEPS = re.compile(r"^(\S+ \S+) INFO .*examples; (\d+) steps$")
RESUMED = re.compile(r"^(\S+ \S+) INFO resumed from .* \(step (\d+),")
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def status(run: RunDir, job: Job | None, log_lines: list[str]) -> str:
    if job is not None and job.alive():
        return "running"  # also after metrics.json: the run is still writing its report
    if run.is_finished():
        return "finished"
    ending = " ".join(log_lines[-3:])  # train.log ends saying how a run ended, when it did
    if " ERROR stopped by SIG" in ending or " ERROR stopped at once" in ending:
        return "stopped"
    if " ERROR failed: TrialPruned" in ending:
        return "pruned"  # a search trial its pruner stopped
    if " ERROR failed: " not in ending and job is None and run.log_file.is_file() and time.time() - run.log_file.stat().st_mtime < RECENT_S:
        return "running"
    return "failed"


def _progress(history: list[dict[str, Any]], log_lines: list[str], running: bool) -> dict[str, Any]:
    """Step, total steps and, while running, seconds left at the pace since the latest (re)start."""
    step = max((r["step"] for r in history if "step" in r), default=0)
    total, started, start_step = None, None, 0
    for line in log_lines:
        if m := TOTAL_STEPS.match(line):
            total, started, start_step = int(m.group(2)), _when(m.group(1)), 0
        elif m := RESUMED.match(line):
            started, start_step = _when(m.group(1)), int(m.group(2))
    eta = None
    if running and total and started and step > start_step:
        eta = round((time.time() - started) / (step - start_step) * (total - step))
    return {"step": step, "total_steps": total, "fraction": min(step / total, 1.0) if total else None, "eta_s": eta}


def _when(stamp: str) -> float | None:
    try:
        return datetime.strptime(stamp, LOG_TIME).timestamp()
    except ValueError:
        return None


@dataclass
class RunFiles:
    """The files of a run folder the app shows, each read once per request."""

    run: RunDir
    config: Config
    log_lines: list[str]
    history: list[dict[str, Any]]

    @classmethod
    def read(cls, run: RunDir) -> RunFiles:
        log = run.log_file.read_text(encoding="utf-8", errors="replace").splitlines() if run.log_file.is_file() else []
        return cls(run, run.read_config(), log, run.read_history())


def summary(ws: Workspace, files: RunFiles, job: Job | None) -> dict[str, Any]:
    run, history = files.run, files.history
    state = status(run, job, files.log_lines)
    metrics = run.read_metrics() or {}
    last_eval: dict[str, Any] = next((r for r in reversed(history) if r.get("type") == "eval"), {})
    return {
        "path": ws.relative(run.path),
        "status": state,
        "task": files.config.task,
        "model": files.config.model.name_or_path,
        "method": files.config.method.name,
        "started_here": job is not None,
        "model_folder": next((ws.relative(p) for p in (run.best, run.final) if p.is_dir()), None),
        "resumable": state in ("stopped", "failed") and any(run.checkpoints.glob("step-*")),
        "modified": run.log_file.stat().st_mtime if run.log_file.is_file() else run.config_file.stat().st_mtime,
        "metrics": {k: v for k, v in (metrics or last_eval).items() if isinstance(v, int | float) and k not in ("step", "epoch")},
        **_progress(history, files.log_lines, state == "running"),
    }


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
        "log_tail": files.log_lines[-log_lines:],
        "job_output": output[-log_lines:] if info["status"] == "failed" else [],
        "config_yaml": run.config_file.read_text(encoding="utf-8"),
        "report": run.report_file.read_text(encoding="utf-8") if run.report_file.is_file() else None,
        "plots": sorted(ws.relative(p) for p in run.plots.glob("*.png")) if run.plots.is_dir() else [],
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
