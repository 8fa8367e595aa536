"""`search(config) -> SearchSummary`: an Optuna study whose every trial is a normal lmtune run.

Each trial samples the search space, trains with `train()` in `OUTPUT_DIR/trials/trial-NNNN/`,
reports every evaluation to the pruner (a pruned trial stops early and is recorded as pruned),
and returns the chosen metric. A trial that fails (non-finite loss, out of memory, a bad sampled
value) is recorded as failed and the search goes on. The study lives in an SQLite file in the
output folder by default, so running the command again adds trials to the same study; a database
or a journal file (search/storage.py) lets several machines share one study. Each command adds
its `search.n_trials` trials, counted over its own workers: its trials carry its invocation id.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lmtune.config import LOWER_IS_BETTER, Config, build_config, load_config, merge_dicts, nest_keys
from lmtune.errors import ConfigError, Interrupted, LmtuneError, Pruned, SearchFailed, TrainingError
from lmtune.files import csv_text, write_text
from lmtune.paths import check_creatable
from lmtune.progress import bar
from lmtune.run_dir import SearchDir
from lmtune.search.space import check_space, grid, sample
from lmtune.search.storage import open_storage, shown, storage_spec, write_study_record
from lmtune.tasks import build_task

log = logging.getLogger("lmtune")


@dataclass
class SearchSummary:
    output_dir: Path
    metric: str
    direction: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    counts: dict[str, int] = field(default_factory=dict)  # trial state -> number of trials


def search(config: Config | dict | str | Path, *, workers: int = 1) -> SearchSummary:
    """Run (or continue) the search the config's `search:` section describes."""
    import optuna

    base = load_config(config) if isinstance(config, (str, Path)) else build_config(config)
    check_space(base)
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more (got {workers})")
    out = Path(base.output.dir)
    check_creatable(out, "output.dir")
    metric, direction = resolve_objective(base)
    storage = storage_spec(base.search.storage, out)
    shared = open_storage(storage) if base.search.storage else None  # reached, or refused, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    _route_optuna_logs()
    study = optuna.create_study(
        study_name=base.search.study_name, storage=shared or open_storage(storage), load_if_exists=True, direction=direction,
        sampler=_sampler(base), pruner=_pruner(base),
    )
    stored = study.user_attrs.get("metric")
    if stored is not None and stored != metric:
        raise ConfigError(f"the study in {shown(storage)} optimizes {stored!r}, not {metric!r}; use another output.dir or "
                          f"search.study_name")
    study.set_user_attr("metric", metric)
    if base.search.storage:
        write_study_record(out, storage, base.search.study_name)
    invocation = uuid.uuid4().hex  # marks this command's trials among those of other machines
    trials_bar = bar(total=base.search.n_trials, desc="search", unit="trials", leave=True)
    if workers == 1:
        _optimize(base, storage, invocation, metric, lambda s, t: _advance(trials_bar, s, invocation))
    else:
        # Processes, not threads: each trial seeds the global RNGs and owns the process's logging.
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_work, args=(base.model_dump(mode="json"), storage, invocation, metric, n)) for n in range(workers)]
        for p in procs:
            p.start()
        with _on_signals(_pass_sigterm_on(procs)):
            while any(p.is_alive() for p in procs):  # the workers write to the study; the bar reads it
                for p in procs:
                    p.join(timeout=2)
                _advance(trials_bar, study, invocation)
        bad = [p.exitcode for p in procs if p.exitcode]
        stopped_by = sorted({code - 128 for code in bad if code > 128})
        if stopped_by:
            # Each worker wrote the outputs as it stopped, seeing the other's trial maybe still running: write them
            # again from the study as every worker left it.
            write_outputs(optuna.load_study(study_name=base.search.study_name, storage=open_storage(storage)), base, metric)
            raise Interrupted(f"stopped by {signal.Signals(stopped_by[0]).name}: each worker's running trial is recorded as failed; the "
                              f"search's results so far are in {SearchDir(out).trials_file}. Run the same lmtune search command "
                              f"again to add trials to the study", stopped_by[0])
        if bad:
            raise LmtuneError(f"{len(bad)} of {workers} search workers exited with an error (exit codes {bad}); see the log above")
    trials_bar.close()
    study = optuna.load_study(study_name=base.search.study_name, storage=open_storage(storage))
    summary = write_outputs(study, base, metric)
    _fail_if_nothing_completed(study, invocation)
    return summary


def _own_trials(study: Any, invocation: str) -> list[Any]:
    """The study's trials that this command started (any state), in order."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("invocation") == invocation]


class _EnoughTrials:
    """Stops the study once this command has started `n` trials (all its workers together)."""

    def __init__(self, invocation: str, n: int):
        self.invocation, self.n = invocation, n

    def __call__(self, study: Any, trial: Any) -> None:
        if len(_own_trials(study, self.invocation)) >= self.n:
            study.stop()


def _fail_if_nothing_completed(study: Any, invocation: str) -> None:
    """Every trial of this invocation failed: say why once, and end with an error."""
    import optuna

    trials = _own_trials(study, invocation)
    if not trials or any(t.state != optuna.trial.TrialState.FAIL for t in trials):
        return
    reasons = sorted({t.user_attrs.get("error", "see the log above") for t in trials})
    raise SearchFailed(
        f"all {len(trials)} trials of this search failed, so there is no best config (best.yaml was not written): "
        + "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
    )


def _advance(trials_bar: Any, study: Any, invocation: str) -> None:
    """Move the bar to the number of trials this invocation has finished, with the best value so far."""
    import optuna

    trials = _own_trials(study, invocation)
    done = sum(t.state.is_finished() for t in trials)
    trials_bar.update(done - trials_bar.n)
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        trials_bar.set_postfix(best=f"{study.best_value:.4g}")


def _route_optuna_logs() -> None:
    """Optuna's warnings go through logging like lmtune's own; a failed trial is told by run_trial, in one line."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna_log = logging.getLogger("optuna.study._optimize")  # where Optuna reports failed trials
    if not any(isinstance(f, _NoTrialTracebacks) for f in optuna_log.filters):
        optuna_log.addFilter(_NoTrialTracebacks())


class _NoTrialTracebacks(logging.Filter):
    """Drop Optuna's "Trial N failed with ..." records (and their tracebacks): run_trial has said why in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Trial ") and " failed with " in message)


def resolve_objective(base: Config) -> tuple[str, Literal["maximize", "minimize"]]:
    """The metric to optimize and its direction; `auto` asks the task, which reads the data to know its labels."""
    metric = base.search.metric
    if base.search.direction != "auto":
        direction: Literal["maximize", "minimize"] = base.search.direction
    if metric == "auto":
        task = build_task(base)
        task.load_data()  # also checks the data once, before any trial
        metric = task.metric
        if base.search.direction == "auto":
            direction = "maximize" if task.greater_is_better else "minimize"
    elif base.search.direction == "auto":
        direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    return metric, direction


def _sampler(base: Config, worker: int = 0) -> Any:
    import optuna

    seed = base.search.seed + worker
    if base.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if base.search.sampler == "grid":
        return optuna.samplers.GridSampler(grid(base), seed=seed)
    if base.search.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(base: Config) -> Any:
    import optuna

    if base.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if base.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _optimize(base: Config | dict[str, Any], storage: str, invocation: str, metric: str, on_trial: Any = None,
              worker: int = 0) -> None:
    """Run trials until this invocation's n_trials (counted over all workers) or timeout is reached.

    Worker N seeds its sampler with search.seed + N: with one seed, every worker would sample the same values.
    """
    import optuna
    base = build_config(base)
    _route_optuna_logs()
    study = optuna.load_study(study_name=base.search.study_name, storage=open_storage(storage), sampler=_sampler(base, worker),
                              pruner=_pruner(base))
    callbacks = [lambda s, t: write_outputs(s, base, metric)] + ([on_trial] if on_trial is not None else [])
    if base.search.n_trials is not None:
        callbacks.insert(0, _EnoughTrials(invocation, base.search.n_trials))
    failures: dict[str, int] = {}  # reason -> first trial that failed for it
    try:
        with _on_signals(_stop_the_search):
            study.optimize(
                lambda trial: run_trial(trial, base, metric, failures, invocation), n_trials=base.search.n_trials, timeout=base.search.timeout,
                catch=(LmtuneError, RuntimeError, ValueError), callbacks=callbacks,
            )
    except _SearchStopped as stop:  # Optuna has recorded the trial as failed; no callback ran for it
        write_outputs(study, base, metric)
        during = "between trials" if stop.number is None else f"during trial {stop.number}, which is recorded as failed"
        raise Interrupted(f"stopped by {signal.Signals(stop.signal_number).name} {during}; the search's results so far are in "
                          f"{SearchDir(base.output.dir).trials_file}. Run the same lmtune search command again to add trials "
                          f"to the study", stop.signal_number) from None


def _work(base: dict[str, Any], storage: str, invocation: str, metric: str, worker: int) -> None:
    """A worker process of `--workers N`; stopped by a signal, it exits with the shell's code and the main process says why."""
    try:
        _optimize(base, storage, invocation, metric, worker=worker)
    except Interrupted as err:
        raise SystemExit(err.exit_code) from None


def _pass_sigterm_on(procs: list[Any]) -> Any:
    """SIGTERM to the main process is passed on to each worker, once. Ctrl-C reaches every process of the
    terminal's group by itself, so for it the main process only waits for the workers to stop."""

    def pass_on(signal_number: int, frame: Any) -> None:
        if signal_number == signal.SIGTERM:
            for p in procs:
                if p.is_alive():
                    p.terminate()

    return pass_on


@contextlib.contextmanager
def _on_signals(handler: Any) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` while the block runs (handlers can only be set from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _SearchStopped(Exception):
    """SIGINT or SIGTERM: not one of the errors Optuna catches, so it ends the search (the trial it cut short fails)."""

    def __init__(self, signal_number: int, number: int | None = None):
        super().__init__(f"stopped by signal {signal_number}")
        self.signal_number, self.number = signal_number, number


def _stop_the_search(signal_number: int, frame: Any) -> None:
    """Outside training (which stops gracefully, with a checkpoint, on its own), a signal ends the search at once."""
    raise _SearchStopped(signal_number)


def run_trial(trial: Any, base: Config, metric: str, failures: dict[str, int] | None = None, invocation: str = "") -> float:
    """Train one trial's config and return its metric; a signal during it ends the search (_SearchStopped)."""
    trial.set_user_attr("invocation", invocation)
    try:
        return _train_trial(trial, base, metric, failures)
    except Interrupted as err:  # training stopped on the signal, after its checkpoint
        stop = _SearchStopped(err.signal_number)
    except _SearchStopped as err:  # the signal came before training began
        stop = err
    stop.number = trial.number
    trial.set_user_attr("error", f"stopped by {signal.Signals(stop.signal_number).name}")
    raise stop


def _train_trial(trial: Any, base: Config, metric: str, failures: dict[str, int] | None) -> float:
    import optuna

    from lmtune.train.loop import train

    params = sample(trial, base)
    folder = SearchDir(base.output.dir).trial(trial.number).path
    cfg = run_config(base, params, folder, f"trial {trial.number}")
    trial.set_user_attr("run_dir", str(folder))
    log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()))

    def report(step: int, metrics: dict[str, Any]) -> None:
        value = metrics.get(metric)
        if isinstance(value, (int, float)):
            trial.report(float(value), step)
            if trial.should_prune():
                raise Pruned(f"{metric}={value:.4g} at step {step}")

    try:
        result = train(cfg, progress=False, on_evaluate=report)
        value = result.metrics.get(metric)
        if not isinstance(value, (int, float)):
            raise ConfigError(f"search.metric={metric!r} is not in the run's metrics.json; it has: "
                              f"{', '.join(k for k, v in result.metrics.items() if isinstance(v, (int, float)))}")
        if not math.isfinite(value):
            raise TrainingError(f"{metric}={value} in the run's metrics.json is not a number to compare")
    except Interrupted:
        raise
    except Pruned as err:  # the run folder's status.json says pruned; Optuna records the trial so
        raise optuna.TrialPruned(str(err)) from None
    except (LmtuneError, RuntimeError, ValueError) as err:  # the trial fails; the search goes on
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        trial.set_user_attr("error", reason)
        failures = {} if failures is None else failures
        if reason in failures:
            log.warning("trial %d failed for the same reason as trial %d", trial.number, failures[reason])
        else:
            failures[reason] = trial.number
            log.warning("trial %d failed: %s", trial.number, reason)
        raise
    log.info("trial %d: %s=%.4g", trial.number, metric, value)
    return float(value)


def run_config(base: Config, params: dict[str, Any], folder: Path, source: str) -> Config:
    """The base config with `params` set, writing to `folder`: a plain training run (no search, no resume)."""
    data = merge_dicts(base.model_dump(mode="json"), nest_keys(params))
    data["output"] = {**data["output"], "dir": str(folder), "overwrite": True}
    data["resume"] = None
    data["search"] = {}
    return build_config(data, source)


def write_outputs(study: Any, base: Config, metric: str) -> SearchSummary:
    """trials.csv, best.yaml and the plots, rewritten after every trial."""
    import optuna

    from lmtune.search.plots import write_plots

    out = SearchDir(base.output.dir)
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    rows = [{"number": t.number, "state": t.state.name.lower(), metric: t.value if t.values else None,
             "seconds": round(t.duration.total_seconds(), 1) if t.duration else None, **{k: t.params.get(k) for k in names},
             "run_dir": t.user_attrs.get("run_dir")} for t in trials]
    write_text(out.trials_file, csv_text(rows, ["number", "state", metric, "seconds", *names, "run_dir"]))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    best = None
    if complete:
        best = min(complete, key=lambda t: t.value) if study.direction.name == "MINIMIZE" else max(complete, key=lambda t: t.value)
        best_cfg = run_config(base, best.params, out.best_run.path, f"trial {best.number}")
        best_cfg.output.overwrite = base.output.overwrite  # retraining never replaces a run unless the base says so
        write_text(out.best_config_file, f"# best of {len(complete)} complete trials: trial {best.number}, "
                                      f"{metric}={best.value:.6g}\n" + best_cfg.to_yaml())
        write_plots(study, out.plots, metric)
    return SearchSummary(out.path, metric, study.direction.name.lower(), best.value if best else None,
                         dict(best.params) if best else {}, best.number if best else None, counts)


def dump_summary(summary: SearchSummary) -> str:
    return yaml.safe_dump({"metric": summary.metric, "direction": summary.direction, "best_value": summary.best_value,
                           "best_trial": summary.best_trial, "best_params": summary.best_params, "trials": summary.counts},
                          sort_keys=False)
