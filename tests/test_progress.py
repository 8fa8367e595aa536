"""Progress bars: on a terminal every long part of a job shows one with an ETA; --quiet and pipes show none."""

from __future__ import annotations

import io
import sys

import yaml

from conftest import make_config
from lmtune.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv: list[str], monkeypatch) -> str:
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    assert main(argv) == 0, screen.getvalue()[-2000:]
    return screen.getvalue()


def test_train_predict_and_search_show_bars_on_a_terminal_and_none_when_quiet(tiny_models, toy_data, tmp_path, monkeypatch):
    # a cache of its own: the data is tokenized (with a bar) even when another test tokenized it before
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run", train={"epochs": 1}, data={"cache_dir": str(tmp_path / "cache")})
    cfg["search"] = {"n_trials": 2, "space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))

    screen = run(["train", str(config)], monkeypatch)
    for desc in ("tokenize:", "evaluate:", "train: 100%"):
        assert desc in screen, f"no {desc} bar"
    assert "<00:00" in screen or "<?" in screen  # tqdm's elapsed<remaining: the ETA
    quiet = run(["train", str(config), "--quiet", "output.dir=" + str(tmp_path / "quiet"), "data.cache=false"], monkeypatch)
    assert "tokenize" not in quiet  # tokenized again (no cache), without a bar

    texts = tmp_path / "texts.csv"
    texts.write_text("text\n" + "\n".join(["good food"] * 50) + "\n")
    screen = run(["predict", str(tmp_path / "run"), "--input", str(texts), "--output", str(tmp_path / "p.csv")], monkeypatch)
    assert "evaluate:" in screen or "tokenize:" in screen

    screen = run(["search", str(config), f"output.dir={tmp_path / 'search'}"], monkeypatch)
    assert "search: 100%" in screen and "2/2" in screen and "best=" in screen
    assert "search:" not in run(["search", str(config), "--quiet", f"output.dir={tmp_path / 'search2'}"], monkeypatch)


def test_no_bars_when_the_output_is_not_a_terminal(tiny_models, toy_data, tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_config(tiny_models["bert"], toy_data, tmp_path / "run", train={"epochs": 1})))
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    assert main(["train", str(config)]) == 0
    assert "it/s" not in pipe.getvalue() and "%|" not in pipe.getvalue()
