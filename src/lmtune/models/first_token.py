"""Skip the work a first-token classification head never reads.

The sequence-classification heads of BERT-style encoders read one position of the last block's
output: the first ([CLS]). Every other position of the last block still pays for its
feed-forward network, about two thirds of that block's compute, in the forward and the backward
pass. A forward hook keeps only the first position right after the last block's attention (the
attention itself still sees every position), so the feed-forward network runs on one position
per example. Logits, loss and gradients are the same as without the hook; the saved model is a
plain transformers model, since hooks are not saved.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmtune.models.parts import find_parts

# model_type -> child of the last block whose output enters the feed-forward network.
# Each is checked in tests/models/test_first_token.py against the model without the hook.
FEED_FORWARD_INPUT = {
    "bert": "attention",
    "roberta": "attention",
    "xlm-roberta": "attention",
    "camembert": "attention",
    "electra": "attention",
    "mpnet": "attention",
    "distilbert": "sa_layer_norm",
}

_HOOKED = "_lmtune_first_token_hook"


def _keep_first_position(module: nn.Module, args: Any, output: Any) -> Any:
    if isinstance(output, tuple):
        return (output[0][:, :1], *output[1:])
    return output[:, :1]


def trim_last_block(model: nn.Module) -> bool:
    """Hook a supported classifier so its last block runs the feed-forward on [CLS] only.

    Accepts a PEFT-wrapped model. Returns whether the hook is in place (False for models whose
    head reads other positions, such as decoders that read the last token).
    """
    base: nn.Module = getattr(model, "get_base_model")() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    child = FEED_FORWARD_INPUT.get(getattr(config, "model_type", ""))
    if child is None or not type(base).__name__.endswith("ForSequenceClassification"):
        return False
    blocks = base.get_submodule(find_parts(base).blocks_path)
    assert isinstance(blocks, nn.ModuleList)
    last = blocks[-1]
    target = getattr(last, child, None)
    if not isinstance(target, nn.Module):
        return False
    if getattr(target, _HOOKED, None) is None:
        setattr(target, _HOOKED, target.register_forward_hook(_keep_first_position))
    return True
