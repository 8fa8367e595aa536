"""Fine-tuning methods by name: what each one trains, and whether its result is an adapter.

A method takes the model with its task head and sets what trains: `full` everything, `freeze`
the chosen blocks, `lora`, `dora` and `ia3` a PEFT adapter (a new head trains fully and is saved
with it). The training loop asks this registry only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lmtune.models.freeze import apply_freeze, apply_full
from lmtune.models.ia3 import apply_ia3
from lmtune.models.lora import apply_dora, apply_lora
from lmtune.schema import MethodConfig


@dataclass(frozen=True)
class Method:
    name: str
    # (model, method config, PEFT task type, new head module names) -> the model to train
    apply: Callable[[nn.Module, MethodConfig, str, list[str]], nn.Module]
    adapter: bool  # saves a PEFT adapter (loaded onto its base model; `output.merge_lora` folds it in)


def _full(model: nn.Module, cfg: MethodConfig, task_type: str, new_head: list[str]) -> nn.Module:
    apply_full(model)
    return model


def _freeze(model: nn.Module, cfg: MethodConfig, task_type: str, new_head: list[str]) -> nn.Module:
    apply_freeze(model, cfg, new_head)
    return model


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", _full, adapter=False),
        Method("freeze", _freeze, adapter=False),
        Method("lora", apply_lora, adapter=True),
        Method("dora", apply_dora, adapter=True),
        Method("ia3", apply_ia3, adapter=True),
    )
}


def apply_method(model: nn.Module, cfg: MethodConfig, task_type: str, new_head: list[str]) -> nn.Module:
    """The model with `cfg.name` applied: only what that method trains has requires_grad."""
    return METHODS[cfg.name].apply(model, cfg, task_type, new_head)
