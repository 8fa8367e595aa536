"""The one typed config: validated once, at the edge, with the class of the config's task.

Every default lives in the schema (`lmtune.schema` for the sections every task shares, each
task's module for its `data` section). YAML and `key.sub=value` overrides fill it. An invalid
key or value raises `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from lmtune.errors import ConfigError
from lmtune.models.methods import METHODS, method_section
from lmtune.schema import (
    LOWER_IS_BETTER,
    Config,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OutputConfig,
    ParamSpec,
    SearchConfig,
    TrainConfig,
    flatten_keys,
    merge_dicts,
    nest_keys,
    parse_overrides,
)
from lmtune.tasks import DEFAULT_TASK, TASKS

__all__ = [
    "LOWER_IS_BETTER",
    "Config",
    "DataConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "OutputConfig",
    "ParamSpec",
    "SearchConfig",
    "TrainConfig",
    "build_config",
    "config_class",
    "data_fields",
    "flatten_keys",
    "load_config",
    "merge_dicts",
    "nest_keys",
    "parse_overrides",
    "section_of",
    "with_defaults",
]


def config_class(task: Any) -> type[Config]:
    """The Config class of a task name, with the `method` section of the registered methods; an
    unknown name is a ConfigError listing the known ones."""
    if not isinstance(task, str) or task not in TASKS:
        raise ConfigError(f"key 'task' has invalid value {task!r}: choose one of {', '.join(TASKS)}")
    return _with_methods(TASKS[task].config_class, method_section())


@lru_cache
def _with_methods(cls: type[Config], section: type[MethodConfig]) -> type[Config]:
    return create_model(cls.__name__, __base__=cls, __module__=cls.__module__,
                        method=(section, Field(default_factory=section)),
                        __validators__={"_quantized_base_needs_an_adapter": QUANTIZED_NEEDS_ADAPTER})


def _quantized_needs_adapter(cfg: Config) -> Config:
    """model.quantize: a quantized base is frozen, so only a method that trains an adapter can train on it."""
    if cfg.model.quantize != "none" and not METHODS[cfg.method.name].adapter:
        adapters = ", ".join(name for name, m in METHODS.items() if m.adapter)
        raise ValueError(f"model.quantize={cfg.model.quantize} needs a method that trains an adapter on the frozen, quantized "
                         f"base ({adapters}); method.name is {cfg.method.name}: choose one of those, or set model.quantize: none")
    return cfg


QUANTIZED_NEEDS_ADAPTER: Any = model_validator(mode="after")(_quantized_needs_adapter)


def with_defaults(cfg: Config) -> Config:
    """A copy with the method-dependent defaults filled in (the learning rate): the config a run folder records."""
    if cfg.train.learning_rate is not None:
        return cfg
    resolved = cfg.model_copy(deep=True)
    resolved.train.learning_rate = METHODS[cfg.method.name].learning_rate
    return resolved


def data_fields(cls: type[Config]) -> dict[str, Any]:
    """The fields of a config class's `data` section."""
    section = cls.model_fields["data"].annotation
    assert isinstance(section, type) and issubclass(section, BaseModel)
    return section.model_fields


def _other_tasks_keys(data: dict[str, Any], cls: type[Config]) -> dict[str, Any]:
    """`data` without the data keys that belong to other tasks and hold those tasks' defaults.

    Run folders written before each task had its own section recorded every task's keys; at their
    defaults they said nothing. Another task's key with a value of its own is an error naming the task.
    """
    section = data.get("data")
    if not isinstance(section, dict):
        return data
    own = data_fields(cls)
    kept = {}
    for key, value in section.items():
        owners = {name: data_fields(t.config_class)[key] for name, t in TASKS.items() if key in data_fields(t.config_class)}
        if key in own or not owners:
            kept[key] = value
        elif any(value != field.get_default(call_default_factory=True) for field in owners.values()):
            raise ConfigError(f"key 'data.{key}' applies to task {' and '.join(owners)}, not to task "
                              f"{cls.model_fields['task'].default}; remove it, or set task: {next(iter(owners))}")
    return {**data, "data": kept}


def section_of(loc: tuple[Any, ...], cls: type[BaseModel]) -> type[BaseModel] | None:
    """The section class a key path leads to in config class `cls`, or None if it is not a section."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def _task_class(data: dict[str, Any]) -> tuple[type[Config], dict[str, Any]]:
    """The config class of the dict's task, and the dict without other tasks' keys at their defaults."""
    cls = config_class(data.get("task", DEFAULT_TASK))
    return cls, _other_tasks_keys(data, cls)


def error_items(err: ValidationError, cls: type[Config]) -> list[tuple[str, str]]:
    """(key, message) for each problem pydantic found, worded as the CLI words them."""
    items = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = section_of(e["loc"][:-1], cls)
            allowed = ", ".join(section.model_fields) if section else ""
            items.append((key, f"unknown key '{key}'" + (f"; allowed here: {allowed}" if allowed else "")))
        elif e["type"] == "value_error":
            items.append((key, str(e["ctx"]["error"]) if "ctx" in e else e["msg"]))
        else:
            items.append((key, f"key '{key}' has invalid value {e['input']!r}: {e['msg']}"))
    return items


def config_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a config dict as (key, message); empty when it is valid (the web app's field errors)."""
    try:
        cls, data = _task_class(data)
    except ConfigError as err:
        key = re.search(r"key '([\w.]+)'", str(err))
        return [(key.group(1) if key else "task", str(err))]
    try:
        cls.model_validate(data)
    except ValidationError as err:
        # a check over the whole config has no location: the key it names is where it shows
        return [(key or next(iter(re.findall(r"\b[a-z_]+\.[a-z_.]+[a-z_]", message)), ""), message)
                for key, message in error_items(err, cls)]
    return []


def _format_errors(err: ValidationError, source: str, cls: type[Config]) -> str:
    return f"invalid config ({source}):\n  " + "\n  ".join(message for _, message in error_items(err, cls))


def build_config(data: dict[str, Any] | Config, source: str = "config") -> Config:
    """Validate a plain dict with its task's Config class (or pass a Config through); ConfigError on any problem."""
    if isinstance(data, Config):
        if type(data) is config_class(data.task):
            return data
        data = data.model_dump(mode="json")  # a task's own class, without the registered methods' keys
    try:
        cls, data = _task_class(data)
    except ConfigError as err:
        raise ConfigError(f"invalid config ({source}):\n  {err}") from None
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, cls)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply `key.sub=value` overrides, validate."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = merge_dicts(data, parse_overrides(overrides))
        source += " + overrides"
    return build_config(data, source)
