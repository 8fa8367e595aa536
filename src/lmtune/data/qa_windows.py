"""Extractive QA questions as windows of tokens: `[CLS] question [SEP] context [SEP]`, at most max_length long.

A context longer than a window is cut into overlapping windows (`data.doc_stride` tokens of
overlap), each holding the whole question. A training window that does not hold the whole answer
is trained to point at the first token ([CLS]), as in the original BERT recipe.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from lmtune.data.batching import TOKENIZE_CHUNK, EncodedDataset
from lmtune.data.qa import QAExample
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

