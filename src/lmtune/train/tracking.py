"""Stream a run's logged scalars to TensorBoard and MLflow (`train.report_to`), when installed.

metrics.jsonl stays the record of the run; the trackers get a copy of each record as it is
written. A tracker that fails mid-run (a full disk, an unreachable MLflow server) is switched
off with a warning: it never stops the training.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from lmtune.config import Config, flatten_keys
from lmtune.errors import ConfigError
from lmtune.eval.metrics import scalar_metrics
from lmtune.run_dir import RunDir

log = logging.getLogger("lmtune")

PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny")}  # import name, pip name


def check_trackers(cfg: Config) -> None:
    """Refuse, before anything is written, a tracker whose package is missing."""
    for name in cfg.train.report_to:
        module, pip_name = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"train.report_to includes {name!r}, but the {module} package is not installed; "
                f"install it (pip install {pip_name}) or remove {name!r} from train.report_to"
            )


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """`train/loss`, `eval/accuracy`, ...: the metrics of one metrics.jsonl record, named by its kind."""
    kind = record.get("type", "train")
    return {f"{kind}/{k}": v for k, v in scalar_metrics(record).items()}


class TensorBoard:
    def __init__(self, cfg: Config, run: RunDir, resumed_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides what an earlier process logged after the resumed checkpoint
        self.writer = SummaryWriter(str(run.tensorboard), purge_step=None if resumed_step is None else resumed_step + 1)
        if resumed_step is None:
            self.writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow:
    def __init__(self, cfg: Config, run: RunDir, resumed_step: int | None):
        from mlflow.tracking import MlflowClient

        uri = cfg.train.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local folder: `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db` shows it
            folder = Path("mlruns").resolve()
            folder.mkdir(exist_ok=True)
            uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        run_file = run.mlflow_run_file
        if resumed_step is not None and run_file.is_file():
            self.run_id = json.loads(run_file.read_text(encoding="utf-8"))["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(cfg.train.mlflow_experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.train.mlflow_experiment)
        created = self.client.create_run(experiment_id, run_name=run.path.name, tags={"lmtune.output_dir": str(run.path.resolve())})
        self.run_id = created.info.run_id
        run_file.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id}) + "\n", encoding="utf-8")
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten_keys(cfg.model_dump(mode="json")).items() if not k.startswith("search.")]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow metric names allow letters, digits, _ - . / and spaces
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow}


class Trackers:
    """The trackers `train.report_to` names, started for this run (main process only)."""

    def __init__(self, cfg: Config, run: RunDir, resumed_step: int | None):
        self.active: dict[str, Any] = {}
        for name in cfg.train.report_to:
            try:
                self.active[name] = TRACKERS[name](cfg, run, resumed_step)
            except Exception as err:  # noqa: BLE001 - a tracker is a copy; the run goes on without it
                log.warning("train.report_to: %s could not start (%s: %s); the run goes on without it", name, type(err).__name__, err)

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        for name, tracker in list(self.active.items()):
            try:
                tracker.log(int(record.get("step", 0)), values)
            except Exception as err:  # noqa: BLE001
                log.warning("train.report_to: %s failed (%s: %s) and is switched off for this run", name, type(err).__name__, err)
                del self.active[name]

    def close(self, status: str = "FINISHED") -> None:
        """status: FINISHED, FAILED or KILLED (MLflow's run states)."""
        for name, tracker in self.active.items():
            try:
                tracker.close(status)
            except Exception as err:  # noqa: BLE001
                log.warning("train.report_to: %s did not close cleanly (%s: %s)", name, type(err).__name__, err)
        self.active = {}

