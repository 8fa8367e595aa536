"""A method that exists only in the tests: BitFit (train the biases only), written as a new method
is written, in one file.

It has its own `method` key (`bitfit_norms`), its own default learning rate and its own report
sentence. `METHOD` is its registry entry; a test adds it to `METHODS`. Nothing else in lmtune names it.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from lmtune.models.methods import Method
from lmtune.schema import Section

LEARNING_RATE = 3e-3


class BitFitOptions(Section):
    bitfit_norms: bool = Field(False, description="bitfit: also train the LayerNorm weights.")


def apply_bitfit(model: nn.Module, cfg: BitFitOptions, task_type: str, new_head: list[str]) -> nn.Module:
    """Only biases (and, with bitfit_norms, norm weights) train, besides a new head."""
    norms = {name for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)}
    for name, param in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        param.requires_grad_(name.endswith(".bias") or (cfg.bitfit_norms and owner in norms)
                             or any(name.startswith(h + ".") for h in new_head))
    return model


def describe_bitfit(cfg: BitFitOptions) -> str:
    return "BitFit: trains the biases" + (" and the norm weights" if cfg.bitfit_norms else "") + " (and a new head)"


METHOD = Method("bitfit", apply_bitfit, adapter=False, learning_rate=LEARNING_RATE, options=BitFitOptions,
                describe=describe_bitfit, trains="the biases only (BitFit), and a new head")
