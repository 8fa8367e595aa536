"""The data cache: checked rows and tokens in Arrow, reused by the next run with the same data, settings and tokenizer;
and the streaming readers under it, which name the same lines and bytes as reading a file whole did."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer

from lmtune.config import build_config
from lmtune.data import classification_store
from lmtune.data.batching import LengthGroupedBatchSampler
from lmtune.data.readers import read_table
from lmtune.data.store import cache_root
from lmtune.errors import DataError
from lmtune.tasks import build_task
from toy import toy_rows, write_csv


def task_for(model, train, validation, out, **data):
    cfg = build_config({"task": "classification", "model": {"name_or_path": str(model), "max_length": 16},
                        "data": {"train": str(train), "validation": str(validation), **data}, "output": {"dir": str(out)}})
    return build_task(cfg)


def encoded(task, model, max_length=16):
    task.load_data()
    splits = task.encode(AutoTokenizer.from_pretrained(model), max_length)
    return [splits.train[i] for i in range(len(splits.train))], splits


@pytest.fixture()
def files(tmp_path):
    return write_csv(tmp_path / "train.csv", toy_rows(300, seed=3)), write_csv(tmp_path / "val.csv", toy_rows(40, seed=4))


def test_a_second_run_reads_rows_and_tokens_from_the_cache_and_gets_the_same_examples(tiny_models, files, tmp_path, monkeypatch):
    model, cache = tiny_models["bert"], tmp_path / "cache"
    first, splits = encoded(task_for(model, *files, tmp_path / "a", cache_dir=str(cache)), model)
    # what the tokenizer gives for the file's rows, in order
    texts = [r["text"] for r in read_table(str(files[0])).rows]
    expected = AutoTokenizer.from_pretrained(model)(texts, truncation=True, max_length=16)["input_ids"]
    assert [item["input_ids"] for item in first] == expected
    assert splits.train.lengths == [len(ids) for ids in expected]
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("classification-")

    def no_read(*args, **kwargs):
        raise AssertionError("the data files were read again")

    monkeypatch.setattr(classification_store, "load_classification_data", no_read)
    tokenized = []
    monkeypatch.setattr(classification_store, "_tokenize", lambda *a, **k: tokenized.append(1))
    task = task_for(model, *files, tmp_path / "b", cache_dir=str(cache))
    second, _ = encoded(task, model)
    assert second == first and not tokenized
    assert task.labels.names == ["neg", "pos"]


def test_new_content_at_the_same_path_a_new_max_length_or_new_settings_miss_the_cache(tiny_models, files, tmp_path):
    model, cache = tiny_models["bert"], tmp_path / "cache"
    fingerprints = []
    for step in range(4):
        if step == 1:
            write_csv(files[0], toy_rows(300, seed=5))  # same path, other rows
        extra = {"label_type": "single"} if step == 3 else {}
        task = task_for(model, *files, tmp_path / "run", cache_dir=str(cache), **extra)
        items, _ = encoded(task, model, max_length=8 if step == 2 else 16)
        fingerprints.append(task.data_fingerprint())
        assert max(len(item["input_ids"]) for item in items) <= (8 if step == 2 else 16)
    assert fingerprints[0] != fingerprints[1] == fingerprints[2] == fingerprints[3]  # the checked rows are what resume compares
    rows = sorted(cache.glob("classification-*"))
    assert len(rows) == 3  # the original rows, the new rows, the new settings
    assert sum(len(list(r.glob("train-tokens-*.arrow"))) for r in rows) == 4  # one per rows and max_length


def test_data_cache_false_writes_nothing_in_the_cache_folder(tiny_models, files, tmp_path):
    model, cache = tiny_models["bert"], tmp_path / "cache"
    items, _ = encoded(task_for(model, *files, tmp_path / "a", cache_dir=str(cache), cache=False), model)
    assert len(items) == 300 and not cache.exists()


def test_a_bad_file_is_refused_as_before_and_leaves_no_entry(tiny_models, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood,a\n,b\nfine,a\n", encoding="utf-8")
    task = task_for(tiny_models["bert"], train, train, tmp_path / "run", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"train.csv: column 'text' has 1 empty or null value\(s\), first at line 3"):
        task.load_data()
    assert not list((tmp_path / "cache").glob("classification-*"))  # a staging folder is removed too
    assert not list((tmp_path / "cache").glob(".*"))


def test_two_tokenizing_processes_give_the_same_tokens_as_one(tiny_models, tmp_path):
    model = tiny_models["bert"]
    train = write_csv(tmp_path / "train.csv", toy_rows(2400, seed=6))
    val = write_csv(tmp_path / "val.csv", toy_rows(40, seed=7))
    one, _ = encoded(task_for(model, train, val, tmp_path / "a", cache_dir=str(tmp_path / "c1")), model)
    two, _ = encoded(task_for(model, train, val, tmp_path / "b", cache_dir=str(tmp_path / "c2"), num_proc=2), model)
    assert one == two
    assert len(list((tmp_path / "c2").glob("*/train-tokens-*_of_00002.arrow"))) == 2


def test_the_loader_reads_batches_out_of_the_memory_mapped_store(tiny_models, files, tmp_path):
    model = tiny_models["bert"]
    task = task_for(model, *files, tmp_path / "run", cache_dir=str(tmp_path / "cache"))
    items, splits = encoded(task, model)
    sampler = LengthGroupedBatchSampler(splits.train.lengths, 16, seed=0)
    loader = torch.utils.data.DataLoader(splits.train, batch_sampler=sampler, collate_fn=task.collate)
    task.load_model(AutoTokenizer.from_pretrained(model))  # sets the collator
    seen = []
    for batch, indices in zip(loader, sampler.batches()):
        assert batch["index"].tolist() == indices
        for row, i in enumerate(indices):
            n = len(items[i]["input_ids"])
            assert batch["input_ids"][row, :n].tolist() == items[i]["input_ids"] and int(batch["target"][row]) == items[i]["target"]
        seen += indices
    assert sorted(seen) == list(range(300))


def test_the_default_cache_folder_follows_lmtune_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path))
    assert cache_root(None) == tmp_path / "data"
    assert cache_root(str(tmp_path / "x")) == tmp_path / "x"


# The streaming readers read 1 MiB at a time: lines, line ends and characters cut by a chunk's edge.
@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_a_file_read_in_chunks_gives_every_row_whole(tmp_path, ending):
    chunk = 2**20
    head = "text\tlabel" + ending
    # row 1 ends where the first chunk does (a \r\n is cut between its two bytes); row 2 has an é cut by the second chunk's end
    first = "a" * (chunk - 1 - len(head) - len("\t0"))
    before = len(head) + len(first) + len("\t0") + len(ending)
    second = "b" * (2 * chunk - 1 - before) + "é and more"
    rng = random.Random(0)
    rows = [(first, "0"), (second, "1")] + [(f"ünïcode {i} " + "é" * rng.randint(0, 300), str(i % 3)) for i in range(3000)]
    path = tmp_path / "big.tsv"
    data = (head + "".join(f"{t}\t{lab}{ending}" for t, lab in rows)).encode()
    assert data[chunk - 1 : chunk + len(ending) - 1] == ending.encode() and data[2 * chunk - 1 : 2 * chunk + 1] == "é".encode()
    path.write_bytes(data)
    table = read_table(str(path))
    assert [(r["text"], r["label"]) for r in table.rows] == rows
    assert table.places[-1] == len(rows) + 1


def test_a_bad_byte_far_into_a_file_is_named_by_line_column_and_byte_offset(tmp_path):
    line = "some words\t1\n"
    head = ("text\tlabel\n" + line * 200_000).encode()
    path = tmp_path / "bad.tsv"
    path.write_bytes(head + b"caf\xe9\t0\n" + line.encode() * 10)
    with pytest.raises(DataError) as err:
        read_table(str(path))
    assert str(err.value) == (f"{path}: not UTF-8 text: line 200002, column 4 (byte offset {len(head) + 3}) holds byte 0xe9; "
                              f"re-save the file as UTF-8")


def test_a_store_pickles_as_its_file_not_its_rows(tiny_models, files, tmp_path):
    import pickle

    model = tiny_models["bert"]
    items, splits = encoded(task_for(model, *files, tmp_path / "run", cache_dir=str(tmp_path / "cache")), model)
    blob = pickle.dumps(splits.train)
    again = pickle.loads(blob)
    assert [again[i] for i in range(len(again))] == items
    assert len(blob) < 4_000  # the path and a few settings (the 300 rows pickled as a table take some 15 kB)
