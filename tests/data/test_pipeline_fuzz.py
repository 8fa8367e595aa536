"""Property: whatever rows a data file holds, loading it for training gives examples or a DataError.

Where test_readers_fuzz.py throws junk bytes at the parsers, this feeds well-formed files of
every format (Parquet included) whose *cells* are junk: empty, null or whitespace texts, NUL
bytes, huge fields, labels of the wrong type (lists, objects, booleans, floats, NaN), labels
in validation never seen in training, missing columns.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmtune.data.classification import ClassificationData, ClassificationSection, load_classification_data
from lmtune.errors import DataError

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

texts = st.one_of(
    st.sampled_from(["good film", "bad film", "", "   ", "\x00", "a\x00b", "x" * 20_000, "\ufeff", "🙂", "\n"]),
    st.text(max_size=12),
    st.none(),
    st.integers(),
)
labels = st.one_of(
    st.sampled_from(["pos", "neg", "", " ", "pos,neg", "1", "0", "2.5"]),
    st.integers(-2, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=3),
    st.dictionaries(st.sampled_from(["k"]), st.integers(), max_size=1),
)
junk_row = st.fixed_dictionaries({"text": texts, "label": labels}, optional={"extra": st.integers()})
valid_row = st.fixed_dictionaries({
    "text": st.one_of(st.sampled_from(["good film", "bad film", "é 🙂"]), st.text(min_size=1, max_size=12).filter(lambda t: t.strip() and "\x00" not in t)),
    "label": st.sampled_from(["pos", "neg"]),
})
# Mostly valid rows with a few junk ones mixed in: both outcomes (examples, DataError) occur often.
rows = st.tuples(st.lists(valid_row, min_size=2, max_size=10), st.lists(junk_row, max_size=2), st.randoms()).map(
    lambda t: t[2].sample(t[0] + t[1], len(t[0]) + len(t[1]))
)
maybe_missing = st.sampled_from([None, "text", "label"])  # a column left out of every row


def _cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def write(path, records):
    ext = path.suffix
    if ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif ext in (".csv", ".tsv"):
        columns = sorted({k for r in records for k in r}) or ["text", "label"]
        if ext == ".csv":
            with path.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                for r in records:
                    writer.writerow([_cell(r.get(c)) for c in columns])
        else:  # GLUE-style TSV: no quoting, so tabs and line breaks inside cells become spaces
            def clean(v):
                return _cell(v).replace("\t", " ").replace("\n", " ").replace("\r", " ")

            lines = ["\t".join(columns)] + ["\t".join(clean(r.get(c)) for c in columns) for r in records]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = sorted({k for r in records for k in r}) or ["text", "label"]
        # Parquet columns have one type: store each as strings, or JSON for nested values.
        table = pa.table({c: [None if r.get(c) is None else _cell(r.get(c)) for r in records] for c in columns})
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
@FUZZ
@given(train=rows, validation=rows, missing=maybe_missing, label_type=st.sampled_from(["auto", "single", "multi", "regression"]))
def test_any_rows_give_examples_or_a_data_error(tmp_path, ext, train, validation, missing, label_type):
    if missing:
        train = [{k: v for k, v in r.items() if k != missing} for r in train]
    files = {name: write(tmp_path / f"{name}{ext}", recs) for name, recs in (("train", train), ("validation", validation))}
    cfg = ClassificationSection(train=str(files["train"]), validation=str(files["validation"]), label_type=label_type)
    try:
        data = load_classification_data(cfg, seed=0)
    except DataError as err:
        assert any(str(f) in str(err) for f in files.values()) or "label" in str(err), str(err)
        return
    assert isinstance(data, ClassificationData)
    for split in (data.train, data.validation):
        assert split.texts and all(isinstance(t, str) and t.strip() for t in split.texts)
        assert len(split.labels) == len(split.texts)
    if data.labels.label_type == "regression":
        assert all(math.isfinite(float(v)) for v in data.train.labels)
