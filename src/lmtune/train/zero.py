"""Training under DeepSpeed ZeRO (stages 2 and 3) through Accelerate: what differs from one process or DDP.

- DeepSpeed's engine owns the update. lmtune marks the last micro-batch of each step as the
  gradient-accumulation boundary, and `engine.step()` clips (its gradient_clipping is set to
  train.max_grad_norm), updates and zeroes the gradients; a non-finite gradient is DeepSpeed's
  overflow: it leaves the weights as they were, and lmtune counts the step as skipped. The
  schedule stays lmtune's own and steps once per optimizer step.
- The optimizer state is partitioned over the processes: each process writes its own partition
  into a checkpoint (optimizer-RANK.pt) and reads it back on resume. Those files hold a few of
  DeepSpeed's own state classes besides tensors, so they load with weights_only=True allowing
  exactly those (`SAFE_CLASSES`), never any other code.
- Stage 3 partitions every parameter as well: reading or writing the trainable tensors gathers
  them first (every process together), and the saved models are gathered whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmtune.errors import CheckpointError
from lmtune.schema import TrainConfig

if TYPE_CHECKING:
    from accelerate import Accelerator


def is_deepspeed(accelerator: Accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator: Accelerator) -> int:
    """0 without DeepSpeed, else the ZeRO stage."""
    return int(accelerator.state.deepspeed_plugin.zero_stage) if is_deepspeed(accelerator) else 0


def configure(accelerator: Accelerator, tc: TrainConfig) -> None:
    """Fill the DeepSpeed config from lmtune's settings before Accelerate prepares the engine.

    lmtune feeds one micro-batch at a time and marks the accumulation boundary itself, so DeepSpeed
    accumulates over 1 (it would divide each loss again otherwise).
    """
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = tc.batch_size
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = tc.batch_size * accelerator.num_processes
    config["gradient_clipping"] = float(tc.max_grad_norm or 0.0)
    config.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True


def backward(engine: Any, loss: torch.Tensor, last: bool) -> None:
    """One micro-batch's backward; gradients are reduced over the processes at the step's last one."""
    engine.set_gradient_accumulation_boundary(last)
    engine.backward(loss)


def update(engine: Any) -> tuple[bool, float]:
    """DeepSpeed's step: whether it updated the weights (False: a non-finite gradient, skipped), and the gradient norm."""
    engine.step()
    norm = engine.get_global_grad_norm()
    norm = float(norm) if norm is not None else 0.0
    return not bool(getattr(engine.optimizer, "overflow", False)), norm


@contextlib.contextmanager
def gathered(model: nn.Module, stage: int, write: bool = False) -> Iterator[list[tuple[str, nn.Parameter]]]:
    """The trainable parameters, whole within the block (stage 3 gathers them; `write`: changes made in the
    main process are partitioned again at the end). Every process enters together."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if stage != 3:
        yield params
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0 if write else None):
        yield params


def read_trainable(model: nn.Module, stage: int) -> dict[str, torch.Tensor]:
    """CPU copies of the whole trainable tensors (every process calls it; all get them)."""
    with gathered(model, stage) as params:
        return {n: p.detach().cpu().clone() for n, p in params}


@torch.no_grad()
def write_trainable(model: nn.Module, saved: dict[str, torch.Tensor], stage: int, source: Path | str) -> None:
    with gathered(model, stage, write=True) as params:
        names = {n for n, _ in params}
        if saved.keys() != names:
            missing, extra = sorted(names - saved.keys()), sorted(saved.keys() - names)
            raise CheckpointError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, param in params:
            param.copy_(saved[name])


def partition_file(folder: Path, process_index: int) -> Path:
    return folder / f"optimizer-{process_index}.pt"


def save_partition(folder: Path, optimizer: Any, process_index: int) -> None:
    """This process's partition of the optimizer state (and of the fp32 master weights)."""
    torch.save(optimizer.state_dict(), partition_file(folder, process_index))


def load_partition(folder: Path, optimizer: Any, process_index: int, num_processes: int) -> None:
    """Read this process's partition back; the master weights come from it too, exactly as saved."""
    path = partition_file(folder, process_index)
    try:
        with torch.serialization.safe_globals(safe_classes()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is a checkpoint that cannot be trusted
        raise CheckpointError(f"{path} was refused or cannot be read ({str(err).splitlines()[0][:300]}); it is loaded with "
                              f"weights_only=True, allowing only DeepSpeed's own state classes") from None
    zero = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper holds DeepSpeed's ZeRO optimizer
    if getattr(zero, "elastic_checkpoint", False):
        raise CheckpointError("DeepSpeed's elastic_checkpoint is on: lmtune resumes each process from its own "
                              "partition only; set zero_optimization.elastic_checkpoint: false")
    # DeepSpeed takes every process's state and reads the one at this process's index.
    zero.load_state_dict([state] * num_processes, load_optimizer_states=True, load_from_fp32_weights=True)


def safe_classes() -> list[Any]:
    """DeepSpeed's classes that its optimizer state holds besides tensors and plain values."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def full_state_dict(accelerator: Accelerator, engine: Any) -> dict[str, torch.Tensor]:
    """The whole model's tensors under stage 3, gathered in the main process (every process calls it)."""
    return dict(accelerator.get_state_dict(engine))
