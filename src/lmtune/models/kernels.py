"""Faster kernels for training: torch.compile (train.compile) and Liger's Triton kernels (train.liger_kernel).

Both change how the model computes, never what: the same parameters under the same names, so
checkpoints, saved folders and resume are as without them.
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Any

import torch
from torch import nn

from lmtune.errors import ConfigError

BACKEND = "inductor"  # torch.compile's back end: TorchInductor, PyTorch's default
COMPILERS = ("cc", "gcc", "clang", "c++", "g++", "clang++")  # TorchInductor builds its kernels' C++ (CPU) and launchers (GPU) with one


def compile_model(model: nn.Module) -> None:
    """train.compile: torch.compile the model's forward in place (its parameter names stay as they are)."""
    if not any(shutil.which(name) for name in COMPILERS):
        raise ConfigError("train.compile: TorchInductor needs a C/C++ compiler on PATH (gcc or clang), and this machine has "
                          "none; install one (apt-get install g++) or set train.compile: false")
    model.compile(backend=BACKEND)


def apply_liger(model: nn.Module) -> None:
    """train.liger_kernel: Liger's fused kernels (RMSNorm, RoPE, SwiGLU and the like) in the model's blocks.

    The loss stays lmtune's: it runs the output layer at target positions only, so Liger's own
    cross-entropy is not patched in.
    """
    missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                     ("the liger-kernel package", importlib.util.find_spec("liger_kernel") is not None)) if not ok]
    if missing:
        raise ConfigError(f"train.liger_kernel needs {' and '.join(missing)} (its kernels are written in Triton), which this "
                          f"machine lacks; set train.liger_kernel: false (pip install liger-kernel on a CUDA machine)")
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ConfigError(f"train.liger_kernel: Liger has no kernels for model type {model_type!r} (it has them for "
                          f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); set train.liger_kernel: false")
    options: dict[str, Any] = {"cross_entropy": False, "fused_linear_cross_entropy": False}
    _apply_liger_kernel_to_instance(model=model, **options)
