"""Causal language modelling: continued pretraining on raw text, and instruction, chat and QA tuning.

The objective is next-token maximum likelihood. Raw text trains on every token; conversations
train on the assistant turns only (data.train_on_prompt trains on the prompt too). The loss is
the mean over every target token of an optimizer step, however the tokens fall into micro-batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.distributed.tensor import DTensor

from lmtune.data.batching import LabelsCollator
from lmtune.data.chat import IGNORE, encode, has_chat_template, render_prompt
from lmtune.data.generative import (
    CausalLMSection,
    Conversations,
    DocumentStream,
    GenerativeData,
    GenerativeSection,
    hold_out,
    load_generative_data,
    text_blocks,
)
from lmtune.data.packing import collate_packed, pack, packing_unsupported_reason
from lmtune.data.store import data_entry, file_digest, token_stores, tokenizer_digest, write_tokens
from lmtune.errors import ConfigError, DataError
from lmtune.eval.generation import Sampling, generate_texts
from lmtune.eval.text_metrics import perplexity, qa_metrics
from lmtune.models.head_positions import HeadPositions
from lmtune.models.kernels import FusedLoss, fused_linear_cross_entropy
from lmtune.models.loading import load_causal_lm
from lmtune.progress import bar
from lmtune.schema import LOWER_IS_BETTER, Config
from lmtune.tasks.base import Evaluation, RunRecord, Splits, TokenDataset, TryPanel, base_model_record
from lmtune.tasks.generator import Generator, load_generator

log = logging.getLogger("lmtune")

def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B, T) targets: position t predicts token t+1; the last position predicts nothing."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


class GenerativeConfig(Config):
    """What the tasks that write text share: a data section with the decoder-only training options."""

    data: GenerativeSection = Field(default_factory=GenerativeSection)


class CausalLMConfig(GenerativeConfig):
    task: Literal["causal_lm"] = "causal_lm"
    data: CausalLMSection = Field(default_factory=CausalLMSection)


class CausalLMTask:
    name: ClassVar[str] = "causal_lm"
    config_class: ClassVar[type[Config]] = CausalLMConfig
    predict_inputs: ClassVar[dict[str, str]] = {}  # replies come from `lmtune generate` and `lmtune chat`
    predict_endpoint: ClassVar[str] = ""  # lmtune serve gives OpenAI's chat and completion endpoints instead
    has_labels: ClassVar[bool] = False
    try_panel: ClassVar[TryPanel] = "chat"
    generation_metrics = ("exact_match", "f1")  # scores of generated replies (eval.generate)

    def __init__(self, cfg: Config):
        assert isinstance(cfg, GenerativeConfig)
        self.cfg: GenerativeConfig = cfg
        self.data: GenerativeData | None = None
        self.new_head: list[str] = []  # the LM head is pretrained: it is not forced to train
        self.metric, self.greater_is_better = "loss", False
        self.tokenizer: Any = None
        self.positions: HeadPositions | None = None
        self.fused_loss: FusedLoss | None = None  # train.liger_kernel: the output layer and the loss in one kernel
        self._collate: LabelsCollator | None = None
        self._eval_conversations: Conversations | None = None

    def load_data(self) -> None:
        cfg = self.cfg
        if cfg.train.loss not in ("auto", "cross_entropy"):
            raise ConfigError(f"train.loss={cfg.train.loss} does not fit task causal_lm; use cross_entropy (or auto)")
        if cfg.train.class_weights is not None:
            raise ConfigError("train.class_weights applies to classification only (task is causal_lm)")
        self.data = self.read_data()
        if cfg.eval.generate and self.data.format == "text":
            raise ConfigError("eval.generate needs prompts and answers to compare; data.format is text (raw documents)")
        scored = set(self.generation_metrics)
        allowed = {"loss", "perplexity"} | (scored if cfg.eval.generate else set())
        name = "loss" if cfg.eval.metric == "auto" else cfg.eval.metric
        if name not in allowed:
            more = "" if cfg.eval.generate else f" ({' and '.join(sorted(scored))} need eval.generate: true)"
            raise ConfigError(f"eval.metric={name!r} is not reported for task {cfg.task}; choose one of {', '.join(sorted(allowed))}{more}")
        self.metric, self.greater_is_better = name, name not in LOWER_IS_BETTER

    def read_data(self) -> GenerativeData:
        assert isinstance(self.cfg.data, CausalLMSection)
        return load_generative_data(self.cfg.data, self.cfg.train.seed)

    def use_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._collate = LabelsCollator(tokenizer.pad_token_id)

    def load_model(self, tokenizer: Any) -> nn.Module:
        self.use_tokenizer(tokenizer)
        model = load_causal_lm(self.cfg.model, tokenizer)
        if self.cfg.data.packing:
            reason = packing_unsupported_reason(model.config)
            if reason:
                raise ConfigError(f"data.packing=true: {reason}")
        return model

    def peft_task_type(self) -> str:
        return "CAUSAL_LM"

    def prepare_model(self, model: nn.Module) -> None:
        self.positions = HeadPositions(model)
        if self.cfg.train.liger_kernel:  # apply_liger has checked that Liger runs here
            self.fused_loss = fused_linear_cross_entropy(self.positions.head, getattr(model, "config", None),
                                                         self.cfg.train.label_smoothing)

    def encode(self, tokenizer: Any, max_length: int) -> Splits:
        """Every split's token ids, from the data cache when these files, settings, tokenizer and max_length were
        tokenized before (else tokenized into it)."""
        data = self.data
        assert data is not None
        self._eval_conversations = data.validation if isinstance(data.validation, Conversations) else None
        more = {"encoding": type(self).__name__, "tokenizer": tokenizer_digest(tokenizer), "max_length": max_length}
        entry = data_entry(self.cfg.task, self.cfg.data, self.cfg.train.seed, more)
        stores = token_stores(entry, lambda folder: self._write_tokens(folder, tokenizer, max_length))
        train: TokenDataset = stores["train"]
        if self.cfg.data.packing and data.format != "text":  # evaluation stays unpacked: its loss is the same either way
            rows = pack(stores["train"].pairs(), max_length)
            log.info("packing: %d training examples in %d rows of up to %d tokens", len(train), len(rows), max_length)
            train = PackedRows(rows)
        return Splits(train, stores.get("validation"), stores.get("test"), redacted=data.redacted)

    def _write_tokens(self, folder: Path, tokenizer: Any, max_length: int) -> dict[str, Any]:
        """Each split's token rows into FOLDER/SPLIT.arrow; the meta says which file (and rows of it) each split is."""
        data = self.data
        assert data is not None
        splits: dict[str, dict[str, str]] = {}
        parts = {"train": data.train, "validation": data.validation, "test": data.test}
        for name, part in parts.items():
            if part is None:
                continue
            if data.format == "text":
                count = write_tokens(folder / f"{name}.arrow", ({"input_ids": b} for b in text_blocks(tokenizer, part, max_length)),  # type: ignore[arg-type]
                                     with_target=False)
            else:
                count = write_tokens(folder / f"{name}.arrow", self.token_rows(part, max_length, name), with_target=True)  # type: ignore[arg-type]
            splits[name] = {"file": name}
            if name == "train" and data.format == "text" and data.validation is None and self.cfg.data.validation_split > 0:
                # blocks of the training text held out for validation: two selections of one file
                kept, held = hold_out(count, self.cfg.data.validation_split, self.cfg.train.seed, self.cfg.data.train, "text block")
                np.save(folder / "train-rows.npy", np.asarray(kept, dtype=np.int64))
                np.save(folder / "validation-rows.npy", np.asarray(held, dtype=np.int64))
                splits["train"] = {"file": "train", "rows": "train-rows.npy"}
                splits["validation"] = {"file": "train", "rows": "validation-rows.npy"}
        return {"splits": splits}

    def token_rows(self, conv: Conversations, max_length: int, name: str) -> Iterator[dict[str, list[int]]]:
        """Each conversation's token ids and labels (the replies', or every token's with data.train_on_prompt)."""
        kept, empty, truncated = 0, 0, 0
        for messages in bar(conv.messages, desc=f"tokenize {name}", unit="examples"):
            enc = encode(self.tokenizer, messages, max_length, self.cfg.data.train_on_prompt)
            truncated += len(enc.input_ids) >= max_length
            if all(t == IGNORE for t in enc.labels[1:]):  # the first token is never a target
                empty += 1
                continue
            kept += 1
            yield {"input_ids": enc.input_ids, "target": enc.labels}
        if truncated:
            log.warning("%s: %d of %d conversations reached max_length=%d and were truncated; a reply cut short loses its "
                        "end token, which teaches the model to run on: raise model.max_length", name, truncated, len(conv), max_length)
        if empty:
            if not kept:
                raise DataError(f"{conv.source}: no {name} example keeps a response token within model.max_length={max_length}; "
                                f"raise model.max_length or shorten the prompts")
            log.warning("%s: %d of %d examples have no response token left within max_length=%d and are left out",
                        name, empty, len(conv), max_length)

    def data_fingerprint(self) -> Any:
        data = self.data
        assert data is not None

        def record(split: Conversations | list[str] | DocumentStream | None) -> Any:
            if isinstance(split, DocumentStream):  # never all in memory: its file's bytes and what picks its rows
                return [file_digest(split.path), split.text_column, split.on_empty, split.limit]
            return [split.messages, split.references] if isinstance(split, Conversations) else split

        return [data.format, record(data.train), record(data.validation), self.cfg.data.train_on_prompt]

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        assert self._collate is not None
        if "position_ids" not in items[0]:
            return self._collate(items)
        batch = collate_packed(items, self._collate.pad_token_id)
        # Only to count tokens and trim split batches: a packed batch must reach the model without it.
        batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1]) < torch.tensor([len(r["input_ids"]) for r in items])[:, None]).long()
        batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        return batch

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        assert self.positions is not None
        targets = next_token_targets(batch["labels"])  # (B, T)
        keep = targets != IGNORE
        if "position_ids" in batch:
            # Packed rows: restarting positions and no attention mask give each example its own causal
            # mask (see data/packing.py); a KV cache would turn that detection off.
            inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        weight, bias = getattr(self.positions.head, "weight", None), getattr(self.positions.head, "bias", None)
        # Under FSDP2 the output layer's weight is a shard outside its forward: the fused loss cannot read it.
        fused = self.fused_loss if self.fused_loss is not None and not isinstance(weight, DTensor) else None
        with self.positions.only(keep, project=fused is None):
            out = model(**inputs, use_cache=False).logits  # (N, V); with the fused loss the hidden states, (N, H)
        if fused is not None:
            assert weight is not None  # a linear output layer (fused_linear_cross_entropy checked)
            loss = fused(weight, out, targets[keep], bias)
        else:
            loss = F.cross_entropy(out.float(), targets[keep], reduction="sum", label_smoothing=self.cfg.train.label_smoothing)
        return loss, int(keep.sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any, generate: bool = False, split: str = "validation") -> Evaluation:
        """Mean token loss and perplexity; with eval.generate, replies to validation prompts and their scores.

        `accelerator` may be None (one process, e.g. `lmtune eval`).
        """
        processes = accelerator.num_processes if accelerator is not None else 1
        main = accelerator is None or accelerator.is_main_process
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in bar(loader, desc="evaluate", unit="batches"):
            loss, n = self.loss(model, batch)
            total += float(loss)
            count += n
        if was_training:
            model.train()
        if processes > 1:
            sums = accelerator.reduce(torch.tensor([total, float(count)], dtype=torch.float64, device=accelerator.device), "sum")
            total, count = float(sums[0]), int(sums[1])
        mean = total / count if count else math.nan
        metrics: dict[str, Any] = {"loss": mean, "perplexity": perplexity(mean) if count else math.nan}
        if not (generate and self.cfg.eval.generate and self._eval_conversations is not None):
            return Evaluation(metrics)
        samples = None
        scores: list[Any] = [None]
        if main:  # one process generates; the others wait for its scores
            samples = self.generate_samples(accelerator.unwrap_model(model) if accelerator is not None else model)
            scores = [self.score_replies([s["prediction"] for s in samples], [s["references"] for s in samples])]
        if processes > 1:
            from accelerate.utils import broadcast_object_list

            scores = broadcast_object_list(scores)
        return Evaluation({**metrics, **scores[0]}, samples)

    def score_replies(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        return qa_metrics(predictions, references)

    def generate_samples(self, model: nn.Module) -> list[dict[str, Any]]:
        """Replies to the first eval.max_generate validation prompts, beside their references."""
        conv = self._eval_conversations
        assert conv is not None
        n = min(self.cfg.eval.max_generate, len(conv))
        prompts, special_tokens = self.prompts(conv.messages[:n])
        batch = self.cfg.eval.batch_size or 2 * self.cfg.train.batch_size
        replies = generate_texts(model, self.tokenizer, prompts, Sampling(self.cfg.eval.max_new_tokens), batch,
                                 add_special_tokens=special_tokens)
        answers = conv.answers()
        return [{"prompt": p, "reference": a[0], "references": a, "prediction": r} for p, a, r in zip(prompts, answers, replies)]

    def prompts(self, conversations: list[list[dict[str, str]]]) -> tuple[list[str], bool]:
        """What the model is given to write each conversation's last reply, and whether the tokenizer
        adds its special tokens (a chat template writes its own)."""
        texts = [render_prompt(self.tokenizer, _before_last_reply(m)) for m in conversations]
        return texts, not has_chat_template(self.tokenizer)

    @classmethod
    def load_predictor(cls, folder: Path, meta: dict[str, Any], device: str) -> Generator:
        return load_generator(folder, folder, meta, cls, device)

    @classmethod
    def report(cls, run: RunRecord, plots: Path) -> tuple[str, list[Path]]:
        """Nothing beyond the common sections: generated replies are shown from samples.jsonl."""
        return "", []

    def meta(self, max_length: int) -> dict[str, Any]:
        assert self.data is not None
        d = self.cfg.data
        return {
            "task": self.cfg.task,
            "max_length": max_length,
            "template": "chat" if has_chat_template(self.tokenizer) else "plain",
            # what reading an evaluation file and prompting the model the same way needs
            "data": {"format": self.data.format, "system_prompt": d.system_prompt, "train_on_prompt": d.train_on_prompt},
            "method": self.cfg.method.name,
            "base_model": base_model_record(self.cfg),
        }


def _before_last_reply(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


class PackedRows(torch.utils.data.Dataset):
    """Packed training rows (data/packing.py): several examples each, with restarting position ids."""

    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, **self.rows[i]}

    @property
    def lengths(self) -> list[int]:
        return [len(r["input_ids"]) for r in self.rows]
