"""Partial fine-tuning: freeze everything, then unfreeze the chosen blocks, modules and a new head."""

from __future__ import annotations

import logging
import re

from pydantic import Field, model_validator
from torch import nn

from lmtune.errors import ConfigError
from lmtune.models.parts import Parts, find_parts
from lmtune.schema import Section

log = logging.getLogger("lmtune")

FREEZE_DEFAULT_BLOCKS = 2  # the blocks `freeze` trains when nothing is chosen


class FreezeOptions(Section):
    """The `method` keys of `freeze`."""

    trainable_layers: int | None = Field(
        None, ge=0, description=f"freeze: train the last N transformer blocks; the last {FREEZE_DEFAULT_BLOCKS} when nothing else is chosen."
    )
    layers: str | None = Field(None, description="freeze: block indices and ranges to train, e.g. '0-1,10-11'.")
    modules: list[str] = Field(default_factory=list, description="freeze: regexes of parameter names to train.")
    train_embeddings: bool = Field(False, description="freeze: also train the embeddings.")

    @model_validator(mode="after")
    def _layers_are_a_spec(self) -> FreezeOptions:
        if self.layers is not None and not re.fullmatch(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*", self.layers):
            raise ValueError(f"method.layers={self.layers!r} is not a list of indices and ranges such as '0-1,10-11'")
        return self


def describe_freeze(cfg: FreezeOptions) -> str:
    """The report's sentence for a `freeze` config."""
    parts = []
    if cfg.trainable_layers is not None:
        parts.append(f"the last {cfg.trainable_layers} blocks")
    if cfg.layers:
        parts.append(f"blocks {cfg.layers}")
    if cfg.modules:
        parts.append("parameters matching " + ", ".join(f"`{x}`" for x in cfg.modules))
    if cfg.train_embeddings:
        parts.append("the embeddings")
    return "freeze: trains " + (", ".join(parts) if parts else f"the last {FREEZE_DEFAULT_BLOCKS} blocks") + " (and a new head)"


def parse_layer_spec(spec: str, num_blocks: int) -> list[int]:
    """'0-1,10-11' -> [0, 1, 10, 11], checked against the model's block count."""
    chosen: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi) if hi else int(lo)
        if a > b:
            raise ConfigError(f"method.layers: range {part.strip()!r} runs backwards")
        if b >= num_blocks:
            raise ConfigError(
                f"method.layers={spec!r} names block {b}, but the model has {num_blocks} blocks (0-{num_blocks - 1})"
            )
        chosen.update(range(a, b + 1))
    return sorted(chosen)


def chosen_blocks(cfg: FreezeOptions, num_blocks: int) -> list[int]:
    blocks: set[int] = set()
    if cfg.trainable_layers is not None:
        if cfg.trainable_layers > num_blocks:
            raise ConfigError(
                f"method.trainable_layers={cfg.trainable_layers}, but the model has only {num_blocks} blocks"
            )
        blocks.update(range(num_blocks - cfg.trainable_layers, num_blocks))
    if cfg.layers:
        blocks.update(parse_layer_spec(cfg.layers, num_blocks))
    return sorted(blocks)


def apply_freeze(model: nn.Module, cfg: FreezeOptions, new_head: list[str] | None = None) -> list[str]:
    """Set requires_grad so only the chosen parts train; returns the names of trainable parameters.

    `new_head` (a freshly initialised classifier) always trains; a pretrained LM head does not
    unless chosen (method.modules, or method.train_embeddings when it shares the embedding matrix).
    """
    parts: Parts = find_parts(model)
    if cfg.trainable_layers is None and not cfg.layers and not cfg.modules and not cfg.train_embeddings:
        last = min(FREEZE_DEFAULT_BLOCKS, parts.num_blocks)
        log.info(
            "method freeze with nothing chosen: training the last %d of %d blocks%s (choose with method.trainable_layers, "
            "method.layers, method.modules or method.train_embeddings)", last, parts.num_blocks, " and the new head" if new_head else "",
        )
        cfg = cfg.model_copy(update={"trainable_layers": last})
    prefixes = [f"{parts.blocks_path}.{i}." for i in chosen_blocks(cfg, parts.num_blocks)]
    prefixes += [h + "." for h in new_head or []]
    if cfg.train_embeddings:
        prefixes += [e + "." for e in parts.embeddings]
    patterns = [re.compile(p) for p in cfg.modules]
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(pattern.search(n) for n in names):
            raise ConfigError(
                f"method.modules pattern {pattern.pattern!r} matches no parameter; names look like: "
                f"{', '.join(names[:3])}, ..., {names[-1]}"
            )
    trainable = []
    for name, param in model.named_parameters():
        train = name.startswith(tuple(prefixes)) or any(p.search(name) for p in patterns)
        param.requires_grad_(train)
        if train:
            trainable.append(name)
    return trainable


def apply_full(model: nn.Module) -> list[str]:
    for param in model.parameters():
        param.requires_grad_(True)
    return [n for n, _ in model.named_parameters()]
