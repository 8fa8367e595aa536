"""(IA)^3 adapters through PEFT: learned vectors that scale the blocks' keys, values and feed-forward inputs.

Each targeted linear layer gets one vector, initialised to ones: it multiplies the layer's output
(key and value projections) or, for the feed-forward output layers, its input. A new head trains
fully. Both kinds fold exactly into the weights, so the adapter merges into a plain model.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from lmtune.errors import ConfigError
from lmtune.models.parts import find_parts, ia3_target_names
from lmtune.schema import Section


class IA3Options(Section):
    """The `method` keys of `ia3`."""

    ia3_target_modules: list[str] | None = Field(
        None, description="ia3: module names to scale (PEFT names).",
        json_schema_extra={"shown_default": "the attention key/value (or fused query-key-value) and feed-forward output linears of every block"},
    )
    ia3_feedforward_modules: list[str] | None = Field(
        None, description="ia3: those of ia3_target_modules scaled at their input rather than their output.",
        json_schema_extra={"shown_default": "the feed-forward output linears among the targets"},
    )

    @model_validator(mode="after")
    def _feedforward_among_targets(self) -> IA3Options:
        if self.ia3_feedforward_modules is not None:
            if self.ia3_target_modules is None:
                raise ValueError("method.ia3_feedforward_modules is set without method.ia3_target_modules: name the targets too")
            if extra := sorted(set(self.ia3_feedforward_modules) - set(self.ia3_target_modules)):
                raise ValueError(f"method.ia3_feedforward_modules names {extra}, which are not in method.ia3_target_modules")
        return self


def describe_ia3(cfg: IA3Options) -> str:
    """The report's sentence for an `ia3` config."""
    default = "the key/value and feed-forward output linears of the blocks"
    return f"(IA)³ scaling vectors on {', '.join(cfg.ia3_target_modules) if cfg.ia3_target_modules else default}"


def _matches(name: str, pattern: str) -> bool:
    """PEFT's rule for a target given as a list item: the full module name, or its dotted ending."""
    return name == pattern or name.endswith("." + pattern)


def _parameter_holders(model: nn.Module, names: list[str]) -> list[str]:
    """The modules at or under `names` that hold parameters of their own (BERT's pooler -> its dense layer).

    PEFT unloads an (IA)^3 model's `modules_to_save` by copying each one's `.weight`, which a
    container such as BERT's pooler or RoBERTa's classification head lacks: naming the layers
    inside them instead saves and trains the same tensors, and lets the adapter merge.
    """
    holders = []
    for name in names:
        for sub, module in model.get_submodule(name).named_modules():
            if next(module.parameters(recurse=False), None) is not None:
                holders.append(f"{name}.{sub}" if sub else name)
    return holders


def apply_ia3(model: nn.Module, cfg: IA3Options, task_type: str = "SEQ_CLS", new_head: list[str] | None = None) -> nn.Module:
    """Wrap the model with an (IA)^3 adapter; returns the PEFT model."""
    from peft import IA3Config, TaskType, get_peft_model

    parts = find_parts(model)
    found, found_feedforward = ia3_target_names(model, parts.stacks)  # both stacks of an encoder-decoder
    targets, feedforward = cfg.ia3_target_modules, cfg.ia3_feedforward_modules
    if targets is None:
        if not found:
            raise ConfigError(
                f"found no attention key/value and feed-forward output linears in every block of {' or '.join(parts.stacks)}; "
                "set method.ia3_target_modules (and method.ia3_feedforward_modules)"
            )
        targets, feedforward = found, found_feedforward
    elif feedforward is None:
        # The user's targets that name only feed-forward output layers scale their input, as by default.
        names = [n for n, _ in model.named_modules()]
        feedforward = [
            t for t in targets
            if (hit := [n for n in names if _matches(n, t)]) and all(n in found_feedforward for n in hit)
        ]
    ia3 = IA3Config(
        task_type=TaskType[task_type],
        target_modules=list(targets),
        feedforward_modules=list(feedforward),
        modules_to_save=_parameter_holders(model, new_head or []) or None,
    )
    try:
        return get_peft_model(model, ia3)
    except ValueError as err:  # PEFT's message for target modules that match nothing, or an unsupported layer
        raise ConfigError(f"method.ia3_target_modules={cfg.ia3_target_modules}: {err}") from None
