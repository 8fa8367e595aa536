"""What a run does with its output.dir: planned before anything loads, created once every input is checked.

A folder to replace is renamed aside before it is deleted, and a new one is filled under a
temporary name and renamed into place, so a run killed at any moment leaves output.dir either
absent, or a run folder with its config.yaml: the same command line can always start again.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmtune.config import Config
from lmtune.errors import ConfigError
from lmtune.run_dir import RunDir
from lmtune.train.resume import changed_keys
from lmtune.train.tracking import Trackers

log = logging.getLogger("lmtune")

Plan = Literal["new", "continue", "replace", "start_over", "finished"]


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]  # what metrics.json holds: validation metrics of the kept model, and more
    best_step: int
    history: list[dict[str, Any]] = field(default_factory=list)  # every log and evaluation record


def plan_output_dir(cfg: Config, in_place: bool) -> Plan:
    """What this run does with output.dir, decided before anything is loaded.

    new: nothing there yet; continue: resume a checkpoint of this folder; replace: output.overwrite;
    start_over: resume=auto, and the folder holds this config's run killed before its first
    checkpoint; finished: resume=auto, and it holds this config's finished run without checkpoints.
    """
    run = RunDir(cfg.output.dir)
    out = run.path
    if run.is_empty():
        return "new"
    if not run.is_run():
        raise ConfigError(f"output.dir={out} exists and is not an lmtune run folder; choose another output.dir")
    if in_place:
        return "continue"
    if cfg.output.overwrite:
        return "replace"
    if cfg.resume != "auto":
        raise ConfigError(
            f"output.dir={out} already holds a run; resume it with --resume, set output.overwrite=true to "
            f"replace it, or choose another output.dir"
        )
    finished = run.is_finished()
    try:
        changes = changed_keys(run.read_config(), cfg)
    except ConfigError as err:
        changes = [f"its {run.config_file.name} cannot be read ({str(err).splitlines()[0]})"]
    if not changes:
        return "finished" if finished else "start_over"
    raise ConfigError(
        f"output.dir={out} holds {'a finished' if finished else 'an unfinished'} run of another config and no complete "
        f"checkpoint to continue from, so --resume cannot continue it ({'; '.join(changes[:5])}); set "
        f"output.overwrite=true to replace it, or choose another output.dir"
    )


def prepare_output_dir(cfg: Config, plan: Plan) -> RunDir:
    """Create the run folder (with its config.yaml) now that every input has been checked."""
    run = RunDir(cfg.output.dir)
    out = run.path
    for leftover in out.parent.glob(f".{out.name}.trash-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if plan in ("replace", "start_over") and out.exists():
        trash = out.with_name(f".{out.name}.trash-{os.getpid()}")
        os.replace(out, trash)
        shutil.rmtree(trash, ignore_errors=True)
    run.create(cfg)
    return run


def finished_result(run: RunDir) -> TrainResult:
    """The result of a finished run, read back from its folder."""
    metrics = run.read_metrics() or {}
    return TrainResult(run.path, metrics, int(metrics.get("best_step") or 0), run.read_history())


class RunLog:
    """metrics.jsonl: one JSON record per log or evaluation, appended as the run goes (and copied to the trackers)."""

    def __init__(self, run: RunDir | None, records: list[dict[str, Any]] | None = None, trackers: Trackers | None = None):
        self.run = run  # None: keep records in memory only (processes other than the main one)
        self.records: list[dict[str, Any]] = list(records or [])
        self.trackers = trackers

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.run is None:
            return
        self.run.append_history(record)
        if self.trackers is not None:
            self.trackers.log(record)
