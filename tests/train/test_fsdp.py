"""FSDP2 through `accelerate launch` with examples/accelerate/fsdp2.yaml: two CPU processes (gloo) train as one does.

Two FSDP processes with one batch each per step see the same global batch as one process with
gradient accumulation over two: the losses agree to 1e-5 (the sums are only reordered; measured
below 1e-7) and so do the saved weights. Checkpoints hold each process's shards; a resume from one
is exact (the same losses, bit for bit, and the same final weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from launching import TOLERANCE, assert_close, copy_from_checkpoint, losses
from launching import launch as fsdp_launch
from safetensors.torch import load_file

from conftest import make_config

FSDP = "fsdp2.yaml"


def launch(cfg: dict, folder: Path, *extra: str) -> None:
    fsdp_launch(cfg, folder, FSDP, *extra)


def one_process(cfg: dict) -> None:
    from lmtune.train.loop import train

    train(cfg, progress=False)


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
    resumed = copy_from_checkpoint(run, 20, tmp_path / "resumed")
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
