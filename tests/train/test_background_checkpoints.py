"""train.background_checkpoints: training goes on while a checkpoint is written, from a copy, one write at a time."""

from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import lmtune
from conftest import make_config
from lmtune.train import checkpoint as ckpt

run_state = importlib.import_module("lmtune.train.state")
step_module = importlib.import_module("lmtune.train.step")

TRAIN = {"epochs": 1, "log_every_n_steps": 1, "save_every_n_steps": 3, "keep_last_checkpoints": 100}


def run(tiny_models, toy_data, out: Path, background: bool) -> Path:
    lmtune.train(make_config(tiny_models["bert"], toy_data, out, train={**TRAIN, "background_checkpoints": background}),
                 progress=False)
    return out


def untimed(value):
    """`value` without its clock readings (seconds, rates), which differ between any two runs."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not k.endswith(("_per_s", "seconds", "runtime_s"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def records(text: str) -> list:
    return untimed([json.loads(line) for line in text.splitlines()])


def test_a_slow_background_write_overlaps_training_and_saves_what_the_foreground_saves(tiny_models, toy_data, tmp_path, monkeypatch):
    foreground = run(tiny_models, toy_data, tmp_path / "foreground", background=False)

    steps = {"done": 0}
    real_step = step_module.Stepper.step

    def counted(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        steps["done"] += 1

    writes: list[dict[str, int]] = []
    active = {"now": 0, "most": 0}
    lock = threading.Lock()
    real_write = run_state.Snapshot.write

    def slow(self, root, step, keep_last, protect):
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
        started = steps["done"]
        time.sleep(0.3)  # the optimizer changes the weights meanwhile: the snapshot must be a copy
        real_write(self, root, step, keep_last, protect)
        writes.append({"step": step, "steps_at_start": started, "steps_at_end": steps["done"]})
        with lock:
            active["now"] -= 1

    monkeypatch.setattr(step_module.Stepper, "step", counted)
    monkeypatch.setattr(run_state.Snapshot, "write", slow)
    background = run(tiny_models, toy_data, tmp_path / "background", background=True)

    assert active["most"] == 1  # never two writes at once
    assert any(w["steps_at_end"] > w["steps_at_start"] for w in writes), writes  # training went on during a write
    # the same losses, and every checkpoint holds the same tensors and state as the foreground run's
    assert records((foreground / "metrics.jsonl").read_text()) == records((background / "metrics.jsonl").read_text())
    names = sorted(p.name for p in (foreground / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (background / "checkpoints").iterdir()) and len(names) >= 4
    for name in names:
        a, b = foreground / "checkpoints" / name, background / "checkpoints" / name
        ckpt.verify(b)
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa) and wa.keys() == wb.keys(), name
        oa, ob = ckpt.load_state(a / "optimizer.pt"), ckpt.load_state(b / "optimizer.pt")
        for key, state in oa["state"].items():
            assert all(torch.equal(state[k], ob["state"][key][k]) for k in state), (name, key)
        assert untimed(json.loads((a / "state.json").read_text())) == untimed(json.loads((b / "state.json").read_text())), name


def test_a_run_ending_mid_write_completes_the_checkpoint_first(tiny_models, toy_data, tmp_path, monkeypatch):
    """The last checkpoint is handed to the writer just before the run ends: the run waits for it."""
    real_write = run_state.Snapshot.write

    def slow(self, root, step, keep_last, protect):
        time.sleep(0.5)
        real_write(self, root, step, keep_last, protect)

    monkeypatch.setattr(run_state.Snapshot, "write", slow)
    out = tmp_path / "run"
    result = lmtune.train(make_config(tiny_models["bert"], toy_data, out, train={**TRAIN, "save_every_n_steps": 1000}),
                          progress=False)
    last = ckpt.latest_valid(out / "checkpoints")
    assert last is not None and last.name == f"step-{result.metrics['steps']}"
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no staging folder left
