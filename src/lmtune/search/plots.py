"""PNG plots of a study: optimization history, parameter importances, the metric against each parameter."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmtune.figures.canvas import new_figure, save_png
from lmtune.search.importance import param_importances


def write_plots(study: Any, folder: Path, metric: str) -> list[Path]:
    """The plots, in `folder`."""
    import optuna

    folder.mkdir(exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # A pruned trial's value is its last evaluation before it was stopped: drawn apart, in grey.
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED and t.value is not None]
    written = []
    minimize = study.direction.name == "MINIMIZE"

    fig, ax = new_figure()
    xs = [t.number for t in done]
    ys = [t.value for t in done]
    best, running = [], math.inf if minimize else -math.inf
    for y in ys:
        running = min(running, y) if minimize else max(running, y)
        best.append(running)
    ax.scatter(xs, ys, label=f"trial {metric}", color="tab:blue")
    if pruned:
        ax.scatter([t.number for t in pruned], [t.value for t in pruned], marker="x", color="tab:gray",
                   label=f"pruned (its {metric} when stopped)")
    last = max((t.number for t in trials), default=0)
    if xs and last > xs[-1]:  # carry the best on to the last trial
        xs, best = [*xs, last], [*best, best[-1]]
    ax.step(xs, best, where="post", label="best so far", color="tab:red")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history")
    ax.legend()
    fig.tight_layout()
    written.append(save_png(fig, folder / "history.png"))

    names = sorted({k for t in done for k in t.params})
    importances = param_importances(study)
    fig, ax = new_figure()
    if importances:
        keys = list(importances)[::-1]
        ax.barh(keys, [importances[k] for k in keys], color="tab:green")
        ax.set_xlabel("importance (fANOVA)")
    else:
        ax.text(0.5, 0.5, "needs two or more complete trials with different values", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title("Parameter importances")
    fig.tight_layout()
    written.append(save_png(fig, folder / "importances.png"))

    for name in names:
        fig, ax = new_figure()
        pts = [(t.params[name], t.value) for t in done if name in t.params]
        stopped = [(t.params[name], t.value) for t in pruned if name in t.params]
        everything = pts + stopped
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in everything)
        labels = [] if numeric else sorted({str(v) for v, _ in everything})

        def position(value: Any, numeric: bool = numeric, labels: list[str] = labels) -> Any:
            return value if numeric else labels.index(str(value))

        values = [v for v, _ in everything]
        if numeric and values and min(values) > 0 and max(values) / min(values) > 20:  # e.g. a learning rate
            ax.set_xscale("log")
        if labels:
            ax.set_xticks(range(len(labels)), labels)
        ax.scatter([position(p[0]) for p in pts], [p[1] for p in pts], color="tab:blue", label="complete")
        if stopped:
            ax.scatter([position(p[0]) for p in stopped], [p[1] for p in stopped], marker="x", color="tab:gray",
                       label="pruned (when stopped)")
            ax.legend()
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {name}")
        fig.tight_layout()
        written.append(save_png(fig, folder / f"{name}.png"))
    return written

