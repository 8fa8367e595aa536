"""The search space: config keys and their distributions, sampled into flat {key: value} overrides."""

from __future__ import annotations

from typing import Any

from lmtune.config import Config, ParamSpec, _section_of
from lmtune.errors import ConfigError


def check_space(base: Config) -> None:
    """Every searched key must be a key of the config, and every `when` key searched or set."""
    for key, spec in base.search.space.items():
        *sections, name = key.split(".")
        section = _section_of(tuple(sections))
        if section is None or name not in section.model_fields or key.startswith("search."):
            raise ConfigError(f"search.space: {key!r} is not a config key one can search (e.g. train.learning_rate, method.name)")
        for cond in spec.when:
            if cond not in base.search.space and _lookup(base.model_dump(mode="json"), cond) is _MISSING:
                raise ConfigError(f"search.space.{key}.when: {cond!r} is neither a searched key nor a config key")


def sample(trial: Any, base: Config) -> dict[str, Any]:
    """Flat {config key: value} for one trial; a key whose `when` does not hold is left at its base value.

    Keys are sampled in the order written, so a condition may refer to a key sampled before it.
    """
    plain = base.model_dump(mode="json")
    chosen: dict[str, Any] = {}
    for key, spec in base.search.space.items():
        if not all(_current(chosen, plain, cond) == want for cond, want in spec.when.items()):
            continue
        chosen[key] = _suggest(trial, key, spec)
    return chosen


def grid(base: Config) -> dict[str, list[Any]]:
    """The grid sampler's value lists: categorical choices, or low..high by step."""
    out: dict[str, list[Any]] = {}
    for key, spec in base.search.space.items():
        if spec.type == "categorical":
            out[key] = list(spec.choices or [])
            continue
        if spec.step is None:
            raise ConfigError(f"search.sampler=grid needs a step for search.space.{key} (a {spec.type} range)")
        assert spec.low is not None and spec.high is not None
        values, v = [], spec.low
        while v <= spec.high + 1e-12:
            values.append(int(round(v)) if spec.type == "int" else v)
            v += spec.step
        out[key] = values
    return out


def _suggest(trial: Any, key: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(key, spec.choices)
    assert spec.low is not None and spec.high is not None
    if spec.type == "int":
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


_MISSING = object()


def _lookup(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _current(chosen: dict[str, Any], plain: dict[str, Any], key: str) -> Any:
    return chosen[key] if key in chosen else _lookup(plain, key)
