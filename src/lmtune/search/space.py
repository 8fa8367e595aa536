"""The search space: config keys and their distributions, sampled into flat {key: value} overrides."""

from __future__ import annotations

from typing import Any

from lmtune.config import Config, ParamSpec, build_config, merge_dicts, nest_keys, section_of
from lmtune.errors import ConfigError


def check_space(base: Config) -> None:
    """Before the first trial: the first of `space_problems`, as a ConfigError."""
    problems = space_problems(base)
    if problems:
        raise ConfigError(problems[0][1])


def space_problems(base: Config) -> list[tuple[str, str]]:
    """An empty space, and every searched key that can never work, as (search.space.KEY, message): a key that is not a config value
    (a section, or no key at all), a value it can take (each choice, both range ends) that the schema refuses,
    or a `when` key that is neither searched nor set."""
    if not base.search.space:
        return [("search.space", "search.space is empty: name at least one config key to search, e.g. "
                                 "train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}")]
    plain = base.model_dump(mode="json")
    problems = []
    for key, spec in base.search.space.items():
        try:
            _check_entry(base, plain, key, spec)
        except ConfigError as err:
            problems.append((f"search.space.{key}", str(err)))
    return problems


def _check_entry(base: Config, plain: dict[str, Any], key: str, spec: ParamSpec) -> None:
    *sections, name = key.split(".")
    section = section_of(tuple(sections), type(base))
    if section is None or name not in section.model_fields or key.startswith("search.") or section_of((*sections, name), type(base)):
        raise ConfigError(f"search.space: {key!r} is not a config key one can search (e.g. train.learning_rate, method.name)")
    if spec.type == "categorical":
        values = list(spec.choices or [])
    else:
        values = [spec.low, spec.high]
        if spec.type == "int" and not all(float(v).is_integer() for v in values):
            raise ConfigError(f"search.space.{key}: an int range needs whole ends (got low={spec.low}, high={spec.high})")
    for value in values:
        _check_value(plain, key, int(value) if spec.type == "int" else value, spec.type)
    for cond in spec.when:
        if cond not in base.search.space and _lookup(plain, cond) is _MISSING:
            raise ConfigError(f"search.space.{key}.when: {cond!r} is neither a searched key nor a config key")


def _check_value(plain: dict[str, Any], key: str, value: Any, kind: str) -> None:
    """The base config with `key` set to `value` must validate; else name the key, the value and why."""
    try:
        build_config(merge_dicts(plain, nest_keys({key: value})), "search.space")
    except ConfigError as err:
        what = "choice" if kind == "categorical" else "range end"
        reason = " ".join(str(err).splitlines()[1:]).strip() or str(err)
        raise ConfigError(f"search.space.{key}: the {what} {value!r} is not a valid value of {key}: {reason}") from None


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
            values.append(round(v) if spec.type == "int" else v)
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
