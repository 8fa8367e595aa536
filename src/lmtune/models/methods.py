"""Fine-tuning methods by name: what each one trains, its keys, its default learning rate, its report line.

A method takes the model with its task head and sets what trains: `full` everything, `freeze`
the chosen blocks, `lora`, `dora` and `ia3` a PEFT adapter (a new head trains fully and is saved
with it). Everything else asks this registry: the config (`method.name`'s choices and the
`method` keys, through `method_section`), the default learning rate, the training loop, the
report and the README's config reference. A new method is one module that adds its `Method` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, cast

from pydantic import Field, create_model
from torch import nn

from lmtune.models.freeze import FreezeOptions, apply_freeze, apply_full, describe_freeze
from lmtune.models.ia3 import IA3Options, apply_ia3, describe_ia3
from lmtune.models.lora import LoraOptions, apply_dora, apply_lora, describe_dora, describe_lora
from lmtune.schema import MethodConfig, Section


@dataclass(frozen=True)
class Method:
    name: str
    # (model, the `method` section, PEFT task type, new head module names) -> the model to train
    apply: Callable[[nn.Module, Any, str, list[str]], nn.Module]
    adapter: bool  # saves a PEFT adapter (loaded onto its base model; `output.merge_lora` folds it in)
    learning_rate: float  # where train.learning_rate is unset (measured; the README's Methods table)
    trains: str  # what trains, in a few words (the README's Methods table)
    describe: Callable[[Any], str]  # the `method` section -> the report's sentence
    options: type[Section] | None = None  # its own `method` keys (a method may share another's class)


def _full(model: nn.Module, cfg: Any, task_type: str, new_head: list[str]) -> nn.Module:
    apply_full(model)
    return model


def _freeze(model: nn.Module, cfg: FreezeOptions, task_type: str, new_head: list[str]) -> nn.Module:
    apply_freeze(model, cfg, new_head)
    return model


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", _full, adapter=False, learning_rate=5e-5, trains="every parameter",
               describe=lambda cfg: "full fine-tuning (every parameter trains)"),
        Method("freeze", _freeze, adapter=False, learning_rate=5e-4, options=FreezeOptions, describe=describe_freeze,
               trains="the chosen blocks, modules or embeddings, and a new head"),
        Method("lora", apply_lora, adapter=True, learning_rate=1e-3, options=LoraOptions, describe=describe_lora,
               trains="a low-rank update of the blocks' linear layers (PEFT), and a new head"),
        Method("dora", apply_dora, adapter=True, learning_rate=1e-3, options=LoraOptions, describe=describe_dora,
               trains="LoRA with a learned magnitude per output channel (PEFT), and a new head"),
        Method("ia3", apply_ia3, adapter=True, learning_rate=1e-2, options=IA3Options, describe=describe_ia3,
               trains="vectors scaling the blocks' keys, values and feed-forward inputs (PEFT), and a new head"),
    )
}


def method_section() -> type[MethodConfig]:
    """The `method` section of the registered methods: `name` one of theirs, and each one's keys."""
    return _section(tuple((m.name, m.options) for m in METHODS.values()))


@lru_cache
def _section(entries: tuple[tuple[str, type[Section] | None], ...]) -> type[MethodConfig]:
    bases: list[type[Section]] = []
    owner = {key: "every method" for key in MethodConfig.model_fields}
    for name, options in entries:
        if options is None or options in bases:
            continue
        for key in options.model_fields:
            if key in owner:
                raise ValueError(f"method {name!r} declares the key method.{key}, which {owner[key]} declares too")
            owner[key] = f"method {name!r}"
        bases.append(options)
    names = tuple(name for name, _ in entries)
    choice: Any = Literal[names]
    base: Any = (*reversed(bases), MethodConfig)  # MethodConfig last: its `name` is the first key, then each method's in order
    section: Any = create_model(
        "MethodConfig", __base__=base, __module__=MethodConfig.__module__,
        name=(choice, Field("full" if "full" in names else names[0], description=MethodConfig.model_fields["name"].description)),
    )
    return cast("type[MethodConfig]", section)


def apply_method(model: nn.Module, cfg: MethodConfig, task_type: str, new_head: list[str]) -> nn.Module:
    """The model with `cfg.name` applied: only what that method trains has requires_grad."""
    return METHODS[cfg.name].apply(model, cfg, task_type, new_head)
