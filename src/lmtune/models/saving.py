"""Saved model folders: written atomically so that plain transformers (or PEFT, for adapters) loads them, and found again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmtune.files import write_atomically
from lmtune.schema import ModelConfig

META_FILE = "lmtune.json"


def is_adapter(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_model(model: nn.Module, tokenizer: Any, meta: dict[str, Any], target: Path,
               tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Weights (safetensors, or the adapter for LoRA), tokenizer, and lmtune.json with the label space.

    `tensors`: the model's whole state dict, where the model itself holds only shards of it (FSDP2).
    """

    def fill(folder: Path) -> None:
        more = {"state_dict": tensors} if tensors is not None else {}
        getattr(model, "save_pretrained")(folder, safe_serialization=True, **more)  # a transformers or PEFT model
        tokenizer.save_pretrained(folder)
        (folder / META_FILE).write_text(json.dumps({**meta, "adapter": is_adapter(model)}, indent=2) + "\n")

    write_atomically(target, fill)


def read_meta(folder: Path) -> dict[str, Any]:
    """The lmtune.json of a saved model folder."""
    return json.loads((folder / META_FILE).read_text(encoding="utf-8"))


def base_model_config(meta: dict[str, Any]) -> ModelConfig:
    """The base model an adapter was trained on, as lmtune.json records it."""
    return ModelConfig(**meta["base_model"])
