"""`lmtune export RUN --format onnx [--quantize int8]`: a classifier as an ONNX model for CPU serving.

The run's model (an adapter folded into its base first) is exported with torch.onnx (the dynamo
exporter, onnxscript) with dynamic batch and sequence axes; `--quantize int8` then applies
onnxruntime's dynamic int8 quantization to the weights of its linear layers. The folder holds
model.onnx (and its weights file), the tokenizer, config.json and lmtune.json, so `lmtune.load`,
`lmtune predict` and `lmtune serve` take it like any model folder. Before it is written, the
exported model's logits are compared with the PyTorch model's on check texts: fp32 must agree
to 1e-4; int8 is reported (largest logit change, labels that agree).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmtune.errors import LmtuneError, ModelError
from lmtune.eval.evaluate import MODEL_INPUTS
from lmtune.files import write_atomically
from lmtune.inference import load
from lmtune.models.onnx import INSTALL, ONNX_FILE, OnnxClassifierModel
from lmtune.models.saving import META_FILE
from lmtune.run_dir import resolve_model_dir, run_of_model
from lmtune.tasks.classification import Classifier

log = logging.getLogger("lmtune")

CHECK_TEXTS = [
    "An utterly charming film, warm and funny from the first scene to the last.",
    "Dull, overlong and badly acted.",
    "ok",
    "The plot meanders, yet the performances carry it through a surprisingly moving final act that few will forget.",
]
FP32_TOLERANCE = 1e-4


class _Logits(nn.Module):
    """The classifier with the logits as its one output: what the exporter traces."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def export_onnx(path: str | Path, target: str | Path | None = None, quantize: str | None = None,
                check_texts: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the ONNX folder of a classification run; returns it and the check's numbers."""
    try:
        import onnxscript  # noqa: F401 -- the exporter needs it
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ModelError(f"--format onnx needs the ONNX packages, which are not installed: {INSTALL}") from None
    folder = resolve_model_dir(path)
    out = Path(target) if target else run_of_model(folder).onnx(quantize)
    clf = load(folder, device="cpu")
    if not isinstance(clf, Classifier):
        raise LmtuneError(f"{folder} holds a {clf.meta.get('task')} model; --format onnx exports classifiers (serve language "
                          f"models with lmtune serve, or vLLM on a GPU)")
    if clf.meta.get("format") == "onnx":
        raise LmtuneError(f"{folder} is already an ONNX export; export the run it came from")
    model = clf.model.merge_and_unload() if clf.meta.get("adapter") else clf.model  # type: ignore[operator]
    texts = check_texts or CHECK_TEXTS
    batch = next(iter(clf.loader(texts, None, None, len(texts))))
    inputs = [name for name in MODEL_INPUTS if name in batch]
    with torch.no_grad():
        reference = model(**{n: batch[n] for n in inputs}).logits.numpy()

    check: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        rows, tokens = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Logits(model), (), str(tmp / ONNX_FILE), kwargs={n: batch[n] for n in inputs}, input_names=inputs,
                              output_names=["logits"], dynamic_shapes={n: {0: rows, 1: tokens} for n in inputs}, dynamo=True,
                              verbose=False)
        if quantize:
            fp32 = tmp / "fp32.onnx"
            (tmp / ONNX_FILE).rename(fp32)
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # onnxruntime's advice to pre-process, logged on the root logger at each call
            try:
                quantize_dynamic(str(fp32), str(tmp / ONNX_FILE), weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
            for leftover in tmp.glob("fp32.onnx*"):
                leftover.unlink()
            for data in tmp.glob(f"{ONNX_FILE}.data"):  # the fp32 weights file; the int8 model holds its own
                data.unlink()
        exported = OnnxClassifierModel(tmp / ONNX_FILE, inputs)(**{n: batch[n] for n in inputs}).logits.numpy()
        check.update(max_logit_difference=float(np.abs(exported - reference).max()),
                     labels_agree=float((exported.argmax(-1) == reference.argmax(-1)).mean()), check_texts=len(texts))
        if not quantize and check["max_logit_difference"] > FP32_TOLERANCE:
            raise ModelError(f"the ONNX export of {folder} gives logits {check['max_logit_difference']:.2e} away from the "
                             f"PyTorch model's (over {FP32_TOLERANCE:g}); nothing was written")
        clf.tokenizer.save_pretrained(tmp)
        getattr(model, "config").save_pretrained(tmp)
        meta = {**clf.meta, "format": "onnx", "onnx_inputs": inputs, "quantized": quantize, "exported_from": str(folder),
                "adapter": False, "export_check": check}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    write_atomically(out, write)
    return out, check
