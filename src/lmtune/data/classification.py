"""Classification data: texts and labels from a Table, label ids, splits, tokenization."""

from __future__ import annotations

import logging
import math
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from pydantic import Field

from lmtune.data.readers import Columns, Table, read_columns, read_table
from lmtune.data.redact import Redactor, add_counts, log_redacted, redactor_for
from lmtune.errors import DataError
from lmtune.schema import CachedDataConfig

log = logging.getLogger("lmtune")

LabelType = Literal["single", "multi", "regression"]


class ClassificationSection(CachedDataConfig):
    """`data` of task classification: a text (or text pair) column and a label column."""

    text_column: str = Field("text", description="Column of the text to classify.")
    text_pair_column: str | None = Field(None, description="Second text (sentence pairs, e.g. NLI).")
    label_column: str = Field("label", description="Column of the label: a class, a list of classes, or a number.")
    label_type: Literal["auto", "single", "multi", "regression"] = Field(
        "auto", description="auto: a list per row is multi-label, non-integer numbers are regression."
    )
    label_separator: str = Field(",", description="Splits a multi-label text cell such as 'a,b'.")
    num_proc: int = Field(1, ge=1, description="Processes that tokenize (datasets' map); worth it from some 100k rows.")


@dataclass
class Examples:
    """Validated texts and raw label values of one split."""

    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]  # a label value, a list of label values, or a float
    places: Sequence[str]
    raw: list[Any]  # each label as the file wrote it, for messages


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


class Places(Sequence[str]):
    """Where each row came from ("line 12"), made when asked for: a list of such texts would grow with the data."""

    def __init__(self, numbers: Sequence[int], word: str):
        self.numbers, self.word = numbers, word

    def __len__(self) -> int:
        return len(self.numbers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [f"{self.word} {n}" for n in self.numbers[i]]
        return f"{self.word} {self.numbers[i]}"


def _texts(table: Table | Columns, column: str, role: str) -> list[str]:
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
            f"drop or fill those rows, or set data.on_empty: drop to leave them out"
        )
    return values


def parse_label(value: Any) -> Any:
    """One rule for every format: a text cell that reads as a number is that number.

    So the CSV cell `1`, the JSON number 1 and the JSON string "1" are the same label; whole
    numbers written as floats (1.0) are class labels like 1. Lists are kept (multi-label).
    """
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        try:
            number = float(s)
        except ValueError:
            return s
        return number if math.isfinite(number) else s
    return value


def _class_value(value: Any) -> Any:
    """A label of a class: whole floats become ints, so 1.0 and 1 name one class."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_texts(path: str, text_column: str, pair_column: str | None) -> tuple[list[str], list[str] | None]:
    """Texts (and text pairs) of a file without labels, e.g. for prediction."""
    table = read_table(path)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    texts = _texts(table, text_column, "the model's text column")
    pairs = _texts(table, pair_column, "the model's text pair column") if pair_column else None
    return texts, pairs


def read_examples(path: str, cfg: ClassificationSection, limit: int | None, redactor: Redactor | None = None) -> Examples:
    """Texts and parsed label values of one file; `with_label_type` then fits the labels to a label type.

    `redactor` (data.redact): the texts as it leaves them."""
    table = read_columns(path, [cfg.text_column, cfg.text_pair_column, cfg.label_column], cfg.on_empty, limit)
    if not len(table):
        raise DataError(f"{table.source}: holds no data rows" + (" with every cell filled" if cfg.on_empty == "drop" else ""))
    texts = _texts(table, cfg.text_column, "data.text_column")
    pairs = _texts(table, cfg.text_pair_column, "data.text_pair_column") if cfg.text_pair_column else None
    if redactor is not None:
        texts = [redactor(t) for t in texts]
        pairs = [redactor(t) for t in pairs] if pairs is not None else None
    raw = table.column(cfg.label_column, "data.label_column")
    labels = [parse_label(v) for v in raw]
    missing = [i for i, v in enumerate(labels) if v is None or v == ""]  # [] is a valid multi-label row
    if missing:
        where = ", ".join(table.where(i) for i in missing[:5])
        raise DataError(
            f"{table.source}: column {cfg.label_column!r} has {len(missing)} missing label(s), first at {where}; "
            f"fill them, or set data.on_empty: drop to leave those rows out"
        )
    for i, v in enumerate(labels):
        ok = isinstance(v, (str, int, float, list)) and not isinstance(v, bool)
        if isinstance(v, float) and not math.isfinite(v):
            ok = False
        if isinstance(v, list):
            ok = all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)
        if not ok:
            raise DataError(f"{table.source}: {table.where(i)}: label {v!r} in column {cfg.label_column!r} is not a usable label")
    places = Places(table.places, table.place_word)
    return Examples(table.source, texts, pairs, labels, places, raw)


def infer_label_type(examples: Examples, cfg: ClassificationSection) -> tuple[LabelType, str]:
    """The label type `data.label_type` asks for, or (auto) the one the training labels show, and why.

    auto, the same for every file format: a list, or a text holding `data.label_separator`, makes
    the data multi-label; else numbers that are not all whole make it regression; else each
    distinct value is a class (whole numbers, 1.0 as much as 1, are class labels).
    """
    column, sep = f"{cfg.label_column!r} of {examples.source}", cfg.label_separator
    if cfg.label_type != "auto":
        return cfg.label_type, "set by data.label_type"
    values = examples.labels
    multi = [i for i, v in enumerate(values) if isinstance(v, list) or (isinstance(v, str) and sep in v)]
    if multi:
        first = multi[0]
        return "multi", (
            f"{len(multi)} of {len(values)} labels in column {column} are lists or hold the separator {sep!r} "
            f"(first at {examples.places[first]}: {examples.raw[first]!r}); set data.label_type: single if {sep!r} "
            f"is part of a label's name, or data.label_separator for another separator"
        )
    fractional = [i for i, v in enumerate(values) if isinstance(v, float) and not v.is_integer()]
    if fractional and all(_is_number(v) for v in values):
        first = fractional[0]
        return "regression", (
            f"the labels in column {column} are numbers, not all whole (first at {examples.places[first]}: "
            f"{examples.raw[first]!r}); set data.label_type: single to treat each value as a class"
        )
    classes = {str(_class_value(v)) for v in values}
    numbers = " (whole numbers are class labels; set data.label_type: regression to predict them as numbers)"
    return "single", (
        f"{len(classes)} distinct labels in column {column}" + (numbers if all(_is_number(v) for v in values) else "")
    )


def with_label_type(examples: Examples, label_type: LabelType, separator: str) -> Examples:
    """The examples with their labels fitted to `label_type`, or a DataError naming the first misfit.

    Values written differently that become one label (1 and "1", 01 and 1, 1.0 and 1) are
    accepted, and the log says which.
    """
    labels: list[Any] = []
    spellings: dict[str, set[str]] = {}  # label name -> how the file wrote it

    def seen(written: Any, label: Any) -> Any:
        spellings.setdefault(str(label), set()).add(repr(written.strip() if isinstance(written, str) else written))
        return label

    for value, raw, place in zip(examples.labels, examples.raw, examples.places):
        if label_type == "multi":
            parts = raw.split(separator) if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
            labels.append([seen(p, _class_value(parse_label(p))) for p in parts if not (isinstance(p, str) and not p.strip())])
        elif label_type == "regression":
            if not _is_number(value):
                raise DataError(f"{examples.source}: {place}: regression needs a number as label, got {value!r}")
            labels.append(float(value))
        elif isinstance(value, list) or (isinstance(value, float) and not value.is_integer()):
            raise DataError(
                f"{examples.source}: {place}: label {value!r} does not fit single-label classification "
                f"(set data.label_type to multi or regression if that is meant)"
            )
        else:
            labels.append(seen(raw, _class_value(value)))
    merged = {name: sorted(s) for name, s in spellings.items() if len(s) > 1}
    if merged:
        shown = "; ".join(f"{name} (written {' and '.join(s)})" for name, s in sorted(merged.items())[:5])
        log.warning("%s: %d label(s) written in more than one way, each read as one label: %s", examples.source, len(merged), shown)
    return Examples(examples.source, examples.texts, examples.pairs, labels, examples.places, examples.raw)


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
            _take_places(examples.places, idx),
            [examples.raw[i] for i in idx],
        )

    return take(sorted(idx_train)), take(sorted(idx_val))


def _take_places(places: Sequence[str], idx: list[int]) -> Sequence[str]:
    if isinstance(places, Places):
        return Places(array("q", (places.numbers[i] for i in idx)), places.word)
    return [places[i] for i in idx]


@dataclass
class ClassificationData:
    train: Examples
    validation: Examples
    test: Examples | None
    labels: LabelSpace
    redacted: dict[str, int] = field(default_factory=dict)  # data.redact: placeholders put in, by name


def load_classification_data(cfg: ClassificationSection, seed: int) -> ClassificationData:
    """Read and validate every split before anything is trained or written."""
    redactor = redactor_for(cfg)
    train = read_examples(cfg.train, cfg, cfg.max_train_examples, redactor)
    redacted = log_redacted(redactor, cfg.train)
    label_type, why = infer_label_type(train, cfg)
    log.info("label type %s: %s", label_type, why)
    train = with_label_type(train, label_type, cfg.label_separator)
    space = build_label_space(train, label_type)
    if cfg.validation:
        validation = with_label_type(read_examples(cfg.validation, cfg, cfg.max_eval_examples, redactor), label_type,
                                     cfg.label_separator)
        redacted = add_counts(redacted, log_redacted(redactor, cfg.validation))
    else:
        train, validation = split_examples(train, cfg.validation_split, seed, stratify=label_type == "single")
        log.info("no data.validation given: held out %d of the training rows (seed %d)", len(validation.texts), seed)
    check_known_labels(validation, space)
    test = None
    if cfg.test:
        test = with_label_type(read_examples(cfg.test, cfg, cfg.max_eval_examples, redactor), label_type, cfg.label_separator)
        redacted = add_counts(redacted, log_redacted(redactor, cfg.test))
        check_known_labels(test, space)
    return ClassificationData(train, validation, test, space, redacted)
