"""A perturbation added to a model's input embeddings: what adversarial training and the embedding attack move.

A forward hook on the input embedding layer adds `delta` (one tensor of the embeddings' shape) to the
layer's output. Only the first call in a forward pass is perturbed: an encoder-decoder embeds its
decoder inputs with the same layer, and those stay clean. Padding positions are never perturbed.
Norms are per example, over all its tokens and embedding dimensions (an L2 ball per example).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

TINY = 1e-12


def input_embeddings(model: nn.Module) -> nn.Module:
    """The layer that turns token ids into vectors (through PEFT and Accelerate wrappers)."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    getter = getattr(inner, "get_input_embeddings", None)
    layer = getter() if getter is not None else None
    if not isinstance(layer, nn.Module):
        raise TypeError(f"{type(inner).__name__} has no input embedding layer to perturb")
    return layer


def example_norms(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each example's slice, shaped to broadcast over it: (B, 1, 1)."""
    return t.flatten(1).norm(dim=1).clamp_min(TINY).view(-1, *([1] * (t.dim() - 1)))


def normalized(grad: torch.Tensor) -> torch.Tensor:
    """`grad` scaled to norm 1 per example (an all-zero example stays zero)."""
    return grad / example_norms(grad)


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`delta` pulled back into the ball of radius `epsilon` per example (inside it, unchanged)."""
    norms = example_norms(delta)
    return delta * (epsilon / norms).clamp(max=1.0)


class EmbeddingNoise:
    """Adds `delta` to the input embeddings while a forward pass runs under `run`."""

    def __init__(self, layer: nn.Module, mask: torch.Tensor | None):
        self.mask = mask  # (B, T): 1 on real tokens; None: every position is real
        self.delta: torch.Tensor | None = None
        self.fresh = False  # a zero delta that requires grad is made at the first call, in the output's shape
        self.used: torch.Tensor | None = None  # the delta the last forward pass added
        self.calls = 0
        self.handle = layer.register_forward_hook(self._hook)

    def masked(self, t: torch.Tensor) -> torch.Tensor:
        if self.mask is None or self.mask.shape != t.shape[:2]:
            return t
        return t * self.mask.unsqueeze(-1).to(t.dtype)

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        self.calls += 1
        if self.calls > 1 or (self.delta is None and not self.fresh):
            return None
        if self.fresh:
            self.used = torch.zeros_like(output, dtype=torch.float32).requires_grad_(True)
        else:
            self.used = self.delta
        assert self.used is not None
        return output + self.masked(self.used).to(output.dtype)

    def run(self, forward: Callable[[], torch.Tensor], delta: torch.Tensor | str | None) -> torch.Tensor:
        """One forward pass with `delta` added: None adds nothing, "zero" a zero delta whose gradient is kept
        (as `self.used`), a tensor that tensor."""
        self.calls = 0
        self.fresh = isinstance(delta, str)
        self.delta = None if isinstance(delta, str) else delta
        self.used = None
        return forward()

    def remove(self) -> None:
        self.handle.remove()


@contextlib.contextmanager
def embedding_noise(model: nn.Module, mask: torch.Tensor | None) -> Iterator[EmbeddingNoise]:
    noise = EmbeddingNoise(input_embeddings(model), mask)
    try:
        yield noise
    finally:
        noise.remove()
