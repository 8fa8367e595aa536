"""The Data page: what a data file holds, read by the same readers (and so with the same errors) as training."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lmtune.data.readers import read_table
from lmtune.schema import ModelConfig

SHOWN_ROWS = 10
IMBALANCE_RATIO = 3.0  # most / least frequent label above this: suggest class weights
HISTOGRAM_BINS = 20


def summarize(path: Path, shown_as: str, header: bool = True, text_column: str | None = None,
              label_column: str | None = None, model: str | None = None, max_length: int = 256) -> dict[str, Any]:
    table = read_table(str(path), header=header)
    info: dict[str, Any] = {
        "path": shown_as, "columns": table.columns, "rows": len(table.rows),
        "head": [{c: _cell(row.get(c)) for c in table.columns} for row in table.rows[:SHOWN_ROWS]],
    }
    label = label_column or ("label" if "label" in table.columns else None)
    if label is not None:
        info["labels"] = _labels(table.column(label, "data.label_column"), label)
    text = text_column or next((c for c in ("text", "sentence", "instruction", "question", "source") if c in table.columns), None)
    if text is not None and model:
        info["lengths"] = _lengths([str(v or "") for v in table.column(text, "data.text_column")], text, model, max_length)
    return info


def _cell(value: Any) -> Any:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, list | dict) else value
    return text[:300] + "…" if isinstance(text, str) and len(text) > 300 else text


def _labels(values: list[Any], column: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for v in values:
        for one in v if isinstance(v, list) else [v]:
            counts[str(one)] += 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    result: dict[str, Any] = {"column": column, "counts": dict(ordered), "warning": None}
    if len(counts) > 1 and len(counts) <= 100:
        most, least = ordered[0], ordered[-1]
        if most[1] / least[1] > IMBALANCE_RATIO:
            result["warning"] = (f"the labels are imbalanced: {most[0]!r} has {most[1]} rows, {least[0]!r} only {least[1]} "
                                 f"({most[1] / least[1]:.1f}x); consider train.class_weights: balanced")
    return result


@lru_cache(maxsize=4)
def _tokenizer(model: str) -> Any:
    from lmtune.models.loading import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path=model))


def _lengths(texts: list[str], column: str, model: str, max_length: int) -> dict[str, Any]:
    tokenizer = _tokenizer(model)
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]])
    low, high = (int(lengths.min()), int(lengths.max())) if len(lengths) else (0, 0)
    # one bar per length when there are few, else HISTOGRAM_BINS bars
    bins = np.arange(low, high + 2) if high - low < 2 * HISTOGRAM_BINS else HISTOGRAM_BINS
    counts, edges = np.histogram(lengths, bins=bins)
    return {"column": column, "model": model, "max_length": max_length, "counts": counts.tolist(),
            "edges": [round(float(e), 1) for e in edges], "truncated": int((lengths > max_length).sum()),
            "mean": round(float(lengths.mean()), 1) if len(lengths) else 0, "max": int(lengths.max()) if len(lengths) else 0}
