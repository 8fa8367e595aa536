"""A causal LM (or encoder-decoder) ready to use: replies to prompts, chat turns, evaluation on a data file.

What `lmtune.load()` gives for the tasks that generate text (causal_lm, translation), and what
`lmtune generate` and `lmtune chat` use for any base model. Prompts go through the same template
as in training: the tokenizer's chat template when it has one, else lmtune's plain template (see
data/chat.py), with the run's system prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel
from torch import nn

from lmtune.data.chat import has_chat_template, render_prompt
from lmtune.eval.generation import Completion, Sampling, complete, generate_completions
from lmtune.models.loading import default_device, is_encoder_decoder, load_causal_lm, load_seq2seq_lm, load_tokenizer
from lmtune.models.saving import base_model_config
from lmtune.schema import ModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmtune.tasks.base import TaskClass


class Generator:
    """A causal LM with its tokenizer: `generate(prompts)` and `chat(messages)` give replies."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, meta: dict[str, Any], folder: Path | None,
                 task_class: TaskClass):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.folder = folder
        self.task_class = task_class  # builds the task that reads an evaluation file as in training

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        """The text the model continues: the conversation so far, rendered as in training.

        An encoder-decoder (translation) reads the last message's text as it is.
        """
        if self.meta.get("seq2seq"):
            return messages[-1]["content"]
        system = self.meta.get("data", {}).get("system_prompt")
        if system and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return render_prompt(self.tokenizer, messages)

    def generate(self, prompts: list[str] | str, sampling: Sampling | None = None, batch_size: int = 8) -> list[str]:
        """One reply per prompt, each prompt taken as a single user message (for translation: the text to translate)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return self.reply([[{"role": "user", "content": self.user_text(p)}] for p in prompts], sampling, batch_size)

    def user_text(self, prompt: str) -> str:
        """A prompt as the user message of training: translation runs wrap it in their instruction."""
        template = self.meta.get("prompt_template")
        return template.format(text=prompt) if template else prompt

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The token ids the model is given for a conversation: those training gave it before the reply."""
        return list(self.tokenizer(self.prompt_text(messages), add_special_tokens=self.special_tokens())["input_ids"])

    def reply(self, conversations: list[list[dict[str, str]]], sampling: Sampling | None = None, batch_size: int = 8) -> list[str]:
        """The next assistant message of each conversation."""
        return [c.text for c in self.completions(conversations, sampling, batch_size)]

    def completions(self, conversations: list[list[dict[str, str]]], sampling: Sampling | None = None,
                    batch_size: int = 8) -> list[Completion]:
        """The next assistant message of each conversation, with its token counts and why it ended:
        `finish_reason` "stop" (the model's end token) or "length" (`max_new_tokens` reached)."""
        texts = [self.prompt_text(c) for c in conversations]
        return generate_completions(self.model, self.tokenizer, texts, sampling or Sampling(), batch_size,
                                    add_special_tokens=self.special_tokens())

    def special_tokens(self) -> bool:
        # A chat template writes its own special tokens; plain prompts and encoder inputs get the tokenizer's.
        return bool(self.meta.get("seq2seq")) or not has_chat_template(self.tokenizer)

    def complete(self, prompts: list[str], sampling: Sampling, chat: bool = True, should_stop: Callable[[], bool] | None = None,
                 on_text: Callable[[str], None] | None = None) -> list[Completion]:
        """Continue prompts in one batch, with token counts: chat prompts are rendered conversations
        (`prompt_text`), else raw text continued as it is. `on_text` gets the reply piece by piece
        (one prompt only); `should_stop` returning True ends the generation early."""
        streamer = None
        if on_text is not None:
            from transformers import TextStreamer

            class Relay(TextStreamer):
                def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                    assert on_text is not None
                    on_text(text)

            streamer = Relay(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        return complete(self.model, self.tokenizer, prompts, sampling, self.special_tokens() if chat else True,
                        strip=chat, should_stop=should_stop, streamer=streamer)

    def stream_reply(self, messages: list[dict[str, str]], sampling: Sampling, on_text: Callable[[str], None]) -> Completion:
        """Generate the next assistant message, handing each piece of text to `on_text` as it comes."""
        return self.complete([self.prompt_text(messages)], sampling, on_text=on_text)[0]

    def context_length(self) -> int | None:
        """The most tokens (prompt and reply) the model takes; None when its config sets no limit."""
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def evaluate(self, path: str, batch_size: int = 8, max_generate: int | None = None, max_new_tokens: int = 128,
                 **options: Any) -> dict[str, Any]:
        """Loss and perplexity on a data file read as in training; for prompts with answers, also the
        scores of generated replies (exact match and F1, or BLEU and chrF for translation)."""
        data = self.meta.get("data", {})
        generate = data.get("format") != "text"
        section = self.task_class.config_class.model_fields["data"].annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        data = {k: v for k, v in data.items() if k in section.model_fields}  # lmtune.json also records what the task read
        cfg = self.task_class.config_class.model_validate({
            # an adapter folder holds no model config: the task reads the base model's
            "model": {**(self.meta["base_model"] if self.meta.get("adapter") else {"name_or_path": str(self.folder or ".")}),
                      "max_length": self.meta["max_length"]},
            "data": {**data, "train": path, "validation": path},
            "train": {"batch_size": batch_size},
            "eval": {"generate": generate, "max_generate": max_generate or 1_000_000_000, "batch_size": batch_size,
                     "max_new_tokens": max_new_tokens},
        })
        task: Any = self.task_class(cfg)
        task.load_data()
        task.use_tokenizer(self.tokenizer)
        task.prepare_model(self.model)
        try:
            splits = task.encode(self.tokenizer, self.meta["max_length"])
            device = self.device

            def to_device(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
                return {k: v.to(device) for k, v in task.collate(items).items()}

            assert splits.validation is not None
            loader = torch.utils.data.DataLoader(splits.validation, batch_size=batch_size, collate_fn=to_device)
            return task.evaluate(self.model, loader, None, generate=generate).metrics
        finally:
            if task.positions is not None:
                task.positions.remove()


def load_generator(path: str | Path, folder: Path | None, meta: dict[str, Any] | None, task_class: TaskClass,
                   device: str | None = None, gguf_file: str | None = None) -> Generator:
    """A trained run's model (folder with meta), or any causal LM folder, hub id or GGUF file."""
    load = load_seq2seq_lm if meta and meta.get("seq2seq") else load_causal_lm
    model: nn.Module

    if meta is None:  # not an lmtune model: a base model, used as it is
        mc = ModelConfig(name_or_path=str(path), gguf_file=gguf_file)
        tokenizer = load_tokenizer(mc)
        seq2seq = is_encoder_decoder(mc)
        model = (load_seq2seq_lm if seq2seq else load_causal_lm)(mc, tokenizer)
        meta = {"task": "causal_lm", "seq2seq": seq2seq, "max_length": mc.max_length, "data": {"format": "messages"}}
    elif meta.get("adapter"):
        from peft import PeftModel

        assert folder is not None
        tokenizer = load_tokenizer(ModelConfig(name_or_path=str(folder)))
        model = PeftModel.from_pretrained(load(base_model_config(meta), tokenizer), folder)
    else:
        assert folder is not None
        mc = ModelConfig(name_or_path=str(folder))
        tokenizer = load_tokenizer(mc)
        model = load(mc, tokenizer)
    on_device = nn.Module.to(model, device or default_device())  # transformers' own `to` is typed for its instances only
    return Generator(on_device, tokenizer, meta, folder, task_class)
