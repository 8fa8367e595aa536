"""Quantized base models (QLoRA) and 8-bit optimizer states, through bitsandbytes.

`model.quantize: 4bit` loads the base model's linear layers as nf4 with double quantization (the
QLoRA recipe), `8bit` as LLM.int8; an adapter (lora, dora, ia3) trains on top and is what is saved.
The base model stays as it was on disk: a saved adapter is loaded onto the unquantized base, and
`lmtune merge` folds it in there. Only the official `bitsandbytes` package is used; the registry
holds look-alike forks under other names, which are refused.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from lmtune.errors import ConfigError

PACKAGE = "bitsandbytes"
INSTALL = "pip install bitsandbytes (the bitsandbytes-foundation project; the bitsandbytes-* look-alikes are not it)"


def require_bitsandbytes(key: str) -> Any:
    """The bitsandbytes module for config key `key`; a ConfigError when it is missing or not the official package."""
    from importlib import metadata, util

    if util.find_spec(PACKAGE) is None:
        raise ConfigError(f"{key} needs the bitsandbytes package, which is not installed: {INSTALL}")
    owners = metadata.packages_distributions().get(PACKAGE, [])
    if owners and PACKAGE not in {owner.lower() for owner in owners}:
        raise ConfigError(f"{key}: the bitsandbytes module here comes from {', '.join(owners)}, not the official "
                          f"bitsandbytes package; pip uninstall {' '.join(owners)}, then {INSTALL}")
    # Its CPU back end looks for an optional faster kernel on the Hugging Face hub and warns when the
    # hub is out of reach; the built-in kernel it falls back to is the one that runs then.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def compute_dtype() -> torch.dtype:
    """The dtype quantized layers compute in: bf16 on a GPU that has it (the QLoRA recipe), else fp32."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def quantization_config(bits: str) -> Any:
    """transformers' BitsAndBytesConfig for `model.quantize` (4bit or 8bit)."""
    from transformers import BitsAndBytesConfig

    require_bitsandbytes(f"model.quantize={bits}")
    if bits == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype())


def prepare_quantized(model: nn.Module) -> None:
    """PEFT's preparation of a quantized model for training, in place: everything frozen, the unquantized rest in fp32."""
    from peft import prepare_model_for_kbit_training

    # lmtune turns gradient checkpointing on itself (train.gradient_checkpointing, non-reentrant)
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def quantized_linear_count(model: nn.Module) -> int:
    """How many of the model's linear layers hold quantized weights."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def adamw_8bit(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """train.optimizer=adamw_8bit: AdamW with its two moments kept in 8 bits (block-wise quantized)."""
    bnb = require_bitsandbytes("train.optimizer=adamw_8bit")
    optimizer: torch.optim.Optimizer = bnb.optim.AdamW8bit(groups, lr=lr, betas=betas, eps=eps)
    return optimizer
