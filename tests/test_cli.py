"""The command line end to end on a tiny model: train, eval, predict (text and file), merge."""

from __future__ import annotations

import csv
import json

import yaml

from conftest import make_config
from lmtune.cli import main


def test_train_eval_predict_merge(tiny_models, toy_data, tmp_path, capsys):
    cfg = make_config(tiny_models["llama"], toy_data, tmp_path / "run", method={"name": "lora"}, train={"epochs": 6, "learning_rate": 3e-3})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"

    assert main(["train", str(config_file), "train.epochs=4", "--quiet"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 4  # the override wins, and the resolved config is saved
    trained = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()

    assert main(["eval", str(run), "--data", str(toy_data["validation"]), "--output", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["accuracy"] == trained["accuracy"]  # the reloaded best model scores as during training
    assert json.loads(capsys.readouterr().out)["accuracy"] == trained["accuracy"]

    assert main(["predict", str(run), "--text", "the staff was excellent", "--text", "awful boring plot"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["label"] for p in lines] == ["pos", "neg"]
    assert abs(sum(lines[0]["probabilities"].values()) - 1) < 1e-5

    out_file = tmp_path / "preds.csv"
    assert main(["predict", str(run), "--input", str(toy_data["validation"]), "--output", str(out_file)]) == 0
    with out_file.open() as f:
        rows = list(csv.DictReader(f))
    with toy_data["validation"].open() as f:
        gold = list(csv.DictReader(f))
    assert len(rows) == len(gold)
    agree = sum(r["label"] == g["label"] for r, g in zip(rows, gold)) / len(gold)
    assert agree == trained["accuracy"]

    assert main(["merge", str(run), str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_predict_needs_text_or_input(tiny_models, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "no-run"), "--text", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_and_ui_options_are_their_settings_with_the_readme_defaults():
    """`lmtune serve` and `lmtune ui` take every setting that has help as an option, with the setting's own
    default; the README's table of serve limits names the same defaults."""
    import dataclasses
    import re
    from pathlib import Path

    from lmtune.cli import build_parser, option_values
    from lmtune.serve.options import ServeOptions
    from lmtune.ui.options import UiOptions

    parser = build_parser()
    for command, options in (["serve", "some-model"], ServeOptions), (["ui"], UiOptions):
        args = parser.parse_args(command)
        optioned = [f for f in dataclasses.fields(options) if "help" in f.metadata]
        assert option_values(args, options) == {f.name: f.default for f in optioned}
        valued = [f for f in optioned if f.name != "host" and f.default is not None and not isinstance(f.default, bool)]
        flags = [f for f in optioned if isinstance(f.default, bool)]  # off by default, on when given
        changed = parser.parse_args([*command, *[a for f in valued for a in (f"--{f.name.replace('_', '-')}", "7")],
                                     *[f"--{f.name.replace('_', '-')}" for f in flags]])
        assert all(getattr(changed, f.name) == 7 for f in valued)
        assert flags and all(getattr(changed, f.name) is True and f.default is False for f in flags)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `--([a-z-]+)` \(([\d,.]+)(?: s)?\)", readme, flags=re.M))
    assert set(table) >= {"max-body-bytes", "max-batch-size", "max-tokens", "max-queue", "timeout"}
    defaults = ServeOptions()
    for flag, shown in table.items():
        value = getattr(defaults, flag.replace("-", "_"))
        assert (shown == value) if isinstance(value, str) else float(shown.replace(",", "")) == value, flag
