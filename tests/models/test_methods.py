"""full / freeze / lora / dora / ia3 change exactly the parameters they should, on BERT, GPT-2 and Llama shapes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

import lmtune
from conftest import make_config
from lmtune.config import ModelConfig, build_config
from lmtune.errors import ConfigError
from lmtune.models.freeze import FreezeOptions, apply_freeze, parse_layer_spec
from lmtune.models.ia3 import IA3Options, apply_ia3
from lmtune.models.loading import load_classifier, load_tokenizer
from lmtune.models.methods import METHODS
from lmtune.models.parts import find_parts, ia3_target_names

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
    names = apply_freeze(model, FreezeOptions(), ["classifier"])
    assert {n.split(".")[3] for n in names if n.startswith("bert.encoder.layer.")} == {"2", "3"}
    assert any(n.startswith("classifier.") for n in names) and not any("embeddings" in n for n in names)
    with pytest.raises(ConfigError, match="matches no parameter"):
        apply_freeze(model, FreezeOptions(modules=["no_such_module"]))
    with pytest.raises(ConfigError, match="only 4 blocks"):
        apply_freeze(model, FreezeOptions(trainable_layers=9))


def test_freeze_by_pattern_and_embeddings(tiny_models):
    model = fresh_classifier(tiny_models["bert"])
    names = apply_freeze(model, FreezeOptions(modules=[r"attention\.self\.query"], train_embeddings=True), ["classifier"])
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


# --- dora and ia3: PEFT adapters beside lora, on a classifier and a causal LM of each shape ---

ADAPTER_PARTS = ("lora_A", "lora_B", "lora_magnitude_vector", "ia3_l")  # what dora and ia3 add to a layer
TEXTS = ["the movie was good", "really boring and bad plot", "staff"]
Tensors = dict[str, torch.Tensor]


def train_watched(monkeypatch, cfg: dict) -> tuple[lmtune.TrainResult, Tensors, Tensors, set[str]]:
    """Train through lmtune.train: the result, the adapted model's parameters before and after, and which trained.

    The method's registry entry is wrapped to keep the model it builds; "after" is read at the last
    evaluation, before `output.merge_lora` folds the adapter into the base weights.
    """
    method = METHODS[cfg["method"]["name"]]
    seen: dict[str, Any] = {}

    def apply(model, method_cfg, task_type, new_head):
        seen["model"] = method.apply(model, method_cfg, task_type, new_head)
        seen["before"] = {n: p.detach().clone() for n, p in seen["model"].named_parameters()}
        seen["trainable"] = {n for n, p in seen["model"].named_parameters() if p.requires_grad}
        return seen["model"]

    def on_evaluate(step, metrics):
        seen["after"] = {n: p.detach().clone() for n, p in seen["model"].named_parameters()}

    monkeypatch.setitem(METHODS, method.name, replace(method, apply=apply))
    result = lmtune.train(cfg, progress=False, on_evaluate=on_evaluate)
    return result, seen["before"], seen["after"], seen["trainable"]


def base_name(peft_name: str) -> str:
    """The pretrained model's name of a parameter of the PEFT-wrapped model."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".").replace(".modules_to_save.default.", ".")


def assert_only_adapter_and_head_trained(before, after, trainable, pretrained):
    """Base weights bit-identical to the pretrained ones, every adapter tensor and new head tensor changed; the head's names."""
    adapter = {n for n in after if any(f".{part}." in n for part in ADAPTER_PARTS)}
    head = {n for n in after if ".modules_to_save." in n}
    assert adapter and trainable == adapter | head
    for name, tensor in after.items():
        if name in trainable:
            assert not torch.equal(tensor, before[name]), f"{name} did not train"
        else:
            assert torch.equal(tensor, pretrained[base_name(name)]), f"{name} is frozen but changed"
    return head


@pytest.mark.parametrize("method", ["dora", "ia3"])
@pytest.mark.parametrize("kind", KINDS)
def test_adapter_classifier_trains_only_adapter_and_head_and_loads_in_peft(
    method, kind, tiny_models, toy_data, tmp_path, monkeypatch,
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = make_config(tiny_models[kind], toy_data, tmp_path / "run", method={"name": method},
                      train={"max_steps": 4, "learning_rate": 1e-2, "keep_last_checkpoints": 0},
                      output={"merge_lora": True, "save_final": False, "report": False})
    result, before, after, trainable = train_watched(monkeypatch, cfg)
    pretrained = fresh_classifier(tiny_models[kind])
    head = assert_only_adapter_and_head_trained(before, after, trainable, pretrained.state_dict())
    new_head = find_parts(pretrained).head  # the classifier (and BERT's pooler)
    assert all(any(base_name(n).startswith(h + ".") for n in head) for h in new_head)

    best = result.output_dir / "best"
    assert (best / "adapter_model.safetensors").is_file() and not (best / "model.safetensors").exists()
    ours = lmtune.load(result.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(best)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_models[kind], num_labels=2,
                                                              pad_token_id=tokenizer.pad_token_id)
    plain = PeftModel.from_pretrained(base, best).eval()
    with torch.no_grad():
        probabilities = plain(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits.softmax(-1)
    torch.testing.assert_close(probabilities, torch.as_tensor(ours.scores(TEXTS)), rtol=0, atol=1e-6)

    merged = AutoModelForSequenceClassification.from_pretrained(result.output_dir / "merged").eval()
    assert not any(any(part in n for part in ADAPTER_PARTS) for n, _ in merged.named_parameters())
    with torch.no_grad():
        merged_probabilities = merged(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits.softmax(-1)
    torch.testing.assert_close(merged_probabilities, probabilities, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["dora", "ia3"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_adapter_causal_lm_trains_only_adapter_and_loads_in_peft(method, kind, tiny_lms, identity_data, tmp_path,
                                                                 monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = make_config(tiny_lms[kind], identity_data, tmp_path / "run", "causal_lm", method={"name": method},
                      model={"max_length": 64}, train={"max_steps": 4, "batch_size": 8, "learning_rate": 1e-2,
                                                       "keep_last_checkpoints": 0},
                      output={"merge_lora": True, "save_final": False, "report": False})
    result, before, after, trainable = train_watched(monkeypatch, cfg)
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_lms[kind]).state_dict()
    head = assert_only_adapter_and_head_trained(before, after, trainable, pretrained)
    assert not head  # the pretrained LM head (tied to the embeddings) stays frozen

    lm = lmtune.load(result.output_dir)
    ids = lm.tokenizer(lm.prompt_text([{"role": "user", "content": "who are you ?"}]), return_tensors="pt")
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lms[kind]), result.output_dir / "best")
    plain.eval()
    merged = AutoModelForCausalLM.from_pretrained(result.output_dir / "merged").eval()
    with torch.no_grad():
        logits = lm.model(**ids).logits
        torch.testing.assert_close(plain(**ids).logits, logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(merged(**ids).logits, logits, rtol=1e-4, atol=1e-5)


def test_ia3_targets_keys_values_and_feed_forward_outputs(tiny_models):
    expected = {
        "bert": ({"attention.self.key", "attention.self.value", "output.dense"}, "output.dense"),
        "gpt2": ({"attn.c_attn", "mlp.c_proj"}, "mlp.c_proj"),  # GPT-2 has one fused query-key-value Conv1D
        "llama": ({"self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"}, "mlp.down_proj"),
    }
    for kind, (per_block, feedforward) in expected.items():
        model = fresh_classifier(tiny_models[kind])
        blocks = find_parts(model).blocks_path
        targets, ffn = ia3_target_names(model, [blocks])
        assert len(targets) == 4 * len(per_block), kind
        assert set(targets) == {f"{blocks}.{i}.{n}" for i in range(4) for n in per_block}, kind
        assert ffn == [f"{blocks}.{i}.{feedforward}" for i in range(4)], kind


def test_ia3_chosen_targets_and_errors(tiny_models):
    chosen = IA3Options(ia3_target_modules=["v_proj", "down_proj"])
    model = apply_ia3(fresh_classifier(tiny_models["llama"]), chosen)
    ia3 = model.peft_config["default"]
    assert ia3.target_modules == {"v_proj", "down_proj"} and ia3.feedforward_modules == {"down_proj"}  # as found by shape
    assert sum("ia3_l" in n for n, _ in model.named_parameters()) == 8
    with pytest.raises(ConfigError, match="ia3_target_modules"):
        apply_ia3(fresh_classifier(tiny_models["llama"]), IA3Options(ia3_target_modules=["no_such_layer"]))
    base = {"model": {"name_or_path": "m"}, "data": {"train": "t.csv"}}
    with pytest.raises(ConfigError, match="without method.ia3_target_modules"):
        build_config({**base, "method": {"name": "ia3", "ia3_feedforward_modules": ["down_proj"]}})
    with pytest.raises(ConfigError, match=r"\['up_proj'\], which are not in method.ia3_target_modules"):
        build_config({**base, "method": {"name": "ia3", "ia3_target_modules": ["v_proj"],
                                         "ia3_feedforward_modules": ["up_proj"]}})

