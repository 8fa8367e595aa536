"""Adversarial training on the input embeddings (train.adversarial): FGM, PGD and FreeLB.

Each method moves a perturbation `delta` of the input embeddings, per example inside an L2 ball of
radius `epsilon`, in the direction that raises the loss, and trains on the perturbed input:
- fgm: one step of length epsilon along the normalized gradient; the update's gradient is that of
  the clean loss plus that of the perturbed loss.
- pgd: `steps` ascent steps of length `alpha`, each projected back into the ball; the update's
  gradient is that of the clean loss plus that of the loss at the last perturbation.
- freelb: `steps` passes, the first clean, each moving delta by an ascent step; the update's
  gradient is the mean of the gradients of all passes (Zhu et al., 2020).
The logged loss is always the clean one. Gradients are synchronised across processes once per
chunk of micro-batch, at its final backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from lmtune.errors import TrainingError
from lmtune.models.embedding_noise import EmbeddingNoise, input_embeddings, normalized, project
from lmtune.schema import TrainConfig

Sync = Callable[[bool], AbstractContextManager[object]]  # sync(final): the context of a backward pass


class Adversary:
    def __init__(self, tc: TrainConfig, model: nn.Module):
        self.method = tc.adversarial
        self.epsilon, self.alpha, self.steps = tc.adversarial_epsilon, tc.adversarial_alpha, tc.adversarial_steps
        self.layer = input_embeddings(model)

    def backward(self, loss_of: Callable[[], torch.Tensor], mask: torch.Tensor | None,
                 backward: Callable[[torch.Tensor], None], sync: Sync) -> torch.Tensor:
        """The backward passes of one chunk; returns its clean loss, detached."""
        noise = EmbeddingNoise(self.layer, mask)
        try:
            if self.method == "freelb":
                return self._freelb(noise, loss_of, backward, sync)
            with sync(False):
                clean = noise.run(loss_of, "zero")
                backward(clean)
            grad = self._grad(noise)
            delta = self._ascend(noise, torch.zeros_like(grad), grad, self.epsilon if self.method == "fgm" else self.alpha)
            if self.method == "pgd":
                for _ in range(self.steps - 1):
                    with sync(False):
                        moving = delta.requires_grad_(True)
                        (grad,) = torch.autograd.grad(noise.run(loss_of, moving), moving)
                    delta = self._ascend(noise, moving.detach(), grad, self.alpha)
            with sync(True):
                backward(noise.run(loss_of, delta))
            return clean.detach()
        finally:
            noise.remove()

    def _freelb(self, noise: EmbeddingNoise, loss_of: Callable[[], torch.Tensor],
                backward: Callable[[torch.Tensor], None], sync: Sync) -> torch.Tensor:
        delta: torch.Tensor | None = None
        clean = torch.tensor(0.0)
        for k in range(self.steps):
            with sync(k == self.steps - 1):
                loss = noise.run(loss_of, "zero" if delta is None else delta.requires_grad_(True))
                backward(loss / self.steps)
            if k == 0:
                clean = loss.detach()
            moved = self._grad(noise)
            delta = self._ascend(noise, torch.zeros_like(moved) if delta is None else delta.detach(), moved, self.alpha)
        return clean

    def _grad(self, noise: EmbeddingNoise) -> torch.Tensor:
        if noise.used is None:
            raise TrainingError("train.adversarial: the model's input embedding layer was not called in the forward pass, "
                                "so there was nothing to perturb; set train.adversarial=none for this model")
        if noise.used.grad is None:
            raise TrainingError("train.adversarial: the loss has no gradient with respect to the input embeddings")
        return noise.used.grad

    def _ascend(self, noise: EmbeddingNoise, delta: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
        """One ascent step of length `step` along the normalized gradient, projected into the epsilon ball."""
        return project(delta + step * normalized(noise.masked(grad.float())), self.epsilon).detach()
