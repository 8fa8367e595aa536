"""The loss that fits the label type, computed from logits (the model's own loss is not used)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmtune.data.classification import LabelSpace
from lmtune.errors import ConfigError
from lmtune.schema import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DEFAULT_LOSS = {"single": "cross_entropy", "multi": "bce", "regression": "mse"}
FITS = {"cross_entropy": {"single"}, "bce": {"multi"}, "mse": {"regression"}}


def balanced_weights(encoded_targets: list[int], num_classes: int) -> list[float]:
    """n / (k * count_c), as scikit-learn's 'balanced' class weights."""
    counts = Counter(encoded_targets)
    n = len(encoded_targets)
    return [n / (num_classes * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


def build_loss(cfg: TrainConfig, labels: LabelSpace, encoded_targets: Callable[[], list[int]]) -> LossFn:
    """The loss of `cfg.loss` for these labels; `encoded_targets()` (the training targets) is called only for balanced class weights."""
    name = DEFAULT_LOSS[labels.label_type] if cfg.loss == "auto" else cfg.loss
    if labels.label_type not in FITS[name]:
        raise ConfigError(
            f"train.loss={name} does not fit {labels.label_type} labels; use "
            f"{DEFAULT_LOSS[labels.label_type]} (or auto)"
        )
    # Losses are computed in fp32 even when the forward pass ran in bf16/fp16 autocast.
    if name == "mse":
        return lambda logits, target: F.mse_loss(logits.float().squeeze(-1), target.float())
    if name == "bce":
        return lambda logits, target: F.binary_cross_entropy_with_logits(logits.float(), target.float())
    weight = None
    if cfg.class_weights == "balanced":
        weight = torch.tensor(balanced_weights(encoded_targets(), labels.num_outputs), dtype=torch.float32)
    elif cfg.class_weights is not None:
        if len(cfg.class_weights) != labels.num_outputs:
            raise ConfigError(
                f"train.class_weights has {len(cfg.class_weights)} values but there are {labels.num_outputs} "
                f"classes ({', '.join(labels.names)})"
            )
        weight = torch.tensor(cfg.class_weights, dtype=torch.float32)
    smoothing = cfg.label_smoothing

    def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal weight
        if weight is not None and weight.device != logits.device:
            weight = weight.to(logits.device)  # moved once, on the first step
        return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=smoothing)

    return cross_entropy
