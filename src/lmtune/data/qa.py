"""Extractive QA data: questions, their contexts and answers, from the official SQuAD JSON or from rows.

Every reference answer is kept for scoring; training uses the first. A row's answer is its text,
a list of reference texts, or SQuAD-style `{"text": [...], "answer_start": [...]}`, with an
optional character offset (else its first occurrence in the context). A held-out validation set
takes whole articles (SQuAD) or contexts (rows), so that no context is in both splits.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from lmtune.data.readers import Table, read_table
from lmtune.errors import DataError
from lmtune.schema import CachedDataConfig

log = logging.getLogger("lmtune")


class ExtractiveQASection(CachedDataConfig):
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

