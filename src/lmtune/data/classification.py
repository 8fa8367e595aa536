"""Classification data: texts and labels from a Table, label ids, splits, tokenization."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from lmtune.config import DataConfig
from lmtune.data.readers import Table, read_table
from lmtune.errors import DataError

log = logging.getLogger("lmtune")

LabelType = Literal["single", "multi", "regression"]


@dataclass
class Examples:
    """Validated texts and raw label values of one split."""

    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]  # a label value, a list of label values, or a float
    places: list[str]


@dataclass
class LabelSpace:
    """How raw label values map to model outputs; saved with the model."""

    label_type: LabelType
    names: list[str]  # output index -> label name ([] for regression -> one output)

    def __post_init__(self) -> None:
        self._index = {name: i for i, name in enumerate(self.names)}

    @property
    def num_outputs(self) -> int:
        return len(self.names) if self.label_type != "regression" else 1

    def encode(self, value: Any) -> Any:
        if self.label_type == "regression":
            return float(value)
        index = self._index
        if self.label_type == "multi":
            hot = [0.0] * len(self.names)
            for v in value:
                hot[index[str(v)]] = 1.0
            return hot
        return index[str(value)]


def _texts(table: Table, column: str, role: str) -> list[str]:
    values = table.column(column, role)
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        wrong_type = [i for i in bad if values[i] is not None and not isinstance(values[i], str)]
        where = ", ".join(table.where(i) for i in bad[:5])
        kind = "empty or null"
        if wrong_type:
            kind = f"empty, null or non-text (e.g. {type(values[wrong_type[0]]).__name__} {values[wrong_type[0]]!r})"
        raise DataError(
            f"{table.source}: column {column!r} has {len(bad)} {kind} value(s), first at {where}; "
            f"drop or fill those rows"
        )
    return values


def _normalize_label(value: Any, label_type: str, separator: str) -> Any:
    """Parse CSV cells into ints, floats or label lists, as the label type asks."""
    if label_type == "multi":
        return [p.strip() for p in value.split(separator) if p.strip()] if isinstance(value, str) else value
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return float(s) if label_type == "regression" else int(s)
        try:
            return float(s) if math.isfinite(float(s)) else s
        except ValueError:
            return s
    if label_type == "regression" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if label_type != "regression" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def read_texts(path: str, text_column: str, pair_column: str | None) -> tuple[list[str], list[str] | None]:
    """Texts (and text pairs) of a file without labels, e.g. for prediction."""
    table = read_table(path)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    texts = _texts(table, text_column, "the model's text column")
    pairs = _texts(table, pair_column, "the model's text pair column") if pair_column else None
    return texts, pairs


def read_examples(path: str, cfg: DataConfig, label_type: str, limit: int | None) -> Examples:
    table = read_table(path)
    if limit is not None:
        table = table.head(limit)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    texts = _texts(table, cfg.text_column, "data.text_column")
    pairs = _texts(table, cfg.text_pair_column, "data.text_pair_column") if cfg.text_pair_column else None
    raw = table.column(cfg.label_column, "data.label_column")
    labels = [_normalize_label(v, label_type, cfg.label_separator) for v in raw]
    missing = [i for i, v in enumerate(labels) if v is None or v == ""]  # [] is a valid multi-label row
    if missing:
        where = ", ".join(table.where(i) for i in missing[:5])
        raise DataError(
            f"{table.source}: column {cfg.label_column!r} has {len(missing)} missing label(s), first at {where}"
        )
    for i, v in enumerate(labels):
        ok = isinstance(v, (str, int, float, list)) and not isinstance(v, bool)
        if isinstance(v, float) and not math.isfinite(v):
            ok = False
        if isinstance(v, list):
            ok = all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)
        if not ok:
            raise DataError(f"{table.source}: {table.where(i)}: label {v!r} in column {cfg.label_column!r} is not a usable label")
    places = [table.where(i) for i in range(len(table.rows))]
    return Examples(table.source, texts, pairs, labels, places)


def infer_label_type(examples: Examples, requested: str) -> LabelType:
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if any(isinstance(v, list) for v in examples.labels):
        return "multi"
    if all(isinstance(v, (int, float)) for v in examples.labels) and any(isinstance(v, float) for v in examples.labels):
        return "regression"
    return "single"


def check_label_values(examples: Examples, label_type: LabelType) -> None:
    for value, place in zip(examples.labels, examples.places):
        if label_type == "multi" and not isinstance(value, list):
            raise DataError(f"{examples.source}: {place}: multi-label data needs a list of labels, got {value!r}")
        if label_type == "regression" and not isinstance(value, (int, float)):
            raise DataError(f"{examples.source}: {place}: regression needs a number as label, got {value!r}")
        if label_type == "single" and isinstance(value, (list, float)):
            raise DataError(
                f"{examples.source}: {place}: label {value!r} does not fit single-label classification "
                f"(set data.label_type to multi or regression if that is meant)"
            )


def build_label_space(train: Examples, label_type: LabelType) -> LabelSpace:
    if label_type == "regression":
        return LabelSpace("regression", [])
    values = [x for v in train.labels for x in v] if label_type == "multi" else list(train.labels)
    distinct = set(values)
    if all(isinstance(v, int) for v in distinct):
        names = [str(v) for v in sorted(distinct)]
    else:
        names = sorted({str(v) for v in distinct})
        if all(re.fullmatch(r"[+-]?\d+", n) for n in names):  # e.g. multi-label cells '0,10' stay text
            names.sort(key=lambda n: (int(n), n))
    if not names:
        raise DataError(f"{train.source}: no training row carries a label")
    if label_type == "single" and len(names) < 2:
        raise DataError(f"{train.source}: every training row has the label {names[0]!r}; a classifier needs two or more")
    return LabelSpace(label_type, names)


def check_known_labels(examples: Examples, space: LabelSpace) -> None:
    if space.label_type == "regression":
        return
    known = set(space.names)
    for value, place in zip(examples.labels, examples.places):
        for v in value if isinstance(value, list) else [value]:
            if str(v) not in known:
                raise DataError(
                    f"{examples.source}: {place}: label {v!r} never occurs in the training data; "
                    f"known labels: {', '.join(space.names)}"
                )


def split_examples(examples: Examples, fraction: float, seed: int, stratify: bool) -> tuple[Examples, Examples]:
    """A seeded split, stratified by label where every class has at least two rows."""
    from sklearn.model_selection import train_test_split

    n = len(examples.texts)
    n_held = max(1, round(n * fraction))
    if n - n_held < 1:
        raise DataError(f"{examples.source}: {n} row(s) are too few to split off a validation set")
    strata = [str(v) for v in examples.labels] if stratify else None
    if strata is not None:
        counts: dict[str, int] = {}
        for s in strata:
            counts[s] = counts.get(s, 0) + 1
        if min(counts.values()) < 2 or n_held < len(counts) or n - n_held < len(counts):
            strata = None
    idx_train, idx_val = train_test_split(list(range(n)), test_size=n_held, random_state=seed, stratify=strata)

    def take(idx: list[int]) -> Examples:
        return Examples(
            examples.source,
            [examples.texts[i] for i in idx],
            [examples.pairs[i] for i in idx] if examples.pairs is not None else None,
            [examples.labels[i] for i in idx],
            [examples.places[i] for i in idx],
        )

    return take(sorted(idx_train)), take(sorted(idx_val))


@dataclass
class ClassificationData:
    train: Examples
    validation: Examples
    test: Examples | None
    labels: LabelSpace


def load_classification_data(cfg: DataConfig, seed: int) -> ClassificationData:
    """Read and validate every split before anything is trained or written."""
    label_type = cfg.label_type
    train = read_examples(cfg.train, cfg, label_type, cfg.max_train_examples)
    resolved = infer_label_type(train, label_type)
    check_label_values(train, resolved)
    space = build_label_space(train, resolved)
    if cfg.validation:
        validation = read_examples(cfg.validation, cfg, resolved, cfg.max_eval_examples)
    else:
        train, validation = split_examples(train, cfg.validation_split, seed, stratify=resolved == "single")
        log.info("no data.validation given: held out %d of the training rows (seed %d)", len(validation.texts), seed)
    check_label_values(validation, resolved)
    check_known_labels(validation, space)
    test = None
    if cfg.test:
        test = read_examples(cfg.test, cfg, resolved, cfg.max_eval_examples)
        check_label_values(test, resolved)
        check_known_labels(test, space)
    return ClassificationData(train, validation, test, space)
