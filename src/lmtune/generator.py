"""Language models on the command line and in Python: any lmtune run or causal LM, and prompts read from a file."""

from __future__ import annotations

from pathlib import Path

from lmtune.data.chat import check_messages
from lmtune.data.generative import alpaca_user_text
from lmtune.data.readers import read_table
from lmtune.errors import DataError, ModelError
from lmtune.models.loading import default_device
from lmtune.models.saving import read_meta
from lmtune.run_dir import find_model_dir
from lmtune.tasks import BASE_LM_TASK, DEFAULT_TASK, TASKS
from lmtune.tasks.generator import Generator, load_generator

__all__ = ["Generator", "load_lm", "read_prompts"]


def load_lm(path: str | Path, device: str | None = None, gguf_file: str | None = None) -> Generator:
    """An lmtune run or model folder, else any causal LM folder, hub id or GGUF file, as it is."""
    folder = None if gguf_file else find_model_dir(path)
    if folder is None:
        return load_generator(path, None, None, TASKS[BASE_LM_TASK], device, gguf_file)
    meta = read_meta(folder)
    loaded = TASKS[meta.get("task", DEFAULT_TASK)].load_predictor(folder, meta, device or default_device())
    if not isinstance(loaded, Generator):
        raise ModelError(f"{folder} holds a {meta.get('task', DEFAULT_TASK)} model, not a language model that generates text")
    return loaded


def read_prompts(path: str, prompt_column: str = "prompt") -> tuple[list[str], list[list[dict[str, str]]]]:
    """Prompts of a data file: a `messages` list (up to its last user turn), alpaca `instruction`
    (+ `input`), or a `prompt_column`. Returns a display text and a conversation per row."""
    table = read_table(path)
    if not table.rows:
        raise DataError(f"{table.source}: holds no data rows")
    shown, conversations = [], []
    for i, row in enumerate(table.rows):
        where = f"{table.source}: {table.where(i)}"
        if "messages" in table.columns:
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
