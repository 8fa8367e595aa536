"""Tokenized datasets, length-grouped batches and dynamic padding: no compute spent on pad."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from lmtune.progress import bar

TOKENIZE_CHUNK = 1000  # texts per tokenizer call


class EncodedDataset(Dataset):
    """Token ids (and optional token type ids) with one target per example."""

    def __init__(self, input_ids: list[list[int]], targets: list[Any], token_type_ids: list[list[int]] | None = None):
        self.input_ids = input_ids
        self.targets = targets
        self.token_type_ids = token_type_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"index": i, "input_ids": self.input_ids[i], "target": self.targets[i]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[i]
        return item

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length.

    Each epoch: shuffle all indices, cut them into mega-batches of `group_size` batches, sort each
    mega-batch by length and slice it into batches, then shuffle the batch order. Batches hold
    similar lengths (little padding) while the data order stays random across epochs.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True, group_size: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_size = group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        if not self.shuffle:  # evaluation: one global sort, longest first
            order.sort(key=lambda i: -self.lengths[i])
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(f"{self.seed}/{self.epoch}")  # seed 1 epoch 0 must not replay seed 0 epoch 1
        rng.shuffle(order)
        mega = self.batch_size * self.group_size
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            group = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class PadCollator:
    """Pad a list of examples to the longest in the batch (right padding)."""

    def __init__(self, pad_token_id: int, target_dtype: torch.dtype):
        self.pad_token_id = pad_token_id
        self.target_dtype = target_dtype

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        n = len(items)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((n, width), dtype=torch.long)  # (B, T)
        has_types = "token_type_ids" in items[0]
        token_type_ids = torch.zeros((n, width), dtype=torch.long) if has_types else None
        for row, it in enumerate(items):
            ids = it["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            if token_type_ids is not None:
                token_type_ids[row, : len(ids)] = torch.tensor(it["token_type_ids"], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target": torch.tensor([it["target"] for it in items], dtype=self.target_dtype),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return batch


def encode_texts(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int
) -> tuple[list[list[int]], list[list[int]] | None, int]:
    """Tokenize with truncation; returns ids, token type ids (if the model uses them) and how many hit max_length."""
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if "token_type_ids" in tokenizer.model_input_names else None
    with bar(total=len(texts), desc="tokenize", unit="texts") as progress:
        for start in range(0, len(texts), TOKENIZE_CHUNK):  # in chunks, so that the bar moves
            part = slice(start, start + TOKENIZE_CHUNK)
            enc = tokenizer(texts[part], pairs[part] if pairs is not None else None, truncation=True, max_length=max_length, padding=False)
            ids += enc["input_ids"]
            if types is not None and enc.get("token_type_ids") is not None:
                types += enc["token_type_ids"]
            else:
                types = None
            progress.update(len(enc["input_ids"]))
    at_limit = sum(1 for x in ids if len(x) >= max_length)
    return ids, types, at_limit


class LabelsCollator:
    """Pad token ids and their labels (`target`: a list of label ids per example), each to its own longest row.

    For a decoder the labels are as long as the ids; an encoder-decoder's labels are the target
    text, with their own length. Padding gets label -100, so a pad token that is also the EOS token
    is never trained on as padding, while the real EOS that ends a response keeps its label.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(items)
        width, label_width = max(len(it["input_ids"]) for it in items), max(len(it["target"]) for it in items)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((n, width), dtype=torch.long)  # (B, T)
        labels = torch.full((n, label_width), -100, dtype=torch.long)  # (B, L)
        for row, it in enumerate(items):
            input_ids[row, : len(it["input_ids"])] = torch.tensor(it["input_ids"], dtype=torch.long)
            attention_mask[row, : len(it["input_ids"])] = 1
            labels[row, : len(it["target"])] = torch.tensor(it["target"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
