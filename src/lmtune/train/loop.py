"""`train(config) -> TrainResult`: the one entry point used by the CLI, the Python API and tests.

Everything that can fail on user input (config, data, model, method) is checked before the run
folder is created, so a bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lmtune.config import LOWER_IS_BETTER, Config, build_config, load_config
from lmtune.data.batching import EncodedDataset, LengthGroupedBatchSampler, PadCollator, encode_texts
from lmtune.data.classification import ClassificationData, Examples, LabelSpace, load_classification_data
from lmtune.errors import ConfigError
from lmtune.eval.evaluate import model_inputs, predict_scores, score
from lmtune.models.first_token import trim_last_block
from lmtune.models.freeze import apply_freeze, apply_full
from lmtune.models.loading import count_parameters, effective_max_length, load_classifier, load_tokenizer
from lmtune.models.lora import apply_lora
from lmtune.models.parts import find_parts
from lmtune.models.saving import save_model, write_json
from lmtune.train.losses import build_loss
from lmtune.train.optim import build_optimizer, build_scheduler, parameter_groups

log = logging.getLogger("lmtune")

METRICS = {
    "single": {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "roc_auc", "loss"},
    "multi": {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro", "hamming_loss", "roc_auc", "loss"},
    "regression": {"mse", "rmse", "mae", "r2", "pearson", "spearman", "loss"},
}
DEFAULT_METRIC = {"single": "accuracy", "multi": "f1_micro", "regression": "mse"}
PROBLEM_TYPES = {"single": "single_label_classification", "multi": "multi_label_classification", "regression": "regression"}
METHODS = {"full": lambda model, cfg: (model, apply_full(model)), "freeze": lambda model, cfg: (model, apply_freeze(model, cfg))}


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]  # what metrics.json holds: validation metrics of the kept model, and more
    best_step: int
    history: list[dict[str, Any]] = field(default_factory=list)  # every log and evaluation record


def resolve_metric(cfg: Config, label_type: str) -> tuple[str, bool]:
    """The metric that picks the best model, and whether greater is better."""
    name = DEFAULT_METRIC[label_type] if cfg.eval.metric == "auto" else cfg.eval.metric
    if name not in METRICS[label_type]:
        raise ConfigError(
            f"eval.metric={name!r} is not reported for {label_type} labels; choose one of "
            f"{', '.join(sorted(METRICS[label_type]))}"
        )
    return name, name not in LOWER_IS_BETTER


def check_output_dir(cfg: Config) -> bool:
    """Refuse a folder we must not write into; True if it holds an old run to replace."""
    out = Path(cfg.output.dir)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if not out.is_dir() or not (out / "config.yaml").exists():
        raise ConfigError(f"output.dir={out} exists and is not an lmtune run folder; choose another output.dir")
    if not cfg.output.overwrite:
        raise ConfigError(f"output.dir={out} already holds a run; set output.overwrite=true or choose another output.dir")
    return True


def prepare_output_dir(cfg: Config) -> Path:
    """Create the run folder, replacing an old run only now that every input has been checked."""
    out = Path(cfg.output.dir)
    if check_output_dir(cfg):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def encode_split(tokenizer: Any, examples: Examples, labels: LabelSpace, max_length: int, name: str) -> EncodedDataset:
    ids, types, at_limit = encode_texts(tokenizer, examples.texts, examples.pairs, max_length)
    if at_limit:
        log.info("%s: %d of %d examples reached max_length=%d and were truncated", name, at_limit, len(ids), max_length)
    return EncodedDataset(ids, [labels.encode(v) for v in examples.labels], types)


class RunLog:
    """metrics.jsonl: one JSON record per log or evaluation, appended as the run goes."""

    def __init__(self, path: Path | None):
        self.path = path  # None: keep records in memory only (processes other than the main one)
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _setup(cfg: Config) -> tuple[Any, Any, ClassificationData, Any]:
    """Load and check data, tokenizer and model; adapt the model with the chosen method."""
    data = load_classification_data(cfg.data, cfg.train.seed)
    resolve_metric(cfg, data.labels.label_type)
    tokenizer = load_tokenizer(cfg.model)
    model = load_classifier(cfg.model, tokenizer, data.labels.names, PROBLEM_TYPES[data.labels.label_type])
    if cfg.method.name == "lora":
        model = apply_lora(model, cfg.method)
    else:
        model, _ = METHODS[cfg.method.name](model, cfg.method)
    trim_last_block(model)
    return tokenizer, model, data, find_parts(model.get_base_model() if hasattr(model, "get_base_model") else model)


def train(config: Config | dict | str | Path, *, progress: bool = True) -> TrainResult:
    """Fine-tune a model as the config says; returns the final metrics and where the run was written."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = load_config(config) if isinstance(config, (str, Path)) else build_config(config)
    tc = cfg.train
    check_output_dir(cfg)
    set_seed(tc.seed)
    tokenizer, model, data, parts = _setup(cfg)
    labels = data.labels
    metric_name, greater_is_better = resolve_metric(cfg, labels.label_type)
    base_config = model.config
    max_length = effective_max_length(cfg.model, tokenizer, base_config)
    train_set = encode_split(tokenizer, data.train, labels, max_length, "train")
    val_set = encode_split(tokenizer, data.validation, labels, max_length, "validation")
    test_set = encode_split(tokenizer, data.test, labels, max_length, "test") if data.test else None
    loss_fn = build_loss(tc, labels, train_set.targets)

    # Several processes on a machine without CUDA (torchrun --nproc_per_node N): Accelerate
    # trains them together over gloo only when told the run is a CPU run.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[tc.precision],
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
    )
    target_dtype = torch.long if labels.label_type == "single" else torch.float32
    collate = PadCollator(tokenizer.pad_token_id, target_dtype)
    train_sampler = LengthGroupedBatchSampler(train_set.lengths, tc.batch_size, seed=tc.seed)
    eval_batch = cfg.eval.batch_size or 2 * tc.batch_size

    def eval_loader(dataset: EncodedDataset) -> Any:
        sampler = LengthGroupedBatchSampler(dataset.lengths, eval_batch, seed=tc.seed, shuffle=False)
        return accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate))

    train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=train_sampler, collate_fn=collate)
    optimizer = build_optimizer(parameter_groups(model, tc, parts.head), tc)
    # Accelerate gives each process its share of the batches, and the prepared scheduler steps
    # once per process for every optimizer step: count steps per process, schedule in global steps.
    batches_per_epoch = math.ceil(len(train_sampler) / accelerator.num_processes)
    total_steps = math.ceil(batches_per_epoch / tc.gradient_accumulation_steps) * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    scheduler = build_scheduler(optimizer, tc, total_steps * accelerator.num_processes)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    val_loader = eval_loader(val_set)

    trainable, total = count_parameters(model)
    main = accelerator.is_main_process  # only the main process writes files
    out = Path(cfg.output.dir)
    if main:
        prepare_output_dir(cfg)
        (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    accelerator.wait_for_everyone()
    file_log = logging.FileHandler(out / "train.log", encoding="utf-8") if main else logging.NullHandler()
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(file_log)
    def only_warnings(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    if not main:
        log.addFilter(only_warnings)  # one process reports progress, not N
    try:
        log.info(
            "%s: %s parameters, %s trainable (%.2f%%), method %s; %d train / %d validation examples; %d steps",
            cfg.model.name_or_path, f"{total:,}", f"{trainable:,}", 100 * trainable / total, cfg.method.name,
            len(train_set), len(val_set), total_steps,
        )
        run_log = RunLog(out / "metrics.jsonl" if main else None)
        meta = {
            "task": cfg.task,
            "label_type": labels.label_type,
            "labels": labels.names,
            "problem_type": PROBLEM_TYPES[labels.label_type],
            "text_column": cfg.data.text_column,
            "text_pair_column": cfg.data.text_pair_column,
            "label_column": cfg.data.label_column,
            "max_length": max_length,
            "threshold": cfg.eval.threshold,
            "method": cfg.method.name,
            "base_model": _base_model_record(cfg),
        }

        def evaluate(loader: Any = val_loader) -> dict[str, Any]:
            scores, targets, loss = predict_scores(model, loader, labels.label_type, accelerator, loss_fn)
            return {"loss": loss, **score(scores, targets, labels, cfg.eval.threshold)}

        initial = None
        if cfg.eval.at_start:
            initial = evaluate()
            run_log.write({"type": "eval", "step": 0, "epoch": 0.0, **initial})
            log.info("before training: %s", _summary(initial))

        state = _Loop(model, optimizer, scheduler, loss_fn, accelerator, tc)
        best = BestKeeper(metric_name, greater_is_better, cfg.eval.early_stopping_patience)
        step, stop = 0, False
        # disable=None: no bar when stderr is not a terminal (logs, CI), as tqdm decides
        bar = tqdm(total=total_steps, disable=None if progress and main else True, desc="train", dynamic_ncols=True)
        started = time.perf_counter()
        eval_seconds = 0.0
        for epoch in range(tc.epochs):
            train_sampler.set_epoch(epoch)
            for batch in train_loader:
                stepped = state.step(batch)
                if not stepped:
                    continue
                step += 1
                bar.update(1)
                if step % tc.log_every_n_steps == 0 or step == total_steps:
                    record = state.log_record(step, epoch + state.batches_in_epoch / batches_per_epoch, time.perf_counter() - started - eval_seconds)
                    run_log.write(record)
                    if bar.disable:
                        log.info("step %d: loss=%.4f lr=%.2e %.1f examples/s", step, record["loss"], record["learning_rate"], record["examples_per_s"])
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.2e}", ex_s=f"{record['examples_per_s']:.1f}")
                end_of_epoch = state.batches_in_epoch == batches_per_epoch
                due = (cfg.eval.every_n_steps and step % cfg.eval.every_n_steps == 0) or end_of_epoch or step == total_steps
                if due:
                    t0 = time.perf_counter()
                    metrics = evaluate()
                    eval_seconds += time.perf_counter() - t0
                    run_log.write({"type": "eval", "step": step, "epoch": round(epoch + state.batches_in_epoch / batches_per_epoch, 4), **metrics})
                    log.info("step %d: %s", step, _summary(metrics))
                    stop = best.update(step, metrics, accelerator.unwrap_model(model))
                if step >= total_steps or stop:
                    stop = True
                    break
            state.batches_in_epoch = 0
            if stop:
                break
        bar.close()
        train_seconds = time.perf_counter() - started - eval_seconds

        unwrapped = accelerator.unwrap_model(model)
        if cfg.output.save_final and main:
            save_model(unwrapped, tokenizer, meta, out / "final")
        if best.weights is not None:
            _restore(unwrapped, best.weights)
        if main:
            save_model(unwrapped, tokenizer, meta, out / "best")
        if main and cfg.output.merge_lora and cfg.method.name == "lora":
            merged = unwrapped.merge_and_unload()
            save_model(merged, tokenizer, {**meta, "merged_from": "best"}, out / "merged")
        result_metrics: dict[str, Any] = {
            **(best.metrics or {}),
            "best_metric": metric_name,
            "best_step": best.step,
            "steps": step,
            "train_runtime_s": round(train_seconds, 2),
            "train_examples_per_s": round(state.examples / train_seconds, 2) if train_seconds else None,
            "train_tokens_per_s": round(state.tokens / train_seconds, 1) if train_seconds else None,
            "trainable_parameters": trainable,
            "total_parameters": total,
        }
        if initial is not None:
            result_metrics["initial"] = initial
        if test_set is not None:
            result_metrics["test"] = evaluate(eval_loader(test_set))
            run_log.write({"type": "test", "step": step, **result_metrics["test"]})
            log.info("test: %s", _summary(result_metrics["test"]))
        if main:
            write_json(out / "metrics.json", result_metrics)
        accelerator.wait_for_everyone()
        log.info("run written to %s (best %s=%s at step %d)", out, metric_name, best.value, best.step)
        return TrainResult(out, result_metrics, best.step, run_log.records)
    finally:
        log.removeHandler(file_log)
        log.removeFilter(only_warnings)
        file_log.close()


class _Loop:
    """The state of one training step: forward, loss, backward, clip, step (with accumulation)."""

    def __init__(self, model: Any, optimizer: Any, scheduler: Any, loss_fn: Any, accelerator: Any, tc: Any):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loss_fn, self.accelerator, self.tc = loss_fn, accelerator, tc
        self.batches_in_epoch = 0
        self.examples = 0
        self.tokens = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.model.train()

    def step(self, batch: dict[str, torch.Tensor]) -> bool:
        """Process one micro-batch; True when it completed an optimizer step."""
        self.batches_in_epoch += 1
        with self.accelerator.accumulate(self.model):
            logits = self.model(**model_inputs(batch)).logits  # (B, num_labels)
            loss = self.loss_fn(logits, batch["target"])
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and self.tc.max_grad_norm is not None:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.tc.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.examples += batch["input_ids"].shape[0]
        self.tokens += int(batch["attention_mask"].sum())
        self.loss_sum += float(loss.detach())
        self.loss_count += 1
        return self.accelerator.sync_gradients

    def log_record(self, step: int, epoch: float, seconds: float) -> dict[str, Any]:
        record = {
            "type": "train",
            "step": step,
            "epoch": round(epoch, 4),
            "loss": self.loss_sum / max(self.loss_count, 1),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "examples_per_s": self.examples / seconds if seconds > 0 else 0.0,
            "tokens_per_s": self.tokens / seconds if seconds > 0 else 0.0,
        }
        self.loss_sum, self.loss_count = 0.0, 0
        return record


class BestKeeper:
    """Keeps the weights of the best evaluation so far, and says when to stop early."""

    def __init__(self, metric: str, greater_is_better: bool, patience: int | None):
        self.metric, self.greater_is_better, self.patience = metric, greater_is_better, patience
        self.value: float | None = None
        self.step = 0
        self.metrics: dict[str, Any] | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.evals_without_gain = 0

    def update(self, step: int, metrics: dict[str, Any], model: torch.nn.Module) -> bool:
        """Record one evaluation; True when early stopping says the run should end."""
        value = metrics.get(self.metric)
        if value is not None and (
            self.value is None or (value > self.value if self.greater_is_better else value < self.value)
        ):
            self.value, self.step, self.metrics = value, step, metrics
            self.weights = _trainable_snapshot(model)
            self.evals_without_gain = 0
            return False
        self.evals_without_gain += 1
        if self.patience and self.evals_without_gain >= self.patience:
            log.info("early stopping: %s did not improve in %d evaluations", self.metric, self.evals_without_gain)
            return True
        return False


def _trainable_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only trainable tensors change during training, so only they are copied for the best model."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _restore(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, value in snapshot.items():
        params[name].copy_(value)


def _base_model_record(cfg: Config) -> dict[str, Any]:
    path = cfg.model.name_or_path
    if Path(path).exists():
        path = str(Path(path).resolve())
    return {
        "name_or_path": path,
        "gguf_file": cfg.model.gguf_file,
        "trust_remote_code": cfg.model.trust_remote_code,
        "revision": cfg.model.revision,
        "max_length": cfg.model.max_length,
    }


def _summary(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
