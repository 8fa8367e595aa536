"""Generation metrics equal hand-computed values."""

from __future__ import annotations

import math

import pytest

from lmtune.eval.text_metrics import exact_match, normalize_answer, perplexity, qa_metrics, token_f1, translation_metrics


def test_squad_normalization():
    assert normalize_answer("  The Denver   Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # 'the' only as a whole word


def test_exact_match_takes_the_best_reference():
    assert exact_match("denver broncos", ["Carolina Panthers", "The Denver Broncos."]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos"]) == 0.0


def test_token_f1_by_hand():
    # pred tokens [denver, broncos, team], ref [denver, broncos]: 2 common, P = 2/3, R = 1, F1 = 0.8
    assert token_f1("the Denver Broncos team", ["Denver Broncos"]) == pytest.approx(0.8)
    assert token_f1("panthers", ["Denver Broncos"]) == 0.0
    # the better of two references: [broncos] vs [denver, broncos] gives P = 1, R = 1/2, F1 = 2/3
    assert token_f1("broncos", ["Carolina", "Denver Broncos"]) == pytest.approx(2 / 3)


def test_qa_metrics_average_over_questions():
    scores = qa_metrics(["Denver Broncos", "the Denver Broncos team"], [["Denver Broncos"], ["Denver Broncos"]])
    assert scores == {"exact_match": 0.5, "f1": pytest.approx((1.0 + 0.8) / 2)}


def test_bleu_by_hand():
    # same length (no brevity penalty); clipped n-gram precisions 5/6, 3/5, 2/4, 1/3
    scores = translation_metrics(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert scores["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    assert 0 < scores["chrf"] < 100


def test_identical_and_chinese_translations():
    assert translation_metrics(["我爱你。"], [["我爱你。"]], target_lang="zh") == {"bleu": pytest.approx(100.0), "chrf": 100.0}
    # untokenized Chinese is one "word" to the default tokenizer; the zh tokenizer splits characters
    zh = translation_metrics(["我爱你们"], [["我爱你"]], target_lang="cmn")["bleu"]
    assert zh > 0 and translation_metrics(["我爱你们"], [["我爱你"]])["bleu"] == 0


def test_several_references_per_sentence():
    one = translation_metrics(["the cat sat on the mat"], [["a cat sat on a mat"]])["bleu"]
    two = translation_metrics(["the cat sat on the mat"], [["a cat sat on a mat", "the cat sat on the mat"]])["bleu"]
    assert two == pytest.approx(100.0) and one < two


def test_perplexity():
    assert perplexity(math.log(12.5)) == pytest.approx(12.5)
    assert perplexity(1e4) == math.inf
