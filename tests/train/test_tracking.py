"""train.report_to: TensorBoard and MLflow receive what metrics.jsonl records; a broken tracker never stops a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmtune
from conftest import make_config
from lmtune.errors import ConfigError
from lmtune.train import tracking


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_and_mlflow_get_every_logged_scalar(tiny_models, toy_data, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = make_config(tiny_models["bert"], toy_data, out, train={
        "epochs": 1, "report_to": ["tensorboard", "mlflow"], "mlflow_tracking_uri": uri, "mlflow_experiment": "toy"})
    lmtune.train(cfg, progress=False)
    records = logged(out)
    train_loss = [(r["step"], r["loss"]) for r in records if r["type"] == "train"]
    accuracy = [(r["step"], r["accuracy"]) for r in records if r["type"] == "eval"]
    assert train_loss and accuracy

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == train_loss
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("eval/accuracy")] == accuracy

    client = MlflowClient(tracking_uri=uri)
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert float(run.data.params["train.learning_rate"]) == cfg["train"]["learning_rate"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "eval/accuracy"))
    assert history == [(s, pytest.approx(v)) for s, v in accuracy]


def test_a_missing_tracker_package_is_refused_before_anything_is_written(tiny_models, toy_data, tmp_path, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"train.report_to includes 'mlflow', but the mlflow package is not installed"):
        lmtune.train(make_config(tiny_models["bert"], toy_data, out, train={"report_to": ["mlflow"]}), progress=False)
    assert not out.exists()


def test_a_tracker_that_fails_mid_run_is_switched_off_and_the_run_finishes(tiny_models, toy_data, tmp_path, monkeypatch, caplog):
    def broken(self, step, values):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoard, "log", broken)
    out = tmp_path / "run"
    result = lmtune.train(make_config(tiny_models["bert"], toy_data, out, train={"epochs": 1, "report_to": ["tensorboard"]}),
                          progress=False)
    assert (out / "best" / "model.safetensors").is_file() and result.metrics["steps"] > 0
    assert "tensorboard failed (OSError: disk full) and is switched off" in caplog.text


def test_a_resumed_run_logs_to_the_same_mlflow_run(tiny_models, toy_data, tmp_path):
    from mlflow.tracking import MlflowClient

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = make_config(tiny_models["bert"], toy_data, out, train={"epochs": 1, "report_to": ["mlflow"], "mlflow_tracking_uri": uri})
    lmtune.train(cfg, progress=False)
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    cfg["train"]["epochs"] = 2  # go on for a second epoch from the last checkpoint
    lmtune.train({**cfg, "resume": "auto", "resume_allow_changes": True}, progress=False)
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == run_id
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("lmtune").experiment_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "eval/accuracy"))
    assert steps == [r["step"] for r in logged(out) if r["type"] == "eval"] and len(steps) == 2
