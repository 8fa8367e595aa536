"""Scores of generated text against references: pure functions `(predictions, references) -> dict`.

- Question answering: exact match and token F1 after SQuAD's normalization (lower case, no
  punctuation, no English articles, single spaces), the best over each question's references,
  averaged; both in [0, 1] like lmtune's other rates.
- Translation: corpus BLEU and chrF from sacrebleu, on sacrebleu's 0-100 scale, so the numbers
  compare with published ones. Chinese, Japanese and Korean targets use sacrebleu's tokenizers
  for those languages (BLEU on untokenized CJK text would count whole sentences as one word).
- Language modelling: perplexity, the exponential of the mean token loss.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
BLEU_TOKENIZERS = {"zh": "zh", "cmn": "zh", "chinese": "zh", "mandarin": "zh", "ja": "ja-mecab", "japanese": "ja-mecab",
                   "ko": "ko-mecab", "korean": "ko-mecab"}


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: list[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in references))


def token_f1(prediction: str, references: list[str]) -> float:
    return max(_f1(normalize_answer(prediction).split(), normalize_answer(ref).split()) for ref in references)


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)  # both empty: a match; one empty: none
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def qa_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    _check(predictions, references)
    n = len(predictions)
    return {
        "exact_match": sum(exact_match(p, r) for p, r in zip(predictions, references)) / n,
        "f1": sum(token_f1(p, r) for p, r in zip(predictions, references)) / n,
    }


def translation_metrics(predictions: list[str], references: list[list[str]], target_lang: str | None = None) -> dict[str, float]:
    """Corpus BLEU and chrF; each prediction may have several references."""
    import sacrebleu

    _check(predictions, references)
    width = max(len(r) for r in references)
    # sacrebleu takes reference *streams*: stream k holds the k-th reference of every sentence.
    streams = [[r[k] if k < len(r) else r[0] for r in references] for k in range(width)]
    lang = (target_lang or "").lower().split("-")[0].split("_")[0]
    try:
        bleu = sacrebleu.corpus_bleu(predictions, streams, tokenize=BLEU_TOKENIZERS.get(lang, "13a"))
    except ImportError:  # the Japanese and Korean tokenizers need MeCab; characters are the fallback
        bleu = sacrebleu.corpus_bleu(predictions, streams, tokenize="char")
    chrf = sacrebleu.corpus_chrf(predictions, streams)
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


def perplexity(mean_token_loss: float) -> float:
    return math.exp(mean_token_loss) if mean_token_loss < 700 else math.inf  # exp overflows past ~709


def _check(predictions: list[str], references: list[list[str]]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference")
