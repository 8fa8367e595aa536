"""Adversarial training on the input embeddings: the perturbation's math, and runs with every method."""

from __future__ import annotations

import json

import pytest
import torch
from launching import launch
from safetensors.torch import load_file
from torch import nn

import lmtune
from conftest import make_config
from lmtune.errors import ConfigError
from lmtune.models.embedding_noise import EmbeddingNoise, embedding_noise, normalized, project
from lmtune.schema import TrainConfig
from lmtune.train.adversarial import Adversary


class Tiny(nn.Module):
    """Embeddings, a linear layer and a mean: small enough to check the perturbation by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 1)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(ids)) * mask.unsqueeze(-1)
        return self.out(h).sum()


IDS = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def perturbations(adversary: Adversary, model: Tiny) -> list[torch.Tensor]:
    """One backward of the adversary on IDS; the delta each of its forward passes added."""
    used = []
    original = EmbeddingNoise._hook

    def spy(self, module, inputs, output):
        out = original(self, module, inputs, output)
        if self.used is not None and self.calls == 1:
            used.append(self.used.detach().clone())
        return out

    EmbeddingNoise._hook = spy
    try:
        adversary.backward(lambda: model(IDS, MASK), MASK, lambda loss: loss.backward(), lambda final: torch.enable_grad())
    finally:
        EmbeddingNoise._hook = original
    return used


def test_fgm_step_is_epsilon_times_the_normalized_gradient():
    model = Tiny()
    adversary = Adversary(TrainConfig(adversarial="fgm", adversarial_epsilon=0.7), model)
    # the gradient of the clean loss with respect to the embeddings, by autograd directly
    emb = model.embed(IDS).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.out(torch.tanh(emb) * MASK.unsqueeze(-1)).sum(), emb)
    expected = 0.7 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1)
    assert torch.allclose(expected.flatten(1).norm(dim=1), torch.tensor([0.7, 0.7]))

    used = perturbations(adversary, model)
    assert len(used) == 2 and torch.all(used[0] == 0)  # the clean pass, then the FGM step
    assert torch.allclose(used[1], expected, atol=1e-6)
    # the update's gradient is that of the clean loss plus that of the perturbed loss
    adversarial = model.out.weight.grad.clone()
    model.zero_grad()
    model(IDS, MASK).backward()
    with embedding_noise(model, MASK) as noise:
        noise.run(lambda: model(IDS, MASK), expected).backward()
    assert torch.allclose(adversarial, model.out.weight.grad, atol=1e-6)


def test_fgm_direction_matches_the_hand_computed_one():
    model = Tiny()
    with embedding_noise(model, MASK) as noise:
        noise.run(lambda: model(IDS, MASK), "zero").backward()
        grad = noise.used.grad
    step = 0.5 * normalized(grad)
    assert torch.allclose(step.flatten(1).norm(dim=1), torch.tensor([0.5, 0.5]))
    assert torch.all(step[0, 3] == 0) and torch.all(step[1, 2:] == 0)  # padding is never moved
    # the step raises the loss, to first order by epsilon times the gradient's norm
    with embedding_noise(model, MASK) as noise:
        clean = float(model(IDS, MASK).detach())
        moved = float(noise.run(lambda: model(IDS, MASK), 1e-3 * normalized(grad)))
    assert moved - clean == pytest.approx(1e-3 * float(grad.flatten(1).norm(dim=1).sum()), rel=1e-2)


@pytest.mark.parametrize("method", ["pgd", "freelb"])
def test_pgd_and_freelb_stay_in_their_ball(method):
    model = Tiny()
    adversary = Adversary(TrainConfig(adversarial=method, adversarial_epsilon=0.2, adversarial_alpha=0.15,
                                      adversarial_steps=5), model)
    used = perturbations(adversary, model)
    assert len(used) == (6 if method == "pgd" else 5)  # clean + steps passes (pgd), steps passes (freelb)
    norms = torch.stack([u.flatten(1).norm(dim=1) for u in used])
    assert torch.all(norms <= 0.2 + 1e-6)
    assert float(norms[-1].min()) == pytest.approx(0.2, rel=1e-4)  # 5 steps of 0.15 reach the boundary
    assert torch.all(norms[0] == 0)  # the first pass is clean


def test_project_keeps_inside_and_pulls_back_outside():
    delta = torch.tensor([[[0.3, 0.4]], [[3.0, 4.0]]])  # norms 0.5 and 5
    out = project(delta, 1.0)
    assert torch.equal(out[0], delta[0])
    assert torch.allclose(out[1].norm(), torch.tensor(1.0))
    assert torch.allclose(out[1] / out[1].norm(), delta[1] / delta[1].norm())


@pytest.mark.parametrize(("method", "adversarial", "accumulation"), [
    ("full", "fgm", 1), ("full", "pgd", 2), ("full", "freelb", 1), ("lora", "fgm", 1),
])
def test_adversarial_training_learns_with_every_method(tiny_models, toy_data, tmp_path, method, adversarial, accumulation):
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run", method={"name": method},
                      train={"adversarial": adversarial, "adversarial_epsilon": 0.01, "gradient_accumulation_steps": accumulation,
                             "adversarial_alpha": 0.005, "batch_size": 16 // accumulation, "epochs": 4,
                             **({"learning_rate": 1e-2, "epochs": 6, "adversarial_epsilon": 0.003} if method == "lora" else {})})
    metrics = lmtune.train(cfg, progress=False).metrics
    assert metrics["accuracy"] >= (0.7 if method == "lora" else 0.85), metrics  # the tiny random BERT learns less with LoRA


def test_frozen_weights_stay_bit_identical(tiny_models, toy_data, tmp_path):
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run", method={"name": "freeze", "trainable_layers": 1},
                      train={"adversarial": "pgd", "adversarial_epsilon": 0.01, "adversarial_alpha": 0.005, "epochs": 1})
    lmtune.train(cfg, progress=False)
    base = load_file(tiny_models["bert"] / "model.safetensors")
    final = load_file(tmp_path / "run/final/model.safetensors")
    frozen = [k for k in final if "embeddings" in k or ".layer.0." in k]
    changed = [k for k in final if "classifier" in k]
    assert frozen and changed
    for key in frozen:
        original = next(v for k, v in base.items() if k.endswith(key.split(".", 1)[1]))
        assert torch.equal(final[key], original), key
    assert not torch.equal(final[changed[0]], torch.zeros_like(final[changed[0]]))


def test_clean_loss_is_logged_and_perturbation_changes_the_update(tiny_models, toy_data, tmp_path):
    train = {"epochs": 1, "max_steps": 3, "log_every_n_steps": 1}
    plain = make_config(tiny_models["bert"], toy_data, tmp_path / "plain", train=train)
    adv = make_config(tiny_models["bert"], toy_data, tmp_path / "adv", train={**train, "adversarial": "fgm"})
    lmtune.train(plain, progress=False)
    lmtune.train(adv, progress=False)

    def train_losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["type"] == "train"]

    a, b = train_losses(tmp_path / "plain"), train_losses(tmp_path / "adv")
    assert a[0] == pytest.approx(b[0], abs=1e-6)  # same weights at step 1: the logged loss is the clean one
    assert a[1:] != pytest.approx(b[1:], abs=1e-6)  # the updates differ


def test_two_processes_train_adversarially(tiny_models, toy_data, tmp_path):
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run",
                      train={"adversarial": "pgd", "adversarial_epsilon": 0.01, "adversarial_alpha": 0.005, "adversarial_steps": 2,
                             "epochs": 6, "learning_rate": 3e-3, "gradient_accumulation_steps": 2, "batch_size": 4})
    proc = launch(cfg, tmp_path, "ddp.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["accuracy"] >= 0.85


def test_refused_with_compile(tiny_models, toy_data, tmp_path):
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run", train={"adversarial": "fgm", "compile": True})
    with pytest.raises(ConfigError, match="train.adversarial=fgm and train.compile"):
        lmtune.train(cfg, progress=False)


@pytest.mark.parametrize(("engine", "name"), [("fsdp", "FSDP"), ("deepspeed", "DeepSpeed")])
def test_refused_under_sharding_engines(tiny_models, toy_data, tmp_path, monkeypatch, engine, name):
    from lmtune.config import build_config
    from lmtune.train.engines import check_engine

    monkeypatch.setenv("FSDP_VERSION", "2")
    cfg = build_config(make_config(tiny_models["bert"], toy_data, tmp_path / "run", train={"adversarial": "pgd"}))
    with pytest.raises(ConfigError, match=f"train.adversarial=pgd cannot run under {name}"):
        check_engine(cfg, engine)
