"""Extractive QA answers from start and end logits: the best span over all windows of a question.

Over all windows of a question, the answer is the span with the highest start + end logit among
the `n_best` best starts and ends of each window, at most `max_answer_length` tokens long and
inside the context; its text is the slice of the context between its characters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmtune.data.qa_windows import Windows
from lmtune.eval.evaluate import model_inputs
from lmtune.progress import bar

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offsets into the context: text == context[start:end]
    end: int
    score: float  # start logit + end logit of the span (-inf: no valid span)


def best_window_span(start_logits: np.ndarray, end_logits: np.ndarray, first: int, count: int, n_best: int,
                     max_answer_length: int) -> tuple[float, int, int] | None:
    """The best (score, start, end) token span of one window whose `count` context tokens begin at `first`.

    Candidates are the n_best starts and the n_best ends among the context tokens; a span is valid
    when start <= end and it is at most max_answer_length tokens long. None when no pair is valid.
    """
    starts_all = start_logits[first : first + count]  # (C,)
    ends_all = end_logits[first : first + count]  # (C,)
    k = min(n_best, count)
    starts = np.argsort(-starts_all, kind="stable")[:k]  # (k,)
    ends = np.argsort(-ends_all, kind="stable")[:k]  # (k,)
    length = ends[None, :] - starts[:, None] + 1  # (k, k)
    valid = (length >= 1) & (length <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, starts_all[starts][:, None] + ends_all[ends][None, :], -np.inf)  # (k, k)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), first + int(starts[i]), first + int(ends[j])


def pick_answers(windows: Windows, start_logits: np.ndarray, end_logits: np.ndarray, n_best: int,
                 max_answer_length: int) -> list[Answer]:
    """The best span over all windows of each example, as text of its context. Logits: (windows, T), in window order."""
    chosen = [Answer("", 0, 0, float("-inf")) for _ in windows.examples]  # what is left where no window has a valid span
    for w, example in enumerate(windows.example_of):
        first, spans = windows.context_first[w], windows.spans[w]
        span = best_window_span(start_logits[w], end_logits[w], first, len(spans), n_best, max_answer_length)
        if span is None or span[0] <= chosen[example].score:  # an earlier window wins a tie
            continue
        lo, hi = spans[span[1] - first][0], spans[span[2] - first][1]
        chosen[example] = Answer(windows.examples[example].context[lo:hi], lo, hi, span[0])
    return chosen


def span_losses(start_logits: torch.Tensor, end_logits: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per window: the mean of the start and end cross-entropies over its real tokens (padding is no candidate). (B,)"""
    pad = attention_mask == 0  # (B, T)
    start = start_logits.float().masked_fill(pad, float("-inf"))  # (B, T)
    end = end_logits.float().masked_fill(pad, float("-inf"))  # (B, T)
    return (F.cross_entropy(start, target[:, 0], reduction="none") + F.cross_entropy(end, target[:, 1], reduction="none")) / 2


@torch.no_grad()
def window_logits(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], accelerator: Accelerator | None, width: int,
                  with_loss: bool) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Start and end logits of every window, in window order whatever the batch order, padded to
    `width` with -inf; and the mean span loss (with_loss: the windows carry their targets)."""
    was_training = model.training
    model.eval()
    starts, ends, losses, indices = [], [], [], []
    for batch in bar(loader, desc="evaluate", unit="batches"):
        out = model(**model_inputs(batch))
        start, end = out.start_logits.float(), out.end_logits.float()  # (B, T)
        loss = span_losses(start, end, batch["attention_mask"], batch["target"]) if with_loss else torch.zeros_like(start[:, 0])
        pad = width - start.shape[1]  # every batch to one width, so that processes can gather them
        start = F.pad(start, (0, pad), value=float("-inf"))  # (B, width)
        end = F.pad(end, (0, pad), value=float("-inf"))  # (B, width)
        index = batch["index"]
        if accelerator is not None:  # drops the samples repeated to even out the last batch
            start, end, loss, index = accelerator.gather_for_metrics((start, end, loss, index))
        starts.append(start.cpu())
        ends.append(end.cpu())
        losses.append(loss.cpu())
        indices.append(index.cpu())
    if was_training:
        model.train()
    order = torch.cat(indices).argsort()
    all_losses = torch.cat(losses)
    mean_loss = float(all_losses.mean()) if with_loss and len(all_losses) else None
    return torch.cat(starts)[order].numpy(), torch.cat(ends)[order].numpy(), mean_loss


def answer_windows(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], accelerator: Accelerator | None, windows: Windows,
                   n_best: int, max_answer_length: int, with_loss: bool) -> tuple[list[Answer], float | None]:
    """The answer of each example of `windows` and the mean span loss over its windows."""
    start, end, loss = window_logits(model, loader, accelerator, max(windows.lengths), with_loss)
    if len(start) != len(windows):
        raise RuntimeError(f"the evaluation returned {len(start)} windows of {len(windows)}")
    return pick_answers(windows, start, end, n_best, max_answer_length), loss

