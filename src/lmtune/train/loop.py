"""`train(config) -> TrainResult`: the one entry point used by the CLI, the Python API and tests.

Everything that can fail on user input (config, data, model, method) is checked before the run
folder is created, so a bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmtune.config import Config, build_config, load_config
from lmtune.data.batching import LengthGroupedBatchSampler
from lmtune.errors import ConfigError, Interrupted, TrainingError
from lmtune.models.freeze import apply_freeze, apply_full
from lmtune.models.loading import count_parameters, effective_max_length, load_tokenizer
from lmtune.models.lora import apply_lora
from lmtune.models.saving import csv_text, save_model, write_atomically, write_json, write_jsonl, write_text
from lmtune.paths import check_creatable
from lmtune.progress import bar, quiet
from lmtune.report import write_report
from lmtune.tasks import Task, build_task
from lmtune.train.checkpoint import checkpoints_dir, clean_leftovers, rotate
from lmtune.train.optim import build_optimizer, build_scheduler, parameter_groups, warmup_steps
from lmtune.train.resume import changed_keys, check_compatible, find_checkpoint, fingerprint, saved_config
from lmtune.train.signals import StopRequest
from lmtune.train.state import BestKeeper, restore_checkpoint, restore_trainable, write_checkpoint
from lmtune.train.step import Progress, Stepper, boundary
from lmtune.train.tracking import Trackers, check_trackers

log = logging.getLogger("lmtune")

METHODS = {
    "full": lambda model, task: apply_full(model),
    "freeze": lambda model, task: apply_freeze(model, task.cfg.method, task.new_head),
}


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]  # what metrics.json holds: validation metrics of the kept model, and more
    best_step: int
    history: list[dict[str, Any]] = field(default_factory=list)  # every log and evaluation record


def plan_output_dir(cfg: Config, in_place: bool) -> str:
    """What this run does with output.dir, decided before anything is loaded.

    new: nothing there yet; continue: resume a checkpoint of this folder; replace: output.overwrite;
    start_over: resume=auto, and the folder holds this config's run killed before its first
    checkpoint; finished: resume=auto, and it holds this config's finished run without checkpoints.
    """
    out = Path(cfg.output.dir)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return "new"
    if not out.is_dir() or not (out / "config.yaml").exists():
        raise ConfigError(f"output.dir={out} exists and is not an lmtune run folder; choose another output.dir")
    if in_place:
        return "continue"
    if cfg.output.overwrite:
        return "replace"
    if cfg.resume != "auto":
        raise ConfigError(
            f"output.dir={out} already holds a run; resume it with --resume, set output.overwrite=true to "
            f"replace it, or choose another output.dir"
        )
    finished = (out / "metrics.json").is_file()
    try:
        changes = changed_keys(load_config(out / "config.yaml"), cfg)
    except ConfigError as err:
        changes = [f"its config.yaml cannot be read ({str(err).splitlines()[0]})"]
    if not changes:
        return "finished" if finished else "start_over"
    raise ConfigError(
        f"output.dir={out} holds {'a finished' if finished else 'an unfinished'} run of another config and no complete "
        f"checkpoint to continue from, so --resume cannot continue it ({'; '.join(changes[:5])}); set "
        f"output.overwrite=true to replace it, or choose another output.dir"
    )


def prepare_output_dir(cfg: Config, plan: str) -> Path:
    """Create the run folder (with its config.yaml) now that every input has been checked.

    A folder to replace is renamed aside before it is deleted, and a new one is filled under a
    temporary name and renamed into place, so a run killed at any moment leaves output.dir either
    absent, or a run folder with its config.yaml: the same command line can always start again.
    """
    out = Path(cfg.output.dir)
    for leftover in out.parent.glob(f".{out.name}.trash-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if plan in ("replace", "start_over") and out.exists():
        trash = out.with_name(f".{out.name}.trash-{os.getpid()}")
        os.replace(out, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if out.is_dir():  # continue, or an empty folder
        write_text(out / "config.yaml", cfg.to_yaml())
    else:
        write_atomically(out, lambda tmp: write_text(tmp / "config.yaml", cfg.to_yaml()))
    return out


def finished_result(out: Path) -> TrainResult:
    """The result of a finished run, read back from its folder."""
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    log_file = out / "metrics.jsonl"
    history = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()] if log_file.exists() else []
    return TrainResult(out, metrics, int(metrics.get("best_step") or 0), history)


class RunLog:
    """metrics.jsonl: one JSON record per log or evaluation, appended as the run goes (and copied to the trackers)."""

    def __init__(self, path: Path | None, records: list[dict[str, Any]] | None = None, trackers: Trackers | None = None):
        self.path = path  # None: keep records in memory only (processes other than the main one)
        self.records: list[dict[str, Any]] = list(records or [])
        self.trackers = trackers

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.trackers is not None:
            self.trackers.log(record)


def _setup(cfg: Config) -> tuple[Task, Any, Any]:
    """Load and check data, tokenizer and model; adapt the model with the chosen method."""
    check_trackers(cfg)
    task = build_task(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    model = task.load_model(tokenizer)
    if cfg.method.name == "lora":
        model = apply_lora(model, cfg.method, task.peft_task_type(), task.new_head)
    else:
        METHODS[cfg.method.name](model, task)
    task.prepare_model(model)
    return task, tokenizer, model


def train(
    config: Config | dict | str | Path, *, progress: bool = True,
    on_evaluate: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune a model as the config says; returns the final metrics and where the run was written.

    `on_evaluate(step, metrics)` is called after every evaluation during training (the search
    uses it to stop unpromising trials: an exception it raises ends the run).
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


def _train(
    config: Config | dict | str | Path, early: logging.handlers.BufferingHandler,
    on_evaluate: Callable[[int, dict[str, Any]], None] | None,
) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    given = load_config(config) if isinstance(config, (str, Path)) else build_config(config)
    cfg = given.with_defaults()
    tc = cfg.train
    out = Path(cfg.output.dir)
    check_creatable(out, "output.dir")
    resume_from = find_checkpoint(cfg)
    # Resuming a checkpoint of this output.dir continues the run in place; one from elsewhere starts a new folder.
    in_place = resume_from is not None and out.resolve() in resume_from.resolve().parents
    plan = plan_output_dir(cfg, in_place)
    if plan == "finished":
        log.info("output.dir=%s holds this config's finished run (it kept no checkpoint): nothing to resume. "
                 "Set output.overwrite=true to train it again", out)
        return finished_result(out)
    if plan == "start_over":
        log.warning("output.dir=%s holds this config's run, stopped before its first complete checkpoint: "
                    "starting it over", out)
    set_seed(tc.seed)
    task, tokenizer, model = _setup(cfg)
    metric_name, greater_is_better = task.metric, task.greater_is_better
    fingerprints = {
        "data": fingerprint(task.data_fingerprint()),
        "model": fingerprint({k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}),
    }
    resumed_state: dict[str, Any] | None = None
    if resume_from is not None:
        resumed_state = json.loads((resume_from / "state.json").read_text(encoding="utf-8"))
        accepted = check_compatible(saved_config(resume_from), cfg, resumed_state["fingerprints"], fingerprints)
    max_length = effective_max_length(cfg.model, tokenizer, model.config)
    splits = task.encode(tokenizer, max_length)
    train_set, val_set, test_set = splits.train, splits.validation, splits.test

    # Several processes on a machine without CUDA (torchrun --nproc_per_node N): Accelerate
    # trains them together over gloo only when told the run is a CPU run. Gradient accumulation
    # is done here (Stepper), not by Accelerate, so a resumed run knows exactly where it is.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=multi_cpu, mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[tc.precision])
    collate = task.collate
    train_sampler = LengthGroupedBatchSampler(train_set.lengths, tc.batch_size, seed=tc.seed)
    eval_batch = cfg.eval.batch_size or 2 * tc.batch_size

    def eval_loader(dataset: torch.utils.data.Dataset) -> Any:
        sampler = LengthGroupedBatchSampler(dataset.lengths, eval_batch, seed=tc.seed, shuffle=False)
        return accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate))

    # The loader's own generator: making an iterator then draws nothing from the global RNG, which
    # dropout uses, so a run resumed mid-epoch replays the same dropout masks.
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=train_sampler, collate_fn=collate, num_workers=tc.dataloader_workers,
        generator=torch.Generator().manual_seed(tc.seed),
    )
    optimizer = build_optimizer(parameter_groups(model, tc, task.new_head), tc)
    # Accelerate gives each process its share of the batches: count steps per process.
    batches_per_epoch = math.ceil(len(train_sampler) / accelerator.num_processes)
    total_steps = math.ceil(batches_per_epoch / tc.gradient_accumulation_steps) * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    # The prepared scheduler steps once per process for every optimizer step: schedule in global steps.
    scheduler = build_scheduler(optimizer, tc, total_steps * accelerator.num_processes)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    val_loader = eval_loader(val_set) if val_set is not None else None
    unwrapped = accelerator.unwrap_model(model)

    trainable, total = count_parameters(model)
    main = accelerator.is_main_process  # only the main process writes files
    ckpt_root = checkpoints_dir(out)
    state = Progress()
    checkpoints = tc.keep_last_checkpoints > 0
    best = BestKeeper(metric_name, greater_is_better, cfg.eval.early_stopping_patience, ckpt_root if checkpoints else None)
    history: list[dict[str, Any]] = []
    if resume_from is not None:
        state, history = restore_checkpoint(resume_from, resumed_state, unwrapped, optimizer, scheduler, accelerator, best)
        if in_place and (state.step >= total_steps or best.should_stop) and (out / "metrics.json").is_file():
            log.info("output.dir=%s holds this config's finished run (step %d of %d): nothing to resume. "
                     "Set output.overwrite=true to train it again", out, state.step, total_steps)
            return finished_result(out)
    if main:
        prepare_output_dir(cfg, plan)
        if resume_from is not None:  # the logs restart from the checkpoint: later records never happened
            write_jsonl(out / "metrics.jsonl", history)
            samples = out / "samples.jsonl"
            if samples.exists():
                kept = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line.strip()]
                write_jsonl(samples, [r for r in kept if r["step"] <= state.step])
        clean_leftovers(ckpt_root)
    accelerator.wait_for_everyone()
    file_log = logging.FileHandler(out / "train.log", encoding="utf-8") if main else logging.NullHandler()
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.removeHandler(early)
    for record in early.buffer:
        file_log.handle(record)
    log.addHandler(file_log)

    def only_warnings(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    if not main:
        log.addFilter(only_warnings)  # one process reports progress, not N
    trackers: Trackers | None = None
    outcome = "FINISHED"  # what the trackers are told when the run ends
    try:
        log.info(
            "%s: %s parameters, %s trainable (%.2f%%), method %s; %d train / %d validation examples; %d steps",
            cfg.model.name_or_path, f"{total:,}", f"{trainable:,}", 100 * trainable / total, cfg.method.name,
            len(train_set), len(val_set) if val_set is not None else 0, total_steps,
        )
        source = "train.learning_rate" if given.train.learning_rate is not None else f"the default for method {cfg.method.name}"
        log.info("learning rate %g (%s), %s schedule, warmup %d steps", tc.learning_rate, source, tc.scheduler, warmup_steps(tc, total_steps))
        if resume_from is not None:
            log.info("resumed from %s (step %d, epoch %d)%s", resume_from, state.step, state.epoch,
                     "; accepted changes: " + "; ".join(accepted) if accepted else "")
        if tc.keep_last_checkpoints == 0:
            log.warning("train.keep_last_checkpoints=0: no checkpoints are written, so this run cannot be resumed")
        trackers = Trackers(cfg, out, state.step if resume_from is not None else None) if main else None
        run_log = RunLog(out / "metrics.jsonl" if main else None, history, trackers)
        meta = task.meta(max_length)

        predictions: Callable[[], list[dict[str, Any]]] | None = None  # of the latest evaluation

        def evaluate(loader: Any = val_loader, generate: bool = True, split: str = "validation") -> dict[str, Any]:
            nonlocal predictions
            result = task.evaluate(model, loader, accelerator, generate, split)
            if result.samples and main:
                with (out / "samples.jsonl").open("a", encoding="utf-8") as f:
                    for sample in result.samples:
                        f.write(json.dumps({"step": state.step, **sample}, ensure_ascii=False) + "\n")
            predictions = result.predictions
            return result.metrics

        def write_predictions(split: str) -> None:
            """SPLIT_predictions.csv: every example of the split as the model just evaluated saw it."""
            rows = predictions() if main and predictions is not None else []
            if rows:
                rows = [{"step": state.step, **row} for row in rows]
                write_text(out / f"{split}_predictions.csv", csv_text(rows, list(rows[0])))

        def save_checkpoint(point: dict[str, Any]) -> None:
            """Write the weights and optimizer as they are now, with the counters and RNG of `point`."""
            write_checkpoint(ckpt_root, point, cfg, fingerprints, unwrapped, optimizer, scheduler, accelerator, best, run_log.records)
            if main:
                rotate(ckpt_root, tc.keep_last_checkpoints, {best.step} if best.step else set())
            accelerator.wait_for_everyone()

        initial = next((r for r in history if r["type"] == "eval" and r["step"] == 0), None)
        if cfg.eval.at_start and resume_from is None and val_loader is not None:
            metrics = evaluate()
            initial = {"type": "eval", "step": 0, "epoch": 0.0, **metrics}
            run_log.write(initial)
            log.info("before training: %s", _summary(metrics))
        if initial is not None:
            initial = {k: v for k, v in initial.items() if k not in ("type", "step", "epoch")}

        stepper = Stepper(model, optimizer, scheduler, task, accelerator, tc, state)
        stop = state.step >= total_steps or best.should_stop
        steps_bar = bar(total=total_steps, initial=state.step, desc="train", unit="steps", leave=True)
        with StopRequest() as stop_request:
            while not stop and state.epoch < tc.epochs:
                # Resuming mid-epoch: leave out this process's batches already trained on. Skipping
                # happens on batch indices after sharding (nothing is collated), so every process
                # gets exactly the batches it would have had.
                loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
                # Accelerate's loader passes its own epoch count to the sampler when iteration starts: set both.
                loader.set_epoch(state.epoch)
                train_sampler.set_epoch(state.epoch)
                group: list[dict[str, torch.Tensor]] = []
                for batch in loader:
                    group.append(batch)
                    seen = state.batches_in_epoch + len(group)
                    if len(group) < tc.gradient_accumulation_steps and seen < batches_per_epoch:
                        continue
                    started = time.perf_counter()
                    point = boundary(state, scheduler)
                    try:
                        stepper.step(group, point)
                    except Exception as err:
                        # The weights are still those of `point` unless the update itself failed: keep
                        # them (from before the first bad step, inside a run of non-finite steps). With
                        # several processes only our own errors are known to be on every process.
                        together = isinstance(err, TrainingError) or accelerator.num_processes == 1
                        if checkpoints and together and not stepper.updating:
                            save_checkpoint(stepper.streak_start if state.bad_streak else point)
                            if not isinstance(err, TrainingError):
                                log.error("step %d failed (%s); a checkpoint of step %d was written first",
                                          state.step + 1, type(err).__name__, state.step)
                        raise
                    state.train_seconds += time.perf_counter() - started
                    group = []
                    steps_bar.update(1)
                    end_of_epoch = state.batches_in_epoch >= batches_per_epoch
                    if state.step % tc.log_every_n_steps == 0 or state.step == total_steps:
                        record = stepper.log_record(state.epoch + state.batches_in_epoch / batches_per_epoch)
                        run_log.write(record)
                        loss_text = "n/a" if record["loss"] is None else f"{record['loss']:.4f}"
                        if steps_bar.disable:
                            log.info("step %d: loss=%s lr=%.2e %.1f examples/s", state.step, loss_text, record["learning_rate"], record["examples_per_s"])
                        steps_bar.set_postfix(loss=loss_text, lr=f"{record['learning_rate']:.2e}", ex_s=f"{record['examples_per_s']:.1f}")
                    finished = state.step >= total_steps
                    new_best = False
                    due = (cfg.eval.every_n_steps and state.step % cfg.eval.every_n_steps == 0) or end_of_epoch or finished
                    if due and val_loader is not None:
                        metrics = evaluate()
                        epoch_pos = round(state.epoch + state.batches_in_epoch / batches_per_epoch, 4)
                        run_log.write({"type": "eval", "step": state.step, "epoch": epoch_pos, **metrics})
                        log.info("step %d: %s", state.step, _summary(metrics))
                        new_best = best.update(state.step, metrics, unwrapped)
                        if new_best:
                            write_predictions("validation")
                        if on_evaluate is not None:
                            on_evaluate(state.step, metrics)
                    stop = finished or best.should_stop
                    if end_of_epoch:
                        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
                    by_steps = tc.save_every_n_steps and state.step % tc.save_every_n_steps == 0
                    signal_number = stop_request.signal_number or 0
                    if accelerator.num_processes > 1:  # all processes stop at the same step
                        signal_number = int(accelerator.reduce(torch.tensor(signal_number, device=accelerator.device), "max").item())
                    if checkpoints and (by_steps or end_of_epoch or new_best or stop or signal_number):
                        # Within a run of non-finite steps the weights have not moved: keep its start,
                        # except for a new best, which is read back from the checkpoint of its own step.
                        keep_start = state.bad_streak and not new_best
                        save_checkpoint(stepper.streak_start if keep_start else boundary(state, scheduler))
                    if signal_number:
                        where = f"a checkpoint of step {state.step} is in {ckpt_root}" if checkpoints else "no checkpoint was written (train.keep_last_checkpoints=0)"
                        raise Interrupted(
                            f"stopped by {signal.Signals(signal_number).name} at step {state.step} of {total_steps}; {where}. "
                            f"Resume with: lmtune train CONFIG --resume (output.dir={out})",
                            signal_number,
                        )
                    if stop:
                        break
                if not stop and group:  # never expected: the loader gave fewer batches than counted
                    raise RuntimeError(f"epoch {state.epoch} ended with {len(group)} unprocessed batches")
        steps_bar.close()
        if state.bad_steps:
            log.warning("%d steps were skipped for a non-finite loss or gradient", state.bad_steps)

        if cfg.output.save_final and main:
            save_model(unwrapped, tokenizer, meta, out / "final")
        best_weights = best.weights()
        if best_weights is not None:
            restore_trainable(unwrapped, best_weights)
        if main:
            save_model(unwrapped, tokenizer, meta, out / "best")
        if main and cfg.output.merge_lora and cfg.method.name == "lora":
            merged = unwrapped.merge_and_unload()
            save_model(merged, tokenizer, {**meta, "merged_from": "best"}, out / "merged")
        seconds = state.train_seconds
        result_metrics: dict[str, Any] = {
            **(best.metrics or {}),
            "best_metric": metric_name,
            "best_step": best.step,
            "steps": state.step,
            "skipped_steps": state.bad_steps,
            "train_runtime_s": round(seconds, 2),
            "train_examples_per_s": round(state.examples / seconds, 2) if seconds else None,
            "train_tokens_per_s": round(state.tokens / seconds, 1) if seconds else None,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "train_examples": len(train_set),
            "validation_examples": len(val_set) if val_set is not None else 0,
        }
        if initial is not None:
            result_metrics["initial"] = initial
        if test_set is not None:
            result_metrics["test"] = evaluate(eval_loader(test_set), generate=False, split="test")
            write_predictions("test")
            run_log.write({"type": "test", "step": state.step, **result_metrics["test"]})
            log.info("test: %s", _summary(result_metrics["test"]))
        if main:
            write_json(out / "metrics.json", result_metrics)
            if cfg.output.report:
                _report(out)
        accelerator.wait_for_everyone()
        log.info("run written to %s (best %s=%s at step %d)", out, metric_name, best.value, best.step)
        return TrainResult(out, result_metrics, best.step, run_log.records)
    except BaseException as err:
        outcome = "KILLED" if isinstance(err, (Interrupted, KeyboardInterrupt)) else "FAILED"
        raise
    finally:
        if trackers is not None:
            trackers.close(outcome)
        log.removeHandler(file_log)
        log.removeFilter(only_warnings)
        file_log.close()


def _report(out: Path) -> None:
    """report.md and its plots; a failure here costs the report only, never the finished run."""
    try:
        write_report(out)
    except Exception as err:  # noqa: BLE001 - the model and metrics are already saved
        log.warning("could not write %s/report.md (%s: %s); rebuild it with: lmtune report %s", out, type(err).__name__, err, out)


def _summary(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
