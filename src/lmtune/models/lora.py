"""LoRA and DoRA adapters through PEFT: low-rank updates on the blocks' linear layers; a new head trains fully."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import nn

from lmtune.errors import ConfigError
from lmtune.models.parts import adaptable_linear_names, find_parts
from lmtune.schema import Section


class LoraOptions(Section):
    """The `method` keys of `lora` and `dora`."""

    lora_rank: int = Field(8, gt=0, description="lora, dora: rank of the low-rank update.")
    lora_alpha: float = Field(16.0, gt=0, description="lora, dora: the update is scaled by lora_alpha / lora_rank.")
    lora_dropout: float = Field(
        0.0, ge=0, lt=1, description="lora, dora: dropout on the adapter's input; 0 (PEFT's default) measured as good and faster."
    )
    lora_target_modules: list[str] | None = Field(
        None, description="lora, dora: module names to adapt (PEFT names).",
        json_schema_extra={"shown_default": "every linear layer of the blocks"},
    )


def _describe(kind: str, cfg: LoraOptions) -> str:
    targets = ", ".join(cfg.lora_target_modules) if cfg.lora_target_modules else "every linear layer of the blocks"
    return f"{kind}, rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}, dropout {cfg.lora_dropout:g}, on {targets}"


def describe_lora(cfg: LoraOptions) -> str:
    """The report's sentence for a `lora` config."""
    return _describe("LoRA", cfg)


def describe_dora(cfg: LoraOptions) -> str:
    """The report's sentence for a `dora` config."""
    return _describe("DoRA (weight-decomposed LoRA)", cfg)


def apply_lora(
    model: nn.Module, cfg: LoraOptions, task_type: str = "SEQ_CLS", new_head: list[str] | None = None, dora: bool = False,
) -> nn.Module:
    """Wrap the model with a LoRA adapter; returns the PEFT model.

    `new_head`: freshly initialised modules (a classifier) that train fully and are saved with the
    adapter. A pretrained language-model head is not among them: it stays frozen like the body.
    `dora`: weight-decomposed LoRA, which also learns each output channel's magnitude.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    parts = find_parts(model)
    targets: Any = cfg.lora_target_modules
    if targets is None:
        targets = adaptable_linear_names(model, parts.stacks)  # both stacks of an encoder-decoder
        if not targets:
            raise ConfigError(f"found no linear layers in {' or '.join(parts.stacks)}; set method.lora_target_modules")
    lora = LoraConfig(
        task_type=TaskType[task_type],
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # PEFT annotates an int; it scales by alpha / r, a float
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=new_head or None,
        use_dora=dora,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as err:  # PEFT's message for target modules that match nothing
        raise ConfigError(f"method.lora_target_modules={cfg.lora_target_modules}: {err}") from None


def apply_dora(model: nn.Module, cfg: LoraOptions, task_type: str = "SEQ_CLS", new_head: list[str] | None = None) -> nn.Module:
    """Wrap the model with a DoRA adapter (LoRA's options; the magnitudes train too); returns the PEFT model."""
    return apply_lora(model, cfg, task_type, new_head, dora=True)
