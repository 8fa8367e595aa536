"""Load a tokenizer and a model (classifier or causal LM) from a folder, hub id or GGUF file."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmtune.errors import ModelError
from lmtune.hub import hub_unreachable, looks_like_local_path
from lmtune.models.quantize import prepare_quantized, quantization_config
from lmtune.schema import ModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger("lmtune")


@dataclass
class ModelSource:
    """Where weights come from: a folder or hub id, plus a GGUF file name inside it."""

    path: str
    gguf_file: str | None = None
    cache_only: bool = False  # a hub id while the hub is out of reach: load the cached copy

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ModelSource:
        path, gguf = cfg.name_or_path, cfg.gguf_file
        if gguf is None and path.lower().endswith(".gguf"):
            p = Path(path)
            path, gguf = str(p.parent), p.name
        if gguf is not None:
            file = Path(path) / gguf
            if not file.is_file():
                raise ModelError(f"GGUF file {file} does not exist")
        cache_only = False if Path(path).exists() else _hub_model(path, cfg.revision)
        return cls(path, gguf, cache_only)

    def kwargs(self, cfg: ModelConfig) -> dict[str, Any]:
        kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
        if cfg.revision:
            kw["revision"] = cfg.revision
        if self.gguf_file:
            kw["gguf_file"] = self.gguf_file
        if self.cache_only:
            kw["local_files_only"] = True
        return kw


def _hub_model(name: str, revision: str | None) -> bool:
    """Check a name that is no local path as a hub id; True: the hub is out of reach, load from the cache."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if looks_like_local_path(name):
        raise ModelError(f"model {name}: no such folder or file ({Path(name).expanduser().resolve()} does not exist)")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelError(f"model {name!r}: no such local folder or file, and not a hub id either ('name' or 'owner/name')") from None
    why = hub_unreachable()
    if why is None:
        return False
    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        log.info("the Hugging Face hub cannot be reached (%s): loading %s from the local cache", why, name)
        return True
    raise ModelError(
        f"model {name!r} is not a local folder, and it cannot be fetched from the Hugging Face hub: the hub "
        f"cannot be reached ({why}) and the model is not in the local cache ({constants.HF_HUB_CACHE}). "
        f"Give the path of a local model folder, or run where {constants.ENDPOINT} can be reached."
    )


def _explain(err: Exception, source: ModelSource, what: str) -> ModelError:
    text = str(err)
    hint = ""
    if "trust_remote_code" in text:
        hint = " This model ships its own code: set model.trust_remote_code: true if you trust it."
    elif not Path(source.path).exists():
        hint = " It is not a local folder, and it could not be fetched as a hub id (offline, or no such model)."
    return ModelError(f"could not load the {what} from {source.path}{' / ' + source.gguf_file if source.gguf_file else ''}: {text.strip().splitlines()[0] if text.strip() else type(err).__name__}.{hint}")


def load_tokenizer(cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    source = ModelSource.from_config(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs(cfg))
    except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError... for a bad source
        raise _explain(err, source, "tokenizer") from None
    if tokenizer.pad_token is None:
        # Decoders (GPT-2, Llama) have no pad token: reuse EOS. Padding is masked out by the
        # attention mask, and the classifier reads the last non-pad token, so nothing is corrupted.
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer of {cfg.name_or_path} has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def effective_max_length(cfg: ModelConfig, tokenizer: Any, model_config: Any) -> int:
    """model.max_length, capped by what the model's position embeddings and tokenizer allow."""
    limits = [cfg.max_length]
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models offset positions by the pad index, leaving two fewer usable slots.
        offset = 2 if getattr(model_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(positions - offset)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    return min(limits)


def load_classifier(
    cfg: ModelConfig, tokenizer: Any, label_names: list[str], problem_type: str, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """A sequence-classification model with a fresh head of the right size, in fp32 by default."""
    from transformers import AutoModelForSequenceClassification

    num_labels = max(len(label_names), 1)
    id2label = {i: name for i, name in enumerate(label_names)} if label_names else {0: "score"}
    model = from_pretrained(
        AutoModelForSequenceClassification, cfg, dtype,
        num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        problem_type=problem_type, ignore_mismatched_sizes=True,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_causal_lm(cfg: ModelConfig, tokenizer: Any, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A decoder with its pretrained language-model head, in fp32 by default."""
    from transformers import AutoModelForCausalLM

    model = from_pretrained(AutoModelForCausalLM, cfg, dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_seq2seq_lm(cfg: ModelConfig, tokenizer: Any, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """An encoder-decoder (T5, BART, Marian) with its pretrained generation head, in fp32 by default."""
    from transformers import AutoModelForSeq2SeqLM

    return from_pretrained(AutoModelForSeq2SeqLM, cfg, dtype)


def load_qa_model(cfg: ModelConfig, tokenizer: Any = None) -> PreTrainedModel:
    """The pretrained encoder with a fresh start/end head (AutoModelForQuestionAnswering), in fp32."""
    from transformers import AutoModelForQuestionAnswering

    if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"task extractive_qa needs a fast tokenizer (one backed by the tokenizers library, with a tokenizer.json): it maps "
            f"answers to tokens through character offsets, which only fast tokenizers give. The tokenizer of {cfg.name_or_path} "
            f"is {type(tokenizer).__name__}, a slow one; convert it (AutoTokenizer.from_pretrained(..., use_fast=True), then "
            f"save_pretrained) or choose a model that ships a fast tokenizer"
        )
    return from_pretrained(AutoModelForQuestionAnswering, cfg, torch.float32)


def enable_gradient_checkpointing(model: nn.Module, name: str) -> None:
    """train.gradient_checkpointing: transformers' own, non-reentrant (it works with frozen weights and adapters)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(f"train.gradient_checkpointing: {type(model).__name__} ({name}) does not support gradient "
                         f"checkpointing; set train.gradient_checkpointing: false (or lower train.batch_size to save memory)")
    enable = getattr(model, "activation_checkpointing_enable", None)  # its name from transformers 5.x on
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        getattr(model, "gradient_checkpointing_enable")(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_encoder_decoder(cfg: ModelConfig) -> bool:
    """Whether the model is an encoder-decoder, from its config alone (no weights are read)."""
    from transformers import AutoConfig

    source = ModelSource.from_config(cfg)
    try:
        config = AutoConfig.from_pretrained(source.path, **source.kwargs(cfg))
    except Exception as err:  # noqa: BLE001 - as in from_pretrained: one clear message for every kind of bad source
        raise _explain(err, source, "model config") from None
    return bool(getattr(config, "is_encoder_decoder", False))


def from_pretrained(auto_class: Any, cfg: ModelConfig, dtype: torch.dtype = torch.float32, **extra: Any) -> PreTrainedModel:
    """`auto_class` (an AutoModelFor... class) from the config's model: a folder, hub id or GGUF file, safetensors only.

    Every task loads its model through this, so each failure gets one clear message.
    """
    from transformers import GgufConfig

    source = ModelSource.from_config(cfg)
    kwargs = source.kwargs(cfg)
    if cfg.attn_implementation != "auto":
        check_attention(cfg.attn_implementation)
        kwargs["attn_implementation"] = cfg.attn_implementation
    if source.gguf_file:
        if cfg.quantize != "none":
            raise ModelError(f"model.quantize={cfg.quantize}: {source.gguf_file} is a GGUF file, which lmtune dequantizes to "
                             f"train; quantize a safetensors model folder instead, or set model.quantize: none")
        # Dequantize to a plain model: a model left marked as GGUF-quantized cannot be trained.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    else:
        kwargs["use_safetensors"] = _has_safetensors(source.path)
        if cfg.quantize != "none":
            kwargs["quantization_config"] = quantization_config(cfg.quantize)
    try:
        model = auto_class.from_pretrained(source.path, dtype=dtype, **kwargs, **extra)
    except Exception as err:  # noqa: BLE001 - many exception types for bad sources; all become one clear message
        raise _explain(err, source, "model") from None
    if cfg.quantize != "none":
        prepare_quantized(model)  # in place
    return model


def check_attention(kernel: str) -> None:
    """model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package."""
    if kernel != "flash_attention_2":
        return
    import importlib.util

    missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                     ("the flash-attn package", importlib.util.find_spec("flash_attn") is not None)) if not ok]
    if missing:
        raise ModelError(f"model.attn_implementation=flash_attention_2 needs {' and '.join(missing)}, which this machine "
                         f"lacks; use sdpa (PyTorch's fused attention, the default where the model has it) or eager")


def _has_safetensors(path: str) -> bool | None:
    """True for a local folder with safetensors; a local folder without them is refused (no pickles)."""
    p = Path(path)
    if not p.is_dir():
        return True  # hub id: ask for safetensors only
    if any(name.endswith(".safetensors") for name in os.listdir(p)):
        return True
    raise ModelError(
        f"{p} holds no .safetensors weights; lmtune loads safetensors only (pickled .bin files can run code). "
        f"Convert the checkpoint with transformers' save_pretrained(safe_serialization=True)."
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Trainable and total parameters (a parameter DeepSpeed ZeRO-3 partitioned counts whole: its ds_numel)."""

    def size(p: nn.Parameter) -> int:
        return int(getattr(p, "ds_numel", p.numel()))

    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    total = sum(size(p) for p in model.parameters())
    return trainable, total


def default_device() -> str:
    """Where a loaded model runs unless told otherwise: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"
