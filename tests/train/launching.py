"""`lmtune train` launched as users launch it on several processes: accelerate launch with a config of examples/accelerate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # losses and weights of a launched run against the same run in one plain process


def launch(cfg: dict, folder: Path, accelerate_config: str, *extra: str, processes: int = 2) -> subprocess.CompletedProcess:
    """accelerate launch --config_file examples/accelerate/ACCELERATE_CONFIG -m lmtune.cli train (cfg, written to folder)."""
    config_file = folder / f"{Path(cfg['output']['dir']).name}.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--config_file", str(ROOT / "examples/accelerate" / accelerate_config),
               "--num_processes", str(processes), "--main_process_port", str(free_port()),
               "-m", "lmtune.cli", "train", str(config_file), "--quiet", *extra]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=TOLERANCE, rtol=TOLERANCE, msg=name)


def copy_from_checkpoint(run: Path, step: int, to: Path) -> Path:
    """A run folder `to` holding only run's checkpoint of `step` (and of its best model) and config: what a resume from step needs."""
    (to / "checkpoints").mkdir(parents=True)
    best = json.loads((run / f"checkpoints/step-{step}/state.json").read_text())["best"]["step"]
    for s in {step, best} - {0}:
        shutil.copytree(run / f"checkpoints/step-{s}", to / f"checkpoints/step-{s}")
    shutil.copy(run / "config.yaml", to / "config.yaml")
    return to
