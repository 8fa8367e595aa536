"""`train(config) -> TrainResult`: the one entry point used by the CLI, the Python API and tests.

A run reads in four phases: setup (train/setup.py: data, model, method, optimizer, loaders;
everything that can fail on user input is checked before the run folder is created, so a bad
input leaves nothing behind), resume (a checkpoint's weights, optimizer, counters and RNG),
the epoch loop (`fit`), and finish (the kept model, final metrics, the report).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lmtune.config import Config, build_config, load_config, with_defaults
from lmtune.errors import CheckpointError, Interrupted, Pruned, TrainingError
from lmtune.inference import merge_adapter
from lmtune.models.methods import METHODS
from lmtune.models.saving import save_model
from lmtune.paths import check_creatable
from lmtune.progress import bar, quiet
from lmtune.report import write_report
from lmtune.run_dir import RunDir, RunStatus, State
from lmtune.tasks.base import Batch
from lmtune.train import zero
from lmtune.train.checkpoint import clean_leftovers
from lmtune.train.engines import checkpoint_layout, gathered_weights
from lmtune.train.optim import warmup_steps
from lmtune.train.output import Plan, RunLog, TrainResult, finished_result, plan_output_dir, prepare_output_dir
from lmtune.train.resume import check_compatible, find_checkpoint, saved_config
from lmtune.train.setup import Setup, build_setup
from lmtune.train.signals import StopRequest
from lmtune.train.state import BestKeeper, read_state, restore_checkpoint, write_checkpoint
from lmtune.train.step import Progress, Stepper, boundary
from lmtune.train.tracking import Trackers
from lmtune.train.writer import CheckpointWriter

log = logging.getLogger("lmtune")

OnEvaluate = Callable[[int, dict[str, Any]], None]

__all__ = ["TrainResult", "fit", "train"]


def train(config: Config | dict[str, Any] | str | Path, *, progress: bool = True, on_evaluate: OnEvaluate | None = None) -> TrainResult:
    """Fine-tune a model as the config says; returns the final metrics and where the run was written.

    `on_evaluate(step, metrics)` is called after every evaluation during training (the search
    uses it to stop unpromising trials: an exception it raises ends the run, `Pruned` as pruned).
    """
    # Messages from before the run folder exists (data checks, truncation counts) are held back
    # and written to train.log once it does.
    early = logging.handlers.BufferingHandler(capacity=10_000)
    log.addHandler(early)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    try:
        # Bars from the main process only: with several processes each would draw its own.
        with quiet(not progress or int(os.environ.get("RANK", "0")) > 0):
            return _train(config, early, on_evaluate)
    finally:
        log.removeHandler(early)


def _train(config: Config | dict[str, Any] | str | Path, early: logging.handlers.BufferingHandler,
           on_evaluate: OnEvaluate | None) -> TrainResult:
    from accelerate.utils import set_seed

    given = load_config(config) if isinstance(config, (str, Path)) else build_config(config)
    cfg = with_defaults(given)
    folder = RunDir(cfg.output.dir)
    check_creatable(folder.path, "output.dir")
    checkpoint = find_checkpoint(cfg)
    # Resuming a checkpoint of this output.dir continues the run in place; one from elsewhere starts a new folder.
    in_place = checkpoint is not None and folder.path.resolve() in checkpoint.resolve().parents
    plan = plan_output_dir(cfg, in_place)
    if plan == "finished":
        log.info("output.dir=%s holds this config's finished run (it kept no checkpoint): nothing to resume. "
                 "Set output.overwrite=true to train it again", folder.path)
        return finished_result(folder)
    if plan == "start_over":
        log.warning("output.dir=%s holds this config's run, stopped before its first complete checkpoint: "
                    "starting it over", folder.path)
    set_seed(cfg.train.seed)

    run = Run(build_setup(cfg), folder)  # 1. setup
    accepted = run.resume(checkpoint) if checkpoint is not None else []  # 2. resume
    if in_place and run.done and folder.is_finished():
        log.info("output.dir=%s holds this config's finished run (step %d of %d): nothing to resume. "
                 "Set output.overwrite=true to train it again", folder.path, run.state.step, run.setup.total_steps)
        return finished_result(folder)
    with recording(run, plan, early):
        run.log_start(given, checkpoint, accepted)
        fit(run, on_evaluate)  # 3. the epoch loop
        return finish(run)  # 4. finish


class Run:
    """A run between setup and finish: where it stands, its best model, and what it writes."""

    def __init__(self, setup: Setup, folder: RunDir):
        self.setup, self.cfg, self.folder = setup, setup.cfg, folder
        self.state = Progress()
        self.history: list[dict[str, Any]] = []  # restored from a checkpoint; the run log goes on from it
        self.checkpoints = self.cfg.train.keep_last_checkpoints > 0
        self.best = BestKeeper(setup.task.metric, setup.task.greater_is_better, self.cfg.eval.early_stopping_patience,
                               folder.checkpoints if self.checkpoints else None, checkpoint_layout(setup.accelerator),
                               zero.zero_stage(setup.accelerator))
        self.resumed = False
        self.initial: dict[str, Any] | None = None  # metrics before training (eval.at_start)
        self.run_log = RunLog(None)
        self.trackers: Trackers | None = None
        self.writer = CheckpointWriter(background=self.cfg.train.background_checkpoints)
        self.stepper = Stepper(setup.model, setup.optimizer, setup.scheduler, setup.task, setup.accelerator, self.cfg.train, self.state)
        self._predictions: Callable[[], list[dict[str, Any]]] | None = None  # of the latest evaluation
        self.status: RunStatus | None = None  # status.json, once the run folder exists (main process)

    @property
    def done(self) -> bool:
        return self.state.step >= self.setup.total_steps or self.best.should_stop

    def resume(self, checkpoint: Path) -> list[str]:
        """Load a checkpoint into the run; returns the accepted config changes (for the log)."""
        s = self.setup
        saved = read_state(checkpoint)
        accepted = check_compatible(saved_config(checkpoint), self.cfg, saved["fingerprints"], s.fingerprints)
        state, self.history = restore_checkpoint(checkpoint, saved, s.unwrapped, s.optimizer, s.scheduler, s.accelerator, self.best)
        self.state = self.stepper.state = state
        self.resumed = True
        return accepted

    def log_start(self, given: Config, checkpoint: Path | None, accepted: list[str]) -> None:
        s, tc = self.setup, self.cfg.train
        log.info(
            "%s: %s parameters, %s trainable (%.2f%%), method %s; %d train / %d validation examples; %d steps",
            self.cfg.model.name_or_path, f"{s.total_parameters:,}", f"{s.trainable_parameters:,}",
            100 * s.trainable_parameters / s.total_parameters, self.cfg.method.name, s.data_counts["train_examples"],
            s.data_counts["validation_examples"],
            s.total_steps,
        )
        source = "train.learning_rate" if given.train.learning_rate is not None else f"the default for method {self.cfg.method.name}"
        log.info("learning rate %g (%s), %s schedule, warmup %d steps", tc.learning_rate, source, tc.scheduler,
                 warmup_steps(tc, s.total_steps))
        if checkpoint is not None:
            log.info("resumed from %s (step %d, epoch %d)%s", checkpoint, self.state.step, self.state.epoch,
                     "; accepted changes: " + "; ".join(accepted) if accepted else "")
        if tc.keep_last_checkpoints == 0:
            log.warning("train.keep_last_checkpoints=0: no checkpoints are written, so this run cannot be resumed")

    def record_status(self, state: State = "running", reason: str | None = None, at_least_s: float = 0.0) -> None:
        """Write status.json with the step reached; while running, at most once per `at_least_s` seconds."""
        if self.status is None:
            return
        now = time.time()
        if state == "running" and now - self.status.updated_at < at_least_s:
            return
        self.status.state, self.status.reason = state, reason
        self.status.step, self.status.updated_at = self.state.step, now
        self.folder.write_status(self.status)

    # --- what one step, one evaluation and one checkpoint do -------------------------------
    def step(self, group: list[Batch]) -> None:
        """One optimizer step; a failing step leaves a checkpoint of the weights from before it."""
        started = time.perf_counter()
        point = boundary(self.state, self.setup.scheduler)
        try:
            self.stepper.step(group, point)
        except Exception as err:
            # The weights are still those of `point` unless the update itself failed: keep them
            # (from before the first bad step, inside a run of non-finite steps). With several
            # processes only our own errors are known to be on every process.
            together = isinstance(err, TrainingError) or self.setup.accelerator.num_processes == 1
            if self.checkpoints and together and not self.stepper.updating:
                self.save_checkpoint(self.stepper.streak_start if self.state.bad_streak else point)
                if not isinstance(err, TrainingError):
                    log.error("step %d failed (%s); a checkpoint of step %d was written first",
                              self.state.step + 1, type(err).__name__, self.state.step)
            raise
        self.state.train_seconds += time.perf_counter() - started

    def evaluate(self, loader: Iterable[Batch] | None = None, generate: bool = True, split: str = "validation") -> dict[str, Any]:
        s = self.setup
        loader = loader if loader is not None else s.val_loader
        assert loader is not None  # evaluations are scheduled only when there is something to evaluate
        result = s.task.evaluate(s.model, loader, s.accelerator, generate, split)
        if result.samples and s.main:
            self.folder.append_samples(self.state.step, result.samples)
        self._predictions = result.predictions
        return result.metrics

    def write_predictions(self, split: str) -> None:
        """SPLIT_predictions.csv: every example of the split as the model just evaluated saw it."""
        rows = self._predictions() if self.setup.main and self._predictions is not None else []
        if rows:
            self.folder.write_predictions(split, [{"step": self.state.step, **row} for row in rows])

    def save_checkpoint(self, point: dict[str, Any] | None) -> None:
        """Write the weights and optimizer as they are now, with the counters and RNG of `point`."""
        s = self.setup
        assert point is not None
        write_checkpoint(self.folder.checkpoints, point, self.cfg, s.fingerprints, s.unwrapped, s.optimizer, s.scheduler,
                         s.accelerator, self.best, self.run_log.records, self.writer, self.cfg.train.keep_last_checkpoints)
        s.accelerator.wait_for_everyone()

    def evaluate_at_start(self) -> dict[str, Any] | None:
        """The metrics before training (eval.at_start), evaluated now or read back after a resume."""
        initial = next((r for r in self.history if r["type"] == "eval" and r["step"] == 0), None)
        if self.cfg.eval.at_start and not self.resumed and self.setup.val_loader is not None:
            metrics = self.evaluate()
            initial = {"type": "eval", "step": 0, "epoch": 0.0, **metrics}
            self.run_log.write(initial)
            log.info("before training: %s", _summary(metrics))
        return {k: v for k, v in initial.items() if k not in ("type", "step", "epoch")} if initial is not None else None

    def after_step(self, stop_request: StopRequest, steps_bar: Any, on_evaluate: OnEvaluate | None) -> bool:
        """Log, evaluate, checkpoint and answer a stop signal as the step just done asks; True: the run ends."""
        s, state, tc = self.setup, self.state, self.cfg.train
        end_of_epoch = state.batches_in_epoch >= s.batches_per_epoch
        epoch = state.epoch + state.batches_in_epoch / s.batches_per_epoch
        if state.step % tc.log_every_n_steps == 0 or state.step == s.total_steps:
            self._log_train(self.stepper.log_record(epoch), steps_bar)
        finished = state.step >= s.total_steps
        self.record_status(at_least_s=1.0)
        new_best = False
        due = (self.cfg.eval.every_n_steps and state.step % self.cfg.eval.every_n_steps == 0) or end_of_epoch or finished
        if due and s.val_loader is not None:
            metrics = self.evaluate()
            self.run_log.write({"type": "eval", "step": state.step, "epoch": round(epoch, 4), **metrics})
            log.info("step %d: %s", state.step, _summary(metrics))
            new_best = self.best.update(state.step, metrics, s.unwrapped)
            if new_best:
                self.write_predictions("validation")
            if on_evaluate is not None:
                on_evaluate(state.step, metrics)
        stop = finished or self.best.should_stop
        if end_of_epoch:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        by_steps = tc.save_every_n_steps and state.step % tc.save_every_n_steps == 0
        signal_number, write_failed = stop_request.signal_number or 0, self.writer.failed
        if s.accelerator.num_processes > 1:  # all processes stop at the same step
            flags = s.accelerator.reduce(torch.tensor([signal_number, int(write_failed)], device=s.accelerator.device), "max")
            signal_number, write_failed = int(flags[0].item()), bool(flags[1].item())
        if write_failed:  # a background write failed: the run ends here, with the checkpoint before it
            self.writer.raise_failure()
            raise CheckpointError("the main process could not write a checkpoint (its message says why); the run stopped")
        if self.checkpoints and (by_steps or end_of_epoch or new_best or stop or signal_number):
            # Within a run of non-finite steps the weights have not moved: keep its start, except
            # for a new best, which is read back from the checkpoint of its own step.
            keep_start = state.bad_streak and not new_best
            self.save_checkpoint(self.stepper.streak_start if keep_start else boundary(state, s.scheduler))
        if signal_number:
            self.writer.wait()  # the checkpoint this message names is complete
            where = (f"a checkpoint of step {state.step} is in {self.folder.checkpoints}" if self.checkpoints
                     else "no checkpoint was written (train.keep_last_checkpoints=0)")
            raise Interrupted(f"stopped by {signal.Signals(signal_number).name} at step {state.step} of {s.total_steps}; "
                              f"{where}. Resume with: lmtune train CONFIG --resume (output.dir={self.folder.path})", signal_number)
        return stop

    def _log_train(self, record: dict[str, Any], steps_bar: Any) -> None:
        self.run_log.write(record)
        loss = "n/a" if record["loss"] is None else f"{record['loss']:.4f}"
        if steps_bar.disable:
            log.info("step %d: loss=%s lr=%.2e %.1f examples/s", record["step"], loss, record["learning_rate"], record["examples_per_s"])
        steps_bar.set_postfix(loss=loss, lr=f"{record['learning_rate']:.2e}", ex_s=f"{record['examples_per_s']:.1f}")


@contextmanager
def recording(run: Run, plan: Plan, early: logging.handlers.BufferingHandler) -> Iterator[None]:
    """The run folder created (main process), train.log, metrics.jsonl and the trackers open while the run trains.

    The trackers are told how the run ended: FINISHED, KILLED (a signal or Ctrl-C) or FAILED.
    """
    s, folder = run.setup, run.folder
    if s.main:
        prepare_output_dir(run.cfg, plan)
        if run.resumed:  # the logs restart from the checkpoint: later records never happened
            folder.write_history(run.history)
            folder.keep_samples_until(run.state.step)
        clean_leftovers(folder.checkpoints)
    s.accelerator.wait_for_everyone()
    if s.main:
        run.status = RunStatus.started(run.state.step, s.total_steps)
        folder.write_status(run.status)
    file_log: logging.Handler = logging.FileHandler(folder.log_file, encoding="utf-8") if s.main else logging.NullHandler()
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.removeHandler(early)
    for record in early.buffer:
        file_log.handle(record)
    log.addHandler(file_log)

    def only_warnings(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    if not s.main:
        log.addFilter(only_warnings)  # one process reports progress, not N
    outcome = "FINISHED"
    try:
        run.trackers = Trackers(run.cfg, folder, run.state.step if run.resumed else None) if s.main else None
        run.run_log = RunLog(folder if s.main else None, run.history, run.trackers)
        yield
        run.record_status("finished")
    except BaseException as err:
        run.writer.close()  # a checkpoint being written is completed before the run ends
        outcome = "KILLED" if isinstance(err, (Interrupted, KeyboardInterrupt)) else "FAILED"
        state, reason = _ending(err)
        run.record_status(state, reason)
        # train.log ends with how the run ended (the console has it from the CLI's message)
        file_log.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, reason, (), None))
        raise
    finally:
        if run.trackers is not None:
            run.trackers.close(outcome)
        log.removeHandler(file_log)
        log.removeFilter(only_warnings)
        file_log.close()


def _ending(err: BaseException) -> tuple[State, str]:
    """How a run that raised `err` ended, and why, in the words train.log and status.json give."""
    if isinstance(err, Interrupted):
        return "stopped", str(err)
    if isinstance(err, KeyboardInterrupt):
        return "stopped", "stopped at once by a second signal, without a checkpoint"
    if isinstance(err, Pruned):
        return "pruned", f"pruned: {err}"
    return "failed", f"failed: {type(err).__name__}: {err}"


def fit(run: Run, on_evaluate: OnEvaluate | None = None) -> None:
    """The epoch loop: optimizer steps over groups of micro-batches until the schedule or early stopping ends it."""
    s, state, tc = run.setup, run.state, run.cfg.train
    run.initial = run.evaluate_at_start()
    stop = run.done
    steps_bar = bar(total=s.total_steps, initial=state.step, desc="train", unit="steps", leave=True)
    with StopRequest() as stop_request:
        while not stop and state.epoch < tc.epochs:
            # Resuming mid-epoch: leave out this process's batches already trained on. Skipping happens on
            # batch indices after sharding (nothing is collated), so every process gets the batches it would have had.
            loader = s.accelerator.skip_first_batches(s.train_loader, state.batches_in_epoch) if state.batches_in_epoch else s.train_loader
            # Accelerate's loader passes its own epoch count to the sampler when iteration starts: set both.
            loader.set_epoch(state.epoch)
            s.train_sampler.set_epoch(state.epoch)
            group: list[Batch] = []
            for batch in loader:
                group.append(batch)
                if len(group) < tc.gradient_accumulation_steps and state.batches_in_epoch + len(group) < s.batches_per_epoch:
                    continue
                run.step(group)
                group = []
                steps_bar.update(1)
                stop = run.after_step(stop_request, steps_bar, on_evaluate)
                if stop:
                    break
            if not stop and group:  # never expected: the loader gave fewer batches than counted
                raise RuntimeError(f"epoch {state.epoch} ended with {len(group)} unprocessed batches")
    steps_bar.close()
    if state.bad_steps:
        log.warning("%d steps were skipped for a non-finite loss or gradient", state.bad_steps)


def finish(run: Run) -> TrainResult:
    """Save final/ and best/ (and merged/), score the test split, write metrics.json and the report."""
    s, state, folder, cfg = run.setup, run.state, run.folder, run.cfg
    run.writer.wait()  # the last checkpoint is complete: the best weights may be read back from it
    s.accelerator.wait_for_everyone()  # by every process (the main process writes it, maybe in the background)
    meta = s.task.meta(s.max_length)
    partitioned = checkpoint_layout(s.accelerator) == "sharded" or zero.zero_stage(s.accelerator) == 3  # none holds it all

    def save(target: Path) -> None:
        """A full model folder, written by the main process (from what every process holds, gathered, under FSDP2 and ZeRO-3)."""
        tensors = gathered_weights(s.accelerator, s.model, s.unwrapped)
        if s.main:
            save_model(s.unwrapped, s.tokenizer, meta, target, tensors)

    if cfg.output.save_final:
        save(folder.final)
    run.best.restore(s.unwrapped)
    save(folder.best)
    if s.main and cfg.output.merge_lora and METHODS[cfg.method.name].adapter:
        # Into the unquantized base, as lmtune merge does (no rounding of the base weights); under FSDP2 and
        # ZeRO-3 from the saved adapter too, since no process holds the whole model.
        if cfg.model.quantize != "none" or partitioned:
            merge_adapter(folder.best, folder.merged)
        else:
            merged = s.unwrapped.merge_and_unload()  # type: ignore[operator]
            save_model(merged, s.tokenizer, {**meta, "merged_from": folder.best.name}, folder.merged)
    seconds = state.train_seconds
    metrics: dict[str, Any] = {
        **(run.best.metrics or {}),
        "best_metric": s.task.metric,
        "best_step": run.best.step,
        "steps": state.step,
        "skipped_steps": state.bad_steps,
        "train_runtime_s": round(seconds, 2),
        "train_examples_per_s": round(state.examples / seconds, 2) if seconds else None,
        "train_tokens": state.tokens,
        "train_tokens_per_s": round(state.tokens / seconds, 1) if seconds else None,
        "trainable_parameters": s.trainable_parameters,
        "total_parameters": s.total_parameters,
        **s.data_counts,
    }
    if s.redacted:
        metrics["redacted"] = s.redacted
    if torch.cuda.is_available():
        metrics["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)  # this process's, on its GPU
    if run.initial is not None:
        metrics["initial"] = run.initial
    if s.test_set is not None:
        metrics["test"] = run.evaluate(s.eval_loader(s.test_set), generate=False, split="test")
        run.write_predictions("test")
        run.run_log.write({"type": "test", "step": state.step, **metrics["test"]})
        log.info("test: %s", _summary(metrics["test"]))
    if s.main:
        folder.write_metrics(metrics)
        if cfg.output.report:
            _report(folder)
    s.accelerator.wait_for_everyone()
    log.info("run written to %s (best %s=%s at step %d)", folder.path, s.task.metric, run.best.value, run.best.step)
    return TrainResult(folder.path, metrics, run.best.step, run.run_log.records)


def _report(folder: RunDir) -> None:
    """report.md and its plots; a failure here costs the report only, never the finished run."""
    try:
        write_report(folder.path)
    except Exception as err:  # noqa: BLE001 - the model and metrics are already saved
        log.warning("could not write %s (%s: %s); rebuild it with: lmtune report %s", folder.report_file, type(err).__name__, err,
                    folder.path)


def _summary(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
