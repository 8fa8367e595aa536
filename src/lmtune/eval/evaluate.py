"""Run a classifier over a dataloader and score it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lmtune.data.classification import LabelSpace
from lmtune.eval.metrics import multi_label_metrics, regression_metrics, single_label_metrics
from lmtune.losses import LossFn
from lmtune.progress import bar

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


def scores_from_logits(logits: torch.Tensor, label_type: str) -> torch.Tensor:
    """Logits -> probabilities (softmax / sigmoid) or the regression value."""
    logits = logits.float()
    if label_type == "single":
        return logits.softmax(-1)
    if label_type == "multi":
        return logits.sigmoid()
    return logits.squeeze(-1)


@torch.no_grad()
def predict_scores(model: nn.Module, loader: Any, label_type: str, accelerator: Any = None, loss_fn: LossFn | None = None) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Scores in dataset order, targets in dataset order, and the mean loss (if loss_fn is given)."""
    was_training = model.training
    model.eval()
    scores, targets, indices = [], [], []
    loss_sum, count = 0.0, 0
    for batch in bar(loader, desc="evaluate", unit="batches"):
        logits = model(**model_inputs(batch)).logits
        if loss_fn is not None:
            loss = loss_fn(logits, batch["target"])
            n = batch["target"].shape[0]
            loss_sum += float(loss) * n
            count += n
        batch_scores, batch_targets, batch_index = scores_from_logits(logits, label_type), batch["target"], batch["index"]
        if accelerator is not None:
            batch_scores, batch_targets, batch_index = accelerator.gather_for_metrics((batch_scores, batch_targets, batch_index))
        scores.append(batch_scores.cpu())
        targets.append(batch_targets.cpu())
        indices.append(batch_index.cpu())
    if was_training:
        model.train()
    if accelerator is not None and accelerator.num_processes > 1:
        totals = accelerator.reduce(torch.tensor([loss_sum, float(count)], device=accelerator.device), "sum")
        loss_sum, count = float(totals[0]), int(totals[1])
    order = torch.cat(indices).argsort()
    return torch.cat(scores)[order].numpy(), torch.cat(targets)[order].numpy(), (loss_sum / count if count else None)


def score(scores: np.ndarray, targets: np.ndarray, labels: LabelSpace, threshold: float) -> dict[str, Any]:
    if labels.label_type == "single":
        return single_label_metrics(scores, targets, labels.names)
    if labels.label_type == "multi":
        return multi_label_metrics(scores, targets, labels.names, threshold)
    return regression_metrics(scores, targets)
