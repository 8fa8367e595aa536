"""Extractive question answering (SQuAD style): the answer is a span of the context, found by an encoder.

The model reads `[CLS] question [SEP] context [SEP]` and scores every token as the start and as
the end of the answer (`AutoModelForQuestionAnswering`: one linear layer over the hidden states).

- **Data**: the official SQuAD JSON (every reference answer is kept for scoring; training uses
  the first), or rows of a CSV, TSV, JSON, JSONL or Parquet file with a question, a context and an
  answer (its text, or a SQuAD-style `{"text": [...], "answer_start": [...]}`), with an optional
  character offset. Without `data.validation`, whole articles (SQuAD) or contexts (rows) are held
  out, so that no context is seen in training and validation both.
- **Windows**: a context longer than `model.max_length` is cut into overlapping windows of tokens
  (`data.doc_stride` tokens of overlap), each holding the whole question. A training window that
  does not hold the whole answer is trained to point at the first token ([CLS]), as in the
  original BERT recipe.
- **Answers**: over all windows of a question, the span with the highest start + end logit among
  the `data.n_best` best starts and ends of each window, at most `data.max_answer_length` tokens
  long and inside the context; its text is the slice of the context between its characters.
- **Scores**: SQuAD exact match and token F1 against every reference, and the span loss.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from lmtune.data.batching import TOKENIZE_CHUNK, EncodedDataset, LengthGroupedBatchSampler, PadCollator
from lmtune.data.readers import Table, read_table
from lmtune.errors import ConfigError, DataError, ModelError
from lmtune.eval.evaluate import model_inputs
from lmtune.eval.text_metrics import exact_match, qa_metrics, token_f1
from lmtune.figures.markdown import cell, table
from lmtune.models.loading import from_pretrained
from lmtune.models.parts import find_parts
from lmtune.models.saving import base_model_config
from lmtune.progress import bar
from lmtune.schema import Config, DataConfig, ModelConfig
from lmtune.tasks.base import Batch, Evaluation, RunRecord, Splits, TryPanel, base_model_record

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("lmtune")

METRICS = ("exact_match", "f1", "loss")
DEFAULT_METRIC = "f1"
# A quarter of each window is kept for the question and the special tokens when the config is
# read; the room the real questions need is checked when they are tokenized (encode_windows).
QUESTION_SHARE = 4
CONTEXT_PREVIEW_CHARS = 80  # of each context in validation_predictions.csv
REPORT_ERRORS = 10  # wrong answers listed in report.md


class ExtractiveQASection(DataConfig):
    """`data` of task extractive_qa: a question, the context that holds its answer, and the answer."""

    question_column: str = Field("question", description="Column of the question (rows; SQuAD JSON names its own fields).")
    context_column: str = Field("context", description="Column of the text that holds the answer.")
    answer_column: str = Field(
        "answer", description="Column of the answer: its text, a list of reference texts, or SQuAD-style {text, answer_start} "
                              "(a dict of lists, or a list of dicts). Training uses the first answer; scores take the best."
    )
    answer_start_column: str | None = Field(
        "answer_start", description="Column of the answer's character offset in the context; optional: if the file has no such "
                                    "column, the answer's first occurrence in the context is used."
    )
    doc_stride: int = Field(128, gt=0, description="Tokens of overlap between the windows of a context longer than model.max_length.")
    max_answer_length: int = Field(30, gt=0, description="Longest answer predicted, in tokens.")
    n_best: int = Field(20, gt=0, description="Best start and end positions of each window among which the answer span is chosen.")


class ExtractiveQAConfig(Config):
    task: Literal["extractive_qa"] = "extractive_qa"
    data: ExtractiveQASection = Field(default_factory=ExtractiveQASection)

    @model_validator(mode="after")
    def _qa_checks(self) -> ExtractiveQAConfig:
        if self.eval.metric not in ("auto", *METRICS):
            raise ValueError(f"eval.metric={self.eval.metric!r} is not reported for task extractive_qa; choose one of "
                             f"{', '.join(METRICS)} (auto: {DEFAULT_METRIC})")
        if self.eval.generate:
            raise ValueError("eval.generate applies to tasks that generate text (causal_lm, translation); task extractive_qa "
                             "picks its answers from the context")
        if self.data.validation_split == 0 and not self.data.validation:
            raise ValueError("data.validation_split=0 leaves extractive_qa nothing to evaluate on; give data.validation or a split > 0")
        most = self.model.max_length - self.model.max_length // QUESTION_SHARE
        if self.data.doc_stride >= most:
            raise ValueError(
                f"data.doc_stride={self.data.doc_stride} leaves too little room in model.max_length={self.model.max_length} "
                f"for the question: each window holds the question, the special tokens and more than doc_stride context "
                f"tokens, so doc_stride must be below {most} (three quarters of max_length); a quarter to a half is usual"
            )
        return self


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAExample:
    question: str
    context: str
    answers: tuple[str, ...]  # reference texts; training uses the first; empty when only predicting
    starts: tuple[int, ...]  # character offset of each answer in the context
    group: str  # the article (SQuAD) or context it belongs to: a held-out validation set takes whole groups
    id: str = ""


@dataclass
class QAData:
    source: str
    examples: list[QAExample]
    group_word: str  # what a group is, for messages: "article" or "context"

    def head(self, n: int | None) -> QAData:
        return self if n is None else QAData(self.source, self.examples[:n], self.group_word)


def looks_like_squad(path: Path) -> bool:
    """A .json file that opens as an object with "data" or "version": the official SQuAD layout."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(200).lstrip().removeprefix(b"\xef\xbb\xbf")
    return head.startswith(b"{") and (b'"data"' in head or b'"version"' in head)


def read_qa(path: str, d: ExtractiveQASection, answers: bool = True) -> QAData:
    """Questions, contexts and (with `answers`) their checked answers, from SQuAD JSON or a table of rows."""
    p = Path(path)
    data = read_squad(p, answers) if looks_like_squad(p) else read_rows(read_table(path, header=d.header), d, answers)
    if not data.examples:
        raise DataError(f"{data.source}: holds no questions")
    return data


def read_squad(path: Path, answers: bool = True) -> QAData:
    """The official SQuAD JSON: one example per question; SQuAD 2.0's unanswerable questions are left out."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte offset {err.start}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    articles = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(articles, list):
        raise DataError(f"{path}: not a SQuAD file: expected an object whose \"data\" is a list of articles")
    examples: list[QAExample] = []
    unanswerable = 0
    for a, article in enumerate(articles, start=1):
        title = article.get("title", "") if isinstance(article, dict) else ""
        where_article = f"{path}: article {a}" + (f" ({title!r})" if title else "")
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{where_article}: expected an object with a \"paragraphs\" list")
        for p_number, para in enumerate(paragraphs, start=1):
            where_para = f"{where_article}, paragraph {p_number}"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise DataError(f"{where_para}: expected an object with \"context\" and a \"qas\" list")
            context = para.get("context")
            if not isinstance(context, str) or not context.strip():
                raise DataError(f"{where_para}: \"context\" is empty or not text")
            for q_number, qa in enumerate(para["qas"], start=1):
                qid = str(qa.get("id", "")) if isinstance(qa, dict) else ""
                where = f"{where_para}, question {q_number}" + (f" (id {qid})" if qid else "")
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(question, str) or not question.strip():
                    raise DataError(f"{where}: \"question\" is empty or not text")
                texts: list[str] = []
                starts: list[int] = []
                if answers:
                    given = qa.get("answers") or []
                    if not isinstance(given, list) or not all(isinstance(x, dict) for x in given):
                        raise DataError(f"{where}: \"answers\" must be a list of {{\"text\", \"answer_start\"}} objects")
                    if not given:
                        unanswerable += 1  # SQuAD 2.0 (is_impossible): no span to learn or score
                        continue
                    for x in given:
                        text, start = _checked_answer(context, x.get("text"), x.get("answer_start"), where)
                        texts.append(text)
                        starts.append(start)
                examples.append(QAExample(question, context, tuple(texts), tuple(starts), f"article {a}", qid))
    if unanswerable:
        log.warning("%s: %d questions without an answer (SQuAD 2.0 unanswerable questions) were left out: extractive_qa "
                    "always answers with a span", path, unanswerable)
    return QAData(str(path), examples, "article")


def read_rows(table: Table, d: ExtractiveQASection, answers: bool = True) -> QAData:
    """One example per row: question, context, answer text (or SQuAD-style answers) and optional offset."""
    if answers:  # data to train or score on; rows to predict are all kept, one answer each
        table = table.without_empty([d.question_column, d.context_column], d.on_empty)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    questions = table.column(d.question_column, "data.question_column")
    contexts = table.column(d.context_column, "data.context_column")
    answer_values = table.column(d.answer_column, "data.answer_column") if answers else [None] * len(table.rows)
    start_values: list[Any] = [None] * len(table.rows)
    # The default offset column is optional; a column the user named must be there.
    named = "answer_start_column" in d.model_fields_set
    if answers and d.answer_start_column is not None and (d.answer_start_column in table.columns or named):
        start_values = table.column(d.answer_start_column, "data.answer_start_column")
    ids = [str(v) for v in table.column("id", "id")] if "id" in table.columns else [""] * len(table.rows)
    examples: list[QAExample] = []
    repeated = 0
    for i in range(len(table.rows)):
        where = f"{table.source}: {table.where(i)}"
        question, context = questions[i], contexts[i]
        for column, value in ((d.question_column, question), (d.context_column, context)):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: {column!r} is empty or not text ({value!r})")
        texts: list[str] = []
        starts: list[int] = []
        if answers:
            for text, start in _answer_pairs(answer_values[i], start_values[i], d.answer_column, where):
                if start is None or start == "":
                    text = _answer_text(text, d.answer_column, where)
                    found = context.find(text)
                    if found < 0:
                        raise DataError(f"{where}: the answer {text!r} ({d.answer_column!r}) does not occur in its context "
                                        f"({d.context_column!r}: {context[:60]!r}...); an extractive answer must be a span of the context")
                    repeated += int(context.find(text, found + 1) >= 0)
                    start = found
                text, start = _checked_answer(context, text, start, where, d.answer_column)
                texts.append(text)
                starts.append(start)
        examples.append(QAExample(question, context, tuple(texts), tuple(starts), context, ids[i]))
    if repeated:
        log.info("%s: %d answers without an offset occur more than once in their context; the first occurrence was taken "
                 "(data.answer_start_column gives the offset)", table.source, repeated)
    return QAData(table.source, examples, "context")


def _answer_pairs(value: Any, start: Any, column: str, where: str) -> list[tuple[Any, Any]]:
    """(text, start) pairs of one row's answer cell: a text, a list of texts, {text, answer_start}, or a list of those."""
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if isinstance(texts, list):
            starts = starts if isinstance(starts, list) else [None] * len(texts)
            if len(starts) != len(texts):
                raise DataError(f"{where}: {column!r} has {len(texts)} answer texts but {len(starts)} answer_start values")
            pairs = list(zip(texts, starts))
        else:
            pairs = [(texts, starts)]
    elif isinstance(value, list):
        pairs = [(v.get("text"), v.get("answer_start")) if isinstance(v, dict) else (v, None) for v in value]
        if len(pairs) == 1 and start is not None:
            pairs = [(pairs[0][0], pairs[0][1] if pairs[0][1] is not None else start)]
    else:
        pairs = [(value, start)]
    if not pairs:
        raise DataError(f"{where}: {column!r} holds no answer")
    return pairs


def _answer_text(text: Any, column: str, where: str) -> str:
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)  # a JSON number such as 1999, which the context spells as text
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: the answer ({column!r}) is empty or not text ({text!r})")
    return text


def _offset(start: Any) -> int | None:
    """A character offset from an int, a whole float (Parquet) or a text cell (CSV); None if it is none of these."""
    if isinstance(start, str):
        try:
            start = float(start.strip())
        except ValueError:
            return None
    if isinstance(start, float) and start.is_integer():
        return int(start)
    return start if isinstance(start, int) and not isinstance(start, bool) else None


def _checked_answer(context: str, text: Any, start: Any, where: str, column: str = "answers") -> tuple[str, int]:
    """The answer text and its offset, checked to be exactly that slice of the context."""
    text = _answer_text(text, column, where)
    offset = _offset(start)
    if offset is None or offset < 0:
        raise DataError(f"{where}: answer_start {start!r} is not a character offset (a whole number >= 0)")
    found = context[offset : offset + len(text)]
    if found != text:
        elsewhere = context.find(text)
        hint = f"the answer occurs at offset {elsewhere}" if elsewhere >= 0 else "the answer does not occur in the context at all"
        raise DataError(f"{where}: answer_start={offset} does not point at the answer {text!r}: the context has {found!r} "
                        f"there ({hint}); an extractive answer must be that exact slice of the context")
    return text, offset


def split_by_group(data: QAData, fraction: float, seed: int) -> tuple[QAData, QAData]:
    """Hold out about `fraction` of the questions in whole articles (or contexts), seeded: no context is in both splits.

    Groups are taken in a seeded random order, each one that still fits in the target count, so
    that one large article cannot make the validation set much bigger than asked.
    """
    sizes = Counter(e.group for e in data.examples)
    groups = list(sizes)  # in the order of the file
    if len(groups) < 2:
        raise DataError(f"{data.source}: every question shares one {data.group_word}, so no {data.group_word} can be held out "
                        f"for validation without training on it too; give data.validation")
    random.Random(seed).shuffle(groups)
    target = round(len(data.examples) * fraction)
    held: set[str] = set()
    count = 0
    for group in groups[:-1]:  # at least one group stays for training
        if count + sizes[group] <= target:
            held.add(group)
            count += sizes[group]
    if not held:  # every group is larger than the target: the smallest one
        smallest = min(groups, key=lambda g: sizes[g])
        held, count = {smallest}, sizes[smallest]
    train = [e for e in data.examples if e.group not in held]
    validation = [e for e in data.examples if e.group in held]
    log.info("no data.validation given: held out %d of %d questions (%d of %d %ss, seed %d); no context is in both splits",
             len(validation), len(data.examples), len(held), len(groups), data.group_word, seed)
    return QAData(data.source, train, data.group_word), QAData(data.source, validation, data.group_word)


# --- windows ---------------------------------------------------------------------------------


class WindowDataset(EncodedDataset):
    """Token windows of question + context. `target` is the answer's [start, end] token pair
    ([0, 0], the first token, when the window does not hold the whole answer); each window also
    knows its example and the character span of each of its context tokens."""

    def __init__(self, input_ids: list[list[int]], targets: list[list[int]], token_type_ids: list[list[int]] | None,
                 example_of: list[int], context_first: list[int], spans: list[list[tuple[int, int]]], examples: list[QAExample]):
        super().__init__(input_ids, targets, token_type_ids)
        self.example_of = example_of  # window -> index of its example
        self.context_first = context_first  # window -> token position of its first context token
        self.spans = spans  # window -> (char start, char end) of each of its context tokens
        self.examples = examples


def answer_tokens(spans: list[tuple[int, int]], first: int, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of the characters [start_char, end_char) in a window whose context tokens
    (with character `spans`) begin at position `first`; (0, 0) when the window does not hold them all."""
    if not spans or spans[0][0] > start_char or spans[-1][1] < end_char:
        return 0, 0
    start = max(i for i, (lo, _) in enumerate(spans) if lo <= start_char)
    end = min(i for i, (_, hi) in enumerate(spans) if hi >= end_char)
    return first + start, first + max(end, start)


def fit_questions(tokenizer: PreTrainedTokenizerBase, questions: list[str], most: int, name: str) -> list[str]:
    """Questions cut to `most` tokens, so that every window keeps more than doc_stride context tokens."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out, cut = [], 0
    for question, offsets in zip(questions, enc["offset_mapping"]):
        if len(offsets) > most:
            question, cut = question[: offsets[most - 1][1]], cut + 1
        out.append(question)
    if cut:
        log.warning("%s: %d questions were longer than %d tokens and were cut to that length, so that each window keeps "
                    "more than data.doc_stride context tokens", name, cut, most)
    return out


def encode_windows(tokenizer: PreTrainedTokenizerBase, examples: list[QAExample], max_length: int, doc_stride: int,
                   name: str) -> WindowDataset:
    """Every example as one or more windows of at most max_length tokens, overlapping by doc_stride context tokens."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    most = max_length - specials - doc_stride - 1  # question tokens that leave each window doc_stride + 1 context tokens
    if most < 1:
        raise ConfigError(f"data.doc_stride={doc_stride} is too large for max_length={max_length} (the model's limit applied): "
                          f"a window of {max_length} tokens holds {specials} special tokens, the question and more than "
                          f"doc_stride context tokens; lower data.doc_stride (e.g. to {max(1, max_length // 4)})")
    questions = fit_questions(tokenizer, [e.question for e in examples], most, name)
    with_types = "token_type_ids" in tokenizer.model_input_names
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if with_types else None
    targets: list[list[int]] = []
    example_of: list[int] = []
    firsts: list[int] = []
    spans: list[list[tuple[int, int]]] = []
    with bar(total=len(examples), desc="tokenize", unit="questions") as progress:
        for begin in range(0, len(examples), TOKENIZE_CHUNK):  # in chunks, so that the bar moves
            chunk = examples[begin : begin + TOKENIZE_CHUNK]
            enc = tokenizer(
                questions[begin : begin + TOKENIZE_CHUNK], [e.context for e in chunk], truncation="only_second",
                max_length=max_length, stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
            )
            for w, sample in enumerate(enc["overflow_to_sample_mapping"]):
                sequence = enc.sequence_ids(w)
                if 1 not in sequence:
                    raise ModelError(f"the tokenizer left no context token in a window of {name} (question {begin + sample + 1}); "
                                     f"extractive_qa needs a tokenizer that encodes (question, context) pairs")
                first = sequence.index(1)
                last = len(sequence) - 1 - sequence[::-1].index(1)
                window_spans = [(int(lo), int(hi)) for lo, hi in enc["offset_mapping"][w][first : last + 1]]
                example = chunk[sample]
                target = (0, 0)
                if example.answers:
                    target = answer_tokens(window_spans, first, example.starts[0], example.starts[0] + len(example.answers[0]))
                ids.append(enc["input_ids"][w])
                if types is not None:
                    types.append(enc["token_type_ids"][w])
                targets.append(list(target))
                example_of.append(begin + sample)
                firsts.append(first)
                spans.append(window_spans)
            progress.update(len(chunk))
    windows = WindowDataset(ids, targets, types, example_of, firsts, spans, examples)
    long = sum(1 for n in Counter(example_of).values() if n > 1)
    log.info("%s: %d questions became %d windows of at most %d tokens (%d questions' contexts span several; doc_stride %d)",
             name, len(examples), len(ids), max_length, long, doc_stride)
    if examples and examples[0].answers:
        outside = sum(1 for t in targets if t == [0, 0])
        if outside:
            log.info("%s: %d of %d windows do not hold the whole answer and point at the first token", name, outside, len(ids))
    return windows


# --- spans -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offsets into the context: text == context[start:end]
    end: int
    score: float  # start logit + end logit of the span (-inf: no valid span)


def best_window_span(start_logits: np.ndarray, end_logits: np.ndarray, first: int, count: int, n_best: int,
                     max_answer_length: int) -> tuple[float, int, int] | None:
    """The best (score, start, end) token span of one window whose `count` context tokens begin at `first`.

    Candidates are the n_best starts and the n_best ends among the context tokens; a span is valid
    when start <= end and it is at most max_answer_length tokens long. None when no pair is valid.
    """
    starts_all = start_logits[first : first + count]  # (C,)
    ends_all = end_logits[first : first + count]  # (C,)
    k = min(n_best, count)
    starts = np.argsort(-starts_all, kind="stable")[:k]  # (k,)
    ends = np.argsort(-ends_all, kind="stable")[:k]  # (k,)
    length = ends[None, :] - starts[:, None] + 1  # (k, k)
    valid = (length >= 1) & (length <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, starts_all[starts][:, None] + ends_all[ends][None, :], -np.inf)  # (k, k)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), first + int(starts[i]), first + int(ends[j])


def pick_answers(windows: WindowDataset, start_logits: np.ndarray, end_logits: np.ndarray, n_best: int,
                 max_answer_length: int) -> list[Answer]:
    """The best span over all windows of each example, as text of its context. Logits: (windows, T), in window order."""
    chosen = [Answer("", 0, 0, float("-inf")) for _ in windows.examples]  # what is left where no window has a valid span
    for w, example in enumerate(windows.example_of):
        first, spans = windows.context_first[w], windows.spans[w]
        span = best_window_span(start_logits[w], end_logits[w], first, len(spans), n_best, max_answer_length)
        if span is None or span[0] <= chosen[example].score:  # an earlier window wins a tie
            continue
        lo, hi = spans[span[1] - first][0], spans[span[2] - first][1]
        chosen[example] = Answer(windows.examples[example].context[lo:hi], lo, hi, span[0])
    return chosen


def span_losses(start_logits: torch.Tensor, end_logits: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per window: the mean of the start and end cross-entropies over its real tokens (padding is no candidate). (B,)"""
    pad = attention_mask == 0  # (B, T)
    start = start_logits.float().masked_fill(pad, float("-inf"))  # (B, T)
    end = end_logits.float().masked_fill(pad, float("-inf"))  # (B, T)
    return (F.cross_entropy(start, target[:, 0], reduction="none") + F.cross_entropy(end, target[:, 1], reduction="none")) / 2


@torch.no_grad()
def window_logits(model: nn.Module, loader: Iterable[Batch], accelerator: Accelerator | None, width: int,
                  with_loss: bool) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Start and end logits of every window, in window order whatever the batch order, padded to
    `width` with -inf; and the mean span loss (with_loss: the windows carry their targets)."""
    was_training = model.training
    model.eval()
    starts, ends, losses, indices = [], [], [], []
    for batch in bar(loader, desc="evaluate", unit="batches"):
        out = model(**model_inputs(batch))
        start, end = out.start_logits.float(), out.end_logits.float()  # (B, T)
        loss = span_losses(start, end, batch["attention_mask"], batch["target"]) if with_loss else torch.zeros_like(start[:, 0])
        pad = width - start.shape[1]  # every batch to one width, so that processes can gather them
        start = F.pad(start, (0, pad), value=float("-inf"))  # (B, width)
        end = F.pad(end, (0, pad), value=float("-inf"))  # (B, width)
        index = batch["index"]
        if accelerator is not None:  # drops the samples repeated to even out the last batch
            start, end, loss, index = accelerator.gather_for_metrics((start, end, loss, index))
        starts.append(start.cpu())
        ends.append(end.cpu())
        losses.append(loss.cpu())
        indices.append(index.cpu())
    if was_training:
        model.train()
    order = torch.cat(indices).argsort()
    all_losses = torch.cat(losses)
    mean_loss = float(all_losses.mean()) if with_loss and len(all_losses) else None
    return torch.cat(starts)[order].numpy(), torch.cat(ends)[order].numpy(), mean_loss


def answer_windows(model: nn.Module, loader: Iterable[Batch], accelerator: Accelerator | None, windows: WindowDataset,
                   n_best: int, max_answer_length: int, with_loss: bool) -> tuple[list[Answer], float | None]:
    """The answer of each example of `windows` and the mean span loss over its windows."""
    start, end, loss = window_logits(model, loader, accelerator, max(windows.lengths), with_loss)
    if len(start) != len(windows):
        raise RuntimeError(f"the evaluation returned {len(start)} windows of {len(windows)}")
    return pick_answers(windows, start, end, n_best, max_answer_length), loss


# --- the task --------------------------------------------------------------------------------


def load_qa_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> nn.Module:
    """The pretrained encoder with a fresh start/end head (AutoModelForQuestionAnswering), in fp32."""
    from transformers import AutoModelForQuestionAnswering

    if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"task extractive_qa needs a fast tokenizer (one backed by the tokenizers library, with a tokenizer.json): it maps "
            f"answers to tokens through character offsets, which only fast tokenizers give. The tokenizer of {cfg.name_or_path} "
            f"is {type(tokenizer).__name__}, a slow one; convert it (AutoTokenizer.from_pretrained(..., use_fast=True), then "
            f"save_pretrained) or choose a model that ships a fast tokenizer"
        )
    return from_pretrained(AutoModelForQuestionAnswering, cfg, torch.float32)


@dataclass
class QASplits:
    train: QAData
    validation: QAData
    test: QAData | None


class ExtractiveQATask:
    name: ClassVar[str] = "extractive_qa"
    config_class: ClassVar[type[Config]] = ExtractiveQAConfig
    predict_inputs: ClassVar[dict[str, str]] = {
        "question": "extractive_qa: a question to answer from its --context (repeatable, paired in order)",
        "context": "extractive_qa: the text that holds the answer to the --question given with it (repeatable)",
    }
    predict_endpoint: ClassVar[str] = "answer"  # lmtune serve: POST /v1/answer
    has_labels: ClassVar[bool] = False
    try_panel: ClassVar[TryPanel] = "predict"

    def __init__(self, cfg: Config):
        assert isinstance(cfg, ExtractiveQAConfig)
        self.cfg: ExtractiveQAConfig = cfg
        self.data: QASplits | None = None
        self.new_head: list[str] = []
        self.metric = DEFAULT_METRIC if cfg.eval.metric == "auto" else cfg.eval.metric  # checked by ExtractiveQAConfig
        self.greater_is_better = self.metric != "loss"
        self.windows: dict[str, WindowDataset] = {}  # encoded splits, by name
        self._collate: PadCollator | None = None

    def load_data(self) -> None:
        d = self.cfg.data
        train = read_qa(d.train, d).head(d.max_train_examples)
        if d.validation:
            validation = read_qa(d.validation, d).head(d.max_eval_examples)
        else:
            train, validation = split_by_group(train, d.validation_split, self.cfg.train.seed)
        test = read_qa(d.test, d).head(d.max_eval_examples) if d.test else None
        self.data = QASplits(train, validation, test)

    def load_model(self, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
        model = load_qa_model(self.cfg.model, tokenizer)
        self.new_head = find_parts(model).head  # qa_outputs
        self._collate = PadCollator(tokenizer.pad_token_id, torch.long)
        return model

    def peft_task_type(self) -> str:
        return "QUESTION_ANS"

    def prepare_model(self, model: nn.Module) -> None:
        """Nothing to trim: the head reads every position."""

    def encode(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Splits:
        assert self.data is not None
        d = self.cfg.data
        for name, data in (("train", self.data.train), ("validation", self.data.validation), ("test", self.data.test)):
            if data is not None:
                self.windows[name] = encode_windows(tokenizer, data.examples, max_length, d.doc_stride, name)
        train, validation = self.windows["train"], self.windows["validation"]
        counts = {"train_examples": len(train.examples), "validation_examples": len(validation.examples),  # questions
                  "train_windows": len(train), "validation_windows": len(validation)}  # what the model reads
        return Splits(train, validation, self.windows.get("test"), counts)

    def data_fingerprint(self) -> Any:
        assert self.data is not None

        def record(data: QAData) -> list[Any]:
            return [[e.question, e.context, list(e.answers), list(e.starts)] for e in data.examples]

        return [record(self.data.train), record(self.data.validation)]

    def collate(self, items: list[dict[str, Any]]) -> Batch:
        assert self._collate is not None
        return self._collate(items)  # target: (B, 2) start and end token positions

    def units(self, batch: Batch) -> int:
        return int(batch["input_ids"].shape[0])  # windows

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        out = model(**model_inputs(batch))
        return span_losses(out.start_logits, out.end_logits, batch["attention_mask"], batch["target"]).sum(), self.units(batch)

    def evaluate(self, model: nn.Module, loader: Iterable[Batch], accelerator: Accelerator | None, generate: bool = False,
                 split: str = "validation") -> Evaluation:
        windows = self.windows[split]
        d = self.cfg.data
        answers, loss = answer_windows(model, loader, accelerator, windows, d.n_best, d.max_answer_length, with_loss=True)
        metrics: dict[str, Any] = {"loss": loss, **qa_metrics([a.text for a in answers], [list(e.answers) for e in windows.examples])}
        return Evaluation(metrics, predictions=functools.partial(prediction_rows, windows.examples, answers))

    @classmethod
    def report(cls, run: RunRecord, plots: Path) -> tuple[str, list[Path]]:
        """The kept model's wrong answers on validation questions, beside their references."""
        rows = run.predictions
        if not rows or "predicted" not in rows[0]:
            return "", []
        wrong = [r for r in rows if float(r.get("exact_match") or 0) < 1]
        parts = [f"## Answers of the kept model\n\n{len(rows) - len(wrong):,} of {len(rows):,} validation questions answered "
                 f"exactly as a reference (after SQuAD's normalization)."]
        if wrong:
            shown: list[tuple[str, ...]] = [(cell(r["question"], 120), cell(r["reference"], 80), cell(r["predicted"], 80), cell(r["f1"]))
                     for r in wrong[:REPORT_ERRORS]]
            parts.append(f"The first {len(shown)} questions it answered wrongly or in part:\n\n"
                         + table(["Question", "Reference", "Predicted", "F1"], shown))
        parts.append("Every validation question with its predicted answer is in `validation_predictions.csv`.")
        return "\n\n".join(parts), []

    def meta(self, max_length: int) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "task": self.name,
            "question_column": d.question_column,
            "context_column": d.context_column,
            "answer_column": d.answer_column,
            "answer_start_column": d.answer_start_column,
            "header": d.header,
            "max_length": max_length,
            "doc_stride": d.doc_stride,
            "max_answer_length": d.max_answer_length,
            "n_best": d.n_best,
            "method": self.cfg.method.name,
            "base_model": base_model_record(self.cfg),
        }

    @classmethod
    def load_predictor(cls, folder: Path, meta: dict[str, Any], device: str) -> QuestionAnswerer:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        if meta.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_qa_model(base_model_config(meta), tokenizer), folder)
        else:
            model = AutoModelForQuestionAnswering.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        return QuestionAnswerer(model.to(device), tokenizer, meta, folder)


def prediction_rows(examples: list[QAExample], answers: list[Answer]) -> list[dict[str, Any]]:
    """One row per question for SPLIT_predictions.csv: the question, where its context starts, references and answer."""
    rows = []
    for i, (e, a) in enumerate(zip(examples, answers)):
        context = e.context if len(e.context) <= CONTEXT_PREVIEW_CHARS else e.context[: CONTEXT_PREVIEW_CHARS - 1] + "…"
        references = list(dict.fromkeys(e.answers))
        rows.append({
            "row": i, "id": e.id, "question": e.question, "context": context, "reference": " | ".join(references),
            "predicted": a.text, "start": a.start, "score": round(a.score, 4),
            "exact_match": exact_match(a.text, references), "f1": round(token_f1(a.text, references), 4),
        })
    return rows


class QuestionAnswerer:
    """A fine-tuned extractive QA model: `predict(questions, contexts)` gives each answer as a span of its context."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, meta: dict[str, Any], folder: Path | None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.folder = folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def section(self) -> ExtractiveQASection:
        """The training run's data keys that say how a file is read."""
        m = self.meta
        columns = {key: m[key] for key in ("question_column", "context_column", "answer_column", "answer_start_column")}
        if columns["answer_start_column"] == ExtractiveQASection.model_fields["answer_start_column"].default:
            del columns["answer_start_column"]  # left at its default it is optional: a file without it is searched
        return ExtractiveQASection(**columns, header=m.get("header", True))

    def _answers(self, examples: list[QAExample], batch_size: int, with_loss: bool) -> tuple[list[Answer], float | None]:
        m = self.meta
        windows = encode_windows(self.tokenizer, examples, m["max_length"], m["doc_stride"], "predict")
        collate, device = PadCollator(self.tokenizer.pad_token_id, torch.long), self.device

        def to_device(items: list[dict[str, Any]]) -> Batch:
            return {k: v.to(device) for k, v in collate(items).items()}

        sampler = LengthGroupedBatchSampler(windows.lengths, batch_size, seed=0, shuffle=False)
        loader = torch.utils.data.DataLoader(windows, batch_sampler=sampler, collate_fn=to_device)
        return answer_windows(self.model, loader, None, windows, m["n_best"], m["max_answer_length"], with_loss)

    def predict(self, questions: list[str] | str, contexts: list[str] | str, batch_size: int = 32) -> list[dict[str, Any]]:
        """One dict per question: `answer` (the text), `start` and `end` (its characters in the context) and `score`."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        contexts = [contexts] if isinstance(contexts, str) else list(contexts)
        if len(questions) != len(contexts):
            raise DataError(f"{len(questions)} questions but {len(contexts)} contexts: give one context per question")
        for what, values in (("question", questions), ("context", contexts)):
            empty = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
            if empty:
                raise DataError(f"{what} {empty[0] + 1} of {len(values)} is empty or not text ({values[empty[0]]!r}); "
                                f"extractive_qa needs a question and a context to find its answer in")
        examples = [QAExample(q, c, (), (), str(i)) for i, (q, c) in enumerate(zip(questions, contexts))]
        answers, _ = self._answers(examples, batch_size, with_loss=False)
        # score None: no window had a valid span (the answer is then empty)
        return [{"answer": a.text, "start": a.start, "end": a.end, "score": a.score if math.isfinite(a.score) else None}
                for a in answers]

    @property
    def input_fields(self) -> list[str]:
        """What each record of `predict_records` holds."""
        return ["question", "context"]

    def read_records(self, path: str) -> list[dict[str, str]]:
        """`lmtune predict --input`: the questions and contexts of a data file (SQuAD JSON or rows), read as in training."""
        data = read_qa(path, self.section, answers=False)
        return [{**({"id": e.id} if e.id else {}), "question": e.question, "context": e.context} for e in data.examples]

    def predict_records(self, records: list[dict[str, str]], batch_size: int = 32) -> list[dict[str, Any]]:
        """`lmtune predict`: the answer of each record of `question` and `context`."""
        return self.predict([r["question"] for r in records], [r["context"] for r in records], batch_size)

    def evaluate(self, path: str, batch_size: int = 32, **ignored: Any) -> dict[str, Any]:
        """Exact match, F1 and span loss on a data file with answers, read with the training run's columns.

        Options of generating tasks (max_generate, max_new_tokens) do not apply and are ignored.
        """
        examples = read_qa(path, self.section).examples
        answers, loss = self._answers(examples, batch_size, with_loss=True)
        return {**qa_metrics([a.text for a in answers], [list(e.answers) for e in examples]), "loss": loss,
                "examples": len(examples)}
