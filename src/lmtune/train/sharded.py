"""Checkpoints and saved models when each process holds a shard of every parameter (FSDP2).

A checkpoint's trainable tensors and optimizer state are written by every process at once, each
its own shards, through torch distributed checkpoint into the checkpoint's `shards/` folder
(nothing is gathered in one process, so a model too big for one device checkpoints as fast as
the slowest process writes its part); a resume reads each shard back into the process that
owns it. The other files of the checkpoint are lmtune's usual ones. Saved models (`best/`,
`final/`) are gathered into full tensors first: they are plain Hugging Face folders.

Every function here is collective: all processes call it together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARDS_DIR = "shards"  # inside a checkpoint folder
SHARDS_INDEX = f"{SHARDS_DIR}/.metadata"  # written by torch distributed checkpoint once every shard is


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds the torch optimizer


def reshard(model: nn.Module) -> None:
    """Free the gathered parameters FSDP2 keeps after a forward pass (it keeps the root module's).

    Until then the model's parameters are those full tensors, not the shards the optimizer updates.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def trainable_shards(model: nn.Module) -> dict[str, torch.Tensor]:
    """This process's shards of the tensors training changes, by parameter name (read and written in place)."""
    reshard(model)
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_shards(folder: Path, model: nn.Module, optimizer: Any) -> None:
    """Write this process's shards of the trainable tensors and of the optimizer state into folder/shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = {"model": trainable_shards(model), "optimizer": get_optimizer_state_dict(model, _torch_optimizer(optimizer))}
    dcp.save(state, checkpoint_id=str(folder / SHARDS_DIR))


def load_shards(folder: Path, model: nn.Module, optimizer: Any = None) -> None:
    """Read this process's shards of the trainable tensors (and the optimizer state, when given) from folder/shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state: dict[str, Any] = {"model": trainable_shards(model)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, _torch_optimizer(optimizer))
    dcp.load(state, checkpoint_id=str(folder / SHARDS_DIR))
    if optimizer is not None:
        set_optimizer_state_dict(model, _torch_optimizer(optimizer), state["optimizer"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors, gathered on the CPU of the main process (the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    tensors = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {name: value for name, value in tensors.items() if isinstance(value, torch.Tensor)}
