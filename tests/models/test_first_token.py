"""The first-token shortcut changes no logit, loss or gradient, and only applies where it is exact."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from lmtune.models.first_token import FEED_FORWARD_INPUT, trim_last_block

SIZES = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 120}
DISTILBERT_SIZES = {"dim": 32, "n_layers": 3, "n_heads": 2, "hidden_dim": 64, "vocab_size": 120}


def tiny(model_type: str) -> torch.nn.Module:
    sizes = DISTILBERT_SIZES if model_type == "distilbert" else SIZES
    config = AutoConfig.for_model(model_type, num_labels=3, pad_token_id=0, **sizes)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).eval()


def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 120, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding on two rows
    mask[3, 3:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.mark.parametrize("model_type", sorted(FEED_FORWARD_INPUT))
def test_trimmed_model_gives_the_same_logits_and_gradients(model_type):
    plain = tiny(model_type)
    trimmed = copy.deepcopy(plain)
    assert trim_last_block(trimmed)
    inputs, target = batch(), torch.tensor([0, 2, 1, 2])
    results = []
    for model in (plain, trimmed):
        logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (logits_a, grads_a), (logits_b, grads_b) = results
    torch.testing.assert_close(logits_b, logits_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_last_feed_forward_sees_one_position_per_example():
    model = tiny("bert")
    trim_last_block(model)
    seen = []
    model.bert.encoder.layer[-1].intermediate.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    model.bert.encoder.layer[0].intermediate.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    model(**batch())
    assert seen == [torch.Size([4, 9, 64]), torch.Size([4, 1, 64])]


def test_trimming_twice_adds_one_hook():
    model = tiny("roberta")
    assert trim_last_block(model) and trim_last_block(model)
    assert len(model.roberta.encoder.layer[-1].attention._forward_hooks) == 1


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoders_that_read_the_last_token_are_left_alone(model_type):
    config = AutoConfig.for_model(model_type, vocab_size=120, pad_token_id=0, **(
        {"n_embd": 32, "n_layer": 2, "n_head": 2} if model_type == "gpt2"
        else {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    ))
    model = AutoModelForSequenceClassification.from_config(config)
    assert not trim_last_block(model)
    assert not any(m._forward_hooks for m in model.modules())
