"""train.gradient_checkpointing: the same training, with far fewer activations kept between forward and backward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmtune
from conftest import make_config, train_refused
from lmtune.config import build_config
from lmtune.errors import ModelError


def lm_config(tiny_lms, identity_data, out: Path, method: dict, checkpointing: bool) -> dict:
    return make_config(tiny_lms["llama"], identity_data, out, "causal_lm", model={"max_length": 64}, method=method,
                       train={"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "log_every_n_steps": 1,
                              "save_every_n_steps": 1000, "gradient_checkpointing": checkpointing},
                       eval={"generate": False})


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "lora", "lora_rank": 4}])
def test_the_same_losses_with_and_without_checkpointing(tiny_lms, identity_data, tmp_path, method):
    runs = {}
    for on in (False, True):
        lmtune.train(lm_config(tiny_lms, identity_data, tmp_path / str(on), method, on), progress=False)
        runs[on] = losses(tmp_path / str(on))
    assert len(runs[True]) == len(runs[False]) >= 8
    torch.testing.assert_close(runs[True], runs[False], rtol=1e-5, atol=1e-6)  # recomputed in fp32: equal to rounding


def saved_bytes(cfg: dict) -> tuple[int, float]:
    """Bytes of the tensors autograd keeps from forward to backward for one batch, and the loss."""
    from lmtune.train.setup import load_model

    config = build_config(cfg)
    task, tokenizer, model = load_model(config)
    batch = task.collate([task.encode(tokenizer, 64).train[i] for i in range(8)])
    model.train()
    kept = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal kept
        kept += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, units = task.loss(model, batch)
    (total / units).backward()
    return kept, float((total / units).detach())


def test_checkpointing_keeps_far_fewer_activations(tiny_lms, identity_data, tmp_path):
    plain, loss = saved_bytes(lm_config(tiny_lms, identity_data, tmp_path / "a", {"name": "full"}, False))
    checkpointed, same_loss = saved_bytes(lm_config(tiny_lms, identity_data, tmp_path / "b", {"name": "full"}, True))
    assert abs(loss - same_loss) < 1e-6
    assert checkpointed < plain / 2, (checkpointed, plain)  # each block keeps its input only


def test_a_model_without_checkpointing_is_refused_before_training(tiny_lms, identity_data, tmp_path, monkeypatch, capsys):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    cfg = lm_config(tiny_lms, identity_data, tmp_path / "run", {"name": "full"}, True)
    with pytest.raises(ModelError, match="LlamaForCausalLM .* does not support gradient checkpointing"):
        lmtune.train(cfg, progress=False)
    assert "set train.gradient_checkpointing: false" in train_refused(cfg, tmp_path, capsys)
