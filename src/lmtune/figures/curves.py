"""The plots of a run report: loss and metric curves, confusion matrix, ROC and precision-recall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmtune.eval.metrics import scalar_metrics
from lmtune.figures.canvas import new_figure, save_png

SMOOTHING = 0.6  # weight of the running average in the smoothed loss (TensorBoard's default)


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average with TensorBoard's bias correction, so the curve starts on the data."""
    out, running = [], 0.0
    for n, value in enumerate(values, start=1):
        running = weight * running + (1 - weight) * value
        out.append(running / (1 - weight**n))
    return out


def loss_plot(train: list[dict[str, Any]], evals: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = new_figure()
    points = [(r["step"], r["loss"]) for r in train if r.get("loss") is not None]
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="training (raw)")
        ax.plot(steps, smoothed(list(losses)), color="tab:blue", linewidth=2, label=f"training (smoothed, {SMOOTHING})")
    points = [(r["step"], r["loss"]) for r in evals if r.get("loss") is not None]
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, "o-", color="tab:orange", label="evaluation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def metric_plots(evals: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Metrics between 0 and 1 share metrics.png; any other metric gets metric-NAME.png of its own."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in evals:
        for name, value in scalar_metrics(record).items():
            if name != "loss":
                series.setdefault(name, []).append((record["step"], value))
    if not series:
        return []
    shared = {n: s for n, s in series.items() if all(0 <= v <= 1 for _, v in s)}
    written = []
    if shared:
        fig, ax = new_figure()
        for name, points in shared.items():
            ax.plot(*zip(*points), "o-", markersize=3, label=name)
        ax.set_xlabel("optimizer step")
        ax.set_title("Validation metrics")
        ax.legend(fontsize="small")
        fig.tight_layout()
        written.append(save_png(fig, folder / "metrics.png"))
    for name, points in series.items():
        if name in shared:
            continue
        fig, ax = new_figure()
        ax.plot(*zip(*points), "o-", color="tab:purple")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.set_title(f"Validation {name}")
        fig.tight_layout()
        written.append(save_png(fig, folder / f"metric-{name}.png"))
    return written


def confusion_plot(matrix: list[list[int]], names: list[str], title: str, path: Path) -> Path:
    counts = np.asarray(matrix)
    fig, ax = new_figure()
    # colour by the share of each true class, so that small classes are as readable as big ones
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                        color="white" if shares[i, j] > 0.5 else "black", fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def roc_pr_plots(truth: np.ndarray, scores: np.ndarray, positive: str, folder: Path) -> tuple[Path, Path, float, float]:
    """ROC and precision-recall curves of a binary classifier; also returns ROC-AUC and average precision."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(truth, scores)
    roc_auc = float(auc(fpr, tpr))
    fig, ax = new_figure()
    ax.plot(fpr, tpr, color="tab:blue", label=f"ROC (AUC {roc_auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC curve (positive: {positive})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    roc = save_png(fig, folder / "roc.png")

    precision, recall, _ = precision_recall_curve(truth, scores)
    ap = float(average_precision_score(truth, scores))
    fig, ax = new_figure()
    ax.step(recall, precision, where="post", color="tab:green", label=f"average precision {ap:.3f}")
    ax.axhline(truth.mean(), linestyle="--", color="gray", label="chance")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision-recall curve (positive: {positive})")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return roc, save_png(fig, folder / "pr.png"), roc_auc, ap
