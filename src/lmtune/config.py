"""The one typed config. Every default lives here; YAML and `key.sub=value` overrides fill it.

Validation happens once, at the edge (`load_config` / `Config.model_validate`), and an invalid
key or value raises `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmtune.errors import ConfigError

# Where a user sets nothing: a learning rate that suits each method (measured; see the README's
# config reference), and the blocks `freeze` trains.
DEFAULT_LEARNING_RATES = {"full": 5e-5, "freeze": 5e-4, "lora": 1e-3}
FREEZE_DEFAULT_BLOCKS = 2
LOWER_IS_BETTER = {"loss", "perplexity", "mse", "rmse", "mae", "hamming_loss"}
GENERATIVE_COLUMNS = {"instruction", "input", "output", "system", "history", "messages"}


class Section(BaseModel):
    # coerce_numbers_to_str: `model.revision=1234567` or a column named 0 stays a string
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ModelConfig(Section):
    name_or_path: str = Field("", description="Local Hugging Face model folder, hub id, or .gguf file.")
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path (a folder).")
    max_length: int = Field(256, gt=0, description="Longest input in tokens; never more than the model takes.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")


class DataConfig(Section):
    train: str = Field("", description="Training data: CSV, TSV, JSON, JSONL, Parquet, datasets folder or hub name.")
    validation: str | None = Field(None, description="Validation data; if unset, split off the training data.")
    validation_split: float = Field(
        0.1, ge=0, lt=1, description="Fraction of train held out when validation is unset; 0 (causal_lm only): no validation."
    )
    test: str | None = Field(None, description="Test data, evaluated once with the kept model.")
    text_column: str = "text"
    text_pair_column: str | None = Field(None, description="Second text (sentence pairs, e.g. NLI).")
    label_column: str = "label"
    label_type: Literal["auto", "single", "multi", "regression"] = Field(
        "auto", description="auto: a list per row is multi-label, non-integer numbers are regression."
    )
    label_separator: str = Field(",", description="Splits a multi-label text cell such as 'a,b'.")
    max_train_examples: int | None = Field(None, gt=0, description="Use only the first N training rows.")
    max_eval_examples: int | None = Field(None, gt=0, description="Use only the first N validation/test rows.")
    format: Literal["auto", "text", "alpaca", "messages", "squad"] = Field(
        "auto", description="causal_lm: text, alpaca, messages (or ShareGPT) or squad; auto decides from the columns."
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="causal_lm: the file's names for instruction, input, output, system, history, messages."
    )
    system_prompt: str | None = Field(None, description="causal_lm: system message for conversations that have none.")
    train_on_prompt: bool = Field(False, description="causal_lm: train on prompt tokens too, not only on the responses.")
    packing: bool = Field(False, description="causal_lm: put several examples in one row; they do not attend to each other.")
    source_column: str = Field("source", description="translation: column of the text to translate.")
    target_column: str = Field("target", description="translation: column of its translation.")
    source_lang: str | None = Field(None, description="translation: source language name or code, e.g. English or en.")
    target_lang: str | None = Field(None, description="translation: target language; zh, ja, ko pick sacrebleu's tokenizer.")
    header: bool = Field(True, description="CSV/TSV/TXT: false when the first line is data; columns are then named 0, 1, 2, ...")

    @model_validator(mode="after")
    def _known_columns(self) -> DataConfig:
        unknown = set(self.columns) - GENERATIVE_COLUMNS
        if unknown:
            raise ValueError(f"data.columns: unknown name(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(GENERATIVE_COLUMNS))}")
        return self


class MethodConfig(Section):
    name: Literal["full", "freeze", "lora"] = "full"
    trainable_layers: int | None = Field(
        None, ge=0, description=f"freeze: train the last N transformer blocks; the last {FREEZE_DEFAULT_BLOCKS} when nothing else is chosen."
    )
    layers: str | None = Field(None, description="freeze: block indices and ranges to train, e.g. '0-1,10-11'.")
    modules: list[str] = Field(default_factory=list, description="freeze: regexes of parameter names to train.")
    train_embeddings: bool = Field(False, description="freeze: also train the embeddings.")
    lora_rank: int = Field(8, gt=0)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input; 0 (PEFT's default) measured as good and faster.")
    lora_target_modules: list[str] | None = Field(
        None, description="lora: module names to adapt; default: every linear layer of the blocks."
    )

    @model_validator(mode="after")
    def _freeze_needs_a_choice(self) -> MethodConfig:
        if self.layers is not None and not re.fullmatch(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*", self.layers):
            raise ValueError(f"method.layers={self.layers!r} is not a list of indices and ranges such as '0-1,10-11'")
        return self


class TrainConfig(Section):
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(16, gt=0, description="Examples per micro-batch on each device.")
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; default by method: full 5e-5, freeze 5e-4, lora 1e-3 (DEFAULT_LEARNING_RATES)."
    )
    head_learning_rate: float | None = Field(None, gt=0, description="Learning rate of the new head; default: learning_rate.")
    optimizer: Literal["sgd", "adagrad", "adadelta", "adam", "adamw"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="sgd only.")
    nesterov: bool = Field(False, description="sgd only.")
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = Field(1e-8, gt=0)
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null turns it off.")
    loss: Literal["auto", "cross_entropy", "mse", "bce"] = Field(
        "auto", description="auto: cross_entropy (single label), bce (multi-label), mse (regression)."
    )
    class_weights: list[float] | Literal["balanced"] | None = Field(None, description="cross_entropy class weights.")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = 42
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="bf16/fp16 autocast, for GPUs.")
    log_every_n_steps: int = Field(10, gt=0)
    save_every_n_steps: int | None = Field(
        500, gt=0, description="Checkpoint every N optimizer steps; checkpoints are also written at each epoch end and each new best."
    )
    keep_last_checkpoints: int = Field(
        2, ge=0, description="Newest checkpoints kept (the best is kept too); 0 writes none, so the run cannot resume."
    )
    max_bad_steps: int = Field(5, gt=0, description="Stop after this many steps in a row with a non-finite loss or gradient.")
    auto_batch_size: bool = Field(
        False, description="On out-of-memory, split each batch in two (and again if needed): same effective batch."
    )
    dataloader_workers: int = Field(0, ge=0, description="Worker processes that collate batches.")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="Also stream the logged scalars to these trackers (their packages must be installed)."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow store or server URL; default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db in the working folder."
    )
    mlflow_experiment: str = Field("lmtune", description="MLflow experiment the run is logged under.")


class EvalConfig(Section):
    every_n_steps: int | None = Field(None, gt=0, description="Also evaluate every N optimizer steps.")
    metric: str = Field("auto", description="Metric that picks the best model: accuracy, f1_macro, loss, ...")
    early_stopping_patience: int | None = Field(None, gt=0, description="Stop after N evaluations without gain.")
    at_start: bool = Field(False, description="Evaluate the untrained model first (a baseline).")
    batch_size: int | None = Field(None, gt=0, description="Default: 2 x train.batch_size.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Multi-label decision threshold.")
    generate: bool = Field(False, description="causal_lm: also generate answers for validation prompts and score them.")
    max_generate: int = Field(32, gt=0, description="causal_lm: validation examples to generate for at each evaluation.")
    max_new_tokens: int = Field(128, gt=0, description="causal_lm: longest generated answer, in tokens (greedy decoding).")


class OutputConfig(Section):
    dir: str = "runs/run"
    overwrite: bool = Field(False, description="Replace an existing finished run folder.")
    save_final: bool = Field(True, description="Write final/ (the last weights) besides best/.")
    merge_lora: bool = Field(False, description="lora: also write merged/, a plain model with the adapter merged.")
    report: bool = Field(True, description="Write report.md with plots (loss, metrics, confusion matrix, ROC) at the end.")


class ParamSpec(Section):
    """One searched config key: a distribution, and optionally when it applies."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="Sample on a log scale (float, int).")
    step: float | None = Field(None, gt=0, description="Grid step (float, int).")
    choices: list[Any] | None = Field(None, description="categorical: the values to choose from.")
    when: dict[str, Any] = Field(
        default_factory=dict, description="Only sample this key when these keys have these values, e.g. {method.name: lora}."
    )
    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # choices keep their types

    @model_validator(mode="after")
    def _complete(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty list of choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high (got low={self.low}, high={self.high})")
        elif self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0 (got {self.low})")
        return self


class SearchConfig(Section):
    metric: str = Field("auto", description="metrics.json key to optimize; auto: eval.metric of the task.")
    direction: Literal["auto", "maximize", "minimize"] = Field("auto", description="auto: minimize losses and errors, maximize the rest.")
    n_trials: int | None = Field(None, gt=0, description="Trials to run in this invocation (with timeout: whichever ends first).")
    timeout: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = Field("median", description="Stop unpromising trials from their evaluations.")
    seed: int = 0
    storage: str | None = Field(None, description="Optuna storage URL; default: sqlite study.db in output.dir.")
    study_name: str = "lmtune"
    space: dict[str, ParamSpec] = Field(default_factory=dict, description="Config key -> distribution.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    @model_validator(mode="after")
    def _stops(self) -> SearchConfig:
        if self.space and self.n_trials is None and self.timeout is None:
            raise ValueError("search needs search.n_trials or search.timeout (or both) to know when to stop")
        return self


class Config(Section):
    task: Literal["classification", "causal_lm", "translation"] = "classification"
    resume: str | None = Field(
        None, description="auto: continue from the newest complete checkpoint in output.dir, if any; or a checkpoint or run folder."
    )
    resume_allow_changes: bool = Field(
        False, description="Let a resumed run change epochs, max_steps, learning rates, clipping, precision or eval settings."
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="after")
    def _required(self) -> Config:
        if not self.model.name_or_path:
            raise ValueError("model.name_or_path is required (a model folder, hub id or .gguf file)")
        if not self.data.train:
            raise ValueError("data.train is required (a data file, datasets folder or hub name)")
        if self.task == "classification" and self.data.validation_split == 0 and not self.data.validation:
            raise ValueError("data.validation_split=0 leaves a classifier nothing to evaluate on; give data.validation or a split > 0")
        if self.task == "classification":
            for key in ("packing", "train_on_prompt"):
                if getattr(self.data, key):
                    raise ValueError(f"data.{key} applies to task causal_lm only (task is {self.task})")
            if self.eval.generate:
                raise ValueError(f"eval.generate applies to tasks causal_lm and translation only (task is {self.task})")
        return self

    def with_defaults(self) -> Config:
        """A copy with the method-dependent defaults filled in: the config a run folder records."""
        if self.train.learning_rate is not None:
            return self
        resolved = self.model_copy(deep=True)
        resolved.train.learning_rate = DEFAULT_LEARNING_RATES[self.method.name]
        return resolved

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = _section_of(e["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            lines.append(f"unknown key '{key}'" + (f"; allowed here: {allowed}" if allowed else ""))
        elif e["type"] == "value_error":
            lines.append(str(e["ctx"]["error"]) if "ctx" in e else e["msg"])
        else:
            lines.append(f"key '{key}' has invalid value {e['input']!r}: {e['msg']}")
    return f"invalid config ({source}):\n  " + "\n  ".join(lines)


def _section_of(loc: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] = Config
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['train.learning_rate=1e-4', ...] into a nested dict; values are parsed as YAML."""
    flat: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. train.epochs=2)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw  # YAML 1.1 reads yes/no/on/off as booleans; on a command line they are words
        flat[".".join(parts)] = value
    return nest_keys(flat)


def nest_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """{'train.learning_rate': 1e-4} -> {'train': {'learning_rate': 1e-4}}."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key {key!r} conflicts with another value given for '{part}'")
        node[leaf] = value
    return tree


def flatten_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'learning_rate': 1e-4}} -> {'train.learning_rate': 1e-4}; the inverse of nest_keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def build_config(data: dict[str, Any] | Config, source: str = "config") -> Config:
    """Validate a plain dict (or pass a Config through), raising ConfigError on any problem."""
    if isinstance(data, Config):
        return data
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply `key.sub=value` overrides, validate."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = merge_dicts(data, parse_overrides(overrides))
        source += " + overrides"
    return build_config(data, source)
