"""Config loading: defaults, YAML file, `key.sub=value` overrides, and the ConfigError messages."""

from __future__ import annotations

import pytest
import yaml

from lmtune.config import ModelConfig, TrainConfig, build_config, load_config, parse_overrides, with_defaults
from lmtune.data.classification import ClassificationSection
from lmtune.errors import ConfigError
from lmtune.models.freeze import FreezeOptions
from lmtune.models.methods import METHODS
from lmtune.tasks.classification import ClassificationConfig

REQUIRED = ["model.name_or_path=some-model", "data.train=train.csv"]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path=None, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# --- defaults, file and overrides -----------------------------------------------------------------


def test_defaults_load_with_only_the_required_keys():
    cfg = load_config(None, REQUIRED)
    assert cfg.model.name_or_path == "some-model"
    assert cfg.data.train == "train.csv"
    plain = ClassificationConfig(model=ModelConfig(name_or_path="some-model"), data=ClassificationSection(train="train.csv"))
    assert isinstance(cfg, ClassificationConfig) and cfg.model_dump()["data"] == plain.model_dump()["data"]
    assert build_config(plain) == cfg  # a task's own class, validated again with the registered methods' keys
    assert cfg.task == "classification"
    assert cfg.method.name == "full"
    assert cfg.train.batch_size == 16
    assert cfg.train.epochs == 3
    assert cfg.train.optimizer == "adamw"
    assert cfg.data.validation is None
    assert cfg.data.validation_split == 0.1
    assert cfg.data.text_column == "text" and cfg.data.label_column == "label"
    assert cfg.data.label_type == "auto"
    assert cfg.eval.metric == "auto"
    assert cfg.output.overwrite is False


def test_yaml_file_is_read(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        "model:\n  name_or_path: m\ndata:\n  train: t.csv\n  text_column: sentence\n"
        "train:\n  epochs: 5\n  learning_rate: 0.001\nmethod:\n  name: lora\n  lora_rank: 4\n",
    )
    cfg = load_config(path)
    assert cfg.train.epochs == 5
    assert cfg.train.learning_rate == 0.001
    assert cfg.data.text_column == "sentence"
    assert cfg.method.name == "lora" and cfg.method.lora_rank == 4
    assert cfg.train.batch_size == 16  # untouched default


def test_override_beats_file_and_keeps_the_rest_of_the_section(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  name_or_path: m\ndata:\n  train: t.csv\ntrain:\n  epochs: 5\n  batch_size: 4\n")
    cfg = load_config(path, ["train.epochs=2"])
    assert cfg.train.epochs == 2
    assert cfg.train.batch_size == 4  # from the file, not reset by the override of a sibling key
    assert cfg.model.name_or_path == "m"


@pytest.mark.parametrize(
    ("override", "attr", "expected"),
    [
        ("train.epochs=7", ("train", "epochs"), 7),
        ("train.learning_rate=0.0003", ("train", "learning_rate"), 0.0003),
        ("train.learning_rate=1e-4", ("train", "learning_rate"), 1e-4),
        ("output.overwrite=true", ("output", "overwrite"), True),
        ("train.nesterov=yes", ("train", "nesterov"), True),
        ("method.modules=[query, value]", ("method", "modules"), ["query", "value"]),
        ("train.adam_betas=[0.8, 0.95]", ("train", "adam_betas"), (0.8, 0.95)),
        ("train.max_grad_norm=null", ("train", "max_grad_norm"), None),
        ("train.class_weights=[1, 2.5]", ("train", "class_weights"), [1.0, 2.5]),
        ("data.validation=dev.tsv", ("data", "validation"), "dev.tsv"),
        ("eval.metric=f1_macro", ("eval", "metric"), "f1_macro"),
    ],
)
def test_override_values_are_parsed_as_yaml(override, attr, expected):
    cfg = load_config(None, REQUIRED + [override])
    value = getattr(getattr(cfg, attr[0]), attr[1])
    assert value == expected
    assert type(value) is type(expected)


def test_later_override_wins_and_value_may_contain_equals_sign():
    cfg = load_config(None, REQUIRED + ["train.epochs=1", "train.epochs=4", "data.text_column=a=b"])
    assert cfg.train.epochs == 4
    assert cfg.data.text_column == "a=b"


def test_parse_overrides_builds_a_nested_dict():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


@pytest.mark.parametrize("bad", ["train.epochs", "train..epochs=1", ".epochs=1"])
def test_malformed_override_is_a_config_error(bad):
    msg = config_error(None, REQUIRED + [bad])
    assert repr(bad) in msg


# --- unknown keys and invalid values ----------------------------------------------------------------


def test_unknown_key_names_the_full_key_and_the_allowed_keys():
    msg = config_error(None, REQUIRED + ["train.lr=1e-4"])
    assert "'train.lr'" in msg
    for allowed in TrainConfig.model_fields:
        assert allowed in msg
    assert "learning_rate" in msg


def test_unknown_key_in_file_names_the_full_key(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  name_or_path: m\n  nmae: x\ndata:\n  train: t.csv\n")
    msg = config_error(path)
    assert "'model.nmae'" in msg
    assert str(path) in msg
    for allowed in ModelConfig.model_fields:
        assert allowed in msg


def test_unknown_top_level_key_lists_the_sections():
    msg = config_error(None, REQUIRED + ["trian.epochs=1"])
    assert "'trian'" in msg
    for section in ("model", "data", "method", "train", "eval", "output"):
        assert section in msg


def test_invalid_enum_value_names_key_value_and_choices():
    msg = config_error(None, REQUIRED + ["method.name=fulll"])
    assert "method.name" in msg
    assert "'fulll'" in msg
    for choice in ("full", "freeze", "lora"):
        assert f"'{choice}'" in msg


def test_invalid_optimizer_choice():
    msg = config_error(None, REQUIRED + ["train.optimizer=adamx"])
    assert "train.optimizer" in msg and "adamx" in msg
    for choice in ("sgd", "adagrad", "adadelta", "adam", "adamw"):
        assert f"'{choice}'" in msg


@pytest.mark.parametrize(
    ("override", "key", "shown"),
    [
        ("train.batch_size=0", "train.batch_size", "0"),
        ("train.batch_size=-3", "train.batch_size", "-3"),
        ("data.validation_split=1.5", "data.validation_split", "1.5"),
        ("data.validation_split=-0.1", "data.validation_split", "-0.1"),
        ("train.learning_rate=0", "train.learning_rate", "0"),
        ("method.lora_dropout=1", "method.lora_dropout", "1"),
        ("eval.threshold=1.0", "eval.threshold", "1.0"),
    ],
)
def test_out_of_range_value_names_key_and_value(override, key, shown):
    msg = config_error(None, REQUIRED + [override])
    assert f"'{key}'" in msg
    assert f"invalid value {shown}" in msg


def test_classification_needs_something_to_evaluate_on():
    msg = config_error(None, REQUIRED + ["data.validation_split=0"])
    assert "data.validation_split=0 leaves a classifier nothing to evaluate on" in msg


def test_other_tasks_keys_are_refused_with_their_task():
    msg = config_error(None, REQUIRED + ["data.packing=true"])
    assert "key 'data.packing' applies to task causal_lm and translation, not to task classification" in msg
    assert "key 'data.source_column' applies to task translation" in config_error(None, REQUIRED + ["data.source_column=src"])
    assert "eval.generate applies to tasks that generate text" in config_error(None, REQUIRED + ["eval.generate=true"])
    causal = [*REQUIRED, "task=causal_lm"]
    assert "data.columns: unknown name(s) question" in config_error(None, causal + ["data.columns={question: q}"])
    assert "key 'data.label_column' applies to task classification" in config_error(None, causal + ["data.label_column=y"])


def test_a_run_folders_config_with_every_tasks_defaults_still_loads(tmp_path):
    """config.yaml files written when one data section held every task's keys list them all at their defaults."""
    old = {"model": {"name_or_path": "m"}, "data": {"train": "t.csv", "text_column": "text", "label_column": "label",
           "format": "auto", "columns": {}, "packing": False, "source_column": "source", "target_lang": None}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_config(path)
    assert cfg.task == "classification" and cfg.data.train == "t.csv"
    assert "source_column" not in cfg.to_yaml()


def test_wrong_type_names_key_and_value():
    msg = config_error(None, REQUIRED + ["train.epochs=many"])
    assert "'train.epochs'" in msg and "'many'" in msg


def test_several_errors_are_all_reported():
    msg = config_error(None, REQUIRED + ["train.batch_size=0", "method.name=x", "train.lr=1"])
    assert "train.batch_size" in msg and "method.name" in msg and "train.lr" in msg


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        (["data.train=t.csv"], "model.name_or_path"),
        (["model.name_or_path=m"], "data.train"),
        (["model.name_or_path=m", "data.train="], "data.train"),
    ],
)
def test_missing_required_key(overrides, missing):
    msg = config_error(None, overrides)
    assert f"{missing} is required" in msg


def test_empty_config_file_is_missing_the_required_keys(tmp_path):
    path = write(tmp_path / "empty.yaml", "")
    assert "model.name_or_path is required" in config_error(path)
    # ... and overrides can supply them
    assert load_config(path, REQUIRED).data.train == "train.csv"


@pytest.mark.parametrize("layers", ["abc", "0-", "1,,2", "1-2-3", "-1"])
def test_bad_method_layers_string(layers):
    msg = config_error(None, REQUIRED + ["method.name=freeze", f"method.layers='{layers}'"])
    assert "method.layers" in msg
    assert repr(layers) in msg
    assert "0-1,10-11" in msg


@pytest.mark.parametrize("layers", ["0", "0-1,10-11", " 3 , 5 - 7 "])
def test_good_method_layers_string(layers):
    cfg = load_config(None, REQUIRED + ["method.name=freeze", f"method.layers='{layers}'"])
    assert cfg.method.layers == layers
    assert FreezeOptions(layers=layers).layers == layers


# --- the config file itself --------------------------------------------------------------------------


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = config_error(path)
    assert str(path) in msg and "does not exist" in msg


def test_config_path_that_is_a_folder(tmp_path):
    msg = config_error(tmp_path)
    assert str(tmp_path) in msg


def test_non_utf8_config_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    raw = "model:\n  name_or_path: caf\u00e9\n".encode("latin-1")
    path.write_bytes(raw)
    msg = config_error(path)
    assert str(path) in msg
    assert "UTF-8" in msg
    assert f"byte {raw.index(0xE9)}" in msg


def test_invalid_yaml(tmp_path):
    path = write(tmp_path / "bad.yaml", "model: [unclosed\n")
    msg = config_error(path)
    assert str(path) in msg and "not valid YAML" in msg


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_yaml_that_is_not_a_mapping(tmp_path, text, kind):
    path = write(tmp_path / "list.yaml", text)
    msg = config_error(path)
    assert str(path) in msg and "mapping" in msg and kind in msg


# --- round trip ----------------------------------------------------------------------------------------


def test_to_yaml_round_trips_defaults(tmp_path):
    cfg = load_config(None, REQUIRED)
    path = write(tmp_path / "saved.yaml", cfg.to_yaml())
    assert load_config(path) == cfg


def test_to_yaml_round_trips_non_defaults(tmp_path):
    cfg = load_config(
        None,
        REQUIRED
        + [
            "model.max_length=64",
            "model.revision=main",
            "data.validation=dev.jsonl",
            "data.label_type=multi",
            "data.text_pair_column=hypothesis",
            "method.name=freeze",
            "method.layers='0-1,10-11'",
            "method.modules=['classifier.*', 'pooler']",
            "method.lora_target_modules=[q_proj, v_proj]",
            "train.adam_betas=[0.85, 0.99]",
            "train.class_weights=balanced",
            "train.max_grad_norm=null",
            "train.learning_rate=2e-5",
            "train.precision=bf16",
            "eval.every_n_steps=100",
            "eval.metric=f1_macro",
            "output.dir=runs/ü nicode",
            "output.overwrite=true",
        ],
    )
    text = cfg.to_yaml()
    path = write(tmp_path / "saved.yaml", text)
    again = load_config(path)
    assert again == cfg
    assert again.train.adam_betas == (0.85, 0.99)
    assert again.output.dir == "runs/ü nicode"
    assert again.to_yaml() == text


def test_the_learning_rate_defaults_by_method_and_an_explicit_one_wins():
    base = {"model": {"name_or_path": "m"}, "data": {"train": "t.csv"}}
    for method in METHODS.values():
        cfg = build_config({**base, "method": {"name": method.name}})
        assert cfg.train.learning_rate is None  # unset in the config a search or a resume compares
        assert with_defaults(cfg).train.learning_rate == method.learning_rate
    explicit = build_config({**base, "method": {"name": "lora"}, "train": {"learning_rate": 3e-4}})
    assert with_defaults(explicit).train.learning_rate == 3e-4
    assert METHODS["lora"].learning_rate > METHODS["freeze"].learning_rate > METHODS["full"].learning_rate
