"""What the training loop needs from a task: data, a model, a loss, an evaluation, saved metadata.

The loop (train/loop.py) is the same for every task. A task reads and checks its data before
anything is written, builds the model with the right head, turns examples into datasets of
token ids, and says how a batch is scored. Losses are returned as a sum over the batch's
*units* (examples for classification, target tokens for language modelling) together with the
unit count, so that gradient accumulation and several processes weight every unit alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from lmtune.errors import InputError
from lmtune.schema import Config

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase


class TokenDataset(Protocol):
    """Encoded examples: what the samplers (`lengths`, in tokens) and the loaders read."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @property
    def lengths(self) -> list[int]: ...


@dataclass
class Splits:
    """Encoded datasets; validation is None when a generative run evaluates nothing."""

    train: TokenDataset
    validation: TokenDataset | None
    test: TokenDataset | None = None
    # What metrics.json counts for the data; None: one example per item. A task whose items are
    # not its examples says so (extractive QA: questions, and their windows beside them).
    counts: dict[str, int] | None = None
    redacted: dict[str, int] = dataclasses.field(default_factory=dict)  # data.redact: placeholders put in the text, by name

    def data_counts(self) -> dict[str, int]:
        """`train_examples` and `validation_examples` (and what more the task counts), for the log and metrics.json."""
        if self.counts is not None:
            return self.counts
        return {"train_examples": len(self.train), "validation_examples": len(self.validation) if self.validation is not None else 0}


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] | None = None  # generated text beside its reference, for samples.jsonl
    # One row per example, for SPLIT_predictions.csv; built on demand, as most evaluations write none.
    predictions: Callable[[], list[dict[str, Any]]] | None = None


Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """One run's task: everything the loop (train/loop.py) and the stepper (train/step.py) use."""

    @property
    def cfg(self) -> Config:
        """The run's config, of the task's own Config class."""

    metric: str  # picks the best model
    greater_is_better: bool
    new_head: list[str]  # module names of a freshly initialised head (trained by every method)

    def load_data(self) -> None:
        """Read and check every split; raise DataError naming file and row."""

    def load_model(self, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
        """The pretrained model with the head this task needs, in fp32."""

    def peft_task_type(self) -> str:
        """PEFT's TaskType name for this task's model (SEQ_CLS, CAUSAL_LM, ...)."""

    def prepare_model(self, model: nn.Module) -> None:
        """Last changes after the method was applied (e.g. skip work the loss never reads)."""

    def encode(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Splits: ...

    def data_fingerprint(self) -> Any:
        """What resume compares to tell whether the data is the same (any JSON-able value)."""

    def collate(self, items: list[dict[str, Any]]) -> Batch:
        """A batch with at least input_ids and attention_mask (the loop counts examples and tokens from them)."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """The loss summed over the batch's units, and the number of units."""

    def units(self, batch: Batch) -> int: ...

    def evaluate(self, model: nn.Module, loader: Iterable[Batch], accelerator: Accelerator | None, generate: bool,
                 split: str = "validation") -> Evaluation:
        """Score the examples of `split` (validation or test) that the loader holds."""

    def meta(self, max_length: int) -> dict[str, Any]:
        """What a saved model needs to be used later (labels, columns, templates)."""


class Predictor(Protocol):
    """A saved model ready to use: what `lmtune.load()` returns for a task."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...

    @property
    def meta(self) -> dict[str, Any]:
        """Its lmtune.json."""

    @property
    def folder(self) -> Path | None:
        """The folder it was loaded from (None: a base model, not an lmtune one)."""

    @property
    def device(self) -> torch.device: ...

    def evaluate(self, path: str, batch_size: int = 32, **options: Any) -> dict[str, Any]:
        """Score the model on a labelled data file read as in training."""


@runtime_checkable
class RecordPredictor(Predictor, Protocol):
    """A predictor of records (classifiers, extractive QA): what `lmtune predict` and serve's POST /v1/ENDPOINT call.

    A model that generates text instead (a Generator) is not one: its replies come from
    `lmtune generate`, `lmtune chat` and serve's OpenAI endpoints.
    """

    @property
    def input_fields(self) -> list[str]:
        """The fields of each record this model takes (a subset of its task's `predict_inputs`)."""

    def read_records(self, path: str) -> list[dict[str, str]]:
        """`lmtune predict --input`: the rows of a data file as records, read as in training."""

    def predict_records(self, records: list[dict[str, str]], batch_size: int = 32) -> list[dict[str, Any]]:
        """One prediction per record, in order."""


def input_records(inputs: dict[str, list[str]], name: Callable[[str], str], entry: Callable[[str, int], str]) -> list[dict[str, str]]:
    """The i-th value of every input together, once they pass the checks training makes on its data.

    Each input has as many values, and none is empty or only spaces. `name(field)` and
    `entry(field, i)` say how the caller calls an input and its i-th value (`--text` and
    `--text number 2` on the command line; `texts` and `texts[1]` over HTTP); an InputError names them.
    """
    counts = {field: len(values) for field, values in inputs.items()}
    if len(set(counts.values())) > 1:
        raise InputError("give every input the same number of values: " + ", ".join(f"{name(f)} has {n}" for f, n in counts.items()),
                         name(next(iter(counts))))
    for field, values in inputs.items():
        empty = [i for i, v in enumerate(values) if not v.strip()]
        if empty:
            where = entry(field, empty[0])
            raise InputError(f"{where} is empty or only spaces; lmtune does not predict for empty inputs (training refuses them too)",
                             where)
    n = next(iter(counts.values()), 0)
    return [{field: values[i] for field, values in inputs.items()} for i in range(n)]


TryPanel = Literal["predict", "chat", "reply"]


class TaskClass(Protocol):
    """What a task's class declares besides its instances: the registry (tasks/__init__.py) holds these."""

    # Declared as ClassVars by the task classes; plain members here, as a class object matches only those.
    name: str  # the config's `task`
    config_class: type[Config]  # its Config subclass, with its own `data` section
    predict_inputs: dict[str, str]  # fields `lmtune predict` takes (--NAME), with their help; the same as serve's NAMEs lists
    predict_endpoint: str  # lmtune serve's POST /v1/NAME for those inputs; "" for models that generate text (OpenAI endpoints)
    has_labels: bool  # the saved model's lmtune.json lists its labels (serve's /health shows them)
    # The web app's Try panel: a form of the predict inputs, a chat, or one text in and one reply out
    # (wrapped in the run's prompt, as in training).
    try_panel: TryPanel

    def __call__(self, cfg: Config) -> Task: ...

    def load_predictor(self, folder: Path, meta: dict[str, Any], device: str) -> Predictor:
        """The saved model in `folder` (its lmtune.json is `meta`), on `device`."""

    def report(self, run: RunRecord, plots: Path) -> tuple[str, list[Path]]:
        """Markdown the report adds for this task, and the plot files it drew in `plots`."""


class RunRecord(Protocol):
    """What a finished or stopped run's report reads (report/markdown.py builds it from the run folder)."""

    cfg: Config
    history: list[dict[str, Any]]  # metrics.jsonl
    result: dict[str, Any] | None  # metrics.json, once the run finished
    meta: dict[str, Any] | None  # lmtune.json of the saved model
    predictions: list[dict[str, str]]  # validation_predictions.csv

    @property
    def folder(self) -> Path: ...

    @property
    def evals(self) -> list[dict[str, Any]]: ...

    @property
    def best_step(self) -> int | None: ...


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
