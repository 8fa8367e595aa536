"""full / freeze / lora change exactly the parameters they should, on BERT, GPT-2 and Llama shapes."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import set_seed
from conftest import make_config
from safetensors.torch import load_file

import lmtune
from lmtune.config import MethodConfig, ModelConfig
from lmtune.errors import ConfigError
from lmtune.models.freeze import apply_freeze, parse_layer_spec
from lmtune.models.loading import load_classifier, load_tokenizer
from lmtune.models.parts import find_parts

KINDS = ["bert", "gpt2", "llama"]


def fresh_classifier(folder, seed: int = 0):
    """The classifier exactly as train() builds it before training (same seed, same new head)."""
    cfg = ModelConfig(name_or_path=str(folder))
    tokenizer = load_tokenizer(cfg)
    set_seed(seed)
    return load_classifier(cfg, tokenizer, ["neg", "pos"], "single_label_classification")


@pytest.mark.parametrize(("kind", "choice", "blocks"), [
    *[(kind, {"layers": "0,3"}, (0, 3)) for kind in KINDS],
    ("bert", {}, (2, 3)),  # nothing chosen: the last two blocks (and the head)
    ("llama", {}, (2, 3)),
])
def test_freeze_keeps_frozen_tensors_bit_identical(kind, choice, blocks, tiny_models, toy_data, tmp_path, caplog):
    method = {"name": "freeze", **choice}
    with caplog.at_level("INFO", logger="lmtune"):
        result = lmtune.train(make_config(tiny_models[kind], toy_data, tmp_path / "run", method=method, train={"epochs": 1}), progress=False)
    if not choice:
        assert "training the last 2 of 4 blocks and the new head" in caplog.text
    before = fresh_classifier(tiny_models[kind]).state_dict()
    after = load_file(result.output_dir / "final" / "model.safetensors")
    parts = find_parts(fresh_classifier(tiny_models[kind]))
    trained_prefixes = (*(f"{parts.blocks_path}.{b}." for b in blocks), *(h + "." for h in parts.head))
    changed, unchanged = [], []
    for name, tensor in after.items():
        (changed if not torch.equal(tensor, before[name]) else unchanged).append(name)
    for name in after:
        if name.startswith(trained_prefixes):
            assert name in changed or "bias" in name or "norm" in name.lower(), f"{name} should have trained"
        else:
            assert name in unchanged, f"{name} is frozen but changed"
    assert any(n.startswith(parts.head[0]) for n in changed)
    assert len(changed) > 4


@pytest.mark.parametrize("kind", KINDS)
def test_lora_changes_only_adapter_and_head(kind, tiny_models, toy_data, tmp_path):
    result = lmtune.train(
        make_config(tiny_models[kind], toy_data, tmp_path / "run", method={"name": "lora"}, train={"epochs": 1, "learning_rate": 3e-3}),
        progress=False,
    )
    best = result.output_dir / "best"
    assert (best / "adapter_model.safetensors").is_file() and not (best / "model.safetensors").exists()
    model = lmtune.load(result.output_dir).model
    base = fresh_classifier(tiny_models[kind]).state_dict()
    merged_names = 0
    for name, tensor in model.named_parameters():
        if "lora_B" in name:
            assert tensor.abs().sum() > 0, f"{name} did not train"
        elif "modules_to_save" in name:
            original = name.replace("base_model.model.", "").replace("modules_to_save.default.", "")
            assert not torch.equal(tensor, base[original]) or "bias" in name, f"head {name} did not train"
        elif "lora_A" not in name and "original_module" not in name:
            original = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(tensor, base[original]), f"{name} is frozen but changed"
            merged_names += 1
    assert merged_names > 10


def test_parse_layer_spec_and_errors():
    assert parse_layer_spec("0-1, 3", 4) == [0, 1, 3]
    with pytest.raises(ConfigError, match="has 4 blocks"):
        parse_layer_spec("2-5", 4)
    with pytest.raises(ConfigError, match="backwards"):
        parse_layer_spec("3-1", 4)


def test_freeze_defaults_and_errors(tiny_models):
    model = fresh_classifier(tiny_models["bert"])
    names = apply_freeze(model, MethodConfig(name="freeze"), ["classifier"])
    assert {n.split(".")[3] for n in names if n.startswith("bert.encoder.layer.")} == {"2", "3"}
    assert any(n.startswith("classifier.") for n in names) and not any("embeddings" in n for n in names)
    with pytest.raises(ConfigError, match="matches no parameter"):
        apply_freeze(model, MethodConfig(name="freeze", modules=["no_such_module"]))
    with pytest.raises(ConfigError, match="only 4 blocks"):
        apply_freeze(model, MethodConfig(name="freeze", trainable_layers=9))


def test_freeze_by_pattern_and_embeddings(tiny_models):
    model = fresh_classifier(tiny_models["bert"])
    names = apply_freeze(model, MethodConfig(name="freeze", modules=[r"attention\.self\.query"], train_embeddings=True), ["classifier"])
    assert any("embeddings.word_embeddings" in n for n in names)
    assert any("layer.2.attention.self.query" in n for n in names)
    assert not any("intermediate" in n for n in names)
    assert any(n.startswith("classifier.") for n in names)


def test_decoder_tokenizer_gets_pad_from_eos(tiny_models):
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_models["gpt2"])))
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    model = fresh_classifier(tiny_models["gpt2"])
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_lora_merge_gives_same_predictions(tiny_models, toy_data, tmp_path):
    result = lmtune.train(
        make_config(tiny_models["llama"], toy_data, tmp_path / "run", method={"name": "lora"}, train={"epochs": 1, "learning_rate": 3e-3}),
        progress=False,
    )
    texts = ["the movie was good", "really boring and bad plot", "staff"]
    adapter_scores = lmtune.load(result.output_dir).scores(texts)
    merged = lmtune.merge_adapter(result.output_dir, tmp_path / "merged")
    assert (merged / "model.safetensors").is_file()
    merged_scores = lmtune.load(merged).scores(texts)
    assert torch.allclose(torch.tensor(adapter_scores), torch.tensor(merged_scores), atol=1e-5)
