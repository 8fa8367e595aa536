"""The New-run form, made from the config schema: each field's key, kind, choices, default and help."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from lmtune.schema import Config

SECTIONS = ("model", "data", "method", "train", "eval", "output")  # the New-run form; the Search page adds "search"
# Shown open; the rest of each section sits under "more keys".
MAIN_KEYS = {
    "model.name_or_path", "model.max_length", "data.train", "data.validation", "data.test", "method.name",
    "method.trainable_layers", "method.lora_rank", "train.epochs", "train.batch_size", "train.learning_rate",
    "train.loss", "train.class_weights", "eval.metric", "eval.every_n_steps", "train.save_every_n_steps",
    "search.metric", "search.direction", "search.n_trials", "search.timeout", "search.sampler", "search.pruner",
}
# The run folder is named beside the form; the space has rows of its own; the app reads a search's own study.db.
LEFT_OUT = {"output.dir", "search.space", "search.storage"}


def form_sections(cls: type[Config], names: tuple[str, ...] = SECTIONS) -> list[dict[str, Any]]:
    sections = []
    for name in names:
        section = cls.model_fields[name].annotation if name in cls.model_fields else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue  # not a section of the config
        fields = []
        for key, info in section.model_fields.items():
            dotted = f"{name}.{key}"
            if dotted in LEFT_OUT:
                continue
            kind, choices = _kind(info.annotation)
            default = info.get_default(call_default_factory=True)
            fields.append({
                "key": dotted, "kind": kind, "choices": choices, "description": info.description or "",
                "default": default if isinstance(default, str | int | float | bool | type(None)) else repr(default),
                "main": dotted in MAIN_KEYS or (name == "data" and key.endswith("_column")),
            })
        sections.append({"name": name, "fields": fields})
    return sections


def _kind(annotation: Any) -> tuple[str, list[Any] | None]:
    """bool, int, float, choice (with its choices) or text (anything else, typed as YAML)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        return "choice", list(typing.get_args(annotation))
    for kind in (bool, int, float):
        if annotation is kind:
            return kind.__name__, None
    return "text", None


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else ""
