"""GPU check: lmtune's GPU path against the Hugging Face Trainer (and TRL's SFTTrainer where installed), in one command.

Run through `bench/gpu_check.sh` (it installs carried wheels first). No model weights and no data
travel: models are built from configs (a BERT-base-shaped encoder, a SmolLM2-135M-shaped decoder)
over a word-level tokenizer made here, and the data is made up, with a label the text decides.

Sections, each variant in this process (peak CUDA memory reset before each):
- classification, bf16, full fine-tuning: lmtune and the HF Trainer on the same token rows;
- LoRA SFT, bf16: lmtune, the HF Trainer fed lmtune's own token rows and labels, TRL's
  SFTTrainer (when installed) on the same prompt-completion text, and lmtune with
  gradient checkpointing, with Liger's kernels (CUDA and liger-kernel) and as QLoRA
  (bitsandbytes), and through `accelerate launch` with examples/accelerate/fsdp2-offload.yaml
  (FSDP2, shards in CPU memory; fsdp2.yaml in the dry run, where there is no GPU to offload from)
  and with deepspeed-zero3.yaml (DeepSpeed ZeRO-3, when installed);
- resume: `lmtune train` killed (SIGKILL) after its first checkpoint, resumed with the same
  command line: its per-step losses against the same run never killed.

Each row has tokens/s (non-pad tokens the loss or the model reads, per second of the training
loop), peak CUDA memory, the last loss and MFU: model FLOPs per token (6 x parameters when every
weight trains; 4 x the frozen parameters + 6 x the trained ones for adapters; attention left out)
x tokens/s over the GPU's dense bf16 peak. `--dry-run` runs the same steps on tiny models on the
CPU in fp32, so the script is known to work before a GPU is there. It writes gpu_check.json and
gpu_check.md (the table for bench/README.md) into --out.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12, "H800": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}  # dense bf16 FLOP/s
IGNORE = -100


@dataclass(frozen=True)
class Sizes:
    """What one mode trains: the models' shapes, the data and the steps."""

    encoder: dict[str, int]  # BertConfig fields
    decoder: dict[str, int]  # LlamaConfig fields
    words: int  # tokenizer vocabulary (besides its special tokens)
    cls_rows: int
    cls_words: int  # words per classification text
    cls_batch: int
    sft_rows: int
    sft_words: tuple[int, int]  # words per prompt and per reply (each drawn up to this)
    sft_batch: int
    max_length: int
    resume_steps: int
    precision: str


GPU = Sizes(
    encoder={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    decoder={"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
             "intermediate_size": 1536},
    words=30_000, cls_rows=4096, cls_words=120, cls_batch=32, sft_rows=640, sft_words=(200, 300), sft_batch=8,
    max_length=512, resume_steps=30, precision="bf16",
)
DRY = Sizes(
    encoder={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    decoder={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128},
    words=200, cls_rows=64, cls_words=12, cls_batch=16, sft_rows=32, sft_words=(10, 12), sft_batch=8,
    max_length=64, resume_steps=12, precision="fp32",
)


# --- made-up data, tokenizer and models ------------------------------------------------------


def word(i: int) -> str:
    return f"w{i}"


def build_tokenizer(folder: Path, words: int) -> Any:
    """A word-level tokenizer over w0..wN and the alpaca template's words, saved to `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"]
    template = ["###", "System", "Instruction", "Response", ":", "Input"]
    vocab = {w: i for i, w in enumerate(specials + template + [word(i) for i in range(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", bos_token="<s>", eos_token="</s>", model_max_length=4096)
    fast.save_pretrained(folder)
    return fast


def build_models(root: Path, sizes: Sizes) -> dict[str, Path]:
    """The encoder and decoder folders (random weights from configs) with the tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    folders = {"encoder": root / "encoder", "decoder": root / "decoder"}
    tokenizer = build_tokenizer(folders["encoder"], sizes.words)
    tokenizer.save_pretrained(folders["decoder"])
    vocab = len(tokenizer)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=vocab, max_position_embeddings=512, num_labels=2,
                                             pad_token_id=tokenizer.pad_token_id, **sizes.encoder)).save_pretrained(folders["encoder"])
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, max_position_embeddings=2048, tie_word_embeddings=True,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, **sizes.decoder)).save_pretrained(folders["decoder"])
    return folders


def write_data(root: Path, sizes: Sizes) -> dict[str, Path]:
    """Classification rows (label 1 when the text holds w0) and alpaca rows (the reply repeats the prompt's words)."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(sizes.cls_rows):
        words = [word(rng.randrange(1, sizes.words)) for _ in range(sizes.cls_words)]
        label = i % 2
        if label:
            words[rng.randrange(len(words))] = word(0)
        rows.append((" ".join(words), label))
    cls = root / "classification.csv"
    cls.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    alpaca = []
    for _ in range(sizes.sft_rows):
        prompt = [word(rng.randrange(sizes.words)) for _ in range(rng.randint(4, sizes.sft_words[0]))]
        reply = (prompt * 4)[: rng.randint(4, sizes.sft_words[1])]
        alpaca.append({"instruction": " ".join(prompt), "input": "", "output": " ".join(reply)})
    sft = root / "sft.json"
    sft.write_text(json.dumps(alpaca))
    return {"classification": cls, "sft": sft}


# --- measuring -------------------------------------------------------------------------------


def cuda() -> bool:
    return torch.cuda.is_available()


def fresh_memory() -> None:
    gc.collect()
    if cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda() else None


def bf16_peak() -> float | None:
    if not cuda():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def mfu(tokens_per_s: float, frozen: int, trained: int) -> float | None:
    peak = bf16_peak()
    return round(100 * tokens_per_s * (4 * frozen + 6 * trained) / peak, 2) if peak else None


def row(variant: str, train_s: float, tokens: int, loss: float | None, frozen: int, trained: int, **extra: Any) -> dict[str, Any]:
    per_s = tokens / train_s if train_s else 0.0
    return {"variant": variant, "train_s": round(train_s, 2), "tokens": tokens, "tokens_per_s": round(per_s, 1),
            "peak_cuda_mib": peak_mib(), "final_loss": None if loss is None else round(loss, 4),
            "mfu_percent": mfu(per_s, frozen, trained), "trainable_parameters": trained, **extra}


def parameter_split(model: torch.nn.Module) -> tuple[int, int]:
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return sum(p.numel() for p in model.parameters()) - trained, trained


# --- lmtune ----------------------------------------------------------------------------------


def lmtune_config(task: str, model: Path, data: Path, out: Path, sizes: Sizes, batch: int, method: dict[str, Any],
                  lr: float, **train: Any) -> dict[str, Any]:
    data_section: dict[str, Any] = {"train": str(data), "validation_split": 0.0}
    if task == "causal_lm":
        data_section["format"] = "alpaca"
    else:
        data_section["validation_split"] = 0.1
    return {
        "task": task,
        "model": {"name_or_path": str(model), "max_length": sizes.max_length},
        "data": data_section,
        "method": method,
        "train": {"epochs": 1, "batch_size": batch, "learning_rate": lr, "warmup_steps": 0, "weight_decay": 0.0,
                  "max_grad_norm": 1.0, "seed": 0, "precision": sizes.precision, "log_every_n_steps": 1,
                  "save_every_n_steps": 1_000_000, "keep_last_checkpoints": 0, **train},
        "output": {"dir": str(out), "save_final": False, "report": False},
    }


def run_lmtune(variant: str, config: dict[str, Any]) -> dict[str, Any]:
    import lmtune

    fresh_memory()
    result = lmtune.train(config, progress=False)
    m = result.metrics
    trained = int(m["trainable_parameters"])
    losses = [r["loss"] for r in result.history if r.get("type") == "train"]
    return row(variant, float(m["train_runtime_s"]), int(m["train_tokens"]), losses[-1] if losses else None,
               int(m["total_parameters"]) - trained, trained, steps=m["steps"])


def run_lmtune_launched(variant: str, config: dict[str, Any], accelerate_config: str, work: Path) -> dict[str, Any]:
    """`lmtune train` as `accelerate launch --config_file examples/accelerate/NAME --num_processes 1` runs it."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples/accelerate" / accelerate_config),
               "--num_processes", "1", "-m", "lmtune.cli", "train", str(path), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed: {done.stderr[-2000:]}")
    m = json.loads((Path(config["output"]["dir"]) / "metrics.json").read_text())
    trained = int(m["trainable_parameters"])
    losses = train_losses(Path(config["output"]["dir"]))
    return {**row(variant, float(m["train_runtime_s"]), int(m["train_tokens"]), losses[-1] if losses else None,
                  int(m["total_parameters"]) - trained, trained, steps=m["steps"]), "peak_cuda_mib": m.get("peak_cuda_mib")}


def encoded_rows(config: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """lmtune's own token rows for a config (train split) and its tokenizer: what the other trainers are fed."""
    from transformers import AutoConfig

    from lmtune.config import build_config
    from lmtune.models.loading import effective_max_length, load_tokenizer
    from lmtune.tasks import build_task

    cfg = build_config(config)
    task = build_task(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    if cfg.task == "causal_lm":
        task.use_tokenizer(tokenizer)  # type: ignore[attr-defined]
    else:
        task.load_model(tokenizer)  # the label space and the collator
    splits = task.encode(tokenizer, effective_max_length(cfg.model, tokenizer, AutoConfig.from_pretrained(cfg.model.name_or_path)))
    return [splits.train[i] for i in range(len(splits.train))], tokenizer


# --- the Hugging Face Trainer and TRL --------------------------------------------------------


def trainer_arguments(out: Path, sizes: Sizes, batch: int, lr: float, **extra: Any) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=batch, learning_rate=lr,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0,
        bf16=sizes.precision == "bf16", fp16=False, optim="adamw_torch_fused", eval_strategy="no", save_strategy="no",
        report_to="none", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, **extra,  # the collator picks the columns (the default drops `target`)
    )


def counting(trainer_class: type) -> type:
    """The trainer class, counting the non-pad tokens each step reads."""

    class Counting(trainer_class):  # type: ignore[misc, valid-type]
        tokens = 0

        def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
            self.tokens += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    return Counting


def pad_collator(pad_id: int, per_token: bool) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Pad lmtune's rows for the Trainer: `target` is a label id per row, or (`per_token`) a label per token."""

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        batch = {
            "input_ids": torch.tensor([list(it["input_ids"]) + [pad_id] * (width - len(it["input_ids"])) for it in items]),
            "attention_mask": torch.tensor([[1] * len(it["input_ids"]) + [0] * (width - len(it["input_ids"])) for it in items]),
        }
        if per_token:
            batch["labels"] = torch.tensor([list(it["target"]) + [IGNORE] * (width - len(it["target"])) for it in items])
        else:
            batch["labels"] = torch.tensor([int(it["target"]) for it in items])
        return batch

    return collate


def finish_trainer(variant: str, trainer: Any) -> dict[str, Any]:
    fresh_memory()
    out = trainer.train()
    losses = [float(r["loss"]) for r in trainer.state.log_history if "loss" in r]
    frozen, trained = parameter_split(trainer.model)
    return row(variant, float(out.metrics["train_runtime"]), trainer.tokens, losses[-1] if losses else None, frozen, trained,
               steps=int(out.global_step))


def run_hf_classification(model: Path, config: dict[str, Any], out: Path, sizes: Sizes) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, Trainer, set_seed

    rows, tokenizer = encoded_rows(config)
    set_seed(0)
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2, dtype=torch.float32)
    trainer = counting(Trainer)(model=net, args=trainer_arguments(out, sizes, sizes.cls_batch, 5e-5), train_dataset=rows,
                                data_collator=pad_collator(tokenizer.pad_token_id, per_token=False))
    return finish_trainer("hf_trainer", trainer)


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def run_hf_sft(model: Path, config: dict[str, Any], out: Path, sizes: Sizes) -> dict[str, Any]:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, set_seed

    rows, tokenizer = encoded_rows(config)
    set_seed(0)
    net = get_peft_model(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), lora_config())
    trainer = counting(Trainer)(model=net, args=trainer_arguments(out, sizes, sizes.sft_batch, 2e-4), train_dataset=rows,
                                data_collator=pad_collator(tokenizer.pad_token_id, per_token=True))
    return finish_trainer("hf_trainer", trainer)


def run_trl_sft(model: Path, data: Path, out: Path, sizes: Sizes) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [{"prompt": f"### Instruction:\n{r['instruction']}\n\n### Response:\n", "completion": r["output"] + tokenizer.eos_token}
            for r in json.loads(data.read_text())]
    set_seed(0)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    base = trainer_arguments(out, sizes, sizes.sft_batch, 2e-4).to_dict()
    keep = {k: v for k, v in base.items() if k in SFTConfig.__dataclass_fields__ and not k.startswith("_")}
    args = SFTConfig(**{**keep, "output_dir": str(out), "max_length": sizes.max_length, "packing": False,
                        "gradient_checkpointing": False})
    trainer = counting(SFTTrainer)(model=net, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                   peft_config=lora_config())
    return finish_trainer("trl_sft", trainer)


# --- resume after a kill ---------------------------------------------------------------------


def train_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "train"]


def run_resume(config: dict[str, Any], work: Path, sizes: Sizes) -> dict[str, Any]:
    """`lmtune train` killed after its first checkpoint, then the same command: its losses against an unkilled run."""
    import yaml

    every = max(sizes.resume_steps // 3, 1)
    train = {"epochs": 100, "max_steps": sizes.resume_steps, "save_every_n_steps": every, "keep_last_checkpoints": 5}
    runs = {}
    work.mkdir(parents=True, exist_ok=True)
    for name in ("whole", "killed"):
        cfg = {**config, "train": {**config["train"], **train}, "output": {**config["output"], "dir": str(work / name)},
               "resume": "auto"}
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        runs[name] = path
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "lmtune.cli", "train"]
    subprocess.run([*command, str(runs["whole"]), "--quiet"], check=True, env=env, capture_output=True)
    manifest = work / "killed" / "checkpoints" / f"step-{every}" / "manifest.json"
    proc = subprocess.Popen([*command, str(runs["killed"]), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = None
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = json.loads((work / "killed" / "status.json").read_text()).get("step") if (work / "killed" / "status.json").exists() else None
    done = subprocess.run([*command, str(runs["killed"]), "--quiet"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the resumed run failed: {done.stderr[-2000:]}")
    whole, resumed = train_losses(work / "whole"), train_losses(work / "killed")
    diffs = [abs(a - b) for a, b in zip(whole, resumed, strict=False)]
    start = json.loads((work / "killed" / "status.json").read_text())["start_step"]
    return {"variant": "lmtune_resume", "killed": killed_at is not None or proc.returncode == -signal.SIGKILL,
            "resumed_from_step": start, "steps": len(resumed), "identical_losses": whole == resumed,
            "max_loss_difference": max(diffs) if diffs else None, "losses_whole": whole, "losses_resumed": resumed}


# --- the check -------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import accelerate
    import peft
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                            "peft": peft.__version__, "accelerate": accelerate.__version__, "cuda": cuda()}
    for name in ("trl", "bitsandbytes", "liger_kernel", "flash_attn", "deepspeed"):
        info[name] = importlib.util.find_spec(name) is not None
    if cuda():
        info.update(device=torch.cuda.get_device_name(), cuda_version=torch.version.cuda, bf16_peak_flops=bf16_peak(),
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    else:
        info["device"] = f"cpu ({os.cpu_count()} cores)"
    return info


def attempt(rows: list[dict[str, Any]], variant: str, run: Callable[[], dict[str, Any]], skip: str | None = None) -> None:
    """Run one variant into `rows`; a skipped or failed variant is a row that says why."""
    if skip:
        rows.append({"variant": variant, "skipped": skip})
        print(f"  {variant}: skipped ({skip})", flush=True)
        return
    started = time.monotonic()
    try:
        rows.append(run())
        print(f"  {variant}: {rows[-1].get('tokens_per_s', '')} tokens/s ({time.monotonic() - started:.0f} s)", flush=True)
    except Exception as err:  # noqa: BLE001 - one failing variant must not end the check
        rows.append({"variant": variant, "error": f"{type(err).__name__}: {err}"[:2000]})
        traceback.print_exc()


def table(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"{env['device']}; torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}, "
             f"accelerate {env['accelerate']}; {results['mode']}", "",
             "| section | variant | tokens/s | train s | peak CUDA MiB | MFU % | last loss | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for section in ("classification", "sft"):
        for r in results[section]:
            note = r.get("skipped") or r.get("error") or ""
            lines.append(f"| {section} | {r['variant']} | {r.get('tokens_per_s', '')} | {r.get('train_s', '')} | "
                         f"{r.get('peak_cuda_mib') or ''} | {r.get('mfu_percent') or ''} | {r.get('final_loss', '')} | {note[:120]} |")
    resume = results["resume"]
    lines += ["", f"resume after SIGKILL: {json.dumps({k: v for k, v in resume.items() if not k.startswith('losses')})}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU in fp32: the same steps, in seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_check", help="folder for gpu_check.json and .md")
    args = parser.parse_args(argv)
    if not args.dry_run and not cuda():
        print("no CUDA GPU here: run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    sizes = DRY if args.dry_run else GPU
    out: Path = args.out
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)  # each check starts from nothing: no run folder of an earlier one
    work.mkdir(parents=True)
    started = time.monotonic()
    results: dict[str, Any] = {"mode": "dry run (CPU, fp32, tiny models)" if args.dry_run else "GPU, bf16",
                               "environment": environment(), "classification": [], "sft": []}
    print(json.dumps(results["environment"]), flush=True)
    models = build_models(work / "models", sizes)
    data = write_data(work / "data", sizes)

    print("classification (full fine-tuning)", flush=True)
    cls = lmtune_config("classification", models["encoder"], data["classification"], work / "cls-lmtune", sizes,
                        sizes.cls_batch, {"name": "full"}, 5e-5)
    attempt(results["classification"], "lmtune", lambda: run_lmtune("lmtune", cls))
    attempt(results["classification"], "hf_trainer", lambda: run_hf_classification(models["encoder"], cls, work / "cls-hf", sizes))

    print("LoRA SFT", flush=True)
    lora = {"name": "lora", "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.0}

    def sft(name: str, model: dict[str, Any] | None = None, **train: Any) -> dict[str, Any]:
        cfg = lmtune_config("causal_lm", models["decoder"], data["sft"], work / f"sft-{name}", sizes, sizes.sft_batch, lora, 2e-4, **train)
        cfg["model"].update(model or {})
        return cfg

    rows = results["sft"]
    attempt(rows, "lmtune", lambda: run_lmtune("lmtune", sft("lmtune")))
    attempt(rows, "hf_trainer", lambda: run_hf_sft(models["decoder"], sft("lmtune"), work / "sft-hf", sizes))
    attempt(rows, "trl_sft", lambda: run_trl_sft(models["decoder"], data["sft"], work / "sft-trl", sizes),
            None if results["environment"]["trl"] else "trl is not installed")
    attempt(rows, "lmtune_gradient_checkpointing",
            lambda: run_lmtune("lmtune_gradient_checkpointing", sft("gc", gradient_checkpointing=True)))
    liger_skip = None if cuda() and results["environment"]["liger_kernel"] else "needs CUDA and liger-kernel"
    attempt(rows, "lmtune_liger", lambda: run_lmtune("lmtune_liger", sft("liger", liger_kernel=True)), liger_skip)
    attempt(rows, "lmtune_qlora", lambda: run_lmtune("lmtune_qlora", sft("qlora", {"quantize": "4bit"})),
            None if results["environment"]["bitsandbytes"] else "bitsandbytes is not installed")

    # FSDP2 through accelerate launch, one process: with its shards in CPU memory on a GPU (on the CPU, without offload)
    fsdp = "fsdp2.yaml" if args.dry_run else "fsdp2-offload.yaml"
    fsdp_variant = "lmtune_" + fsdp.removesuffix(".yaml").replace("-", "_")
    attempt(rows, fsdp_variant, lambda: run_lmtune_launched(fsdp_variant, sft("fsdp"), fsdp, work / "fsdp"))
    attempt(rows, "lmtune_deepspeed_zero3",
            lambda: run_lmtune_launched("lmtune_deepspeed_zero3", sft("zero3"), "deepspeed-zero3.yaml", work / "zero3"),
            None if results["environment"]["deepspeed"] else "deepspeed is not installed")

    print("resume after SIGKILL", flush=True)
    try:
        results["resume"] = run_resume(sft("resume"), work / "resume", sizes)
    except Exception as err:  # noqa: BLE001
        results["resume"] = {"variant": "lmtune_resume", "error": f"{type(err).__name__}: {err}"[:2000]}
        traceback.print_exc()
    results["seconds"] = round(time.monotonic() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu_check.md").write_text(table(results))
    print(table(results))
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
