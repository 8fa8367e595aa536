"""A run folder: the one place that names its files, and how each is written and read.

    OUTPUT_DIR/
      config.yaml               the resolved config (written first: a folder with it is a run)
      train.log                 what the run logged (for people: no program reads it)
      status.json               how the run stands: running / finished / stopped / failed / pruned, step of total steps
      metrics.jsonl             one record per log and evaluation, appended as the run goes
      metrics.json              the final metrics (written last: a folder with it is finished)
      samples.jsonl             generated replies beside their references, per evaluation
      SPLIT_predictions.csv     every validation (or test) example with the kept model's prediction
      best/ final/ merged/      saved models (plain transformers or PEFT folders with lmtune.json)
      checkpoints/step-N/       complete checkpoints (train/checkpoint.py)
      report.md, plots/         the report (report/markdown.py)
      tensorboard/, mlflow_run.json   the trackers' files (train/tracking.py)

The loop, resume, the report, inference and the search use this class; none of them spells a
file name of a run folder itself.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from lmtune.config import Config, load_config
from lmtune.errors import DataError, ModelError
from lmtune.files import csv_text, write_atomically, write_json, write_jsonl, write_text
from lmtune.models.saving import META_FILE

State = Literal["running", "finished", "stopped", "failed", "pruned"]
RECENT_S = 60  # a running record from another machine is taken to be live while it moved within this long


@dataclass
class RunStatus:
    """status.json: where a run stands, written by the training loop and read by the app, the search and the report.

    `started_at` and `start_step` are the time and step of the latest (re)start, for a pace and an ETA;
    `reason` says why a run that did not finish ended (the signal, the error, the pruner's value).
    """

    state: State
    step: int
    total_steps: int
    started_at: float
    start_step: int
    updated_at: float
    reason: str | None = None
    pid: int = 0
    host: str = ""

    @classmethod
    def started(cls, step: int, total_steps: int) -> RunStatus:
        now = time.time()
        return cls("running", step, total_steps, now, step, now, None, os.getpid(), socket.gethostname())

    def is_live(self) -> bool:
        """A running record whose process is still there (on this machine), or that moved lately (on another)."""
        if self.state != "running":
            return False
        if self.host == socket.gethostname() and self.pid:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return time.time() - self.updated_at < RECENT_S

    @property
    def ended(self) -> str:
        """The state as a reader should show it: a running record whose process is gone ended without saying why."""
        return "failed" if self.state == "running" and not self.is_live() else self.state


class RunDir:
    """The files of one run folder (it need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- names ------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def history_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def samples_file(self) -> Path:
        return self.path / "samples.jsonl"

    def predictions_file(self, split: str) -> Path:
        return self.path / f"{split}_predictions.csv"

    @property
    def best(self) -> Path:
        return self.path / "best"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def merged(self) -> Path:
        return self.path / "merged"

    @property
    def export(self) -> Path:
        return self.path / "export"

    def onnx(self, quantized: str | None = None) -> Path:
        """Where `lmtune export --format onnx` writes (onnx-int8 with --quantize int8)."""
        return self.path / (f"onnx-{quantized}" if quantized else "onnx")

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def report_file(self) -> Path:
        return self.path / "report.md"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def mlflow_run_file(self) -> Path:
        return self.path / "mlflow_run.json"

    # --- what the folder is -----------------------------------------------------------------
    def is_empty(self) -> bool:
        """No folder yet, or an empty one: a new run may start here."""
        return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))

    def is_run(self) -> bool:
        return self.path.is_dir() and self.config_file.exists()

    def is_finished(self) -> bool:
        return self.metrics_file.is_file()

    # --- writing ----------------------------------------------------------------------------
    def create(self, cfg: Config) -> None:
        """The folder with its config.yaml, created atomically (a killed run leaves it whole or absent)."""
        if self.path.is_dir():
            write_text(self.config_file, cfg.to_yaml())
        else:
            write_atomically(self.path, lambda tmp: write_text(RunDir(tmp).config_file, cfg.to_yaml()))

    def append_history(self, record: dict[str, Any]) -> None:
        with self.history_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def write_history(self, records: list[dict[str, Any]]) -> None:
        write_jsonl(self.history_file, records)

    def append_samples(self, step: int, samples: Iterable[dict[str, Any]]) -> None:
        with self.samples_file.open("a", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")

    def keep_samples_until(self, step: int) -> None:
        """Drop the samples of steps after `step` (a resumed run restarts from its checkpoint)."""
        if self.samples_file.exists():
            write_jsonl(self.samples_file, [s for s in self.read_samples() if s["step"] <= step])

    def write_predictions(self, split: str, rows: list[dict[str, Any]]) -> None:
        write_text(self.predictions_file(split), csv_text(rows, list(rows[0])))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_file, metrics)

    def write_status(self, status: RunStatus) -> None:
        write_json(self.status_file, asdict(status))

    # --- reading ----------------------------------------------------------------------------
    def read_config(self) -> Config:
        return load_config(self.config_file)

    def read_metrics(self) -> dict[str, Any] | None:
        """metrics.json, or None while the run has not finished."""
        return _json(self.metrics_file)

    def read_status(self) -> RunStatus | None:
        """status.json, or None for a folder from before it was written (or a run that never started training)."""
        data = _json(self.status_file)
        if data is None:
            return None
        known = {f.name for f in fields(RunStatus)}
        try:
            return RunStatus(**{k: v for k, v in data.items() if k in known})
        except TypeError as err:
            raise DataError(f"{self.status_file} is not a run status record ({err})") from None

    def read_history(self) -> list[dict[str, Any]]:
        return _jsonl(self.history_file)

    def read_samples(self) -> list[dict[str, Any]]:
        return _jsonl(self.samples_file)

    def read_predictions(self, split: str) -> list[dict[str, str]]:
        import csv

        path = self.predictions_file(split)
        if not path.is_file():
            return []
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    def model_meta(self) -> dict[str, Any] | None:
        """lmtune.json of the saved model (best/, else final/), or None before one is saved."""
        return _json(self.best / META_FILE) or _json(self.final / META_FILE)


class SearchDir:
    """A search's output.dir: the Optuna study, one run folder per trial, the summary files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def study_db(self) -> Path:
        return self.path / "study.db"

    @property
    def study_record(self) -> Path:
        """Where a study kept outside the folder (search.storage) is named: search/storage.py."""
        return self.path / "study.json"

    def has_study(self) -> bool:
        return self.study_db.is_file() or self.study_record.is_file()

    @staticmethod
    def marks(files: list[str]) -> bool:
        """Whether a folder holding these file names is a search folder."""
        return "study.db" in files or "study.json" in files

    def trial(self, number: int) -> RunDir:
        return RunDir(self.trial_folder(f"trial-{number:04d}"))

    def trial_folder(self, name: str) -> Path:
        return self.path / "trials" / name

    @property
    def trials_file(self) -> Path:
        return self.path / "trials.csv"

    @property
    def best_config_file(self) -> Path:
        return self.path / "best.yaml"

    @property
    def best_run(self) -> RunDir:
        """Where best.yaml retrains the best trial's config."""
        return RunDir(self.path / "best")

    @property
    def plots(self) -> Path:
        return self.path / "plots"


def search_of(run: RunDir) -> SearchDir | None:
    """The search a run folder belongs to (a trial, or the retrained best), or None for a run of its own."""
    for folder in (run.path.parent.parent, run.path.parent):
        search = SearchDir(folder)
        if search.has_study() and (run.path in (search.trial_folder(run.path.name), search.best_run.path)):
            return search
    return None


def find_model_dir(path: str | Path) -> Path | None:
    """A run folder's best/ (else final/) model, a saved model folder itself, or None."""
    run = RunDir(path)
    for candidate in (run.path, run.best, run.final):
        if (candidate / META_FILE).is_file():
            return candidate
    return None


def resolve_model_dir(path: str | Path) -> Path:
    """As find_model_dir, but a path that holds no lmtune model is an error."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p} does not exist; give a run folder or a saved model folder")
    found = find_model_dir(p)
    if found is not None:
        return found
    raise ModelError(f"{p} is neither an lmtune run folder (with best/ or final/) nor a model folder with {META_FILE}")


def run_of_model(folder: Path) -> RunDir:
    """The run folder a saved model folder belongs to (itself when it was saved elsewhere)."""
    run = RunDir(folder.parent)
    return run if folder in (run.best, run.final) else RunDir(folder)


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err})") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line cut short by a crash is left out."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
