"""Conversations to token ids and labels: the loss falls on what the assistant says.

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": str}`.
It is rendered to text with the tokenizer's chat template when it has one, else with the plain
template below. The text is tokenized once, with character offsets; a token is trained on (its
label is its id) when it starts inside an assistant span, otherwise its label is -100, which the
loss ignores. An assistant span is the assistant's message plus whatever the template closes the
turn with (an end-of-turn token, EOS), so the model learns to stop. With the chat template, the
span of assistant turn i is the text that rendering the first i+1 messages adds to rendering the
first i with the generation prompt; every turn of a multi-turn conversation is trained.

The plain template, for tokenizers without a chat template:

    ### System:
    {system}

    ### Instruction:
    {user}

    ### Response:
    {assistant}{eos}

with further turns appended in the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lmtune.errors import DataError

log = logging.getLogger("lmtune")

IGNORE = -100  # label of a token the loss skips
ROLES = ("system", "user", "assistant")
PLAIN_HEADERS = {"system": "### System:\n", "user": "### Instruction:\n"}
PLAIN_RESPONSE = "### Response:\n"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the loss does not apply


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A list of {role, content} with known roles, non-empty text, and at least one assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: expected a non-empty list of messages")
    out = []
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {i} is not an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not m["content"].strip():
            raise DataError(f"{where}: message {i} ({m['role']}) is empty")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: the conversation has no assistant message to learn from")
    return out


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the character spans the loss covers (the assistant turns)."""
    if not has_chat_template(tokenizer):
        return _render_plain(tokenizer, messages)
    text = _template(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = _template(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (text.startswith(through) and through.startswith(before)):
            # A template whose output for a prefix of the conversation is not a prefix of the whole
            # (some insert dates or drop earlier reasoning): fall back to the message text itself.
            start = text.find(m["content"], spans[-1][1] if spans else 0)
            if start < 0:
                raise DataError("the tokenizer's chat template does not reproduce an assistant message verbatim")
            spans.append((start, start + len(m["content"])))
            continue
        spans.append((len(before), len(through)))
    return text, spans


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """What a model is given to generate the next assistant turn: the same template as in training."""
    if has_chat_template(tokenizer):
        return _template(tokenizer, messages, generation_prompt=True)
    text, _ = _render_plain(tokenizer, messages)
    return text + PLAIN_RESPONSE


def encode(tokenizer: Any, messages: list[dict[str, str]], max_length: int, train_on_prompt: bool = False) -> Encoded:
    """Token ids and labels, truncated to max_length (the loss may then cover fewer tokens, or none)."""
    text, spans = render(tokenizer, messages)
    # A chat template writes its own special tokens (BOS, turn markers); plain text gets the tokenizer's.
    enc = tokenizer(
        text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True,
        truncation=True, max_length=max_length,
    )
    ids = enc["input_ids"]
    if train_on_prompt:
        return Encoded(list(ids), list(ids))
    labels = []
    for token, (start, end) in zip(ids, enc["offset_mapping"]):
        inside = end > start and any(a <= start < b for a, b in spans)
        labels.append(token if inside else IGNORE)
    return Encoded(list(ids), labels)


def _template(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _render_plain(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    text, spans = "", []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            if i == 0 or messages[i - 1]["role"] != "user":
                text += PLAIN_RESPONSE  # an assistant turn without a question before it
            start = len(text)
            text += m["content"] + eos
            spans.append((start, len(text)))
            text += "\n\n"
        else:
            text += PLAIN_HEADERS[m["role"]] + m["content"] + "\n\n"
            if m["role"] == "user":
                text += PLAIN_RESPONSE if i + 1 < len(messages) and messages[i + 1]["role"] == "assistant" else ""
    return text, spans
