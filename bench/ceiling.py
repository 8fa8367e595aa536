"""Where the time of a MiniLM training step goes on this machine, and how fast it could be.

Measures, for the model `bench/classification.py` trains (all-MiniLM-L6-v2 on SST-2, batch 32):
  - FLOPs per non-pad token of one training step (forward and backward), counted by
    `torch.utils.flop_counter.FlopCounterMode`, for the plain Hugging Face model and for lmtune's
    (whose last block runs only for the first token);
  - the fp32 matmul rate at the step's own shapes (and at 4096^3, for the machine's peak);
  - a torch.profiler breakdown of lmtune's step: the share of matmuls and the largest other ops.

Together they bound the tokens/s any training loop can reach with the same math.

Run from the project root:  .venv/bin/python bench/ceiling.py [--rows 1600]
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load reports between the numbers

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classification import TRAIN_TSV, model_path, read_sst2
from lmtune.models.first_token import trim_last_block

BATCH = 32
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def batches(rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Length-grouped batches of SST-2 in a shuffled order, as lmtune's sampler makes them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path())
    ids = tokenizer(read_sst2(TRAIN_TSV, rows)[0], truncation=True, max_length=128)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    groups = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    random.Random(0).shuffle(groups)
    out = []
    for group in groups:
        width = max(len(ids[i]) for i in group)
        x = torch.full((len(group), width), tokenizer.pad_token_id)  # (B, T)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            x[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        out.append((x, mask))
    return out


def model(trimmed: bool) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=2)
    if trimmed:
        trim_last_block(m)
    return m.train()


def flops_per_token(m: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    flops = tokens = 0
    for x, mask in data[::8]:
        with FlopCounterMode(display=False) as counter:
            m(input_ids=x, attention_mask=mask, labels=torch.zeros(len(x), dtype=torch.long)).loss.backward()
        flops += counter.get_total_flops()
        tokens += int(mask.sum())
    m.zero_grad(set_to_none=True)
    return flops / tokens


def matmul_rate(m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps = max(3, int(2e10 / (2 * m * k * n)))
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


def profile_steps(m: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.AdamW(m.parameters(), lr=5e-5, fused=True)

    def step(x: torch.Tensor, mask: torch.Tensor) -> None:
        m(input_ids=x, attention_mask=mask, labels=torch.zeros(len(x), dtype=torch.long)).loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for x, mask in data[:5]:  # warm-up
        step(x, mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, mask in data[5:]:
            step(x, mask)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    share = sum(e.self_cpu_time_total for e in ops if e.key in MATMULS) / total
    print(f"profile of {len(data) - 5} lmtune steps: matmuls {share:.0%} of the time; the largest other ops:")
    for e in [e for e in ops if e.key not in MATMULS][:6]:
        print(f"  {e.key:<28} {e.self_cpu_time_total / total:6.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1600, help="first N SST-2 training rows")
    args = p.parse_args()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    data = batches(args.rows)
    tokens = [int(mask.sum()) for _, mask in data]
    print(f"{len(data)} batches of {BATCH}, {sum(tokens) / len(data) / BATCH:.1f} non-pad tokens per example on average")
    for name, trimmed in (("Hugging Face model", False), ("lmtune's model", True)):
        print(f"{name}: {flops_per_token(model(trimmed), data) / 1e6:.1f} MFLOP per non-pad token (forward + backward)")
    rows = BATCH * round(sum(tokens) / len(data) / BATCH)
    for m, k, n in ((rows, 384, 384), (rows, 384, 1536), (rows, 1536, 384), (4096, 4096, 4096)):
        print(f"fp32 matmul {m}x{k} @ {k}x{n}: {matmul_rate(m, k, n):.0f} GFLOP/s")
    profile_steps(model(True), data)


if __name__ == "__main__":
    main()
