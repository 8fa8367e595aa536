"""Loading never runs code from a model folder: safetensors only, no remote code unless asked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmtune
from conftest import PicklePayload, make_config
from lmtune.config import ModelConfig
from lmtune.errors import ModelError
from lmtune.models.loading import load_classifier, load_tokenizer


def test_a_folder_with_only_pickled_weights_is_refused_unopened(tiny_models, toy_data, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["bert"], folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"weights": PicklePayload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="holds no .safetensors weights"):
        lmtune.train(make_config(folder, toy_data, tmp_path / "run"), progress=False)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_model_with_its_own_code_needs_trust_remote_code(tiny_models, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_models["bert"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom_bert"
    config["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig",
                          "AutoModelForSequenceClassification": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w')\n")
    cfg = ModelConfig(name_or_path=str(folder))
    with pytest.raises(ModelError, match="set model.trust_remote_code: true if you trust it"):
        load_classifier(cfg, load_tokenizer(cfg), ["a", "b"], "single_label_classification")
    assert not marker.exists()
