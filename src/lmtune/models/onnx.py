"""A classifier exported to ONNX, run by onnxruntime behind the interface the PyTorch model has.

`OnnxClassifierModel(...)(input_ids=..., attention_mask=...)` returns an object with `.logits`, as
a transformers model does, so everything that reads a classifier's logits (prediction, scoring,
`lmtune serve`) runs an exported model unchanged. It runs on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from lmtune.errors import ModelError

ONNX_FILE = "model.onnx"
INSTALL = "pip install 'lmtune[onnx]' (onnx, onnxruntime, onnxscript)"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(f"ONNX models need onnxruntime, which is not installed: {INSTALL}") from None
    return onnxruntime


class OnnxClassifierModel(nn.Module):
    """An onnxruntime session that answers like a sequence-classification model (`.logits`)."""

    def __init__(self, path: Path, inputs: list[str]):
        super().__init__()
        ort = import_onnxruntime()
        self.path = path
        self.inputs = inputs
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {name: batch[name].detach().cpu().numpy().astype(np.int64) for name in self.inputs}
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))
