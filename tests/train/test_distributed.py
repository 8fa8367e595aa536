"""Two CPU processes launched by torchrun train one model together through Accelerate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import make_config


def test_two_processes_share_the_batches(tiny_models, toy_data, tmp_path):
    cfg = make_config(tiny_models["llama"], toy_data, tmp_path / "run", train={"epochs": 6, "learning_rate": 3e-3})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "lmtune.cli", "train", str(config_file), "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 15 batches of 16 per epoch, split over 2 processes: 8 optimizer steps per epoch
    assert metrics["steps"] == 6 * 8
    assert metrics["accuracy"] >= 0.9
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["type"] == "eval"]) == 6  # written once, by the main process
    assert proc.stderr.count("trainable") == 1  # one process reports
