"""Generate replies for a list of prompts, in batches: left-padded, greedy unless told to sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmtune.progress import bar


@dataclass
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy decoding
    top_p: float = 1.0


@torch.no_grad()
def generate_texts(
    model: nn.Module, tokenizer: Any, prompts: list[str], sampling: Sampling, batch_size: int = 8,
    add_special_tokens: bool = True,
) -> list[str]:
    """The text each prompt is continued with, up to the first end-of-sequence token."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens are appended on the right of every row
    options = generation_options(model, tokenizer, sampling)
    outputs = []
    try:
        # Longest prompts first: rows of similar length waste less padding.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        texts: dict[int, str] = {}
        for start in bar(range(0, len(order), batch_size), desc="generate", unit="batches"):
            chunk = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(device)
            out = getattr(model, "generate")(**enc, **options)  # (B, prompt + new); a transformers model
            # A decoder-only model returns prompt + reply; an encoder-decoder returns the reply alone.
            new = out if getattr(model.config, "is_encoder_decoder", False) else out[:, enc["input_ids"].shape[1]:]
            for i, row in zip(chunk, new):
                texts[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
        outputs = [texts[i] for i in range(len(prompts))]
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return outputs


def generation_options(model: nn.Module, tokenizer: Any, sampling: Sampling) -> dict[str, Any]:
    """Keyword arguments for `model.generate`: length, stop tokens, greedy or sampled."""
    options: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                               "eos_token_id": stop_token_ids(model, tokenizer)}
    if sampling.temperature > 0:
        options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:  # None overrides sampling settings a model's generation_config may carry
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return options


def stop_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (end-of-turn tokens of chat models)."""
    ids = {tokenizer.eos_token_id}
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)
