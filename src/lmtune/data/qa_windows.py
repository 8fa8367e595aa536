"""Extractive QA questions as windows of tokens: `[CLS] question [SEP] context [SEP]`, at most max_length long.

A context longer than a window is cut into overlapping windows (`data.doc_stride` tokens of
overlap), each holding the whole question. A training window that does not hold the whole answer
is trained to point at the first token ([CLS]), as in the original BERT recipe.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, overload

from lmtune.data.batching import TOKENIZE_CHUNK, EncodedDataset
from lmtune.data.qa import QAExample
from lmtune.data.store import TokenStore, write_arrow
from lmtune.errors import ConfigError, ModelError
from lmtune.progress import bar

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("lmtune")


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


def window_rows(tokenizer: PreTrainedTokenizerBase, examples: list[QAExample], max_length: int, doc_stride: int,
                name: str) -> Iterator[dict[str, Any]]:
    """Every example as one or more windows of at most max_length tokens, overlapping by doc_stride context tokens, one
    window at a time: its ids (and token types), target, example, first context token and context character spans."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    most = max_length - specials - doc_stride - 1  # question tokens that leave each window doc_stride + 1 context tokens
    if most < 1:
        raise ConfigError(f"data.doc_stride={doc_stride} is too large for max_length={max_length} (the model's limit applied): "
                          f"a window of {max_length} tokens holds {specials} special tokens, the question and more than "
                          f"doc_stride context tokens; lower data.doc_stride (e.g. to {max(1, max_length // 4)})")
    questions = fit_questions(tokenizer, [e.question for e in examples], most, name)
    with_types = "token_type_ids" in tokenizer.model_input_names
    windows, outside = Counter[int](), 0
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
                    outside += target == (0, 0)
                windows[begin + sample] += 1
                yield {"input_ids": enc["input_ids"][w], "token_type_ids": enc["token_type_ids"][w] if with_types else None,
                       "target": list(target), "example_of": begin + sample, "context_first": first, "spans": window_spans}
            progress.update(len(chunk))
    count = sum(windows.values())
    long = sum(1 for n in windows.values() if n > 1)
    log.info("%s: %d questions became %d windows of at most %d tokens (%d questions' contexts span several; doc_stride %d)",
             name, len(examples), count, max_length, long, doc_stride)
    if outside:
        log.info("%s: %d of %d windows do not hold the whole answer and point at the first token", name, outside, count)


def encode_windows(tokenizer: PreTrainedTokenizerBase, examples: list[QAExample], max_length: int, doc_stride: int,
                   name: str) -> WindowDataset:
    """The windows of `window_rows`, in memory (for a few questions to answer: prediction)."""
    rows = list(window_rows(tokenizer, examples, max_length, doc_stride, name))
    types = [r["token_type_ids"] for r in rows] if rows and rows[0]["token_type_ids"] is not None else None
    return WindowDataset([r["input_ids"] for r in rows], [r["target"] for r in rows], types, [r["example_of"] for r in rows],
                         [r["context_first"] for r in rows], [r["spans"] for r in rows], examples)


def window_features(with_types: bool) -> Any:
    """The Arrow columns of window rows: the context spans as their start and end characters."""
    from datasets import Features, Sequence, Value

    return Features({"input_ids": Sequence(Value("int32")), **({"token_type_ids": Sequence(Value("int8"))} if with_types else {}),
                     "target": Sequence(Value("int32")), "length": Value("int32"), "example_of": Value("int32"),
                     "context_first": Value("int32"), "span_start": Sequence(Value("int32")), "span_end": Sequence(Value("int32"))})


def write_windows(path: Path, rows: Iterable[dict[str, Any]], with_types: bool) -> int:
    """Window rows to one Arrow file; returns how many."""
    def flat(row: dict[str, Any]) -> dict[str, Any]:
        spans = row.pop("spans")
        return {**row, "length": len(row["input_ids"]), "span_start": [lo for lo, _ in spans], "span_end": [hi for _, hi in spans]}

    return write_arrow(path, window_features(with_types), (flat(r) for r in rows))


class WindowStore(TokenStore):
    """The windows of a split, memory-mapped from the data cache, with the examples they come from."""

    def __init__(self, dataset: Any, examples: list[QAExample]):
        super().__init__(dataset)
        self.examples = examples
        self.example_of = self._table.column("example_of").to_numpy()
        self.context_first = self._table.column("context_first").to_numpy()
        self.spans = WindowSpans(self._table)


class WindowSpans(Sequence[list[tuple[int, int]]]):
    """spans[w]: the (start, end) characters of window w's context tokens, read from the file when asked for."""

    def __init__(self, table: Any):
        self._starts, self._ends = table.column("span_start"), table.column("span_end")

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, w: int) -> list[tuple[int, int]]: ...

    @overload
    def __getitem__(self, w: slice) -> list[list[tuple[int, int]]]: ...

    def __getitem__(self, w: int | slice) -> list[tuple[int, int]] | list[list[tuple[int, int]]]:
        if isinstance(w, slice):
            return [self[i] for i in range(*w.indices(len(self)))]
        return list(zip(self._starts[w].as_py(), self._ends[w].as_py()))


class Windows(Protocol):
    """What picking answers reads of a split's windows (a WindowDataset in memory, or a WindowStore)."""

    examples: list[QAExample]

    @property
    def example_of(self) -> Any: ...

    @property
    def context_first(self) -> Any: ...

    @property
    def spans(self) -> Sequence[list[tuple[int, int]]]: ...

    @property
    def lengths(self) -> list[int]: ...

    def __len__(self) -> int: ...
