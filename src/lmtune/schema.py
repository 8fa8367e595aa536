"""The config's sections and their defaults: the part of the one typed config every layer reads.

Each task adds its own `data` section (a subclass of `DataConfig`) and its own `Config` subclass
in its module under `tasks/`; `lmtune.config` picks the task's class and validates a whole config.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmtune.errors import ConfigError

LOWER_IS_BETTER = {"loss", "perplexity", "mse", "rmse", "mae", "hamming_loss"}


class Section(BaseModel):
    # coerce_numbers_to_str: `model.revision=1234567` or a column named 0 stays a string
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ModelConfig(Section):
    name_or_path: str = Field("", description="Local Hugging Face model folder, hub id, or .gguf file.",
                              json_schema_extra={"shown_default": "required"})
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path (a folder).")
    max_length: int = Field(256, gt=0, description="Longest input in tokens (capped by what the model takes).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernel: auto (transformers' choice: sdpa where the model has it), eager, sdpa, or "
                            "flash_attention_2 (CUDA GPUs with the flash-attn package; with bf16 or fp16)."
    )
    quantize: Literal["none", "4bit", "8bit"] = Field(
        "none", description="Load the base model's linear layers quantized, through the bitsandbytes package: 4bit (QLoRA: "
                            "nf4 with double quantization) or 8bit (LLM.int8). For methods that train an adapter (lora, "
                            "dora, ia3); the adapter is saved, the base stays as it is on disk (lmtune merge folds the "
                            "adapter into it)."
    )


class DataConfig(Section):
    """The data keys of every task; each task's section (its `data` class) adds its own columns."""

    train: str = Field("", description="Training data: CSV, TSV, JSON, JSONL, Parquet, datasets folder or hub name.",
                       json_schema_extra={"shown_default": "required"})
    validation: str | None = Field(None, description="Validation data; if unset, split off the training data.")
    validation_split: float = Field(
        0.1, ge=0, lt=1, description="Fraction of train held out (seeded; stratified by label for classification) when "
        "validation is unset; 0 (tasks that write text only) evaluates nothing."
    )
    test: str | None = Field(None, description="Test data, evaluated once with the kept model.")
    max_train_examples: int | None = Field(None, gt=0, description="Use only the first N training rows.")
    max_eval_examples: int | None = Field(None, gt=0, description="Use only the first N validation/test rows.")
    header: bool = Field(True, description="CSV/TSV/TXT: false when the first line is data; columns are then named 0, 1, 2, ...")
    on_empty: Literal["error", "drop"] = Field(
        "error", description="A training, validation or test row with an empty or null text, label, instruction, output, "
        "source or target: error (stop, naming the first) or drop (leave it out; the log says how many went, per file)."
    )
    redact: bool | list[Literal["email", "phone", "ip", "credit_card", "iban", "url"]] = Field(
        False, description="Replace personal data in the text as it is read, before tokenization, with typed placeholders "
        "(<EMAIL>, <PHONE>, <IP>, <CREDIT_CARD> (Luhn-checked), <IBAN> (checksum-checked), <URL>): true for all of them, or a "
        "list of email, phone, ip, credit_card, iban, url. The files are never changed; counts go to the log and metrics.json."
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict, description="More to redact: NAME: regex, each match replaced by <NAME> (with or without data.redact)."
    )
    redact_region: str = Field("US", description="data.redact phone: the region whose national phone formats are recognized "
                               "(international +CC numbers always are).")

    @model_validator(mode="after")
    def _redaction(self) -> DataConfig:
        import re

        for name, pattern in self.redact_patterns.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"data.redact_patterns: name {name!r} must be a word (letters, digits, _), as in <NAME>")
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                raise ValueError(f"data.redact_patterns.{name}: {pattern!r} is not a regular expression ({err})") from None
            if compiled.fullmatch(""):
                raise ValueError(f"data.redact_patterns.{name}: {pattern!r} matches the empty text")
        return self


class CachedDataConfig(DataConfig):
    """The data keys of the tasks whose tokenized data lives in the data cache (lmtune/data/store.py)."""

    cache: bool = Field(True, description="Keep the tokenized data (for classification, the checked rows too) in Arrow files "
                        "under data.cache_dir: a run with the same data files, settings and tokenizer tokenizes nothing "
                        "(false: a temporary copy).")
    cache_dir: str | None = Field(None, description="Where the data cache lives; safe to delete.",
                                  json_schema_extra={"shown_default": "$LMTUNE_CACHE_DIR/data, else ~/.cache/lmtune/data"})


class MethodConfig(Section):
    """`method`: which fine-tuning method. Each method (an entry of `lmtune.models.methods.METHODS`)
    brings its own keys; `lmtune.config` validates the section with every registered method's keys."""

    name: str = Field("full", description="The fine-tuning method; the Methods table below says what each one trains.")


class TrainConfig(Section):
    epochs: int = Field(3, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(16, gt=0, description="Examples per micro-batch on each device.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; the log says which was used and where it came from.",
        json_schema_extra={"shown_default": "the method's (Methods, below)"},
    )
    head_learning_rate: float | None = Field(None, gt=0, description="Learning rate of the new head.",
                                             json_schema_extra={"shown_default": "learning_rate"})
    optimizer: Literal["sgd", "adagrad", "adadelta", "adam", "adamw", "adamw_8bit"] = Field(
        "adamw", description="sgd, adagrad, adadelta, adam, adamw (fused kernels where available), adamw_8bit (AdamW with "
                             "8-bit moments, a quarter of adamw's optimizer memory; the bitsandbytes package)."
    )
    weight_decay: float = Field(0.0, ge=0, description="Not applied to biases and norm weights.")
    momentum: float = Field(0.9, ge=0, description="sgd only.")
    nesterov: bool = Field(False, description="sgd only.")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="adam, adamw, adamw_8bit.")
    adam_epsilon: float = Field(1e-8, gt=0, description="adam, adamw, adamw_8bit.")
    scheduler: Literal["constant", "linear", "cosine"] = Field("linear", description="constant, linear, cosine (all after the warmup).")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of the steps that warm the learning rate up from 0.")
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null turns it off.")
    loss: Literal["auto", "cross_entropy", "mse", "bce"] = Field(
        "auto", description="auto: cross_entropy (single label, and language-model tokens), bce (multi-label), mse (regression)."
    )
    class_weights: list[float] | Literal["balanced"] | None = Field(
        None, description="cross_entropy class weights: a list, or balanced (n / (k * count))."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross_entropy only.")
    seed: int = Field(42, description="A CPU run with the same seed repeats exactly.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="bf16, fp16: autocast with fp32 weights, for GPUs.")
    log_every_n_steps: int = Field(10, gt=0, description="Steps between train records in metrics.jsonl.")
    save_every_n_steps: int | None = Field(
        500, gt=0, description="Checkpoint every N optimizer steps; checkpoints are also written at each epoch end and each new best."
    )
    keep_last_checkpoints: int = Field(
        2, ge=0, description="Newest checkpoints kept (the best is kept too); 0 writes none, so the run cannot resume."
    )
    background_checkpoints: bool = Field(
        True, description="Write checkpoints in a thread while training goes on (from a copy of the weights and optimizer "
        "state in memory); false writes them in the foreground."
    )
    max_bad_steps: int = Field(5, gt=0, description="Stop after this many steps in a row with a non-finite loss or gradient.")
    auto_batch_size: bool = Field(
        False, description="On out-of-memory, split each batch in two (and again if needed): same effective batch."
    )
    gradient_checkpointing: bool = Field(
        False, description="Keep only each block's inputs in the forward pass and recompute the rest in the backward pass: "
                           "far less activation memory for some more compute (any method; measured on SmolLM2 with LoRA: "
                           "half the memory, 13% more time)."
    )
    compile: bool = Field(
        False, description="torch.compile the model (TorchInductor; needs a C/C++ compiler): faster steps on GPUs, after "
                           "a first step that compiles, and again once for the first batch of a new length."
    )
    liger_kernel: bool = Field(
        False, description="Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) in the model's blocks, and for language models "
                           "its fused linear cross-entropy (the output layer and the loss a chunk at a time, never the whole "
                           "logits): less memory and time on CUDA GPUs, for the model types Liger supports (the liger-kernel package)."
    )
    adversarial: Literal["none", "fgm", "pgd", "freelb"] = Field(
        "none", description="Adversarial training on the input embeddings, per example inside an L2 ball of radius "
                            "adversarial_epsilon: fgm (one step of that length), pgd (adversarial_steps projected steps of "
                            "adversarial_alpha), freelb (adversarial_steps passes whose gradients are averaged). fgm and pgd "
                            "train on the clean plus the perturbed loss; each costs one forward and backward pass more per step "
                            "(pgd and freelb: adversarial_steps more). The logged loss is the clean one."
    )
    adversarial_epsilon: float = Field(1.0, gt=0, description="Radius of the perturbation, in embedding units, per example.")
    adversarial_alpha: float = Field(0.3, gt=0, description="pgd, freelb: length of each ascent step.")
    adversarial_steps: int = Field(3, gt=0, description="pgd: ascent steps; freelb: passes per micro-batch.")
    dataloader_workers: int = Field(0, ge=0, description="Worker processes that collate batches.")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="Also stream the logged scalars to these trackers (their packages must be installed)."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow store or server URL.",
        json_schema_extra={"shown_default": "$MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db in the working folder"},
    )
    mlflow_experiment: str = Field("lmtune", description="MLflow experiment the run is logged under.")

    @model_validator(mode="after")
    def _adversarial(self) -> TrainConfig:
        if self.adversarial != "none" and self.compile:
            raise ValueError(f"train.adversarial={self.adversarial} and train.compile=true do not go together: the "
                             f"perturbation is a hook on the input embeddings that a compiled graph would not see change")
        return self


class EvalConfig(Section):
    every_n_steps: int | None = Field(None, gt=0, description="Also evaluate every N optimizer steps.")
    metric: str = Field("auto", description="Metric that picks the best model; auto: the task's (accuracy for single labels, "
                        "f1_micro multi-label, mse regression, loss for language models, f1 extractive QA).")
    early_stopping_patience: int | None = Field(None, gt=0, description="Stop after N evaluations without gain.")
    at_start: bool = Field(False, description="Evaluate the untrained model first (a baseline).")
    batch_size: int | None = Field(None, gt=0, description="Examples per evaluation batch.",
                                   json_schema_extra={"shown_default": "2 x train.batch_size"})
    threshold: float = Field(0.5, gt=0, lt=1, description="Multi-label decision threshold.")
    generate: bool = Field(False, description="Tasks that generate text: also generate replies to validation prompts and score "
                           "them with the task's metrics (exact match and F1; BLEU and chrF for translation); writes samples.jsonl.")
    max_generate: int = Field(32, gt=0, description="Tasks that generate text: validation examples to generate for at each evaluation.")
    max_new_tokens: int = Field(128, gt=0, description="Tasks that generate text: longest generated reply, in tokens (greedy decoding).")


class OutputConfig(Section):
    dir: str = Field("runs/run", description="The run folder (for lmtune search: the search folder, with one run per trial).")
    overwrite: bool = Field(False, description="Replace an existing run folder.")
    save_final: bool = Field(True, description="Write final/ (the last weights) besides best/.")
    merge_lora: bool = Field(False, description="Methods that save an adapter (Methods, below): also write merged/, a plain model with the adapter merged in.")
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
    sampler: Literal["tpe", "random", "grid", "cmaes"] = Field("tpe", description="tpe, random, grid (float and int ranges need a step), cmaes.")
    pruner: Literal["none", "median", "hyperband"] = Field("median", description="Stop unpromising trials from their evaluations.")
    seed: int = Field(0, description="Sampler seed.")
    storage: str | None = Field(None, description="Where the study lives, shared by machines: a database URL (postgresql://user@host/db) "
                                                 "or journal:PATH (Optuna's journal file on a shared file system).",
                                json_schema_extra={"shown_default": "sqlite OUTPUT_DIR/study.db"})
    study_name: str = Field("lmtune", description="Study name within the storage.")
    space: dict[str, ParamSpec] = Field(
        default_factory=dict, description="Config key -> {type: float|int|categorical, low, high, log, step, choices, when}."
    )

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    @model_validator(mode="after")
    def _stops(self) -> SearchConfig:
        if self.space and self.n_trials is None and self.timeout is None:
            raise ValueError("search needs search.n_trials or search.timeout (or both) to know when to stop")
        return self


class Config(Section):
    """A whole config. Each task subclasses it (in its module under tasks/) with its own `task`
    name and `data` section; `lmtune.config.build_config` validates a dict with the task's class."""

    # No default here: each task's class has its own name as default, and build_config picks DEFAULT_TASK from the registry.
    task: str = Field(description="What to fine-tune for; each task (below) has its own data keys.")
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
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


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
