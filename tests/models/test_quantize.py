"""model.quantize (QLoRA on a 4-bit base, 8-bit too) and train.optimizer=adamw_8bit, through bitsandbytes' CPU back end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmtune
from conftest import LM_VOCAB, lm_tokenizer, make_config, train_refused
from lmtune.config import build_config
from lmtune.errors import ConfigError

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    """A tiny llama whose layers are at least 64 wide: bitsandbytes' CPU kernels quantize in blocks of 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("quantizable") / "llama"
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(LM_VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=LM_VOCAB.index("<s>"),
        eos_token_id=LM_VOCAB.index("</s>"), tie_word_embeddings=True,
    )).save_pretrained(folder, safe_serialization=True)
    lm_tokenizer().save_pretrained(folder)
    return {"llama": folder}


def lm_config(tiny_lms, identity_data, out: Path, *, quantize: str = "none", method: dict | None = None,
              optimizer: str = "adamw", output: dict | None = None, **train) -> dict:
    return make_config(tiny_lms["llama"], identity_data, out, "causal_lm", model={"max_length": 64, "quantize": quantize},
                       method=method or {"name": "lora", "lora_rank": 8},
                       train={"epochs": 4, "batch_size": 8, "learning_rate": 1e-2, "log_every_n_steps": 1,
                              "save_every_n_steps": 1000, "optimizer": optimizer, **train},
                       eval={"generate": False}, output={"dir": str(out), **(output or {})})


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


def tensors_named(tree, names: tuple[str, ...]):
    """The tensors under keys `names` anywhere in nested dicts, lists and tuples."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        if isinstance(value, torch.Tensor) and key in names:
            yield value
        elif isinstance(value, (dict, list, tuple)):
            yield from tensors_named(value, names)


def loaded(cfg: dict):
    from lmtune.train.setup import load_model

    return load_model(build_config(cfg))[2]


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_the_base_is_quantized_and_only_the_adapter_trains(tiny_lms, identity_data, tmp_path, bits):
    import bitsandbytes as bnb

    layer = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[bits]
    model = loaded(lm_config(tiny_lms, identity_data, tmp_path / "run", quantize=bits))
    quantized = [m for m in model.modules() if isinstance(m, layer)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up and down of both blocks
    assert all(m.weight.dtype in (torch.uint8, torch.int8) for m in quantized)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_qlora_trains_saves_the_adapter_and_merges_into_the_unquantized_base(tiny_lms, identity_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, plain = tmp_path / "run", tmp_path / "plain"
    lmtune.train(lm_config(tiny_lms, identity_data, plain, learning_rate=3e-2, epochs=6), progress=False)
    lmtune.train(lm_config(tiny_lms, identity_data, run, quantize="4bit", learning_rate=3e-2, epochs=6,
                           output={"merge_lora": True}), progress=False)
    curve, plain_curve = losses(run), losses(plain)
    end, plain_end = sum(curve[-4:]) / 4, sum(plain_curve[-4:]) / 4
    assert end < curve[0] - 0.2, curve  # it learns on a 4-bit base (random tiny weights: LoRA alone learns slowly)
    assert abs(end - plain_end) < 0.15, (curve, plain_curve)  # about as well as LoRA on the fp32 base
    best = run / "best"
    assert (best / "adapter_config.json").is_file() and not (best / "model.safetensors").exists()
    meta = json.loads((best / "lmtune.json").read_text())
    assert meta["adapter"] and "quantize" not in meta["base_model"]  # loaded later onto the base as it is on disk

    ids = torch.tensor([[4, 9, 10, 11, 12, 25]])
    base = AutoModelForCausalLM.from_pretrained(tiny_lms["llama"], dtype=torch.float32)
    with torch.no_grad():
        with_adapter = PeftModel.from_pretrained(base, best).eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()(input_ids=ids).logits
    assert not any("lora" in name for name in AutoModelForCausalLM.from_pretrained(run / "merged").state_dict())
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-4)  # merged into fp32 weights, not 4-bit ones


def test_adamw_8bit_trains_and_resumes_exactly(tiny_lms, identity_data, tmp_path):
    def cfg(out: Path, optimizer: str = "adamw_8bit") -> dict:
        return lm_config(tiny_lms, identity_data, out, method={"name": "full"}, optimizer=optimizer, learning_rate=3e-3,
                         max_steps=8, save_every_n_steps=4, keep_last_checkpoints=5)

    whole = tmp_path / "whole"
    lmtune.train(cfg(whole), progress=False)
    lmtune.train(cfg(tmp_path / "adamw", "adamw"), progress=False)
    curve, fp32_curve = losses(whole), losses(tmp_path / "adamw")
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.5, curve
    assert abs(curve[-1] - fp32_curve[-1]) < 0.1, (curve, fp32_curve)  # as AdamW with 32-bit moments, near enough
    checkpoint = whole / "checkpoints" / "step-4"
    moments = list(tensors_named(torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"], ("state1", "state2")))
    assert moments and any(t.dtype == torch.uint8 for t in moments)  # the large tensors' moments are kept in 8 bits

    # the run as a kill right after its step-4 checkpoint leaves it, resumed
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, resumed / "checkpoints" / "step-4")
    shutil.copy(whole / "config.yaml", resumed / "config.yaml")
    lmtune.train(cfg(resumed) | {"resume": "auto"}, progress=False)
    assert json.loads((resumed / "status.json").read_text())["start_step"] == 4
    assert losses(resumed) == curve  # the 8-bit moments come back from the checkpoint as they were
    final, again = load_file(whole / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert all(torch.equal(final[name], again[name]) for name in final)


def test_a_quantized_base_with_a_method_that_trains_the_base_is_refused(tiny_lms, identity_data, tmp_path, capsys):
    cfg = lm_config(tiny_lms, identity_data, tmp_path / "run", quantize="4bit", method={"name": "full"})
    with pytest.raises(ConfigError, match="model.quantize=4bit needs a method that trains an adapter .*lora, dora, ia3"):
        build_config(cfg)
    assert "method.name is full" in train_refused(cfg, tmp_path, capsys)


def test_without_the_official_bitsandbytes_package_both_keys_are_refused(tiny_lms, identity_data, tmp_path, monkeypatch):
    from importlib import metadata, util

    real_find_spec = util.find_spec
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"bitsandbytes": ["bitsandbytes-cpu-fork"]})
    with pytest.raises(ConfigError, match="comes from bitsandbytes-cpu-fork, not the official bitsandbytes package"):
        loaded(lm_config(tiny_lms, identity_data, tmp_path / "a", quantize="4bit"))

    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"model.quantize=8bit needs the bitsandbytes package.*pip install bitsandbytes"):
        loaded(lm_config(tiny_lms, identity_data, tmp_path / "b", quantize="8bit"))
    with pytest.raises(ConfigError, match="train.optimizer=adamw_8bit needs the bitsandbytes package"):
        lmtune.train(lm_config(tiny_lms, identity_data, tmp_path / "c", method={"name": "full"}, optimizer="adamw_8bit"),
                     progress=False)
    assert not (tmp_path / "c").exists()
