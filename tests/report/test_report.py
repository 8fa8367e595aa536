"""Run reports: written by every run, rebuilt byte for byte by `lmtune report`, honest about unfinished runs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

import lmtune
from conftest import make_config
from lmtune.cli import main
from lmtune.errors import ConfigError
from lmtune.report import write_report
from lmtune.run_dir import RunDir


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def binary_run(tiny_models, toy_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    lmtune.train(make_config(tiny_models["bert"], toy_data, out, train={"epochs": 2}, eval={"at_start": True, "every_n_steps": 5}),
                 progress=False)
    return out


def test_a_binary_run_reports_setup_metrics_curves_and_errors(binary_run, toy_data):
    metrics = json.loads((binary_run / "metrics.json").read_text())
    report = (binary_run / "report.md").read_text()
    assert f"best accuracy {metrics['accuracy']:.4f}".rstrip("0") in report
    assert f"{metrics['total_parameters']:,} total, {metrics['trainable_parameters']:,} trainable (100.00%)" in report
    assert "| Metric | Before training | Best (step" in report and f"({metrics['train_examples']:,} examples)" in report
    images = re.findall(r"!\[[^]]*\]\((plots/[^)]+)\)", report)
    assert images == ["plots/loss.png", "plots/metrics.png", "plots/confusion_matrix.png", "plots/roc.png", "plots/pr.png"]
    for image in images:
        assert png_size(binary_run / image) == (640, 400)
    # The ROC-AUC drawn from validation_predictions.csv is the one the evaluation measured.
    shown = float(re.search(r"ROC-AUC ([0-9.]+)", report).group(1))
    assert shown == pytest.approx(metrics["roc_auc"], abs=1e-4)
    with (binary_run / "validation_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    with toy_data["validation"].open() as f:
        validation = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == [v["text"] for v in validation]
    assert {r["step"] for r in rows} == {str(metrics["best_step"])}
    correct = sum(r["label"] == r["predicted"] for r in rows)
    assert correct / len(rows) == pytest.approx(metrics["accuracy"])
    assert all(abs(float(r["p_neg"]) + float(r["p_pos"]) - 1) < 1e-5 for r in rows)
    assert b"\r" not in (binary_run / "validation_predictions.csv").read_bytes()  # plain \n line ends


def test_lmtune_report_rebuilds_the_same_report_and_plots(binary_run, tmp_path, capsys):
    written = {p.relative_to(binary_run): p.read_bytes() for p in [binary_run / "report.md", *(binary_run / "plots").glob("*.png")]}
    copy = tmp_path / "copy"
    shutil.copytree(binary_run, copy)
    shutil.rmtree(copy / "plots")
    (copy / "report.md").unlink()
    (copy / "plots").mkdir()
    (copy / "plots" / "old.png").write_bytes(b"stale")  # an earlier report's plot that no longer applies
    assert main(["report", str(copy)]) == 0
    assert "report written to" in capsys.readouterr().out
    rebuilt = {p.relative_to(copy): p.read_bytes() for p in [copy / "report.md", *(copy / "plots").glob("*.png")]}
    assert rebuilt.keys() == written.keys()
    for name, data in written.items():
        expected = data.replace(binary_run.name.encode(), b"<run>") if name.suffix == ".md" else data
        actual = rebuilt[name].replace(copy.name.encode(), b"<run>") if name.suffix == ".md" else rebuilt[name]
        assert actual == expected, f"{name} differs"


def test_an_unfinished_run_is_reported_as_such(binary_run, tmp_path):
    run = tmp_path / "stopped"
    shutil.copytree(binary_run, run)
    (run / "metrics.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:5]) + '\n{"type": "train", "st')  # a record cut short by a crash
    record = RunDir(run).read_status()
    record.state, record.step, record.reason = "stopped", 10, "stopped by SIGTERM at step 10 of 30; a checkpoint ..."
    RunDir(run).write_status(record)
    report = write_report(run).read_text()
    assert "**stopped** at step 10 of 30 (stopped by SIGTERM at step 10 of 30; a checkpoint ...)" in report
    assert "times are not known" in report and "plots/loss.png" in report
    record.state, record.reason, record.pid = "running", None, 2**22 + 1  # a crash: the record still says running, its process is gone
    RunDir(run).write_status(record)
    assert "**failed** at step 10 of 30 (its process ended without saying why)" in write_report(run).read_text()
    RunDir(run).status_file.unlink()  # a folder from before status.json
    last = json.loads(lines[4])["step"]
    assert f"**not finished**: the last record is from step {last}" in write_report(run).read_text()


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not an lmtune run folder"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


def test_a_report_that_cannot_be_drawn_does_not_fail_the_run(tiny_models, toy_data, tmp_path, monkeypatch, caplog):
    from lmtune.train import loop

    def broken(folder):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(loop, "write_report", broken)
    out = tmp_path / "run"
    lmtune.train(make_config(tiny_models["bert"], toy_data, out, train={"epochs": 1}), progress=False)
    assert (out / "metrics.json").is_file() and (out / "best" / "model.safetensors").is_file()
    assert not (out / "report.md").exists()
    assert f"rebuild it with: lmtune report {out}" in caplog.text
