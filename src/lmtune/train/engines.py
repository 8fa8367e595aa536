"""The engine a run trains with, as its launcher chose it: one process, DDP, FSDP2 or DeepSpeed ZeRO, all through Accelerate.

`accelerate launch --config_file examples/accelerate/NAME.yaml -m lmtune.cli train CONFIG` tells
each process which engine to use in its environment (ACCELERATE_USE_FSDP, FSDP_*, ...); `torchrun`
alone gives DDP. Under DeepSpeed ZeRO the engine owns the update and the optimizer state is
partitioned (train/zero.py). The engine changes how the prepared
model's tensors are read and written: under FSDP2 every process holds a shard of each parameter,
so checkpoints are saved shard by shard (train/sharded.py) and the saved models are gathered
first. Everything else in the loop is the same.

Accelerate 1.16 selects FSDP only for GPU-like devices: processes on CPUs (gloo) get plain DDP
even when the launcher asked for FSDP. Its FSDP2 code itself runs on CPU processes, so lmtune
selects it there (`_fsdp_on_cpus`): FSDP then trains and resumes on any machine, which is how the
test suite proves it on two CPU processes.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from lmtune.errors import ConfigError
from lmtune.schema import Config
from lmtune.train import zero

if TYPE_CHECKING:
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # train.precision -> Accelerate's mixed_precision

Engine = Literal["single", "ddp", "fsdp", "deepspeed"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def requested_engine() -> Engine:
    """What the launcher asked for, read from this process's environment."""
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def build_accelerator(cfg: Config) -> Accelerator:
    """The Accelerator of this process, for the engine the launcher chose."""
    from accelerate import Accelerator

    engine = requested_engine()  # check_engine(cfg, engine) has accepted it
    # Several processes on a machine without CUDA (torchrun --nproc_per_node N), or FSDP there: Accelerate
    # trains them together over gloo only when told the run is a CPU run.
    on_cpus = not torch.cuda.is_available() and (int(os.environ.get("WORLD_SIZE", "1")) > 1 or engine == "fsdp")
    plugin = fsdp_plugin() if engine == "fsdp" else None
    accelerator = Accelerator(cpu=on_cpus, mixed_precision=PRECISIONS[cfg.train.precision], fsdp_plugin=plugin)
    if plugin is not None and on_cpus:
        _fsdp_on_cpus(accelerator, plugin)
    if engine == "deepspeed":
        zero.configure(accelerator, cfg.train)
    return accelerator


def check_engine(cfg: Config, engine: Engine) -> None:
    """Refuse, before anything loads, what the chosen engine cannot do."""
    if engine == "fsdp":
        version = os.environ.get("FSDP_VERSION", "1")
        if version != "2":
            raise ConfigError(
                f"the accelerate config asks for FSDP version {version}; lmtune trains with FSDP2 only (its checkpoints are "
                f"saved shard by shard through torch distributed checkpoint). Set fsdp_version: 2 in the fsdp_config of the "
                f"accelerate config file (see examples/accelerate/fsdp2.yaml)"
            )
        if _flag("FSDP_OFFLOAD_PARAMS") and not torch.cuda.is_available():
            raise ConfigError(
                "the accelerate config sets fsdp_offload_params: true, which keeps the shards in CPU memory between a GPU's "
                "uses of them; these processes have no GPU, so there is nothing to offload from. Launch with "
                "examples/accelerate/fsdp2.yaml (fsdp_offload_params: false)"
            )
    if engine in ("fsdp", "deepspeed") and cfg.train.adversarial != "none":
        raise ConfigError(
            f"train.adversarial={cfg.train.adversarial} cannot run under {'FSDP' if engine == 'fsdp' else 'DeepSpeed'}: it takes several forward "
            f"and backward passes per micro-batch and gradients of the input embeddings only, which a sharded model "
            f"does not allow. Launch with examples/accelerate/ddp.yaml (or one process), or set train.adversarial=none"
        )
    if engine == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("the accelerate config asks for DeepSpeed, which is not installed: pip install deepspeed "
                              "(or launch with examples/accelerate/fsdp2.yaml, which needs nothing more)")
        if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "the accelerate config asks for DeepSpeed on several processes without a GPU: Accelerate counts such "
                "DeepSpeed processes as one, so each would train on all the data. Launch several CPU processes with "
                "examples/accelerate/fsdp2.yaml (FSDP2 shards as ZeRO-3 does) or examples/accelerate/ddp.yaml"
            )
        if cfg.train.auto_batch_size:
            raise ConfigError(
                "train.auto_batch_size=true cannot run under DeepSpeed: after an out-of-memory error it replays the step in "
                "smaller pieces, and DeepSpeed's engine keeps the gradients it has already reduced. Set "
                "train.auto_batch_size=false and choose train.batch_size (with train.gradient_accumulation_steps) yourself"
            )
        if cfg.eval.generate and deepspeed_plugin().zero_stage == 3:
            raise ConfigError(
                "eval.generate=true cannot run under DeepSpeed ZeRO-3: the model is split over the processes, and the "
                "replies are generated by the main process alone. Set eval.generate=false for the run (or use ZeRO-2), and "
                "score the replies of the saved model afterwards with: lmtune eval OUTPUT_DIR --data FILE"
            )
    if engine == "fsdp" and cfg.eval.generate:
        raise ConfigError(
            "eval.generate=true cannot run under FSDP: the model is split over the "
            "processes, and the replies are generated by the main process alone. Set eval.generate=false for the run, and "
            "score the replies of the saved model afterwards with: lmtune eval OUTPUT_DIR --data FILE"
        )


def deepspeed_plugin() -> DeepSpeedPlugin:
    """Accelerate's DeepSpeed settings, from the environment its launcher set."""
    from accelerate.utils import DeepSpeedPlugin

    return DeepSpeedPlugin()


def fsdp_plugin() -> FullyShardedDataParallelPlugin:
    """Accelerate's FSDP settings, from the environment its launcher set."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin()


def _fsdp_on_cpus(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """Select Accelerate's FSDP mode for CPU processes over gloo (Accelerate leaves them in DDP mode)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.fsdp_plugin = plugin
    if not accelerator.is_fsdp2:
        raise RuntimeError("Accelerate did not take up FSDP2 for CPU processes; this Accelerate version is not supported")


def is_sharded(accelerator: Accelerator) -> bool:
    """Each process holds only a shard of the parameters (FSDP2)."""
    return bool(accelerator.is_fsdp2)


def checkpoint_layout(accelerator: Accelerator) -> str:
    """How this run's checkpoints hold the tensors (checkpoint.REQUIRED): "sharded" (FSDP2), "zero" (DeepSpeed), "full"."""
    if is_sharded(accelerator):
        return "sharded"
    return "zero" if zero.is_deepspeed(accelerator) else "full"


def gathered_weights(accelerator: Accelerator, model: nn.Module, unwrapped: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's tensors, gathered by every process, where none holds them all (FSDP2, ZeRO-3); else None."""
    from lmtune.train import sharded

    if is_sharded(accelerator):
        return sharded.full_state_dict(unwrapped)
    if zero.zero_stage(accelerator) == 3:
        return zero.full_state_dict(accelerator, model)
    return None
