"""Generate replies for a list of prompts, in batches: left-padded, greedy unless told to sample."""

from __future__ import annotations

from collections.abc import Callable
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
    stop: tuple[str, ...] = ()  # a reply ends before the first of these texts
    seed: int | None = None  # sampling with a seed gives the same reply every time


@dataclass
class Completion:
    """What one prompt was continued with, and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop": end of sequence or a stop text; "length": max_new_tokens reached


@torch.no_grad()
def generate_texts(
    model: nn.Module, tokenizer: Any, prompts: list[str], sampling: Sampling, batch_size: int = 8,
    add_special_tokens: bool = True,
) -> list[str]:
    """The text each prompt is continued with, up to the first end-of-sequence token."""
    return [c.text for c in generate_completions(model, tokenizer, prompts, sampling, batch_size, add_special_tokens)]


@torch.no_grad()
def generate_completions(
    model: nn.Module, tokenizer: Any, prompts: list[str], sampling: Sampling, batch_size: int = 8,
    add_special_tokens: bool = True,
) -> list[Completion]:
    """Every prompt continued, in batches of `batch_size`, with its token counts and why its reply ended."""
    # Longest prompts first: rows of similar length waste less padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    done: dict[int, Completion] = {}
    for start in bar(range(0, len(order), batch_size), desc="generate", unit="batches"):
        chunk = order[start : start + batch_size]
        done.update(zip(chunk, complete(model, tokenizer, [prompts[i] for i in chunk], sampling, add_special_tokens)))
    return [done[i] for i in range(len(prompts))]


@torch.no_grad()
def complete(
    model: nn.Module, tokenizer: Any, prompts: list[str], sampling: Sampling, add_special_tokens: bool = True,
    strip: bool = True, should_stop: Callable[[], bool] | None = None, streamer: Any = None,
) -> list[Completion]:
    """Continue every prompt in one `generate` call (one batch).

    `should_stop` is asked after every new token: True ends the generation there (a caller that
    gave up). `streamer` is a transformers streamer, for a batch of one prompt.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens are appended on the right of every row
    options = generation_options(model, tokenizer, sampling)
    seq2seq = getattr(model.config, "is_encoder_decoder", False)
    if streamer is not None:
        options["streamer"] = streamer
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(device)
        if sampling.stop or should_stop is not None:
            reply_from = 1 if seq2seq else enc["input_ids"].shape[1]  # an encoder-decoder's output starts with its start token
            options["stopping_criteria"] = _stopping(tokenizer, reply_from, sampling.stop, should_stop)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out = getattr(model, "generate")(**enc, **options)  # (B, prompt + new); a transformers model
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    # A decoder-only model returns prompt + reply; an encoder-decoder returns the reply alone (after its start token).
    new = out[:, 1:] if seq2seq else out[:, enc["input_ids"].shape[1]:]
    ends = set(options["eos_token_id"]) | {tokenizer.pad_token_id}
    completions = []
    for row, mask in zip(new.tolist(), enc["attention_mask"]):
        n = next((i + 1 for i, t in enumerate(row) if t in ends), None)  # through the end token
        text = str(tokenizer.decode(row[:n], skip_special_tokens=True))
        cut = _cut_at_stop(text, sampling.stop)
        reason = "stop" if n is not None or cut is not None or len(row) < sampling.max_new_tokens else "length"
        text = text if cut is None else text[:cut]
        completions.append(Completion(text.strip() if strip else text, int(mask.sum()), n or len(row), reason))
    return completions


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> int | None:
    found = [i for s in stop if (i := text.find(s)) >= 0]
    return min(found) if found else None


def _stopping(tokenizer: Any, prompt_length: int, stop: tuple[str, ...], should_stop: Callable[[], bool] | None) -> Any:
    """Rows end once their reply holds a stop text; every row ends once `should_stop()` says so.

    lmtune checks stop texts itself: transformers' `stop_strings` needs tokenizers whose tokens
    decode alike with and without a prefix, which word-level tokenizers are not.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = max((len(s) for s in stop), default=0) + 2  # tokens: each decodes to a character or more

    class StopTexts(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            if should_stop is not None and should_stop():
                return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            if not stop:  # only the cancel check: no decoding on every new token
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            tails = tokenizer.batch_decode(input_ids[:, max(prompt_length, input_ids.shape[1] - window):], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stop) for t in tails], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopTexts()])


def generation_options(model: nn.Module, tokenizer: Any, sampling: Sampling) -> dict[str, Any]:
    """Keyword arguments for `model.generate`: length, stop tokens, greedy or sampled (stop texts: see `complete`)."""
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
