"""Sequence packing for causal-LM fine-tuning: several examples share one row, but never see each other.

How it works: a packed row holds examples back to back, and its `position_ids` restart at 0 at the
start of each example (e.g. `0 1 2 3 0 1 2 0 1`). When the model gets such position ids and NO
`attention_mask`, transformers (5.x, `masking_utils.find_packed_sequence_indices`) reads each restart
as the start of a new sequence and builds a block-diagonal causal mask, so every token attends only
to earlier tokens of its own example, with the same positions it would have alone. The first label
of every example is set to -100, so no token is trained to predict the next example's first token.
Rows are right-padded with a pad "example" of its own (positions restarting at 0, labels -100).

Three rules for the forward pass, or the examples silently attend to each other:
- pass `input_ids`, `position_ids` (and `labels`) only: no `attention_mask`, not even all ones;
- pass `use_cache=False` (or set `model.config.use_cache = False`): with a KV cache present,
  transformers skips the packed-sequence detection;
- use attention "sdpa" or "eager" on a family listed in `PACKING_MODEL_TYPES` (see `supports_packing`).
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100

# Families checked to give the same logits packed as unpacked, with sdpa and eager
# (tests/data/test_packing.py). Others can mix examples: OPT, Falcon and Bloom, for one, do not hand
# `position_ids` to the mask builder, so they get a plain causal mask over the whole row.
PACKING_MODEL_TYPES = frozenset({
    "gemma", "gpt2", "gpt_neox", "granite", "llama", "mistral", "olmo2", "phi", "phi3", "qwen2", "qwen3",
    "smollm3", "starcoder2",
})
# flash_attention_* only separates examples from position_ids when the batch has one row (otherwise it
# needs explicit cu_seq_lens kwargs), and flex attention is untested here: both are refused.
PACKING_ATTENTION = frozenset({"sdpa", "eager"})


def pack(examples: list[tuple[list[int], list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Pack (input_ids, labels) examples into rows of at most `max_length` tokens, first-fit decreasing.

    Labels are unshifted (label i is the target for token i; the loss shifts them). Each row is
    {"input_ids", "labels", "position_ids", "lengths"}, examples in the order they were placed.
    Deterministic: longest first, ties in input order. Raises ValueError for an empty, mismatched or
    over-long example (truncate before packing).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    for i, (ids, labels) in enumerate(examples):
        if not ids:
            raise ValueError(f"example {i} is empty")
        if len(ids) != len(labels):
            raise ValueError(f"example {i}: {len(ids)} input_ids but {len(labels)} labels")
        if len(ids) > max_length:
            raise ValueError(f"example {i} has {len(ids)} tokens, more than max_length={max_length}; truncate it first")

    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))  # stable: ties keep input order
    free = _FirstFit(n_bins=len(examples), capacity=max_length)
    rows: list[dict[str, list[int]]] = []
    for i in order:
        ids, labels = examples[i]
        b = free.place(len(ids))
        if b == len(rows):
            rows.append({"input_ids": [], "labels": [], "position_ids": [], "lengths": []})
        row = rows[b]
        row["input_ids"].extend(ids)
        # An example's first label is never a target unpacked (nothing precedes it); packed, it would be
        # predicted from the previous example's last token, so it is dropped here.
        row["labels"].append(IGNORE_INDEX)
        row["labels"].extend(labels[1:])
        row["position_ids"].extend(range(len(ids)))
        row["lengths"].append(len(ids))
    return rows


class _FirstFit:
    """First-fit bin choice in O(log n): a max segment tree over the free space of each bin.

    Unopened bins hold the full capacity, and opened bins are always a prefix, so the leftmost bin
    with room is either an opened one or the next new one.
    """

    def __init__(self, n_bins: int, capacity: int):
        self.size = 1
        while self.size < max(n_bins, 1):
            self.size *= 2
        self.tree = [capacity] * (2 * self.size)

    def place(self, length: int) -> int:
        """Take `length` from the leftmost bin with room for it; returns that bin's index."""
        node = 1
        while node < self.size:
            node = 2 * node if self.tree[2 * node] >= length else 2 * node + 1
        self.tree[node] -= length
        b = node - self.size
        node //= 2
        while node:
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
            node //= 2
        return b


def collate_packed(rows: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad packed rows into model inputs: input_ids, labels, position_ids, each (B, T).

    There is deliberately no attention_mask: giving one turns off transformers' packed-sequence mask.
    The pad tail of a row is treated as one more example (positions 0, 1, ..., labels -100): it attends
    only to itself, so it cannot change the real tokens, and its loss is ignored.
    Call the model with `use_cache=False`.
    """
    width = max(len(r["input_ids"]) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    position_ids = torch.zeros((n, width), dtype=torch.long)  # (B, T)
    for b, r in enumerate(rows):
        t = len(r["input_ids"])
        input_ids[b, :t] = torch.tensor(r["input_ids"], dtype=torch.long)
        labels[b, :t] = torch.tensor(r["labels"], dtype=torch.long)
        position_ids[b, :t] = torch.tensor(r["position_ids"], dtype=torch.long)
        position_ids[b, t:] = torch.arange(width - t)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def packing_unsupported_reason(model_config: Any) -> str | None:
    """Why packing would let examples see each other with this model, or None when it is safe."""
    model_type = getattr(model_config, "model_type", None)
    if model_type not in PACKING_MODEL_TYPES:
        return (f"sequence packing is not supported for model type {model_type!r}: it is verified only for "
                f"{', '.join(sorted(PACKING_MODEL_TYPES))}; turn packing off for this model")
    # A config not yet bound to a model has None here; transformers then loads sdpa (or eager).
    attn = getattr(model_config, "_attn_implementation", None) or "sdpa"
    if attn not in PACKING_ATTENTION:
        return (f"sequence packing needs attention 'sdpa' or 'eager', not {attn!r}: "
                f"load the model with attn_implementation='sdpa' or turn packing off")
    return None


def supports_packing(model_config: Any) -> bool:
    """True when packed rows (see `collate_packed`) keep examples apart for this model."""
    return packing_unsupported_reason(model_config) is None
