"""Translation: pairs of a source text and its translation, scored with BLEU and chrF.

A decoder-only model learns it as instruction tuning: the user message is the instruction
"Translate the following {source_lang} text to {target_lang}." and the source text, the
assistant message is the translation (trained on alone), all through the same chat or plain
template as task causal_lm. An encoder-decoder (T5, BART, Marian) is loaded with its seq2seq
head and trained on the pair directly: the source is the encoder input, the translation the
decoder's labels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lmtune.data.batching import TOKENIZE_CHUNK
from lmtune.data.chat import IGNORE
from lmtune.data.generative import Conversations, GenerativeData, GenerativeSection, read_splits
from lmtune.data.readers import read_table
from lmtune.data.redact import redactor_for
from lmtune.errors import ConfigError, DataError
from lmtune.eval.text_metrics import translation_metrics
from lmtune.models.loading import is_encoder_decoder, load_seq2seq_lm
from lmtune.schema import Config
from lmtune.tasks.base import TryPanel
from lmtune.tasks.causal_lm import CausalLMTask, GenerativeConfig

log = logging.getLogger("lmtune")

PROMPT = "Translate the following {source} text to {target}.\n\n{{text}}"


class TranslationSection(GenerativeSection):
    """`data` of task translation: a source text and its translation per row."""

    source_column: str = Field("source", description="Column of the text to translate.")
    target_column: str = Field("target", description="Column of its translation.")
    source_lang: str | None = Field(None, description="Source language name or code, e.g. English or en.")
    target_lang: str | None = Field(None, description="Target language; zh, ja, ko pick sacrebleu's tokenizer.")


class TranslationConfig(GenerativeConfig):
    task: Literal["translation"] = "translation"
    data: TranslationSection = Field(default_factory=TranslationSection)


class TranslationTask(CausalLMTask):
    """Translation with a decoder-only model: instruction tuning on "Translate ... to ..." prompts.

    The one switch: a config whose model is an encoder-decoder gets a Seq2SeqTranslationTask.
    """

    name: ClassVar[str] = "translation"
    config_class: ClassVar[type[Config]] = TranslationConfig
    try_panel: ClassVar[TryPanel] = "reply"  # a text in, its translation out: wrapped in the run's instruction, as in training
    cfg: TranslationConfig
    generation_metrics = ("bleu", "chrf")
    seq2seq = False

    def __new__(cls, cfg: Config) -> TranslationTask:
        if cls is TranslationTask and is_encoder_decoder(cfg.model):
            cls = Seq2SeqTranslationTask
        return super().__new__(cls)

    def __init__(self, cfg: Config):
        assert isinstance(cfg, TranslationConfig)
        super().__init__(cfg)
        self.check_config()

    def check_config(self) -> None:
        d = self.cfg.data
        if not (d.source_lang and d.target_lang):
            raise ConfigError("translation with a decoder-only model needs data.source_lang and data.target_lang "
                              "(e.g. English and Chinese) for its instruction")

    def read_data(self) -> GenerativeData:
        d = self.cfg.data

        def read(path: str) -> Conversations:
            table = read_table(path, header=d.header)
            sources = table.column(d.source_column, "data.source_column")
            targets = table.column(d.target_column, "data.target_column")
            table = table.without_empty([d.source_column, d.target_column], d.on_empty)
            if not table.rows:
                raise DataError(f"{table.source}: holds no data rows" + (" with both texts filled" if d.on_empty == "drop" else ""))
            sources, targets = table.column(d.source_column, ""), table.column(d.target_column, "")
            messages = []
            for i in range(len(table.rows)):
                for column, value in ((d.source_column, sources[i]), (d.target_column, targets[i])):
                    if not isinstance(value, str) or not value.strip():
                        raise DataError(f"{table.source}: {table.where(i)}: {column!r} is empty or not text"
                                        + ("; fill it, or set data.on_empty: drop to leave such rows out" if value is None or isinstance(value, str) else ""))
                messages.append([{"role": "user", "content": self.user_text(sources[i])},
                                 {"role": "assistant", "content": targets[i]}])
            return Conversations(table.source, messages)

        return GenerativeData("messages", *read_splits(d, self.cfg.train.seed, read, "pair", redactor_for(d)))

    def user_text(self, source: str) -> str:
        d = self.cfg.data
        return PROMPT.format(source=d.source_lang, target=d.target_lang).format(text=source)

    def score_replies(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        return translation_metrics(predictions, references, self.cfg.data.target_lang)

    def meta(self, max_length: int) -> dict[str, Any]:
        d = self.cfg.data
        meta = super().meta(max_length)
        meta["seq2seq"] = self.seq2seq
        meta["prompt_template"] = None if self.seq2seq else PROMPT.format(source=d.source_lang, target=d.target_lang)
        meta["data"].update(source_column=d.source_column, target_column=d.target_column, source_lang=d.source_lang,
                            target_lang=d.target_lang, header=d.header)
        return meta


class Seq2SeqTranslationTask(TranslationTask):
    """Translation with an encoder-decoder (T5, BART, Marian): the source is the encoder's input, the
    translation the decoder's labels. Reading, scoring and saving are the decoder-only task's."""

    seq2seq = True

    def check_config(self) -> None:
        if self.cfg.data.packing or self.cfg.data.train_on_prompt:
            raise ConfigError("data.packing and data.train_on_prompt apply to decoder-only models; this model is an encoder-decoder")

    def user_text(self, source: str) -> str:
        return source

    def load_model(self, tokenizer: Any) -> nn.Module:
        self.use_tokenizer(tokenizer)
        return load_seq2seq_lm(self.cfg.model, tokenizer)

    def peft_task_type(self) -> str:
        return "SEQ_2_SEQ_LM"

    def prepare_model(self, model: nn.Module) -> None:
        pass  # the decoder-only task limits the LM head to target positions; a seq2seq head reads the labels only

    def token_rows(self, conv: Conversations, max_length: int, name: str) -> Iterator[dict[str, list[int]]]:
        """The source's token ids for the encoder and the translation's as the decoder's labels."""
        cut = 0
        for start in range(0, len(conv.messages), TOKENIZE_CHUNK):
            part = conv.messages[start : start + TOKENIZE_CHUNK]
            sources = [m[-2]["content"] for m in part]  # a system message, if any, comes first
            enc = self.tokenizer(sources, text_target=[m[-1]["content"] for m in part], truncation=True, max_length=max_length)
            for ids, labels in zip(enc["input_ids"], enc["labels"]):
                cut += (len(ids) >= max_length) + (len(labels) >= max_length)
                yield {"input_ids": ids, "target": labels}
        if cut:
            log.info("%s: %d source or target texts reached max_length=%d and were truncated", name, cut, max_length)

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        labels = batch["labels"]  # (B, L); the model shifts them right into its decoder inputs
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, use_cache=False).logits
        keep = labels != IGNORE
        loss = F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum", label_smoothing=self.cfg.train.label_smoothing)
        return loss, int(keep.sum())

    def prompts(self, conversations: list[list[dict[str, str]]]) -> tuple[list[str], bool]:
        return [m[-2]["content"] for m in conversations], True  # the source, as the encoder reads it
