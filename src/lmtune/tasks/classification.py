"""Text classification and regression: one label (or several, or a number) per text or text pair."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from lmtune.data.batching import EncodedDataset, LengthGroupedBatchSampler, PadCollator, encode_texts
from lmtune.data.classification import (
    ClassificationSection,
    LabelSpace,
    check_known_labels,
    read_examples,
    read_texts,
    with_label_type,
)
from lmtune.data.classification_store import CachedData, load_cached_data, tokenize_splits
from lmtune.errors import ConfigError, DataError
from lmtune.eval.evaluate import model_inputs, predict_scores, score
from lmtune.figures.curves import confusion_plot, roc_pr_plots
from lmtune.figures.markdown import image, number, table
from lmtune.losses import build_loss
from lmtune.models.first_token import trim_last_block
from lmtune.models.loading import load_classifier
from lmtune.models.parts import find_parts
from lmtune.models.saving import base_model_config
from lmtune.schema import LOWER_IS_BETTER, Config, EvalConfig
from lmtune.tasks.base import Evaluation, RunRecord, Splits, TryPanel, base_model_record

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("lmtune")

METRICS = {
    "single": {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "roc_auc", "loss"},
    "multi": {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro", "hamming_loss", "roc_auc", "loss"},
    "regression": {"mse", "rmse", "mae", "r2", "pearson", "spearman", "loss"},
}
DEFAULT_METRIC = {"single": "accuracy", "multi": "f1_micro", "regression": "mse"}
PROBLEM_TYPES = {"single": "single_label_classification", "multi": "multi_label_classification", "regression": "regression"}


class ClassificationConfig(Config):
    task: Literal["classification"] = "classification"
    data: ClassificationSection = Field(default_factory=ClassificationSection)

    @model_validator(mode="after")
    def _classifier_checks(self) -> ClassificationConfig:
        if self.data.validation_split == 0 and not self.data.validation:
            raise ValueError("data.validation_split=0 leaves a classifier nothing to evaluate on; give data.validation or a split > 0")
        if self.eval.generate:
            raise ValueError("eval.generate applies to tasks that generate text (causal_lm, translation); task is classification")
        return self


def resolve_metric(cfg: ClassificationConfig, label_type: str) -> tuple[str, bool]:
    """The metric that picks the best model, and whether greater is better."""
    name = DEFAULT_METRIC[label_type] if cfg.eval.metric == "auto" else cfg.eval.metric
    if name not in METRICS[label_type]:
        raise ConfigError(
            f"eval.metric={name!r} is not reported for {label_type} labels; choose one of "
            f"{', '.join(sorted(METRICS[label_type]))}"
        )
    return name, name not in LOWER_IS_BETTER


class ClassificationTask:
    name: ClassVar[str] = "classification"
    config_class: ClassVar[type[Config]] = ClassificationConfig
    predict_inputs: ClassVar[dict[str, str]] = {
        "text": "a text to classify (repeatable)",
        "text_pair": "classification on pairs (data.text_pair_column): the second text of the --text given with it (repeatable)",
    }
    predict_endpoint: ClassVar[str] = "classify"  # lmtune serve: POST /v1/classify
    has_labels: ClassVar[bool] = True
    try_panel: ClassVar[TryPanel] = "predict"

    def __init__(self, cfg: Config):
        assert isinstance(cfg, ClassificationConfig)
        self.cfg: ClassificationConfig = cfg
        self.data: CachedData | None = None
        self.new_head: list[str] = []
        self.metric, self.greater_is_better = "", True
        self._loss: Any = None
        self._collate: PadCollator | None = None

    @property
    def labels(self) -> LabelSpace:
        assert self.data is not None
        return self.data.labels

    def load_data(self) -> None:
        """The checked examples, from the data cache when these files and settings were read before (else read, checked and cached)."""
        self.data = load_cached_data(self.cfg.data, self.cfg.train.seed)
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
        stores = tokenize_splits(self.data, tokenizer, max_length, self.cfg.data.num_proc)
        train = stores["train"]
        self._loss = build_loss(self.cfg.train, self.labels, lambda: train.targets)
        return Splits(train, stores["validation"], stores.get("test"), redacted=self.data.redacted)

    def data_fingerprint(self) -> Any:
        assert self.data is not None
        return self.data.fingerprint

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
        examples = self.data.splits[split]
        texts, pairs = examples.texts.to_list(), examples.pairs.to_list() if examples.pairs is not None else None
        assert len(texts) == len(scores)
        names, kind = self.labels.names, self.labels.label_type
        join = self.cfg.data.label_separator.join
        rows = []
        for i, (s, t) in enumerate(zip(scores, targets)):
            row: dict[str, Any] = {"row": i, "text": texts[i]}
            if pairs is not None:
                row["text_pair"] = pairs[i]
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

    @classmethod
    def report(cls, run: RunRecord, plots: Path) -> tuple[str, list[Path]]:
        """Per-label scores and the confusion matrix of the kept model; ROC and precision-recall curves for two labels."""
        best_step = run.best_step
        source = next((e for e in run.evals if e["step"] == best_step), None) or (run.evals[-1] if run.evals else None)
        if source is None or "confusion_matrix" not in source:
            return "", []
        names = (run.meta or {}).get("labels") or [str(i) for i in range(len(source["confusion_matrix"]))]
        parts = ["## Errors of the kept model"]
        if source.get("per_class"):
            rows = [(str(name), number(c["precision"]), number(c["recall"]), number(c["f1"]), f"{c['support']:,}")
                    for name, c in source["per_class"].items()]
            parts.append(table(["Label", "Precision", "Recall", "F1", "Support"], rows))
        title = f"Confusion matrix, validation, step {source['step']}"
        written = [confusion_plot(source["confusion_matrix"], [str(n) for n in names], title, plots / "confusion_matrix.png")]
        parts.append(image(title, written[0], run.folder))
        predictions = run.predictions
        if len(names) == 2 and predictions and all(r.get("step") == str(source["step"]) for r in predictions):
            truth = np.array([r["label"] == str(names[1]) for r in predictions], dtype=np.int64)
            if 0 < truth.sum() < len(truth):
                scores = np.array([float(r[f"p_{names[1]}"]) for r in predictions])
                roc, pr, roc_auc, ap = roc_pr_plots(truth, scores, str(names[1]), plots)
                written += [roc, pr]
                parts += [image("ROC curve", roc, run.folder), image("Precision-recall curve", pr, run.folder)]
                parts.append(f"ROC-AUC {roc_auc:.4f}, average precision {ap:.4f} (positive label: {names[1]}).")
        if predictions:
            parts.append("Every validation example with its prediction is in `validation_predictions.csv`.")
        return "\n\n".join(parts), written

    def meta(self, max_length: int) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "task": self.cfg.task,
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

    @classmethod
    def load_predictor(cls, folder: Path, meta: dict[str, Any], device: str) -> Classifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        if meta.get("format") == "onnx":  # lmtune export --format onnx: onnxruntime, on the CPU
            from lmtune.models.onnx import ONNX_FILE, OnnxClassifierModel

            return Classifier(OnnxClassifierModel(folder / ONNX_FILE, meta["onnx_inputs"]), tokenizer, meta, folder)
        if meta.get("adapter"):
            from peft import PeftModel

            base = load_classifier(base_model_config(meta), tokenizer, meta["labels"], meta["problem_type"])
            model = PeftModel.from_pretrained(base, folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        trim_last_block(model)
        return Classifier(model.to(device), tokenizer, meta, folder)


class Classifier:
    """A fine-tuned classifier: `predict(texts)` gives labels and class probabilities."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, meta: dict[str, Any], folder: Path):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.folder = folder
        self.labels = LabelSpace(meta["label_type"], meta["labels"])

    @property
    def threshold(self) -> float:
        """The multi-label decision threshold the run was trained with (eval.threshold; its default for older models)."""
        return float(self.meta.get("threshold", EvalConfig.model_fields["threshold"].default))

    @property
    def device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")  # an ONNX model has no torch parameters

    def loader(self, texts: list[str], pairs: list[str] | None, targets: list[Any] | None, batch_size: int) -> Any:
        ids, types, _ = encode_texts(self.tokenizer, texts, pairs, self.meta["max_length"])
        if targets is None:
            targets = [0.0] * len(ids)
        dataset = EncodedDataset(ids, targets, types)
        dtype = torch.long if self.labels.label_type == "single" else torch.float32
        sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, seed=0, shuffle=False)
        device = self.device

        def to_device(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return {k: v.to(device) for k, v in PadCollator(self.tokenizer.pad_token_id, dtype)(items).items()}

        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=to_device)

    def scores(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> Any:
        scores, _, _ = predict_scores(self.model, self.loader(texts, pairs, None, batch_size), self.labels.label_type)
        return scores

    def read_texts(self, path: str) -> tuple[list[str], list[str] | None]:
        """The texts of a data file, from the columns the model was trained on."""
        return read_texts(path, self.meta["text_column"], self.meta["text_pair_column"])

    def evaluate(self, path: str, batch_size: int = 32, **options: Any) -> dict[str, Any]:
        """Score the model on a labelled data file with the training run's columns and labels.

        `options` of generating tasks (max_generate, max_new_tokens) do not apply and are ignored.
        """
        separator = self.meta.get("label_separator", ",")
        columns = ClassificationSection(
            train=path, text_column=self.meta["text_column"], text_pair_column=self.meta["text_pair_column"],
            label_column=self.meta["label_column"], label_separator=separator,
        )
        examples = with_label_type(read_examples(path, columns, None), self.labels.label_type, separator)
        check_known_labels(examples, self.labels)
        targets = [self.labels.encode(v) for v in examples.labels]
        loader = self.loader(examples.texts, examples.pairs, targets, batch_size)
        scores, refs, _ = predict_scores(self.model, loader, self.labels.label_type)
        return score(scores, refs, self.labels, self.threshold)

    def predict(self, texts: list[str] | str, pairs: list[str] | None = None, batch_size: int = 32) -> list[dict[str, Any]]:
        """One dict per text: label (or labels / score) and per-class probabilities."""
        if isinstance(texts, str):
            texts = [texts]
        empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise DataError(f"text {empty[0] + 1} of {len(texts)} is empty or not text ({texts[empty[0]]!r}); "
                            f"lmtune does not classify empty texts (training refuses them too)")
        scores = self.scores(list(texts), pairs, batch_size)
        out: list[dict[str, Any]] = []
        for row in scores:
            if self.labels.label_type == "regression":
                out.append({"score": float(row)})
                continue
            probs = {name: float(p) for name, p in zip(self.labels.names, row)}
            if self.labels.label_type == "single":
                out.append({"label": self.labels.names[int(row.argmax())], "probabilities": probs})
            else:
                chosen = [n for n, p in probs.items() if p >= self.threshold]
                out.append({"labels": chosen, "probabilities": probs})
        return out

    @property
    def input_fields(self) -> list[str]:
        """What each record of `predict_records` holds: the text, and its pair when the model was trained on pairs."""
        return ["text", "text_pair"] if self.meta.get("text_pair_column") else ["text"]

    def read_records(self, path: str) -> list[dict[str, str]]:
        """`lmtune predict --input`: the rows of a data file, as the fields predict_records takes."""
        texts, pairs = self.read_texts(path)
        if pairs is None:
            return [{"text": t} for t in texts]
        return [{"text": t, "text_pair": p} for t, p in zip(texts, pairs)]

    def predict_records(self, records: list[dict[str, str]], batch_size: int = 32) -> list[dict[str, Any]]:
        """`lmtune predict`: one prediction per record of `text` (and `text_pair`)."""
        pairs = [r["text_pair"] for r in records] if records and "text_pair" in records[0] else None
        return self.predict([r["text"] for r in records], pairs, batch_size)
