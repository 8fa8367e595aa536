"""Run a language model's output layer only where the loss reads it.

A causal LM computes vocabulary logits at every position, but fine-tuning on responses reads
them only at positions whose next token is trained on (prompt and padding positions are
ignored). The output layer is large (vocabulary x hidden: about a fifth of SmolLM2-135M's
forward cost per token), and its logits are the largest activation in the model. A forward
pre-hook on the output layer gathers the hidden states of the chosen positions, so the model
returns logits of shape (N, vocab) for those N positions only. The hook passes everything
through when no positions are set (generation, plain use).

With `project=False` the output layer is skipped as well: the model returns the (N, hidden)
states the layer would have read, for a loss that applies the layer itself (Liger's fused linear
cross-entropy, which never holds the N x vocab logits at once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class HeadPositions:
    def __init__(self, model: nn.Module):
        head = getattr(model, "get_output_embeddings")()  # a transformers model (or PEFT-wrapped one)
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings to restrict")
        self.head: nn.Module = head
        self.mask: torch.Tensor | None = None  # (B, T) bool
        self._handle = head.register_forward_pre_hook(self._select)

    def _select(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.mask is None:
            return None
        hidden = args[0]  # (B, T, H)
        return (hidden[self.mask], *args[1:])  # (N, H)

    @contextlib.contextmanager
    def only(self, mask: torch.Tensor, project: bool = True) -> Iterator[None]:
        """Within the block, the model's logits are those of `mask`'s true positions, (N, vocab).

        `project=False`: the output layer returns what it is given, so the "logits" are the hidden
        states of those positions, (N, hidden).
        """
        self.mask = mask
        if not project:
            self.head.forward = _unchanged  # an instance attribute, removed below
        try:
            yield
        finally:
            self.mask = None
            if not project:
                del self.head.forward

    def remove(self) -> None:
        self._handle.remove()


def _unchanged(hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden
