"""Metrics as pure functions of predictions and references, returning plain dicts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class _SklearnMetrics:
    """sklearn.metrics, imported on first use: importing it adds about a second to every command's start."""

    def __getattr__(self, name: str) -> Any:
        from sklearn import metrics

        return getattr(metrics, name)


skm = _SklearnMetrics()


def scalar_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record: its metrics, not its step, epoch, type or nested tables."""
    return {k: float(v) for k, v in record.items()
            if k not in ("step", "epoch", "type") and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _per_class(refs: np.ndarray, preds: np.ndarray, names: list[str], labels: list[int] | None) -> dict[str, Any]:
    p, r, f, s = skm.precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    return {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(names)
    }


def single_label_metrics(probs: np.ndarray, refs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """probs: (N, K) class probabilities; refs: (N,) class ids."""
    labels = list(range(len(names)))
    preds = probs.argmax(axis=1)
    p, r, f, _ = skm.precision_recall_fscore_support(refs, preds, labels=labels, average="macro", zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(refs, preds)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "f1_weighted": float(skm.f1_score(refs, preds, labels=labels, average="weighted", zero_division=0)),
    }
    present = set(np.unique(refs).tolist())
    if len(names) == 2 and present == {0, 1}:
        out["roc_auc"] = float(skm.roc_auc_score(refs, probs[:, 1]))
    elif len(names) > 2 and present == set(labels):
        out["roc_auc"] = float(skm.roc_auc_score(refs, probs, multi_class="ovr", average="macro", labels=labels))
    out["per_class"] = _per_class(refs, preds, names, labels)
    out["confusion_matrix"] = skm.confusion_matrix(refs, preds, labels=labels).tolist()
    return out


def multi_label_metrics(probs: np.ndarray, refs: np.ndarray, names: list[str], threshold: float) -> dict[str, Any]:
    """probs, refs: (N, K); a label is predicted where its probability reaches the threshold."""
    preds = (probs >= threshold).astype(int)
    refs = refs.astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(refs, preds, average="macro", zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(refs, preds)),  # exact match of the whole label set
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "f1_micro": float(skm.f1_score(refs, preds, average="micro", zero_division=0)),
        "hamming_loss": float(skm.hamming_loss(refs, preds)),
    }
    if all(len(np.unique(refs[:, k])) == 2 for k in range(refs.shape[1])):
        out["roc_auc"] = float(skm.roc_auc_score(refs, probs, average="macro"))
    p, r, f, s = skm.precision_recall_fscore_support(refs, preds, zero_division=0)
    out["per_class"] = {
        n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, n in enumerate(names)
    }
    return out


def regression_metrics(preds: np.ndarray, refs: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    mse = float(skm.mean_squared_error(refs, preds))
    out = {"mse": mse, "rmse": mse**0.5, "mae": float(skm.mean_absolute_error(refs, preds))}
    if len(refs) > 1 and np.std(refs) > 0:
        out["r2"] = float(skm.r2_score(refs, preds))
        if np.std(preds) > 0:
            out["pearson"] = float(stats.pearsonr(preds, refs)[0])
            out["spearman"] = float(stats.spearmanr(preds, refs)[0])
    return out
