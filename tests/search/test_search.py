"""The hyperparameter search on a tiny model: trials, resumed studies, pruning, failures, workers, plots."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import yaml
from conftest import make_config

import lmtune
from lmtune.cli import main
from lmtune.config import load_config

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
