"""data.redact: personal data replaced by typed placeholders as the data is read; ordinary text left byte for byte."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_config, train_refused
from lmtune.data.redact import KINDS, Redactor
from toy import toy_rows, write_csv

ALL = Redactor(KINDS, {"EMPLOYEE": r"\bE\d{6}\b"})


def luhn_complete(digits: str) -> str:
    """digits with the Luhn check digit appended."""
    total = 0
    for i, d in enumerate(reversed(digits + "0")):
        n = int(d)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return digits + str((10 - total % 10) % 10)


def iban_of(country_bban: tuple[str, str]) -> str:
    from stdnum import iban

    country, bban = country_bban
    return country + iban.calc_check_digits(country + "00" + bban) + bban


cards = st.builds(lambda first, rest: luhn_complete(first + rest), st.sampled_from("3456"),
                  st.text("0123456789", min_size=14, max_size=14))
ibans = st.tuples(st.just("DE"), st.text("0123456789", min_size=18, max_size=18)).map(iban_of)
phones = st.builds(lambda area, line: f"+1 {area}-555-{line}", st.sampled_from(["212", "415", "650", "617"]),
                   st.text("0123456789", min_size=4, max_size=4))
ipv4s = st.ip_addresses(v=4).map(str)
emails = st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]@[a-z]{2,8}\.(com|org|de|io)", fullmatch=True)
urls = st.from_regex(r"https://[a-z]{3,10}\.com/[a-z0-9]{0,8}", fullmatch=True)
words = st.text(string.ascii_letters + " ,;'-", min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.one_of(cards.map(lambda v: (v, "CREDIT_CARD")), ibans.map(lambda v: (v, "IBAN")), phones.map(lambda v: (v, "PHONE")),
                 ipv4s.map(lambda v: (v, "IP")), emails.map(lambda v: (v, "EMAIL")), urls.map(lambda v: (v, "URL"))), words, words)
def test_a_generated_item_is_always_replaced_and_the_text_around_it_kept(item, before, after):
    value, name = item
    text = f"{before} {value} {after}"
    assert ALL(text) == f"{before} <{name}> {after}"


@settings(max_examples=200, deadline=None)
@given(st.text(string.ascii_letters + string.digits[:4] + " .,;:!?'\"()-\n", max_size=200))
def test_ordinary_text_is_left_byte_identical(text):
    # letters, short numbers (never 7 digits in a row: no phone, card or IP can form) and punctuation
    redactor = Redactor(KINDS)
    assert redactor(text) == text and not redactor.counts


def test_what_is_not_personal_data_stays():
    text = "In 2024 we sold 1,234 units at 10:30 for $99.95; order 4111-1111 (too short), card 4111 1111 1111 1112 (bad Luhn)."
    assert Redactor(KINDS)(text) == text
    assert Redactor(KINDS)("write to a@b.co now") == "write to <EMAIL> now"
    r = Redactor(["email"], {"EMPLOYEE": r"\bE\d{6}\b"})
    assert r("E123456 at https://x.com/a") == "<EMPLOYEE> at https://x.com/a"  # only what was asked for
    assert dict(r.counts) == {"EMPLOYEE": 1}


def pii_rows(n: int, seed: int) -> list[dict]:
    rows = toy_rows(n, seed)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["text"] = f"{row['text']} mail jo{i}@example.com"
    return rows


def test_a_classification_run_trains_on_redacted_text_and_counts_it(tiny_models, tmp_path):
    files = {"train": write_csv(tmp_path / "train.csv", pii_rows(120, 1)), "validation": write_csv(tmp_path / "val.csv", pii_rows(30, 2))}
    before = files["train"].read_bytes()
    cfg = make_config(tiny_models["bert"], files, tmp_path / "run", data={"redact": ["email"]}, train={"epochs": 1})
    import lmtune

    result = lmtune.train(cfg, progress=False)
    assert result.metrics["redacted"] == {"EMAIL": 40 + 10}
    assert files["train"].read_bytes() == before  # the data file is never changed
    assert "data.redact: " + str(files["train"]) + ": replaced 40 EMAIL" in (tmp_path / "run/train.log").read_text()
    assert "50 EMAIL replaced by `<NAME>`" in (tmp_path / "run/report.md").read_text()
    predictions = (tmp_path / "run/validation_predictions.csv").read_text()
    assert "<EMAIL>" in predictions and "@example.com" not in predictions


def test_a_language_model_never_reads_the_redacted_values(tiny_lms, identity_data, tmp_path):
    from lmtune.config import build_config
    from lmtune.models.loading import load_tokenizer
    from lmtune.tasks.causal_lm import CausalLMTask

    rows = json.loads(identity_data["train"].read_text())
    rows = [{**r, "output": r["output"] + " call +1 212-555-0199"} for r in rows]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    cfg = build_config(make_config(tiny_lms["llama"], {"train": tmp_path / "train.json", "validation": identity_data["validation"]},
                                   tmp_path / "run", "causal_lm", data={"redact": True}))
    task = CausalLMTask(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    task.load_model(tokenizer)
    splits = task.encode(task.tokenizer, 64)
    assert splits.redacted == {"PHONE": len(rows)}
    decoded = task.tokenizer.decode(splits.train[0]["input_ids"])
    assert "555" not in decoded


@pytest.mark.parametrize(("data", "says"), [
    ({"redact_patterns": {"ID": "("}}, "is not a regular expression"),
    ({"redact_patterns": {"bad name": "x"}}, "must be a word"),
    ({"redact": ["email", "ssn"]}, "data.redact"),
    ({"redact": True, "redact_region": "XX"}, "data.redact_region"),
])
def test_bad_redaction_settings_are_refused(tiny_models, toy_data, tmp_path, capsys, data, says):
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run", data=data)
    assert says in train_refused(cfg, tmp_path, capsys)


def test_extractive_qa_refuses_redaction(tmp_path, capsys, tiny_models):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"context": "a b", "question": "a?", "answers": {"text": ["a"], "answer_start": [0]}}) + "\n")
    cfg = make_config(tiny_models["bert"], {"train": tmp_path / "qa.jsonl", "validation": tmp_path / "qa.jsonl"}, tmp_path / "run",
                      "extractive_qa", data={"redact": True, "doc_stride": 8})
    assert "character offsets" in train_refused(cfg, tmp_path, capsys)
