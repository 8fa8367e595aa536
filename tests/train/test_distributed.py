"""Two CPU processes launched by torchrun train one model together through Accelerate, and resume exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from launching import copy_from_checkpoint, losses
from safetensors.torch import load_file

from conftest import make_config


def torchrun(config_file: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    launcher = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(launcher), "--nproc_per_node", "2", "-m", "lmtune.cli", "train", str(config_file), "--quiet", *extra],
        capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
    )


def test_two_processes_share_the_batches_and_resume_exactly(tiny_models, toy_data, tmp_path):
    train = {"epochs": 6, "learning_rate": 3e-3, "log_every_n_steps": 1, "save_every_n_steps": 5, "keep_last_checkpoints": 100}
    cfg = make_config(tiny_models["llama"], toy_data, tmp_path / "run", train=train)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    proc = torchrun(config_file, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 15 batches of 16 per epoch, split over 2 processes: 8 optimizer steps per epoch
    assert metrics["steps"] == 6 * 8
    assert metrics["accuracy"] >= 0.9
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["type"] == "eval"]) == 6  # written once, by the main process
    assert proc.stderr.count("trainable") == 1  # one process reports

    # Resume a copy of the run from step 20 (mid-epoch: 8 steps per epoch) with two processes again.
    resumed = copy_from_checkpoint(tmp_path / "run", 20, tmp_path / "resumed")
    assert {"rng-0.pt", "rng-1.pt"} <= {p.name for p in (resumed / "checkpoints/step-20").iterdir()}
    config_file.write_text(yaml.safe_dump({**cfg, "output": {"dir": str(resumed)}}))
    proc = torchrun(config_file, tmp_path, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert losses(resumed) == losses(tmp_path / "run")
    a, b = load_file(tmp_path / "run/final/model.safetensors"), load_file(resumed / "final/model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a)
