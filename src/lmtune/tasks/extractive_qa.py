"""Extractive question answering (SQuAD style): the answer is a span of the context, found by an encoder.

The model reads `[CLS] question [SEP] context [SEP]` and scores every token as the start and as
the end of the answer (`AutoModelForQuestionAnswering`: one linear layer over the hidden states).
The data (SQuAD JSON or rows, data/qa.py), the windows of a long context (data/qa_windows.py) and
the choice of each answer's span (eval/qa_spans.py) have their own modules; this one holds the
config, the task (loss: the mean of the start and end cross-entropies) and the predictor.
Scores: SQuAD exact match and token F1 against every reference, and the span loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from lmtune.data.batching import LengthGroupedBatchSampler, PadCollator
from lmtune.data.qa import ExtractiveQASection, QAData, QAExample, read_qa, split_by_group
from lmtune.data.qa_windows import WindowStore, encode_windows, window_rows, write_windows
from lmtune.data.store import data_entry, token_stores, tokenizer_digest
from lmtune.errors import ConfigError, DataError
from lmtune.eval.evaluate import model_inputs
from lmtune.eval.qa_spans import Answer, answer_windows, span_losses
from lmtune.eval.text_metrics import exact_match, qa_metrics, token_f1
from lmtune.figures.markdown import cell, table
from lmtune.models.loading import load_qa_model
from lmtune.models.parts import find_parts
from lmtune.models.saving import base_model_config
from lmtune.schema import Config
from lmtune.tasks.base import Batch, Evaluation, RunRecord, Splits, TryPanel, base_model_record

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

__all__ = ["ExtractiveQAConfig", "ExtractiveQASection", "ExtractiveQATask", "QuestionAnswerer"]

METRICS = ("exact_match", "f1", "loss")
DEFAULT_METRIC = "f1"
# A quarter of each window is kept for the question and the special tokens when the config is
# read; the room the real questions need is checked when they are tokenized (encode_windows).
QUESTION_SHARE = 4
CONTEXT_PREVIEW_CHARS = 80  # of each context in validation_predictions.csv
REPORT_ERRORS = 10  # wrong answers listed in report.md


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



# --- the task --------------------------------------------------------------------------------


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
        self.windows: dict[str, WindowStore] = {}  # encoded splits, by name
        self._collate: PadCollator | None = None

    def load_data(self) -> None:
        d = self.cfg.data
        if d.redact or d.redact_patterns:
            raise ConfigError("data.redact and data.redact_patterns do not apply to task extractive_qa: replacing text in a "
                              "context would move the answers' character offsets; redact the files before training")
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
        parts = {name: data for name, data in (("train", self.data.train), ("validation", self.data.validation), ("test", self.data.test))
                 if data is not None}
        with_types = "token_type_ids" in tokenizer.model_input_names

        def fill(folder: Path) -> dict[str, Any]:
            for name, data in parts.items():
                write_windows(folder / f"{name}.arrow", window_rows(tokenizer, data.examples, max_length, d.doc_stride, name), with_types)
            return {"splits": {name: {"file": name} for name in parts}}

        more = {"tokenizer": tokenizer_digest(tokenizer), "max_length": max_length}
        stores = token_stores(data_entry(self.name, d, self.cfg.train.seed, more), fill)
        self.windows = {name: WindowStore(stores[name].dataset, data.examples) for name, data in parts.items()}
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
