"""Extractive QA on tiny models: reading SQuAD and rows, windows over long contexts, the choice of
the answer span, and runs that learn a toy set and answer alike after reloading."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import lmtune
from lmtune.config import build_config
from lmtune.data.qa import ExtractiveQASection, QAExample, read_qa
from lmtune.data.qa_windows import answer_tokens, encode_windows
from lmtune.errors import ConfigError, DataError, ModelError
from lmtune.eval.qa_spans import best_window_span, pick_answers, span_losses
from lmtune.tasks.extractive_qa import ExtractiveQAConfig, ExtractiveQATask, QuestionAnswerer
from toy import write_csv

# --- a toy world: who lives where and works as what, among filler sentences -------------------

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
PLACES = ["paris", "rome", "oslo", "lima", "cairo", "tokyo", "madrid", "berlin"]  # the last two are two word pieces each
JOBS = ["baker", "pilot", "nurse", "judge", "smith", "tailor", "farmer", "singer"]
FILLER = ["the old town is near the river .", "a small city is very old .", "the river is near a small town ."]
WORDS = ["the", "a", "and", "is", "in", "lives", "works", "as", "where", "does", "what", "live", "work", ".", "?", ",", "very",
         "old", "town", "small", "city", "near", "river", "who"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *NAMES, *PLACES[:6], *JOBS, *WORDS, "mad", "##rid", "ber", "##lin"]


def qa_tokenizer():
    """A small fast WordPiece tokenizer in BERT's layout: [CLS] question [SEP] context [SEP]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=64,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def toy_rows(n: int, seed: int) -> list[dict]:
    """One fact per context, after 0-3 filler sentences: at max_length 32 many contexts span several windows."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, place, job = rng.choice(NAMES), rng.choice(PLACES), rng.choice(JOBS)
        before = [rng.choice(FILLER) for _ in range(rng.choice([0, 0, 1, 3]))]
        after = [rng.choice(FILLER) for _ in range(rng.randint(0, 1))]
        context = " ".join([*before, f"{name} lives in {place} and works as a {job} .", *after])
        question, answer = (f"where does {name} live ?", place) if rng.random() < 0.5 else (f"what does {name} work as ?", job)
        rows.append({"question": question, "context": context, "answer": answer})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def squad_doc(articles: list[list[tuple[str, list[tuple[str, list[str]]]]]]) -> dict:
    """SQuAD JSON from [[(context, [(question, [answer, ...]), ...]), ...] per article]; offsets found in the context."""
    data = []
    for a, paragraphs in enumerate(articles):
        paras = []
        for p, (context, qas) in enumerate(paragraphs):
            paras.append({"context": context, "qas": [
                {"id": f"a{a}p{p}q{q}", "question": question,
                 "answers": [{"text": t, "answer_start": context.index(t)} for t in answers]}
                for q, (question, answers) in enumerate(qas)
            ]})
        data.append({"title": f"Article_{a}", "paragraphs": paras})
    return {"version": "1.1", "data": data}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A randomly initialised 2-block BERT (no QA head: loading adds a fresh one) with the toy tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("qa") / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, pad_token_id=0),
              add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    qa_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy_qa")
    train = toy_rows(120, seed=1)
    return {"train": write_jsonl(root / "train.jsonl", train), "validation": write_jsonl(root / "validation.jsonl", train[:40])}


def qa_config(model: Path, files: dict[str, Path], out: Path, **sections) -> dict:
    cfg = {
        "task": "extractive_qa",
        "model": {"name_or_path": str(model), "max_length": 32},
        "data": {"train": str(files["train"]), "validation": str(files["validation"]), "doc_stride": 8},
        "method": {"name": "full"},
        "train": {"epochs": 8, "batch_size": 16, "learning_rate": 5e-3, "seed": 0, "log_every_n_steps": 10,
                  "keep_last_checkpoints": 0},
        "output": {"dir": str(out)},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


# --- reading -----------------------------------------------------------------------------------


def test_squad_json_keeps_every_reference_and_trains_on_the_first(tmp_path):
    context = "Warsaw is the capital of Poland. It lies on the Vistula river."
    doc = squad_doc([[(context, [("What is the capital of Poland?", ["Warsaw", "Warsaw", "Warsaw is"]),
                                 ("Which river?", ["the Vistula", "Vistula"])])]])
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(doc))
    data = read_qa(str(path), ExtractiveQASection())
    assert [e.question for e in data.examples] == ["What is the capital of Poland?", "Which river?"]
    river = data.examples[1]
    assert river.answers == ("the Vistula", "Vistula") and river.id == "a0p0q1" and river.group == "article 1"
    assert [context[s : s + len(t)] for s, t in zip(river.starts, river.answers)] == list(river.answers)


def test_rows_from_csv_find_the_answer_and_jsonl_takes_squad_style_answers(tmp_path):
    context = "bob lives in rome and works as a pilot ."
    csv_path = write_csv(tmp_path / "rows.csv", [{"question": "where does bob live ?", "context": context, "answer": "rome"}])
    (row,) = read_qa(str(csv_path), ExtractiveQASection()).examples
    assert row.answers == ("rome",) and row.starts == (context.index("rome"),)
    # an answer text that occurs twice: answer_start chooses; the SQuAD dict form carries several references
    twice = "a pilot met a pilot ."
    jsonl = write_jsonl(tmp_path / "rows.jsonl", [
        {"question": "who ?", "context": twice, "answer": "pilot", "answer_start": 14},
        {"question": "who ?", "context": context, "answer": {"text": ["bob", "bob lives"], "answer_start": [0, 0]}},
    ])
    first, second = read_qa(str(jsonl), ExtractiveQASection()).examples
    assert first.starts == (14,)
    assert second.answers == ("bob", "bob lives") and second.starts == (0, 0)


def test_answer_not_in_its_context_is_a_data_error_naming_file_and_line(tmp_path):
    rows = [{"question": "where does bob live ?", "context": "bob lives in rome .", "answer": "rome"},
            {"question": "where does erin live ?", "context": "erin lives in oslo .", "answer": "lima"}]
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"bad\.csv: line 3: the answer 'lima' .* does not occur in its context"):
        read_qa(str(path), ExtractiveQASection())


def test_an_answer_start_that_misses_the_answer_is_a_data_error(tmp_path):
    jsonl = write_jsonl(tmp_path / "off.jsonl", [{"question": "q ?", "context": "bob lives in rome .", "answer": "rome", "answer_start": 3}])
    with pytest.raises(DataError, match=r"off\.jsonl: line 1: answer_start=3 does not point at the answer 'rome'.*occurs at offset 13"):
        read_qa(str(jsonl), ExtractiveQASection())
    doc = squad_doc([[("bob lives in rome .", [("where ?", ["rome"])])]])
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 0
    path = tmp_path / "off.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"article 1 \('Article_0'\), paragraph 1, question 1 \(id a0p0q0\): answer_start=0"):
        read_qa(str(path), ExtractiveQASection())


def test_empty_question_and_missing_named_column_are_data_errors(tmp_path):
    path = write_csv(tmp_path / "empty.csv", [{"question": "  ", "context": "bob lives in rome .", "answer": "rome"}])
    with pytest.raises(DataError, match=r"empty\.csv: line 2: 'question' is empty"):
        read_qa(str(path), ExtractiveQASection())
    ok = write_csv(tmp_path / "ok.csv", [{"question": "where ?", "context": "bob lives in rome .", "answer": "rome"}])
    with pytest.raises(DataError, match=r"no column 'offset' \(asked for as data.answer_start_column\)"):
        read_qa(str(ok), ExtractiveQASection(answer_start_column="offset"))


def test_on_empty_drop_leaves_out_rows_without_a_question_or_context(tmp_path):
    rows = [{"question": "where ?", "context": "bob lives in rome .", "answer": "rome"},
            {"question": "", "context": "ann lives in oslo .", "answer": "oslo"},
            {"question": "who ?", "context": " ", "answer": "bob"}]
    data = read_qa(write_csv(tmp_path / "qa.csv", rows), ExtractiveQASection(on_empty="drop"))
    assert [e.question for e in data.examples] == ["where ?"]


def test_validation_split_holds_out_whole_articles_seeded(tmp_path):
    def article(name: str, places: list[str]) -> list:
        return [(f"{name} lives in {p} . {name} is old .", [(f"where does {name} live ?", [p]), (f"who is old {i} ?", [name])])
                for i, p in enumerate(places)]

    # one large article (8 contexts, 16 questions) and 8 small ones (1 context, 2 questions each)
    articles = [article("everyone", PLACES), *[article(n, [PLACES[i]]) for i, n in enumerate(NAMES)]]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_doc(articles)))

    def split(seed: int) -> tuple[list[QAExample], list[QAExample]]:
        cfg = ExtractiveQAConfig.model_validate({"task": "extractive_qa", "model": {"name_or_path": "unused"},
                                                 "data": {"train": str(path), "validation_split": 0.25}, "train": {"seed": seed}})
        task = ExtractiveQATask(cfg)
        task.load_data()
        return task.data.train.examples, task.data.validation.examples

    train, validation = split(0)
    assert len(validation) == 8 and len(train) == 24  # a quarter of the 32 questions: four small articles
    assert not {e.context for e in train} & {e.context for e in validation}
    assert not {e.group for e in train} & {e.group for e in validation}
    assert split(0)[1] == validation  # the same seed holds out the same articles
    others = [split(seed)[1] for seed in range(1, 6)]
    assert any(v != validation for v in others)
    assert all("article 1" not in {e.group for e in v} for v in [validation, *others])  # the large one would overshoot


# --- windows -----------------------------------------------------------------------------------


def test_long_context_becomes_overlapping_windows_whose_answer_tokens_map_back_to_the_characters():
    tokenizer = qa_tokenizer()
    filler = " ".join(FILLER * 3)
    context = f"{filler} heidi lives in madrid and works as a judge . {filler}"
    example = QAExample("where does heidi live ?", context, ("madrid",), (context.index("madrid"),), "g")
    windows = encode_windows(tokenizer, [example], max_length=32, doc_stride=8, name="test")
    assert len(windows) >= 4 and all(n <= 32 for n in windows.lengths)
    holding = [w for w in range(len(windows)) if windows[w]["target"] != [0, 0]]
    assert holding, "some window holds the whole answer"
    for w in holding:
        start, end = windows[w]["target"]
        first, spans = windows.context_first[w], windows.spans[w]
        assert end - start == 1  # "madrid" is two word pieces: mad ##rid
        assert context[spans[start - first][0] : spans[end - first][1]] == "madrid"
        assert tokenizer.convert_ids_to_tokens(windows[w]["input_ids"][start : end + 1]) == ["mad", "##rid"]
    for w in range(len(windows) - 1):  # consecutive windows share doc_stride context tokens
        assert windows.spans[w][-8:] == windows.spans[w + 1][:8]
    covered = sorted({s for spans in windows.spans for s in spans})
    assert covered[0][0] == 0 and covered[-1][1] == len(context)  # every character of the context is in some window


def test_answer_tokens_need_the_whole_answer_inside_the_window():
    spans = [(10, 13), (14, 18), (19, 25)]  # three context tokens from position 5 on
    assert answer_tokens(spans, 5, 14, 18) == (6, 6)
    assert answer_tokens(spans, 5, 14, 25) == (6, 7)
    assert answer_tokens(spans, 5, 15, 17) == (6, 6)  # inside one token: that token
    assert answer_tokens(spans, 5, 19, 30) == (0, 0)  # runs past the window: the first token ([CLS])
    assert answer_tokens(spans, 5, 2, 12) == (0, 0)


def test_long_questions_are_cut_so_that_every_window_keeps_context():
    tokenizer = qa_tokenizer()
    question = " ".join(["where does bob live"] * 10) + " ?"  # 41 tokens, more than a 32-token window
    context = "bob lives in rome and works as a pilot ."
    windows = encode_windows(tokenizer, [QAExample(question, context, ("rome",), (13,), "g")], max_length=32, doc_stride=8, name="test")
    assert all(n <= 32 for n in windows.lengths) and all(len(s) > 8 for s in windows.spans)


# --- choosing the answer ------------------------------------------------------------------------


def test_best_window_span_from_hand_built_logits():
    start = np.full(10, -5.0)
    end = np.full(10, -5.0)
    start[1] = end[1] = 9.0  # the question, not the context (tokens 3-8): never chosen
    start[7], end[5] = 4.0, 3.0  # the best start and the best end, but the end comes first: no span
    start[4], end[8] = 2.0, 0.5
    # valid: 4-5 (2 + 3), 7-8 (4 + 0.5), 4-8 (2.5), and single tokens
    assert best_window_span(start, end, 3, 6, n_best=20, max_answer_length=30) == (5.0, 4, 5)
    # one token at most: 7-7 (4 - 5) is the best of the single tokens
    assert best_window_span(start, end, 3, 6, n_best=20, max_answer_length=1) == (-1.0, 7, 7)
    # n_best=1 keeps only start 7 and end 5, which make no valid span
    assert best_window_span(start, end, 3, 6, n_best=1, max_answer_length=30) is None


def test_the_answer_is_the_best_span_over_all_windows():
    tokenizer = qa_tokenizer()
    filler = " ".join(FILLER * 2)
    context = f"bob lives in oslo . {filler} bob works as a pilot ."
    example = QAExample("what does bob do ?", context, ("pilot",), (context.index("pilot"),), "g")
    windows = encode_windows(tokenizer, [example], max_length=32, doc_stride=8, name="test")
    width = max(windows.lengths)
    start = np.full((len(windows), width), -10.0)
    end = np.full((len(windows), width), -10.0)
    first_w, last_w = 0, len(windows) - 1
    oslo = windows.context_first[first_w] + 3  # bob lives in [oslo]
    start[first_w, oslo] = end[first_w, oslo] = 4.0  # score 8 in the first window
    pilot_start, pilot_end = windows[last_w]["target"]
    start[last_w, pilot_start], end[last_w, pilot_end] = 5.0, 4.5  # score 9.5 in the last window
    (answer,) = pick_answers(windows, start, end, n_best=20, max_answer_length=30)
    assert (answer.text, answer.score) == ("pilot", 9.5) and context[answer.start : answer.end] == "pilot"
    start[first_w, oslo] = 6.0  # now the first window wins
    (answer,) = pick_answers(windows, start, end, n_best=20, max_answer_length=30)
    assert answer.text == "oslo" and context[answer.start : answer.end] == "oslo"


def test_span_loss_is_the_models_loss_and_ignores_padding(tiny_bert):
    from transformers import AutoModelForQuestionAnswering

    from lmtune.data.batching import PadCollator

    tokenizer = qa_tokenizer()
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert).eval()
    rows = toy_rows(6, seed=3)
    examples = [QAExample(r["question"], r["context"], (r["answer"],), (r["context"].index(r["answer"]),), "g") for r in rows]
    windows = encode_windows(tokenizer, examples, max_length=32, doc_stride=8, name="test")
    collate = PadCollator(tokenizer.pad_token_id, torch.long)
    shortest = min(range(len(windows)), key=lambda w: windows.lengths[w])
    longest = max(range(len(windows)), key=lambda w: windows.lengths[w])
    alone, padded = collate([windows[shortest]]), collate([windows[shortest], windows[longest]])
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1]
    with torch.no_grad():
        out = model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"], token_type_ids=alone["token_type_ids"],
                    start_positions=alone["target"][:, 0], end_positions=alone["target"][:, 1])
        ours_alone = span_losses(out.start_logits, out.end_logits, alone["attention_mask"], alone["target"])
        out2 = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], token_type_ids=padded["token_type_ids"])
        ours_padded = span_losses(out2.start_logits, out2.end_logits, padded["attention_mask"], padded["target"])
    torch.testing.assert_close(ours_alone[0], out.loss)  # no padding: transformers' own span loss
    torch.testing.assert_close(ours_padded[0], ours_alone[0], rtol=1e-5, atol=1e-5)  # padding changes nothing


def test_evaluation_does_not_depend_on_the_batch_order(tiny_bert, toy_files):
    from lmtune.data.batching import LengthGroupedBatchSampler
    from lmtune.models.loading import load_tokenizer

    cfg = build_config(qa_config(tiny_bert, toy_files, Path("unused")))
    task = ExtractiveQATask(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    model = task.load_model(tokenizer).eval()
    splits = task.encode(tokenizer, 32)
    val = splits.validation
    assert len(val) > len(task.data.validation.examples)  # several windows for some questions
    orders = [LengthGroupedBatchSampler(val.lengths, 8, seed=0, shuffle=False).batches(),
              [list(range(len(val)))[i : i + 5] for i in range(0, len(val), 5)][::-1]]
    results = []
    for order in orders:
        loader = torch.utils.data.DataLoader(val, batch_sampler=order, collate_fn=task.collate)
        result = task.evaluate(model, loader, None, False)
        results.append((result.metrics, result.predictions()))
    assert results[0][0] == pytest.approx(results[1][0])
    assert [r["predicted"] for r in results[0][1]] == [r["predicted"] for r in results[1][1]]


# --- config and model checks ---------------------------------------------------------------------


@pytest.mark.parametrize(("keys", "message"), [
    ({"eval": {"metric": "accuracy"}}, r"eval.metric='accuracy' is not reported for task extractive_qa; choose one of exact_match, f1, loss"),
    ({"eval": {"generate": True}}, r"eval.generate applies to tasks that generate text"),
    ({"data": {"doc_stride": 24}}, r"data.doc_stride=24 leaves too little room in model.max_length=32"),
    ({"data": {"validation": None, "validation_split": 0}}, r"nothing to evaluate on"),
    ({"data": {"question_col": "q"}}, r"unknown key 'data.question_col'; allowed here: .*question_column, context_column"),
])
def test_config_errors_name_the_key_and_what_is_allowed(tiny_bert, toy_files, keys, message):
    with pytest.raises(ConfigError, match=message):
        build_config(qa_config(tiny_bert, toy_files, Path("unused"), **keys))


def test_config_defaults_and_metric_choice(tiny_bert, toy_files):
    cfg = build_config(qa_config(tiny_bert, toy_files, Path("unused")))
    assert isinstance(cfg, ExtractiveQAConfig)
    d = cfg.data
    assert (d.question_column, d.context_column, d.answer_column, d.answer_start_column) == ("question", "context", "answer", "answer_start")
    assert (d.max_answer_length, d.n_best, ExtractiveQASection().doc_stride) == (30, 20, 128)
    task = ExtractiveQATask(cfg)
    assert (task.metric, task.greater_is_better, task.peft_task_type()) == ("f1", True, "QUESTION_ANS")
    loss_task = ExtractiveQATask(build_config(qa_config(tiny_bert, toy_files, Path("unused"), eval={"metric": "loss"})))
    assert (loss_task.metric, loss_task.greater_is_better) == ("loss", False)


def test_a_slow_tokenizer_is_a_model_error(tiny_bert, toy_files):
    class SlowTokenizer:
        is_fast = False

    task = ExtractiveQATask(build_config(qa_config(tiny_bert, toy_files, Path("unused"))))
    with pytest.raises(ModelError, match="needs a fast tokenizer .* SlowTokenizer, a slow one"):
        task.load_model(SlowTokenizer())


# --- training runs -----------------------------------------------------------------------------


def test_full_fine_tuning_learns_the_toy_questions_and_the_saved_model_answers_alike(tiny_bert, toy_files, tmp_path, capsys):
    from lmtune.cli import main

    result = lmtune.train(qa_config(tiny_bert, toy_files, tmp_path / "run", eval={"at_start": True}), progress=False)
    m = result.metrics
    assert m["initial"]["exact_match"] < 0.3
    assert m["exact_match"] >= 0.75 and m["f1"] >= 0.8, m
    # questions are counted as examples; the windows the model read (contexts longer than 32 tokens), beside them
    assert (m["train_examples"], m["validation_examples"]) == (120, 40) and m["train_windows"] > 120 and m["validation_windows"] > 40
    assert "(120 examples in " in (tmp_path / "run" / "report.md").read_text()
    # The reloaded best model gives the answers of validation_predictions.csv, character offsets included.
    with (tmp_path / "run" / "validation_predictions.csv").open(encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    qa = lmtune.load(tmp_path / "run")
    assert isinstance(qa, QuestionAnswerer)
    records = qa.read_records(str(toy_files["validation"]))
    answers = qa.predict_records(records, batch_size=7)
    assert [a["answer"] for a in answers] == [r["predicted"] for r in written]
    assert [a["start"] for a in answers] == [int(r["start"]) for r in written]
    assert all(r["context"][a["start"] : a["end"]] == a["answer"] for r, a in zip(records, answers))
    metrics = qa.evaluate(str(toy_files["validation"]))
    assert metrics["exact_match"] == pytest.approx(m["exact_match"]) and metrics["f1"] == pytest.approx(m["f1"])
    assert metrics["loss"] == pytest.approx(m["loss"], rel=1e-4)
    # `lmtune predict` takes --question and --context from the task
    assert main(["predict", str(tmp_path / "run"), "--question", records[0]["question"], "--context", records[0]["context"]]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["answer"] == answers[0]["answer"] and printed["question"] == records[0]["question"]


def test_lora_trains_the_adapter_and_head_and_reloads_with_the_same_answers(tiny_bert, toy_files, tmp_path):
    from safetensors.torch import load_file

    result = lmtune.train(qa_config(tiny_bert, toy_files, tmp_path / "run", method={"name": "lora", "lora_rank": 4},
                                    train={"learning_rate": 1e-2}, eval={"at_start": True}), progress=False)
    m = result.metrics
    assert m["trainable_parameters"] < m["total_parameters"] / 2
    assert m["exact_match"] >= m["initial"]["exact_match"] + 0.25, m  # measured: 0.275 -> 0.65
    saved = load_file(tmp_path / "run" / "best" / "adapter_model.safetensors")
    assert any("qa_outputs" in name for name in saved) and all("lora_" in name or "qa_outputs" in name for name in saved)
    with (tmp_path / "run" / "validation_predictions.csv").open(encoding="utf-8") as f:
        written = [r["predicted"] for r in csv.DictReader(f)]
    qa = lmtune.load(tmp_path / "run")
    records = qa.read_records(str(toy_files["validation"]))
    assert [a["answer"] for a in qa.predict_records(records)] == written


def test_windows_come_back_from_the_data_cache_as_they_were_made(tiny_bert, toy_files, tmp_path, monkeypatch):
    from lmtune.models.loading import load_tokenizer
    from lmtune.tasks import extractive_qa

    def encoded() -> tuple[ExtractiveQATask, object]:
        cfg = build_config(qa_config(tiny_bert, toy_files, tmp_path / "run", data={"cache_dir": str(tmp_path / "cache")}))
        task = ExtractiveQATask(cfg)
        task.load_data()
        tokenizer = load_tokenizer(cfg.model)
        task.load_model(tokenizer)
        return task, task.encode(tokenizer, 32)

    task, splits = encoded()
    memory = encode_windows(load_tokenizer(task.cfg.model), task.data.validation.examples, 32, 8, "validation")
    stored = task.windows["validation"]
    assert len(stored) == len(memory) > len(task.data.validation.examples)  # several windows for some questions
    assert [stored[i] for i in range(len(stored))] == [memory[i] for i in range(len(memory))]
    assert list(stored.example_of) == memory.example_of and list(stored.context_first) == memory.context_first
    assert [stored.spans[w] for w in range(len(stored))] == memory.spans
    start = np.random.default_rng(0).normal(size=(len(memory), 32))
    end = np.random.default_rng(1).normal(size=(len(memory), 32))
    assert pick_answers(stored, start, end, 5, 10) == pick_answers(memory, start, end, 5, 10)

    monkeypatch.setattr(extractive_qa, "window_rows", lambda *a: (_ for _ in ()).throw(AssertionError("tokenized again")))
    _, again = encoded()
    assert [again.train[i] for i in range(len(again.train))] == [splits.train[i] for i in range(len(splits.train))]
