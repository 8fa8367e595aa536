"""PNG plots of a study: optimization history, parameter importances, the metric against each parameter."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmtune.report.figures import new_figure, save_png


def write_plots(study: Any, out: Path, metric: str) -> list[Path]:
    import optuna

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
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
    ax.step(xs, best, where="post", label="best so far", color="tab:red")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history")
    ax.legend()
    written.append(save_png(fig, folder / "history.png"))

    names = sorted({k for t in done for k in t.params})
    importances: dict[str, float] = {}
    if len(done) >= 2 and names:
        try:
            # fANOVA (a seeded random forest) rather than Optuna's default PED-ANOVA, which gives
            # every parameter the same importance when a study has only a dozen trials
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial gave the same value
            importances = {}
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
        if pts and all(isinstance(p[0], (int, float)) and not isinstance(p[0], bool) for p in pts):
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue")
            if all(p[0] > 0 for p in pts) and max(p[0] for p in pts) / min(p[0] for p in pts) > 100:
                ax.set_xscale("log")
        else:
            labels = sorted({str(p[0]) for p in pts})
            ax.scatter([labels.index(str(p[0])) for p in pts], [p[1] for p in pts], color="tab:blue")
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {name}")
        written.append(save_png(fig, folder / f"{name}.png"))
    return written

