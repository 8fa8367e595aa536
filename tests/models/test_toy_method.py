"""A method written in one file (tests/toy_method.py) and added to the registry: the config, the
search space, training, the report, the New-run form and the README reference take it with no
other edit."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import make_config
from lmtune.cli import main
from lmtune.config import build_config, config_class
from lmtune.errors import ConfigError
from lmtune.models.methods import METHODS
from lmtune.reference import config_reference
from lmtune.search.space import space_problems
from lmtune.ui.form import form_sections
from toy import toy_rows, write_csv
from toy_method import LEARNING_RATE, METHOD


@pytest.fixture
def bitfit(monkeypatch):
    monkeypatch.setitem(METHODS, METHOD.name, METHOD)


def test_a_method_in_one_file_is_configured_trained_reported_and_documented(bitfit, tiny_models, tmp_path, capsys):
    reference = config_reference()
    assert "| `bitfit` | 0.003 | the biases only (BitFit), and a new head | the whole model |" in reference
    assert "| `method.bitfit_norms` | false | bitfit: also train the LayerNorm weights. |" in reference
    method_form = next(s for s in form_sections(config_class("classification")) if s["name"] == "method")
    fields = {f["key"]: f for f in method_form["fields"]}
    assert "bitfit" in fields["method.name"]["choices"] and fields["method.bitfit_norms"]["kind"] == "bool"

    write_csv(tmp_path / "train.csv", toy_rows(160, 1))
    write_csv(tmp_path / "validation.csv", toy_rows(40, 2))
    files = {"train": tmp_path / "train.csv", "validation": tmp_path / "validation.csv"}
    cfg = make_config(tiny_models["bert"], files, tmp_path / "run", method={"name": "bitfit"}, train={"epochs": 4})
    del cfg["train"]["learning_rate"]  # the method's own default applies
    with pytest.raises(ConfigError, match="bitfit_norms"):  # a mistyped key of the method names its keys
        build_config({**cfg, "method": {"name": "bitfit", "bitfit_norm": True}})
    space = {"method.name": {"type": "categorical", "choices": ["full", "bitfit"]},
             "method.bitfit_norms": {"type": "categorical", "choices": [True, False], "when": {"method.name": "bitfit"}}}
    assert space_problems(build_config({**cfg, "search": {"space": space, "n_trials": 2}})) == []
    (tmp_path / "bitfit.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "bitfit.yaml")]) == 0
    capsys.readouterr()

    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["learning_rate"] == LEARNING_RATE
    base = load_file(tiny_models["bert"] / "model.safetensors")
    tuned = load_file(run / "final" / "model.safetensors")
    body = {name.removeprefix("bert."): value for name, value in tuned.items() if name.startswith("bert.")}
    assert set(body) == set(base)
    moved = {name for name in base if not torch.equal(base[name], body[name])}
    # only biases trained in the body, besides the pooler (BERT's pooler belongs to the new head)
    assert moved and all(name.endswith(".bias") or name.startswith("pooler.") for name in moved)
    assert any(name.startswith("encoder.") for name in moved)
    assert any(not torch.equal(torch.zeros_like(v), v) for n, v in tuned.items() if n.startswith("classifier."))
    report = (run / "report.md").read_text()
    assert "BitFit: trains the biases (and a new head)" in report
