"""Text classification and regression: one label (or several, or a number) per text or text pair."""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from lmtune.config import LOWER_IS_BETTER, Config
from lmtune.data.batching import EncodedDataset, PadCollator, encode_texts
from lmtune.data.classification import ClassificationData, Examples, LabelSpace, load_classification_data
from lmtune.errors import ConfigError
from lmtune.eval.evaluate import model_inputs, predict_scores, score
from lmtune.models.first_token import trim_last_block
from lmtune.models.loading import load_classifier
from lmtune.models.parts import find_parts
from lmtune.tasks.base import Evaluation, Splits, base_model_record
from lmtune.train.losses import build_loss

log = logging.getLogger("lmtune")

METRICS = {
    "single": {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "roc_auc", "loss"},
    "multi": {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro", "hamming_loss", "roc_auc", "loss"},
    "regression": {"mse", "rmse", "mae", "r2", "pearson", "spearman", "loss"},
}
DEFAULT_METRIC = {"single": "accuracy", "multi": "f1_micro", "regression": "mse"}
PROBLEM_TYPES = {"single": "single_label_classification", "multi": "multi_label_classification", "regression": "regression"}


def resolve_metric(cfg: Config, label_type: str) -> tuple[str, bool]:
    """The metric that picks the best model, and whether greater is better."""
    name = DEFAULT_METRIC[label_type] if cfg.eval.metric == "auto" else cfg.eval.metric
    if name not in METRICS[label_type]:
        raise ConfigError(
            f"eval.metric={name!r} is not reported for {label_type} labels; choose one of "
            f"{', '.join(sorted(METRICS[label_type]))}"
        )
    return name, name not in LOWER_IS_BETTER


class ClassificationTask:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.data: ClassificationData | None = None
        self.new_head: list[str] = []
        self.metric, self.greater_is_better = "", True
        self._loss: Any = None
        self._collate: PadCollator | None = None

    @property
    def labels(self) -> LabelSpace:
        assert self.data is not None
        return self.data.labels

    def load_data(self) -> None:
        self.data = load_classification_data(self.cfg.data, self.cfg.train.seed)
        self.metric, self.greater_is_better = resolve_metric(self.cfg, self.labels.label_type)

    def load_model(self, tokenizer: Any) -> nn.Module:
        model = load_classifier(self.cfg.model, tokenizer, self.labels.names, PROBLEM_TYPES[self.labels.label_type])
        self.new_head = find_parts(model).head
        dtype = torch.long if self.labels.label_type == "single" else torch.float32
        self._collate = PadCollator(tokenizer.pad_token_id, dtype)
        return model

    def peft_task_type(self) -> str:
        return "SEQ_CLS"

    def prepare_model(self, model: nn.Module) -> None:
        trim_last_block(model)  # the head reads the first token only

    def encode(self, tokenizer: Any, max_length: int) -> Splits:
        assert self.data is not None

        def one(examples: Examples, name: str) -> EncodedDataset:
            ids, types, at_limit = encode_texts(tokenizer, examples.texts, examples.pairs, max_length)
            if at_limit:
                log.info("%s: %d of %d examples reached max_length=%d and were truncated", name, at_limit, len(ids), max_length)
            return EncodedDataset(ids, [self.labels.encode(v) for v in examples.labels], types)

        train = one(self.data.train, "train")
        self._loss = build_loss(self.cfg.train, self.labels, train.targets)
        test = one(self.data.test, "test") if self.data.test else None
        return Splits(train, one(self.data.validation, "validation"), test)

    def data_fingerprint(self) -> Any:
        assert self.data is not None

        def record(e: Examples) -> list[Any]:
            return [e.texts, e.pairs, [str(v) for v in e.labels]]

        return [record(self.data.train), record(self.data.validation), self.labels.names]

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        assert self._collate is not None
        return self._collate(items)

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["target"].shape[0])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = model(**model_inputs(batch)).logits  # (B, num_labels)
        n = self.units(batch)
        return self._loss(logits, batch["target"]) * n, n

    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any, generate: bool = False, split: str = "validation") -> Evaluation:
        scores, targets, loss = predict_scores(model, loader, self.labels.label_type, accelerator, self._loss)
        metrics = {"loss": loss, **score(scores, targets, self.labels, self.cfg.eval.threshold)}
        return Evaluation(metrics, predictions=functools.partial(self.prediction_rows, split, scores, targets))

    def prediction_rows(self, split: str, scores: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
        """One row per example of `split`: its text, label, prediction and (for labels) class probabilities."""
        assert self.data is not None
        examples = self.data.test if split == "test" else self.data.validation
        assert examples is not None and len(examples.texts) == len(scores)
        names, kind = self.labels.names, self.labels.label_type
        join = self.cfg.data.label_separator.join
        rows = []
        for i, (s, t) in enumerate(zip(scores, targets)):
            row: dict[str, Any] = {"row": i, "text": examples.texts[i]}
            if examples.pairs is not None:
                row["text_pair"] = examples.pairs[i]
            if kind == "single":
                row["label"], row["predicted"] = names[int(t)], names[int(s.argmax())]
            elif kind == "multi":
                row["label"] = join(n for n, on in zip(names, t) if on)
                row["predicted"] = join(n for n, p in zip(names, s) if p >= self.cfg.eval.threshold)
            else:
                row["label"], row["predicted"] = float(t), float(s)
            if kind != "regression":
                row.update({f"p_{n}": round(float(p), 6) for n, p in zip(names, s)})
            rows.append(row)
        return rows

    def meta(self, max_length: int) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "task": "classification",
            "label_type": self.labels.label_type,
            "labels": self.labels.names,
            "problem_type": PROBLEM_TYPES[self.labels.label_type],
            "text_column": d.text_column,
            "text_pair_column": d.text_pair_column,
            "label_column": d.label_column,
            "label_separator": d.label_separator,
            "max_length": max_length,
            "threshold": self.cfg.eval.threshold,
            "method": self.cfg.method.name,
            "base_model": base_model_record(self.cfg),
        }
