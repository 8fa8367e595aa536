"""Classification data through the data cache (data/store.py): checked rows and their tokens in Arrow, reused across runs.

The rows entry (one per data files and settings) holds each split's texts and encoded targets,
the label space and the data fingerprint that resume compares; its token files (one per
tokenizer and max_length) hold the token ids and lengths. A second run with the same data,
tokenizer and settings reads neither the files nor the tokenizer's output again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.data.classification import ClassificationData, ClassificationSection, Examples, LabelSpace, load_classification_data
from lmtune.data.store import ArrowColumn, Entry, TokenStore, data_entry, key_of, tokenizer_digest, write_arrow
from lmtune.progress import bar

log = logging.getLogger("lmtune")

TOKENIZE_BATCH = 1000


@dataclass
class CachedSplit:
    """One split's checked rows, memory-mapped: `rows` has columns text (text_pair) and target."""

    rows: Any  # datasets.Dataset
    texts: ArrowColumn
    pairs: ArrowColumn | None


@dataclass
class CachedData:
    labels: LabelSpace
    splits: dict[str, CachedSplit]  # train, validation and (when given) test
    fingerprint: str  # of the checked rows: what resume compares
    entry: Entry
    redacted: dict[str, int]  # data.redact: placeholders put in the rows, by name


def load_cached_data(cfg: ClassificationSection, seed: int) -> CachedData:
    """The checked splits of `cfg`: from the cache when an entry for these files and settings is there, else read,
    checked (every DataError as before) and written to a new entry."""
    entry = data_entry("classification", cfg, seed)
    meta = entry.read_or_write("the checked rows", lambda folder: _write_rows(folder, load_classification_data(cfg, seed)))
    splits = {}
    for split in meta["splits"]:
        rows = entry.arrow(split)
        splits[split] = CachedSplit(rows, ArrowColumn(rows, "text"), ArrowColumn(rows, "text_pair") if meta["pairs"] else None)
    return CachedData(LabelSpace(meta["label_type"], meta["labels"]), splits, meta["fingerprint"], entry, meta.get("redacted", {}))


def _features(labels: LabelSpace, pairs: bool) -> Any:
    from datasets import Features, Sequence, Value

    target = {"single": Value("int64"), "multi": Sequence(Value("float32")), "regression": Value("float32")}[labels.label_type]
    return Features({"text": Value("string"), **({"text_pair": Value("string")} if pairs else {}), "target": target})


def _write_rows(folder: Path, data: ClassificationData) -> dict[str, Any]:
    """Each split's rows to SPLIT.arrow; the meta records the label space and a fingerprint of every checked row."""
    pairs = data.train.pairs is not None
    features = _features(data.labels, pairs)
    digest = hashlib.sha256(json.dumps(data.labels.names).encode())
    splits = {"train": data.train, "validation": data.validation, **({"test": data.test} if data.test is not None else {})}
    for name, examples in splits.items():
        write_arrow(folder / f"{name}.arrow", features, _rows(name, examples, data.labels, digest))
    return {"splits": list(splits), "pairs": pairs, "label_type": data.labels.label_type, "labels": data.labels.names,
            "fingerprint": digest.hexdigest()[:16],
            "counts": {name: len(e.texts) for name, e in splits.items()}, "redacted": data.redacted}


def _rows(split: str, examples: Examples, labels: LabelSpace, digest: Any) -> Iterator[dict[str, Any]]:
    pairs = examples.pairs
    for i, (text, label) in enumerate(zip(examples.texts, examples.labels)):
        pair = pairs[i] if pairs is not None else None
        digest.update(json.dumps([split, text, pair, str(label)], ensure_ascii=False).encode())
        yield {"text": text, "text_pair": pair, "target": labels.encode(label)}


def tokenize_splits(data: CachedData, tokenizer: Any, max_length: int, num_proc: int) -> dict[str, TokenStore]:
    """Each split's token ids, from the entry's token files for this tokenizer and max_length (written by `datasets.map`
    in `num_proc` processes when not there yet)."""
    from datasets import Features, Sequence, Value
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    types = "token_type_ids" in tokenizer.model_input_names
    key = key_of({"tokenizer": tokenizer_digest(tokenizer), "max_length": max_length, "rows": data.entry.key})
    token_features = {"input_ids": Sequence(Value("int32")), "length": Value("int32")}
    if types:
        token_features["token_type_ids"] = Sequence(Value("int8"))
    stores = {}
    bars = is_progress_bar_enabled()
    disable_progress_bar()  # datasets' bars would print into logs; the log lines below say what happened
    try:
        for split, cached in data.splits.items():
            rows = cached.rows
            text_columns = [c for c in ("text", "text_pair") if c in rows.column_names]
            features = Features({**{c: rows.features[c] for c in rows.column_names if c not in text_columns}, **token_features})
            name = str(data.entry.folder / f"{split}-tokens-{key}.arrow")
            started, hit = time.perf_counter(), any(data.entry.folder.glob(f"{split}-tokens-{key}*.arrow"))
            processes = num_proc if num_proc > 1 and len(rows) >= num_proc * TOKENIZE_BATCH else None
            with nullcontext() if hit else bar(total=len(rows), desc="tokenize", unit="examples") as progress:
                kwargs = {"tokenizer": tokenizer, "max_length": max_length, "types": types,
                          "progress": progress if processes is None else None}  # a bar stays in this process
                tokens = rows.map(
                    _tokenize, fn_kwargs=kwargs, batched=True, batch_size=TOKENIZE_BATCH, num_proc=processes,
                    remove_columns=text_columns, features=features, cache_file_name=name, load_from_cache_file=True,
                    new_fingerprint=f"{key}-{split}",
                )
            store = TokenStore(tokens)
            cut = store.at_limit(max_length)
            log.info("%s: %d examples %s (%.1f s)", split, len(store), "tokenized earlier, from the cache" if hit else "tokenized",
                     time.perf_counter() - started)
            if cut:
                log.info("%s: %d of %d examples reached max_length=%d and were truncated", split, cut, len(store), max_length)
            stores[split] = store
    finally:
        if bars:
            enable_progress_bar()
    return stores


def _tokenize(batch: dict[str, list[Any]], tokenizer: Any, max_length: int, types: bool, progress: Any) -> dict[str, list[Any]]:
    enc = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length, padding=False)
    if progress is not None:
        progress.update(len(enc["input_ids"]))
    out = {"input_ids": enc["input_ids"], "length": [len(ids) for ids in enc["input_ids"]]}
    if types:
        out["token_type_ids"] = enc.get("token_type_ids") or [[0] * n for n in out["length"]]
    return out
