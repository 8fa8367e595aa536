"""FSDP2 through `accelerate launch` with examples/accelerate/fsdp2.yaml: two CPU processes (gloo) train as one does.

Two FSDP processes with one batch each per step see the same global batch as one process with
gradient accumulation over two: the losses agree to 1e-5 (the sums are only reordered; measured
below 1e-7) and so do the saved weights. Checkpoints hold each process's shards; a resume from one
is exact (the same losses, bit for bit, and the same final weights).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import make_config, train_refused

ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = ROOT / "examples/accelerate/fsdp2.yaml"
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg: dict, folder: Path, *extra: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`lmtune train` under FSDP2, launched as users launch it: accelerate launch --config_file examples/accelerate/fsdp2.yaml."""
    config_file = folder / f"{Path(cfg['output']['dir']).name}.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--config_file", str(FSDP_CONFIG), "--num_processes", str(processes),
               "--main_process_port", str(free_port()), "-m", "lmtune.cli", "train", str(config_file), "--quiet", *extra]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def one_process(cfg: dict) -> None:
    from lmtune.train.loop import train

    train(cfg, progress=False)


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=TOLERANCE, rtol=TOLERANCE, msg=name)


TRAIN = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "log_every_n_steps": 1, "save_every_n_steps": 5,
         "keep_last_checkpoints": 100}


def test_fsdp_trains_as_one_process_and_resumes_exactly(tiny_models, toy_data, tmp_path):
    # 240 rows in batches of 8: 30 batches an epoch, 15 steps of 2 batches (one per process)
    sharded = make_config(tiny_models["llama"], toy_data, tmp_path / "fsdp", train=TRAIN)
    launch(sharded, tmp_path)
    run = tmp_path / "fsdp"
    single = make_config(tiny_models["llama"], toy_data, tmp_path / "single", train={**TRAIN, "gradient_accumulation_steps": 2})
    one_process(single)

    a, b = losses(run), losses(tmp_path / "single")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 31))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < TOLERANCE
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0.85
    # best/ and final/ are whole models that plain transformers loads
    assert_close(load_file(run / "final/model.safetensors"), load_file(tmp_path / "single/final/model.safetensors"))
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(run / "best")
    saved = load_file(run / "best/model.safetensors")
    assert all(torch.equal(p, saved[n]) for n, p in model.state_dict().items() if n in saved)
    # a checkpoint holds each process's shards, listed in its manifest
    step = run / "checkpoints/step-20"
    manifest = json.loads((step / "manifest.json").read_text())
    assert manifest["layout"] == "sharded"
    assert {"shards/.metadata", "rng-0.pt", "rng-1.pt"} <= set(manifest["files"])
    assert not (step / "model.safetensors").exists()

    # Resume a copy of the run from step 20 (mid-epoch) under FSDP again: the same losses, the same weights.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    best_step = json.loads((step / "state.json").read_text())["best"]["step"]
    for s in {20, best_step}:
        shutil.copytree(run / f"checkpoints/step-{s}", resumed / f"checkpoints/step-{s}")
    shutil.copy(run / "config.yaml", resumed / "config.yaml")
    launch({**sharded, "output": {"dir": str(resumed)}}, tmp_path, "--resume")
    assert losses(resumed) == losses(run)
    x, y = load_file(run / "final/model.safetensors"), load_file(resumed / "final/model.safetensors")
    assert all(torch.equal(x[n], y[n]) for n in x)



def test_a_sharded_checkpoint_resumed_without_fsdp_is_refused(tiny_models, toy_data, tmp_path, capsys):
    cfg = make_config(tiny_models["llama"], toy_data, tmp_path / "fsdp", train={**TRAIN, "epochs": 1, "max_steps": 5})
    launch(cfg, tmp_path)
    from lmtune.cli import main

    before = sorted(p.name for p in (tmp_path / "fsdp/checkpoints").iterdir())
    capsys.readouterr()
    assert main(["train", str(tmp_path / "fsdp.yaml"), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "written under FSDP2" in err and "accelerate config" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "fsdp/checkpoints").iterdir()) == before


def test_fsdp_lora_saves_the_adapter_of_one_process(tiny_models, toy_data, tmp_path):
    method = {"name": "lora", "lora_rank": 4, "lora_dropout": 0.0}
    sharded = make_config(tiny_models["llama"], toy_data, tmp_path / "fsdp", method=method, train=TRAIN,
                          output={"merge_lora": True})
    launch(sharded, tmp_path)
    single = make_config(tiny_models["llama"], toy_data, tmp_path / "single", method=method,
                         train={**TRAIN, "gradient_accumulation_steps": 2}, output={"merge_lora": True})
    one_process(single)
    a, b = losses(tmp_path / "fsdp"), losses(tmp_path / "single")
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < TOLERANCE
    for folder, name in (("best", "adapter_model.safetensors"), ("final", "adapter_model.safetensors"), ("merged", "model.safetensors")):
        assert_close(load_file(tmp_path / "fsdp" / folder / name), load_file(tmp_path / "single" / folder / name))


@pytest.mark.parametrize(("env", "config", "says"), [
    ({"FSDP_VERSION": "1", "ACCELERATE_USE_FSDP": "true"}, {}, "fsdp_version: 2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, {"eval": {"generate": True}}, "eval.generate=false"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"}, {}, "no GPU"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, "examples/accelerate/fsdp2.yaml"),
])
def test_what_an_engine_cannot_do_is_refused_before_anything_loads(tiny_lms, identity_data, tmp_path, capsys, monkeypatch, env, config, says):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = make_config(tiny_lms["llama"], identity_data, tmp_path / "run", "causal_lm", **config)
    err = train_refused(cfg, tmp_path, capsys)
    assert says in err and "Traceback" not in err
