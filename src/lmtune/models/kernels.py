"""Faster kernels for training: torch.compile (train.compile) and Liger's Triton kernels (train.liger_kernel).

Both change how the model computes, never what: the same parameters under the same names, so
checkpoints, saved folders and resume are as without them.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from typing import Any, cast

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

    The loss stays lmtune's (it runs the output layer at target positions only), so Liger's
    patched forward with its own cross-entropy is not used; the causal LM task applies Liger's
    fused linear cross-entropy to those positions instead (`fused_linear_cross_entropy`).
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


FusedLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def fused_linear_cross_entropy(head: nn.Module, model_config: Any, label_smoothing: float) -> FusedLoss | None:
    """Liger's fused linear cross-entropy for this output layer, `loss(weight, hidden, targets, bias)` summed over
    targets; None where it does not apply.

    It computes the output layer and the loss a chunk of positions at a time, so the N x vocab
    logits never exist at once (with a 49k vocabulary, 4k target tokens hold 800 MB of fp32
    logits). It applies to a plain linear output layer: one an adapter wraps, or logits the model
    changes after the layer (final_logit_softcapping), keep the unfused loss.
    """
    if type(head) is not nn.Linear or getattr(model_config, "final_logit_softcapping", None):
        return None
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return cast(FusedLoss, LigerFusedLinearCrossEntropyLoss(label_smoothing=label_smoothing, reduction="sum"))
