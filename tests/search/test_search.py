"""The hyperparameter search on a tiny model: trials, resumed studies, pruning, failures, workers, plots."""

from __future__ import annotations

import csv
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import lmtune
from conftest import make_config
from lmtune.cli import main
from lmtune.config import load_config
from lmtune.run_dir import RunDir

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


def search_config(tiny_models, toy_data, out: Path, **search) -> dict:
    cfg = make_config(tiny_models["bert"], toy_data, out, train={"epochs": 1, "save_every_n_steps": 1000, "keep_last_checkpoints": 1})
    cfg["search"] = {"n_trials": 4, "space": {"train.learning_rate": LR}, **search}
    return cfg


def trials(out: Path) -> list[dict]:
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_a_search_writes_trials_a_best_config_and_plots_and_resumes(tiny_models, toy_data, tmp_path, capsys):
    out = tmp_path / "search"
    cfg = search_config(tiny_models, toy_data, out, space={
        "train.learning_rate": LR,
        "method.name": {"type": "categorical", "choices": ["full", "lora"]},
        "method.lora_rank": {"type": "categorical", "choices": [2, 8], "when": {"method.name": "lora"}},
    })
    summary = lmtune.search(cfg)
    rows = trials(out)
    assert [r["state"] for r in rows] == ["complete"] * 4 and summary.counts == {"complete": 4}
    for r in rows:  # the rank is only sampled for lora trials
        assert (r["method.lora_rank"] != "") == (r["method.name"] == "lora")
        assert (Path(r["run_dir"]) / "metrics.json").is_file()
    best = max(rows, key=lambda r: float(r["accuracy"]))
    assert summary.best_value == float(best["accuracy"]) and summary.metric == "accuracy"
    best_cfg = load_config(out / "best.yaml")  # a complete config `lmtune train` accepts
    assert best_cfg.train.learning_rate == float(best["train.learning_rate"]) and best_cfg.method.name == best["method.name"]
    for name in ("history.png", "importances.png", "train.learning_rate.png", "method.name.png"):
        assert png_size(out / "plots" / name) == (640, 400)

    config_file = tmp_path / "search.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    assert main(["search", str(config_file), "search.n_trials=2"]) == 0  # the same study, two more trials
    assert len(trials(out)) == 6
    assert "best_value" in capsys.readouterr().out


def test_unpromising_trials_are_pruned_from_their_evaluations(tiny_models, toy_data, tmp_path):
    out = tmp_path / "search"
    cfg = search_config(tiny_models, toy_data, out, n_trials=6, sampler="random", pruner="median",
                        space={"train.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-8]}})
    cfg["train"]["epochs"] = 3
    cfg["eval"] = {"every_n_steps": 10}
    summary = lmtune.search(cfg)
    rows = trials(out)
    pruned = [r for r in rows if r["state"] == "pruned"]
    complete = [r for r in rows if r["state"] == "complete"]
    assert pruned and complete and len(pruned) + len(complete) == 6
    assert summary.best_params["train.learning_rate"] == 3e-3
    assert all(r["train.learning_rate"] == "1e-08" for r in pruned)  # only the rate that learns nothing was cut short
    for r in rows:  # each trial's folder says how it ended, for the app and the report
        record = RunDir(r["run_dir"]).read_status()
        assert record.state == ("pruned" if r["state"] == "pruned" else "finished")
        if r["state"] == "pruned":
            assert record.reason.startswith("pruned: ") and record.step < record.total_steps


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny_models, toy_data, tmp_path):
    out = tmp_path / "search"
    cfg = search_config(tiny_models, toy_data, out, n_trials=2, sampler="grid", space={
        "method.name": {"type": "categorical", "choices": ["freeze"]},
        "method.trainable_layers": {"type": "categorical", "choices": [2, 9]},  # the model has 4 blocks
    })
    summary = lmtune.search(cfg)
    states = {r["method.trainable_layers"]: r["state"] for r in trials(out)}
    assert states == {"2": "complete", "9": "fail"}
    assert summary.counts == {"complete": 1, "fail": 1} and summary.best_params["method.trainable_layers"] == 2


def test_two_workers_share_one_study(tiny_models, toy_data, tmp_path):
    out = tmp_path / "search"
    summary = lmtune.search(search_config(tiny_models, toy_data, out, sampler="random"), workers=2)
    rows = trials(out)
    assert sorted(int(r["number"]) for r in rows) == [0, 1, 2, 3]
    assert all(r["state"] == "complete" for r in rows) and summary.counts == {"complete": 4}
    assert len({r["run_dir"] for r in rows}) == 4
    assert len({r["train.learning_rate"] for r in rows}) == 4  # each worker samples with a seed of its own


def test_search_config_errors(tiny_models, toy_data, tmp_path, capsys):
    config_file = tmp_path / "s.yaml"
    cfg = search_config(tiny_models, toy_data, tmp_path / "out", space={"train.learnin_rate": LR})
    config_file.write_text(yaml.safe_dump(cfg))
    assert main(["search", str(config_file)]) == 2
    assert "'train.learnin_rate' is not a config key" in capsys.readouterr().err
    no_space = tmp_path / "no-space.yaml"
    no_space.write_text(yaml.safe_dump({**cfg, "search": {"n_trials": 2}}))
    assert main(["search", str(no_space)]) == 2
    assert "search.space is empty" in capsys.readouterr().err
    assert main(["search", str(config_file), "search.n_trials=null"]) == 2
    assert "search.n_trials or search.timeout" in capsys.readouterr().err


def test_space_entries_that_can_never_work_are_refused_before_any_trial(tiny_models, toy_data, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        ({"train": {"type": "categorical", "choices": [1, 2]}}, ["'train' is not a config key one can search"]),
        ({"method.name": {"type": "categorical", "choices": ["full", "bogus"]}}, ["search.space.method.name", "'bogus'", "'lora'"]),
        ({"train.learning_rate": {"type": "float", "low": -1.0, "high": 1e-3}}, ["search.space.train.learning_rate", "range end -1.0"]),
        ({"train.epochs": {"type": "int", "low": 1.5, "high": 3}}, ["search.space.train.epochs", "whole ends"]),
    ]
    for space, expected in cases:
        config_file = tmp_path / "s.yaml"
        config_file.write_text(yaml.safe_dump(search_config(tiny_models, toy_data, out, space=space)))
        assert main(["search", str(config_file), "--quiet"]) == 2, space
        err = capsys.readouterr().err
        assert err.startswith("lmtune: error: ") and "Traceback" not in err
        for part in expected:
            assert part in err, (part, err)
        assert not (out / "trials").exists()


def test_a_search_whose_every_trial_fails_exits_non_zero_and_says_why_once(tiny_models, toy_data, tmp_path, capsys):
    out = tmp_path / "search"
    cfg = search_config(tiny_models, toy_data, out, n_trials=3, sampler="random", space={
        "method.name": {"type": "categorical", "choices": ["freeze"]},
        "method.trainable_layers": {"type": "int", "low": 7, "high": 9},  # the model has 4 blocks
    })
    config_file = tmp_path / "s.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    assert main(["search", str(config_file), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "best.yaml" not in captured.out
    assert "all 3 trials of this search failed" in captured.err and "only 4 blocks" in captured.err
    assert captured.err.count("has only 4 blocks") <= 3  # once per reason, not a traceback per trial
    assert [r["state"] for r in trials(out)] == ["fail"] * 3 and not (out / "best.yaml").exists()


def test_the_search_asks_the_task_for_its_metric(tiny_models, tmp_path):
    """auto label type with fractional labels is regression, which reports mse, not accuracy."""
    import random

    rng = random.Random(0)
    files = {}
    for split, n in (("train", 120), ("validation", 30)):
        path = tmp_path / f"{split}.csv"
        rows = ["text,label"] + [f"{'good ' * k}movie,{k / 4}" for k in (rng.randint(0, 6) for _ in range(n))]
        path.write_text("\n".join(rows) + "\n")
        files[split] = path
    cfg = make_config(tiny_models["bert"], files, tmp_path / "search", train={"epochs": 1, "save_every_n_steps": 1000, "keep_last_checkpoints": 1})
    cfg["search"] = {"n_trials": 2, "space": {"train.learning_rate": LR}}
    summary = lmtune.search(cfg)
    assert summary.metric == "mse" and summary.direction == "minimize"
    assert summary.counts == {"complete": 2} and (tmp_path / "search" / "best.yaml").is_file()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_signal_stops_the_whole_search_and_records_the_trials_it_cut_short(tiny_models, toy_data, tmp_path, workers):
    """SIGTERM (the web app's Stop, or a scheduler's) ends the search: each running trial checkpoints and is recorded, no new trial starts."""
    out = tmp_path / "search"
    cfg = search_config(tiny_models, toy_data, out, n_trials=4)
    cfg["train"]["epochs"] = 200
    config_file = tmp_path / "s.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "lmtune", "search", str(config_file), "--quiet", "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    histories = [out / "trials" / f"trial-{n:04d}" / "metrics.jsonl" for n in range(workers)]
    deadline = time.monotonic() + 120
    while not all(h.exists() for h in histories):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    if workers == 1:
        assert "during trial 0, which is recorded as failed" in stderr
    rows = trials(out)
    assert [r["state"] for r in rows] == ["fail"] * workers and not (out / "trials" / f"trial-{workers:04d}").exists()
    assert all(any((out / "trials" / f"trial-{n:04d}" / "checkpoints").glob("step-*")) for n in range(workers))
