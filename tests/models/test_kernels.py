"""train.compile (torch.compile in place) and train.liger_kernel (refused where it cannot run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import lmtune
from conftest import make_config, train_refused
from lmtune.errors import ConfigError
from lmtune.models import kernels


def lm_config(tiny_lms, identity_data, out: Path, **train) -> dict:
    return make_config(tiny_lms["llama"], identity_data, out, "causal_lm", model={"max_length": 64},
                       method={"name": "lora", "lora_rank": 4},
                       train={"epochs": 1, "batch_size": 8, "learning_rate": 1e-2, "log_every_n_steps": 1,
                              "save_every_n_steps": 1000, **train},
                       eval={"generate": False})


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


def test_a_compiled_model_trains_alike_and_saves_what_peft_loads(tiny_lms, identity_data, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # Dynamo traces the model as for TorchInductor; generating and building C++ kernels for every
    # graph (training, evaluation, each new length) would take this CPU over a minute, so the graphs
    # run as traced (aot_eager: the forward and backward graphs TorchInductor would be given).
    monkeypatch.setattr(kernels, "BACKEND", "aot_eager")

    lmtune.train(lm_config(tiny_lms, identity_data, tmp_path / "plain"), progress=False)
    lmtune.train(lm_config(tiny_lms, identity_data, tmp_path / "compiled", compile=True), progress=False)
    plain, compiled = losses(tmp_path / "plain"), losses(tmp_path / "compiled")
    assert len(compiled) == len(plain) >= 4
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-4)  # fused kernels round differently, no more

    ids = torch.tensor([[4, 9, 10, 11, 12, 25]])
    with torch.no_grad():
        outputs = [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lms["llama"]), tmp_path / run / "best")
                   .eval()(input_ids=ids).logits for run in ("plain", "compiled")]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)  # the adapter's tensors kept their names


def test_compile_without_a_compiler_is_refused_before_training(tiny_lms, identity_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    cfg = lm_config(tiny_lms, identity_data, tmp_path / "run", compile=True)
    assert "train.compile: TorchInductor needs a C/C++ compiler" in train_refused(cfg, tmp_path, capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_liger_without_a_gpu_is_refused_before_training(tiny_lms, identity_data, tmp_path, capsys):
    cfg = lm_config(tiny_lms, identity_data, tmp_path / "run", liger_kernel=True)
    with pytest.raises(ConfigError, match="train.liger_kernel needs a CUDA GPU"):
        lmtune.train(cfg, progress=False)
    assert "set train.liger_kernel: false" in train_refused(cfg, tmp_path, capsys)
