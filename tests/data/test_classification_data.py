"""load_classification_data (labels, validation, splits) and the batching helpers."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import pytest
import torch

from lmtune.data.batching import EncodedDataset, LengthGroupedBatchSampler, PadCollator
from lmtune.data.classification import ClassificationSection, LabelSpace, load_classification_data
from lmtune.errors import DataError


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def write_json(path, records):
    path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def load(seed=0, **kwargs):
    return load_classification_data(ClassificationSection(**kwargs), seed)


def data_error(seed=0, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load(seed, **kwargs)
    return str(info.value)


# --- labels ---------------------------------------------------------------------------------------


def test_string_labels_are_sorted_names(tmp_path):
    rows = [(f"t{i}", lab) for i, lab in enumerate(["neutral", "positive", "negative"] * 4)]
    train = write_csv(tmp_path / "train.csv", rows)
    val = write_csv(tmp_path / "val.csv", [("v1", "positive"), ("v2", "negative")])
    data = load(train=train, validation=val)
    assert data.labels == LabelSpace("single", ["negative", "neutral", "positive"])
    assert data.labels.num_outputs == 3
    assert data.train.texts == [r[0] for r in rows]
    assert data.train.labels == [r[1] for r in rows]
    assert data.validation.labels == ["positive", "negative"]
    assert [data.labels.encode(v) for v in data.validation.labels] == [2, 0]
    assert data.train.places[:2] == ["line 2", "line 3"]
    assert data.test is None


def test_integer_labels_are_sorted_numerically_from_csv(tmp_path):
    rows = [(f"t{i}", str(i % 11)) for i in range(33)]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation=write_csv(tmp_path / "v.csv", [("v", "10")]))
    assert data.labels.label_type == "single"
    assert data.labels.names == [str(i) for i in range(11)]
    assert data.labels.encode(10) == 10 and data.labels.encode("2") == 2
    assert data.validation.labels == [10]


def test_integer_labels_are_sorted_numerically_from_json(tmp_path):
    records = [{"text": f"t{i}", "label": (i * 7) % 11} for i in range(22)]
    data = load(train=write_json(tmp_path / "train.json", records), validation=write_json(tmp_path / "v.json", records[:3]))
    assert data.labels.names == [str(i) for i in range(11)]


def test_negative_integer_labels_sort_numerically(tmp_path):
    rows = [(f"t{i}", lab) for i, lab in enumerate(["-1", "0", "1", "-10", "2"] * 2)]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation=write_csv(tmp_path / "v.csv", [("v", "-1")]))
    assert data.labels.names == ["-10", "-1", "0", "1", "2"]


def test_multi_label_from_json_lists(tmp_path):
    records = [
        {"text": "a", "label": ["sports", "politics"]},
        {"text": "b", "label": ["arts"]},
        {"text": "c", "label": ["politics"]},
    ]
    data = load(
        train=write_json(tmp_path / "train.json", records),
        validation=write_jsonl(tmp_path / "val.jsonl", [{"text": "v", "label": ["arts", "sports"]}]),
    )
    assert data.labels == LabelSpace("multi", ["arts", "politics", "sports"])
    assert data.train.labels[0] == ["sports", "politics"]
    assert data.labels.encode(data.validation.labels[0]) == [1.0, 0.0, 1.0]


def test_multi_label_from_csv_cells(tmp_path):
    rows = [("a", "sports, politics"), ("b", "arts"), ("c", "politics,arts"), ("d", " sports ")]
    data = load(
        train=write_csv(tmp_path / "train.csv", rows),
        validation=write_csv(tmp_path / "val.csv", [("v", "arts,sports")]),
        label_type="multi",
    )
    assert data.labels == LabelSpace("multi", ["arts", "politics", "sports"])
    assert data.train.labels == [["sports", "politics"], ["arts"], ["politics", "arts"], ["sports"]]
    assert data.validation.labels == [["arts", "sports"]]
    assert data.labels.encode(data.train.labels[0]) == [0.0, 1.0, 1.0]


def test_multi_label_with_custom_separator(tmp_path):
    rows = [("a", "x|y"), ("b", "y")]
    data = load(
        train=write_csv(tmp_path / "train.csv", rows),
        validation=write_csv(tmp_path / "val.csv", [("v", "x")]),
        label_type="multi",
        label_separator="|",
    )
    assert data.labels.names == ["x", "y"]
    assert data.train.labels == [["x", "y"], ["y"]]


@pytest.mark.parametrize("source", ["csv", "json"])
def test_multi_label_integer_labels_sort_numerically(tmp_path, source):
    cells = [[i % 11, (i + 3) % 11] for i in range(11)]
    if source == "csv":
        train = write_csv(tmp_path / "train.csv", [(f"t{i}", ",".join(map(str, c))) for i, c in enumerate(cells)])
        val = write_csv(tmp_path / "val.csv", [("v", "10,2")])
    else:
        train = write_json(tmp_path / "train.json", [{"text": f"t{i}", "label": c} for i, c in enumerate(cells)])
        val = write_json(tmp_path / "val.json", [{"text": "v", "label": [10, 2]}])
    data = load(train=train, validation=val, label_type="multi")
    assert data.labels.names == [str(i) for i in range(11)]
    hot = data.labels.encode(data.validation.labels[0])
    assert [i for i, x in enumerate(hot) if x] == [2, 10]


def test_regression_is_detected_from_float_labels(tmp_path):
    rows = [("a", "0.5"), ("b", "1"), ("c", "2.25"), ("d", "-3.0e-1")]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation=write_csv(tmp_path / "v.csv", [("v", "4")]))
    assert data.labels == LabelSpace("regression", [])
    assert data.labels.num_outputs == 1
    assert data.train.labels == [0.5, 1, 2.25, -0.3]
    assert data.labels.encode(data.validation.labels[0]) == 4.0
    assert isinstance(data.validation.labels[0], float)


def test_regression_from_json_numbers(tmp_path):
    records = [{"text": f"t{i}", "label": i / 4} for i in range(10)]
    data = load(train=write_json(tmp_path / "train.json", records), validation=write_json(tmp_path / "v.json", records[:2]))
    assert data.labels.label_type == "regression"


def test_integer_valued_floats_in_json_are_single_label(tmp_path):
    records = [{"text": f"t{i}", "label": float(i % 2)} for i in range(6)]
    data = load(train=write_json(tmp_path / "train.json", records), validation=write_json(tmp_path / "v.json", records[:2]))
    assert data.labels == LabelSpace("single", ["0", "1"])


def test_multi_label_cells_in_csv_are_detected(tmp_path, caplog):
    rows = [("a", "sports,politics"), ("b", "arts"), ("c", "politics"), ("d", "arts, sports")]
    with caplog.at_level("INFO", logger="lmtune"):
        data = load(train=write_csv(tmp_path / "train.csv", rows), validation=write_csv(tmp_path / "v.csv", [("v", "arts")]))
    assert data.labels == LabelSpace("multi", ["arts", "politics", "sports"])
    assert data.train.labels == [["sports", "politics"], ["arts"], ["politics"], ["arts", "sports"]]
    assert data.validation.labels == [["arts"]]
    said = caplog.text
    assert "label type multi" in said and "'label'" in said and "','" in said and "line 2" in said
    assert "data.label_type: single" in said


def test_a_separator_in_a_label_is_one_class_when_asked(tmp_path):
    rows = [("a", "New York, NY"), ("b", "Paris"), ("c", "Paris")]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation=write_csv(tmp_path / "v.csv", rows[:1]), label_type="single")
    assert data.labels == LabelSpace("single", ["New York, NY", "Paris"])


def _float_labels(path, fmt):
    records = [{"text": f"t{i}", "label": float(i % 3)} for i in range(9)]
    if fmt == "csv":
        return write_csv(path.with_suffix(".csv"), [(r["text"], f"{r['label']:.1f}") for r in records])
    if fmt == "tsv":
        path.with_suffix(".tsv").write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']:.1f}\n" for r in records))
        return str(path.with_suffix(".tsv"))
    if fmt == "json":
        return write_json(path.with_suffix(".json"), records)
    if fmt == "jsonl":
        return write_jsonl(path.with_suffix(".jsonl"), records)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [r["text"] for r in records], "label": [r["label"] for r in records]}), path.with_suffix(".parquet"))
    return str(path.with_suffix(".parquet"))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_whole_float_labels_are_classes_in_every_format(tmp_path, fmt, caplog):
    files = {name: _float_labels(tmp_path / name, fmt) for name in ("train", "validation")}
    with caplog.at_level("INFO", logger="lmtune"):
        data = load(**files)
    assert data.labels == LabelSpace("single", ["0", "1", "2"])
    assert data.train.labels[:3] == [0, 1, 2]
    assert "label type single: 3 distinct labels in column 'label' of " in caplog.text
    assert "(whole numbers are class labels" in caplog.text


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_fractional_numbers_make_regression_in_every_format_and_say_why(tmp_path, fmt, caplog):
    records = [{"text": f"t{i}", "label": i / 4} for i in range(8)]
    train = write_csv(tmp_path / "t.csv", [(r["text"], str(r["label"])) for r in records]) if fmt == "csv" else write_jsonl(tmp_path / "t.jsonl", records)
    with caplog.at_level("INFO", logger="lmtune"):
        data = load(train=train, validation=train)
    assert data.labels.label_type == "regression"
    assert "label type regression" in caplog.text and "0.25" in caplog.text
    assert ("line 3" if fmt == "csv" else "line 2") in caplog.text and train in caplog.text


def test_a_number_and_its_text_are_one_label_and_the_log_says_so(tmp_path, caplog):
    records = [{"text": "a", "label": 1}, {"text": "b", "label": "1"}, {"text": "c", "label": 0}, {"text": "d", "label": 0}]
    with caplog.at_level("INFO", logger="lmtune"):
        data = load(train=write_jsonl(tmp_path / "t.jsonl", records), validation=write_jsonl(tmp_path / "v.jsonl", records))
    assert data.labels == LabelSpace("single", ["0", "1"])
    assert data.train.labels == [1, 1, 0, 0]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and "1 (written '1' and 1)" in warned[0] and "t.jsonl" in warned[0]


def test_labels_written_one_way_give_no_warning(tmp_path, caplog):
    rows = [("a", "1"), ("b", "0"), ("c", "1")]
    with caplog.at_level("INFO", logger="lmtune"):
        load(train=write_csv(tmp_path / "t.csv", rows), validation=write_csv(tmp_path / "v.csv", rows))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_text_pair_column(tmp_path):
    rows = [("p1", "h1", "yes"), ("p2", "h2", "no")]
    header = ("premise", "hypothesis", "label")
    data = load(
        train=write_csv(tmp_path / "train.csv", rows, header),
        validation=write_csv(tmp_path / "val.csv", rows[:1], header),
        text_column="premise",
        text_pair_column="hypothesis",
    )
    assert data.train.texts == ["p1", "p2"] and data.train.pairs == ["h1", "h2"]
    assert data.validation.pairs == ["h1"]


def test_test_split_is_read_and_checked(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("a", "x"), ("b", "y")])
    val = write_csv(tmp_path / "val.csv", [("c", "x")])
    data = load(train=train, validation=val, test=write_csv(tmp_path / "test.csv", [("d", "y"), ("e", "x")]))
    assert data.test is not None and data.test.labels == ["y", "x"]
    msg = data_error(train=train, validation=val, test=write_csv(tmp_path / "bad_test.csv", [("d", "z")]))
    assert "bad_test.csv" in msg and "'z'" in msg


# --- bad data -------------------------------------------------------------------------------------


def test_empty_null_and_whitespace_texts(tmp_path):
    records = [
        {"text": "fine", "label": "a"},
        {"text": "", "label": "a"},
        {"text": "ok", "label": "b"},
        {"text": None, "label": "b"},
        {"text": "  \t ", "label": "a"},
        {"label": "b"},
    ]
    msg = data_error(train=write_jsonl(tmp_path / "train.jsonl", records))
    assert "train.jsonl" in msg
    assert "'text'" in msg
    assert "has 4 empty or null value(s)" in msg
    assert "first at line 2, line 4, line 5, line 6" in msg


def test_on_empty_drop_leaves_out_rows_with_an_empty_text_or_label_and_logs_it(tmp_path, caplog):
    records = [
        {"text": "fine", "label": "a"},
        {"text": "", "label": "a"},
        {"text": "ok", "label": "b"},
        {"text": None, "label": "b"},
        {"text": "good", "label": " "},
        {"label": "b"},
        {"text": "last", "label": "b"},
    ]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    val = write_csv(tmp_path / "val.csv", [("v1", "a"), ("", "b"), ("v2", "b")])
    with caplog.at_level("WARNING", logger="lmtune"):
        data = load(train=train, validation=val, on_empty="drop")
    assert data.train.texts == ["fine", "ok", "last"] and data.train.labels == ["a", "b", "b"]
    assert list(data.train.places) == ["line 1", "line 3", "line 7"]  # errors later still name the file's own lines
    assert data.validation.texts == ["v1", "v2"]
    logged = [r.getMessage() for r in caplog.records]
    assert any("train.jsonl: dropped 4 of 7 rows with an empty or null 'text' or 'label'" in m for m in logged), logged
    assert any("val.csv: dropped 1 of 3 rows" in m for m in logged), logged
    assert "data.on_empty: drop" in data_error(train=train, validation=val)  # the default still stops, and says how not to
    only_empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": " ", "label": "a"}])
    assert "holds no data rows with every cell filled" in data_error(train=only_empty, validation=val, on_empty="drop")


def test_empty_texts_in_csv_name_lines(tmp_path):
    rows = [("a", "x"), ("", "y"), ("b", "x")] + [(" ", "y")] * 7
    msg = data_error(train=write_csv(tmp_path / "train.csv", rows))
    assert "train.csv" in msg and "has 8 empty" in msg
    assert "first at line 3, line 5, line 6, line 7, line 8;" in msg  # only the first five


def test_non_string_text(tmp_path):
    records = [{"text": "fine", "label": "a"}, {"text": 12345, "label": "b"}, {"text": "ok", "label": "a"}]
    msg = data_error(train=write_json(tmp_path / "train.json", records))
    assert "train.json" in msg
    assert "non-text" in msg and "int 12345" in msg
    assert "record 2" in msg


def test_missing_text_column_lists_columns(tmp_path):
    msg = data_error(train=write_csv(tmp_path / "train.csv", [("a", "x")], header=("sentence", "label")))
    assert "train.csv" in msg and "'text'" in msg and "'sentence', 'label'" in msg


def test_missing_label(tmp_path):
    rows = [("a", "x"), ("b", ""), ("c", "y"), ("d", "  ")]
    msg = data_error(train=write_csv(tmp_path / "train.csv", rows))
    assert "train.csv" in msg
    assert "column 'label' has 2 missing label(s), first at line 3, line 5" in msg


def test_null_label_in_json(tmp_path):
    records = [{"text": "a", "label": "x"}, {"text": "b", "label": None}, {"text": "c"}]
    msg = data_error(train=write_json(tmp_path / "train.json", records))
    assert "2 missing label(s), first at record 2, record 3" in msg


def test_unusable_label_value(tmp_path):
    records = [{"text": "a", "label": "x"}, {"text": "b", "label": True}]
    msg = data_error(train=write_json(tmp_path / "train.json", records))
    assert "train.json" in msg and "record 2" in msg and "True" in msg


def test_empty_training_file(tmp_path):
    msg = data_error(train=write_csv(tmp_path / "train.csv", []))
    assert "train.csv" in msg and "no data rows" in msg


def test_validation_label_unseen_in_training(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("a", "cat"), ("b", "dog"), ("c", "cat")])
    val = write_csv(tmp_path / "val.csv", [("d", "dog"), ("e", "bird")])
    msg = data_error(train=train, validation=val)
    assert "val.csv" in msg
    assert "line 3" in msg
    assert "'bird'" in msg
    assert "known labels: cat, dog" in msg


def test_validation_multi_label_unseen_in_training(tmp_path):
    train = write_json(tmp_path / "train.json", [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["y"]}])
    val = write_json(tmp_path / "val.json", [{"text": "c", "label": ["x", "z"]}])
    msg = data_error(train=train, validation=val)
    assert "val.json" in msg and "'z'" in msg and "known labels: x, y" in msg


def test_single_class_training_set(tmp_path):
    msg = data_error(train=write_csv(tmp_path / "train.csv", [(f"t{i}", "only") for i in range(10)]))
    assert "train.csv" in msg and "'only'" in msg and "two or more" in msg


def test_float_label_in_single_label_data(tmp_path):
    rows = [("a", "x"), ("b", "y"), ("c", "0.5")]
    msg = data_error(train=write_csv(tmp_path / "train.csv", rows))
    assert "line 4" in msg and "0.5" in msg and "data.label_type" in msg


# --- splitting ------------------------------------------------------------------------------------


def _imbalanced_rows(n=200):
    # 60% a, 30% b, 10% c, in a fixed but mixed order
    labels = ["a"] * (n * 6 // 10) + ["b"] * (n * 3 // 10) + ["c"] * (n // 10)
    random.Random(0).shuffle(labels)
    return [(f"text {i}", lab) for i, lab in enumerate(labels)]


def test_split_fraction_and_stratification(tmp_path):
    rows = _imbalanced_rows(200)
    data = load(seed=3, train=write_csv(tmp_path / "train.csv", rows), validation_split=0.2)
    assert len(data.validation.texts) == 40
    assert len(data.train.texts) == 160
    # disjoint, and together all rows
    assert set(data.train.texts).isdisjoint(data.validation.texts)
    assert sorted(data.train.texts + data.validation.texts) == sorted(r[0] for r in rows)
    # proportions preserved exactly (stratified)
    assert Counter(data.validation.labels) == {"a": 24, "b": 12, "c": 4}
    assert Counter(data.train.labels) == {"a": 96, "b": 48, "c": 16}
    # places still point at the original lines, in file order
    by_text = {t: f"line {i + 2}" for i, (t, _) in enumerate(rows)}
    assert [by_text[t] for t in data.validation.texts] == list(data.validation.places)
    assert data.validation.places == sorted(data.validation.places, key=lambda s: int(s.split()[1]))


@pytest.mark.parametrize(("fraction", "held"), [(0.1, 10), (0.25, 25), (0.5, 50)])
def test_split_fraction_is_respected(tmp_path, fraction, held):
    rows = [(f"t{i}", "ab"[i % 2]) for i in range(100)]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation_split=fraction)
    assert len(data.validation.texts) == held
    assert len(data.train.texts) == 100 - held


def test_split_is_seeded(tmp_path):
    train = write_csv(tmp_path / "train.csv", _imbalanced_rows(100))
    first = load(seed=7, train=train)
    again = load(seed=7, train=train)
    other = load(seed=8, train=train)
    assert first.validation.texts == again.validation.texts
    assert first.train.texts == again.train.texts
    assert first.validation.texts != other.validation.texts


def test_split_holds_out_at_least_one_row(tmp_path):
    rows = [("a", "x"), ("b", "y"), ("c", "x"), ("d", "y")]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation_split=0.01)
    assert len(data.validation.texts) == 1 and len(data.train.texts) == 3


def test_split_with_rare_class_falls_back_to_plain_split(tmp_path):
    rows = [(f"t{i}", "a") for i in range(9)] + [("t9", "b")]  # b has one row: cannot stratify
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation_split=0.2)
    assert len(data.validation.texts) == 2


def test_split_of_too_few_rows(tmp_path):
    msg = data_error(
        train=write_json(tmp_path / "train.json", [{"text": "a", "label": 0.5}]), label_type="regression"
    )
    assert "train.json" in msg and "too few" in msg


def test_max_train_examples_limits_rows(tmp_path):
    rows = [(f"t{i}", "ab"[i % 2]) for i in range(50)]
    train = write_csv(tmp_path / "train.csv", rows)
    val = write_csv(tmp_path / "val.csv", rows[:5])
    data = load(train=train, validation=val, max_train_examples=10)
    assert data.train.texts == [f"t{i}" for i in range(10)]
    data = load(train=train, validation=val, max_eval_examples=2)
    assert len(data.train.texts) == 50 and len(data.validation.texts) == 2
    # the limit applies before the split
    data = load(train=train, max_train_examples=20, validation_split=0.5)
    assert len(data.train.texts) == 10 and len(data.validation.texts) == 10


def test_max_train_examples_skips_bad_rows_beyond_the_limit(tmp_path):
    rows = [("a", "x"), ("b", "y"), ("", "x")]
    data = load(train=write_csv(tmp_path / "train.csv", rows), validation=write_csv(tmp_path / "v.csv", rows[:1]), max_train_examples=2)
    assert data.train.texts == ["a", "b"]


# --- LengthGroupedBatchSampler --------------------------------------------------------------------


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(1, 300) for _ in range(n)]


def _padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize(("n", "batch_size", "group_size"), [(1000, 16, 50), (103, 8, 3), (5, 16, 50), (1, 1, 1)])
def test_each_epoch_covers_every_index_once(n, batch_size, group_size):
    sampler = LengthGroupedBatchSampler(_lengths(n), batch_size, seed=1, group_size=group_size)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))
        assert len(batches) == len(sampler) == -(-n // batch_size)
        assert all(1 <= len(b) <= batch_size for b in batches)


def test_same_seed_and_epoch_give_same_batches_and_epochs_differ():
    lengths = _lengths(500)
    a = LengthGroupedBatchSampler(lengths, 16, seed=5)
    b = LengthGroupedBatchSampler(lengths, 16, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(LengthGroupedBatchSampler(lengths, 16, seed=6)) != first


def test_grouped_batches_pad_less_than_random_batches():
    lengths = _lengths(2000, seed=2)
    grouped = list(LengthGroupedBatchSampler(lengths, 16, seed=0))
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    plain = [order[i : i + 16] for i in range(0, len(order), 16)]
    assert _padding(grouped, lengths) < 0.2 * _padding(plain, lengths)


def test_without_shuffle_batches_are_sorted_longest_first():
    lengths = _lengths(100, seed=3)
    sampler = LengthGroupedBatchSampler(lengths, 7, seed=0, shuffle=False)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(100))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(b) == 7 for b in batches[:-1])
    sampler.set_epoch(4)
    assert list(sampler) == batches  # no randomness at all


# --- EncodedDataset and PadCollator ---------------------------------------------------------------


def test_pad_collator_right_pads_and_masks():
    ds = EncodedDataset([[5, 6, 7], [8], [9, 10]], [1, 0, 2])
    batch = PadCollator(pad_token_id=0, target_dtype=torch.long)([ds[0], ds[1], ds[2]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["target"].tolist() == [1, 0, 2] and batch["target"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1, 2]
    assert "token_type_ids" not in batch


def test_pad_collator_mask_marks_real_tokens_even_when_they_equal_the_pad_id():
    ds = EncodedDataset([[3, 3], [3, 1, 3, 3]], [0.5, 1.5])
    batch = PadCollator(pad_token_id=3, target_dtype=torch.float32)([ds[0], ds[1]])
    assert batch["input_ids"].tolist() == [[3, 3, 3, 3], [3, 1, 3, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["target"].dtype == torch.float32
    assert batch["target"].tolist() == [0.5, 1.5]


def test_pad_collator_multi_hot_targets_and_token_types():
    ds = EncodedDataset([[1, 2], [3, 4, 5]], [[1.0, 0.0], [1.0, 1.0]], token_type_ids=[[0, 1], [0, 0, 1]])
    assert ds.lengths == [2, 3] and len(ds) == 2
    batch = PadCollator(pad_token_id=99, target_dtype=torch.float32)([ds[1], ds[0]])
    assert batch["input_ids"].tolist() == [[3, 4, 5], [1, 2, 99]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 1, 0]]
    assert batch["target"].shape == (2, 2) and batch["target"].dtype == torch.float32
    assert batch["index"].tolist() == [1, 0]


def test_collator_with_sampler_through_a_dataloader():
    lengths = _lengths(64, seed=4)
    ds = EncodedDataset([[7] * n for n in lengths], list(range(64)))
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=LengthGroupedBatchSampler(ds.lengths, 8, seed=0), collate_fn=PadCollator(0, torch.long)
    )
    seen = []
    for batch in loader:
        assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max()
        assert batch["attention_mask"].sum(1).tolist() == [lengths[i] for i in batch["index"].tolist()]
        seen += batch["target"].tolist()
    assert sorted(seen) == list(range(64))
