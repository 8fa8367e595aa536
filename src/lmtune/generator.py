"""Use a fine-tuned (or any) causal LM: replies to prompts, chat turns, evaluation on a data file.

Prompts go through the same template as in training: the tokenizer's chat template when it has
one, else lmtune's plain template (see data/chat.py), with the run's system prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmtune.config import Config, ModelConfig
from lmtune.data.chat import has_chat_template, render_prompt
from lmtune.eval.generation import Sampling, generate_texts, generation_options


class Generator:
    """A causal LM with its tokenizer: `generate(prompts)` and `chat(messages)` give replies."""

    def __init__(self, model: nn.Module, tokenizer: Any, meta: dict[str, Any], folder: Path | None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.folder = folder

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

    def reply(self, conversations: list[list[dict[str, str]]], sampling: Sampling | None = None, batch_size: int = 8) -> list[str]:
        """The next assistant message of each conversation."""
        texts = [self.prompt_text(c) for c in conversations]
        return generate_texts(self.model, self.tokenizer, texts, sampling or Sampling(), batch_size,
                              add_special_tokens=self._special_tokens())

    def _special_tokens(self) -> bool:
        # A chat template writes its own special tokens; plain prompts and encoder inputs get the tokenizer's.
        return bool(self.meta.get("seq2seq")) or not has_chat_template(self.tokenizer)

    def stream_reply(self, messages: list[dict[str, str]], sampling: Sampling, on_text: Any) -> str:
        """Generate the next assistant message, handing each piece of text to `on_text` as it comes."""
        from transformers import TextStreamer

        class Relay(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                on_text(text)

        enc = self.tokenizer(self.prompt_text(messages), return_tensors="pt", add_special_tokens=self._special_tokens()).to(self.device)
        options = generation_options(self.model, self.tokenizer, sampling)
        with torch.no_grad():
            out = self.model.generate(**enc, **options, streamer=Relay(self.tokenizer, skip_prompt=True, skip_special_tokens=True))
        new = out[0] if self.meta.get("seq2seq") else out[0, enc["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def evaluate(self, path: str, batch_size: int = 8, max_generate: int | None = None, max_new_tokens: int = 128) -> dict[str, Any]:
        """Loss and perplexity on a data file read as in training; for prompts with answers, also the
        scores of generated replies (exact match and F1, or BLEU and chrF for translation)."""
        from lmtune.tasks import build_task

        data = self.meta.get("data", {})
        generate = data.get("format") != "text"
        cfg = Config.model_validate({
            "task": self.meta.get("task", "causal_lm"),
            # an adapter folder holds no model config: the task reads the base model's
            "model": {**(self.meta["base_model"] if self.meta.get("adapter") else {"name_or_path": str(self.folder or ".")}),
                      "max_length": self.meta["max_length"]},
            "data": {**data, "train": path, "validation": path},
            "train": {"batch_size": batch_size},
            "eval": {"generate": generate, "max_generate": max_generate or 1_000_000_000, "batch_size": batch_size,
                     "max_new_tokens": max_new_tokens},
        })
        task: Any = build_task(cfg)
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


def load_lm(path: str | Path, device: str | None = None, gguf_file: str | None = None) -> Generator:
    """An lmtune run or model folder, else any causal LM folder, hub id or GGUF file, as it is."""
    import json

    from lmtune.inference import find_model_dir
    from lmtune.models.saving import META_FILE

    folder = None if gguf_file else find_model_dir(path)
    if folder is None:
        return load_generator(path, None, None, device, gguf_file)
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("task") not in ("causal_lm", "translation"):
        from lmtune.errors import ModelError

        raise ModelError(f"{folder} holds a {meta.get('task', 'classification')} model, not a language model that generates text")
    return load_generator(path, folder, meta, device)


def load_generator(path: str | Path, folder: Path | None, meta: dict[str, Any] | None, device: str | None = None,
                   gguf_file: str | None = None) -> Generator:
    """A trained run's model (folder with meta), or any causal LM folder, hub id or GGUF file."""
    from lmtune.inference import base_model_config
    from lmtune.models.loading import is_encoder_decoder, load_causal_lm, load_seq2seq_lm, load_tokenizer

    load = load_seq2seq_lm if meta and meta.get("seq2seq") else load_causal_lm

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
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Generator(model.to(device), tokenizer, meta, folder)


def read_prompts(path: str, prompt_column: str = "prompt") -> tuple[list[str], list[list[dict[str, str]]]]:
    """Prompts of a data file: a `messages` list (up to its last user turn), alpaca `instruction`
    (+ `input`), or a `prompt_column`. Returns a display text and a conversation per row."""
    from lmtune.data.generative import alpaca_user_text
    from lmtune.data.readers import read_table
    from lmtune.errors import DataError

    table = read_table(path)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    shown, conversations = [], []
    for i, row in enumerate(table.rows):
        where = f"{table.source}: {table.where(i)}"
        if "messages" in table.columns:
            from lmtune.data.chat import check_messages

            messages = row["messages"]
            if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
                messages = messages[:-1]  # the reference answer: the model writes its own
            messages = check_messages(messages + [{"role": "assistant", "content": "-"}], where)[:-1]
            text = messages[-1]["content"]
        elif "instruction" in table.columns:
            instruction, extra = row.get("instruction"), row.get("input") or ""
            if not isinstance(instruction, str) or not instruction.strip() or not isinstance(extra, str):
                raise DataError(f"{where}: 'instruction' must be non-empty text (and 'input' text, if given)")
            text = alpaca_user_text(instruction, extra)
            messages = [{"role": "user", "content": text}]
        else:
            value = table.column(prompt_column, "the prompt column")[i]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: {prompt_column!r} is empty or not text")
            text = value
            messages = [{"role": "user", "content": value}]
        shown.append(text)
        conversations.append(messages)
    return shown, conversations
