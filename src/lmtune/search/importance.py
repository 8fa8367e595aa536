"""Parameter importances of a study: how much of the metric's spread each searched key explains."""

from __future__ import annotations

from typing import Any


def param_importances(study: Any) -> dict[str, float]:
    """{key: importance}, largest first, summing to 1; empty with fewer than two complete trials or one value only.

    fANOVA (a seeded random forest) rather than Optuna's default PED-ANOVA, which gives every
    parameter the same importance when a study has only a dozen trials.
    """
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.params]
    if len(done) < 2:
        return {}
    try:
        found = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial gave the same value
        return {}
    return {k: float(v) for k, v in found.items()}
