"""What the training loop needs from a task: data, a model, a loss, an evaluation, saved metadata.

The loop (train/loop.py) is the same for every task. A task reads and checks its data before
anything is written, builds the model with the right head, turns examples into datasets of
token ids, and says how a batch is scored. Losses are returned as a sum over the batch's
*units* (examples for classification, target tokens for language modelling) together with the
unit count, so that gradient accumulation and several processes weight every unit alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from lmtune.config import Config


@dataclass
class Splits:
    """Encoded datasets; validation is None when a generative run evaluates nothing."""

    train: Dataset
    validation: Dataset | None
    test: Dataset | None = None


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] | None = None  # generated text beside its reference, for samples.jsonl
    # One row per example, for SPLIT_predictions.csv; built on demand, as most evaluations write none.
    predictions: Callable[[], list[dict[str, Any]]] | None = None


class Task(Protocol):
    cfg: Config
    metric: str  # picks the best model
    greater_is_better: bool
    new_head: list[str]  # module names of a freshly initialised head (trained by every method)

    def load_data(self) -> None:
        """Read and check every split; raise DataError naming file and row."""

    def load_model(self, tokenizer: Any) -> nn.Module:
        """The pretrained model with the head this task needs, in fp32."""

    def peft_task_type(self) -> str: ...

    def prepare_model(self, model: nn.Module) -> None:
        """Last changes after the method was applied (e.g. skip work the loss never reads)."""

    def encode(self, tokenizer: Any, max_length: int) -> Splits: ...

    def data_fingerprint(self) -> Any:
        """What resume compares to tell whether the data is the same."""

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """The loss summed over the batch's units, and the number of units."""

    def units(self, batch: dict[str, torch.Tensor]) -> int: ...

    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any, generate: bool, split: str = "validation") -> Evaluation:
        """Score the examples of `split` (validation or test) that the loader holds."""

    def meta(self, max_length: int) -> dict[str, Any]:
        """What a saved model needs to be used later (labels, columns, templates)."""


def base_model_record(cfg: Config) -> dict[str, Any]:
    path = cfg.model.name_or_path
    if Path(path).exists():
        path = str(Path(path).resolve())
    return {
        "name_or_path": path,
        "gguf_file": cfg.model.gguf_file,
        "trust_remote_code": cfg.model.trust_remote_code,
        "revision": cfg.model.revision,
        "max_length": cfg.model.max_length,
    }
