"""`lmtune train` with bad input: exit code 2, one clear message, and no output folder left behind.

model.name_or_path is a made-up name: train() validates config and data before it loads a
tokenizer or model, so these errors come first and need no model at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.cli import main

LMTUNE = Path(sys.executable).with_name("lmtune")


def write_config(tmp_path, train: str, extra: str = "") -> tuple[Path, Path]:
    out = tmp_path / "runs" / "out"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"model:\n  name_or_path: unused-model\n"
        f"data:\n  train: {train}\n"
        f"train:\n  epochs: 1\n"
        f"output:\n  dir: {out}\n{extra}",
        encoding="utf-8",
    )
    return cfg, out


def write_good_csv(tmp_path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n", encoding="utf-8")
    return path


def case_missing_train_file(tmp_path):
    missing = tmp_path / "no_such_train.csv"
    cfg, out = write_config(tmp_path, str(missing))
    return cfg, out, [], [str(missing), "does not exist"]


def case_missing_text_column(tmp_path):
    data = tmp_path / "sentences.csv"
    data.write_text("sentence,label\nhello,pos\nbye,neg\n", encoding="utf-8")
    cfg, out = write_config(tmp_path, str(data))
    return cfg, out, [], [str(data), "no column 'text'", "data.text_column", "'sentence', 'label'"]


def case_non_utf8_csv(tmp_path):
    data = tmp_path / "latin1.csv"
    data.write_bytes("text,label\ncaf\u00e9,pos\nok,neg\n".encode("latin-1"))
    cfg, out = write_config(tmp_path, str(data))
    return cfg, out, [], [str(data), "not UTF-8", "line 2, column 4 (byte offset 14)", "0xe9"]


def case_unknown_key_in_file(tmp_path):
    cfg, out = write_config(tmp_path, str(write_good_csv(tmp_path)), "  overwrte: true\n")
    return cfg, out, [], ["'output.overwrte'", "overwrite", str(cfg)]


def case_unknown_key_override(tmp_path):
    cfg, out = write_config(tmp_path, str(write_good_csv(tmp_path)))
    return cfg, out, ["train.lr=0.001"], ["'train.lr'", "learning_rate"]


def case_unseen_validation_label(tmp_path):
    val = tmp_path / "val.csv"
    val.write_text("text,label\nmeh,neutral\n", encoding="utf-8")
    cfg, out = write_config(tmp_path, str(write_good_csv(tmp_path)))
    return cfg, out, [f"data.validation={val}"], [str(val), "'neutral'", "known labels: neg, pos"]


CASES = [
    case_missing_train_file,
    case_missing_text_column,
    case_non_utf8_csv,
    case_unknown_key_in_file,
    case_unknown_key_override,
    case_unseen_validation_label,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_train_with_bad_input_exits_2_in_process(tmp_path, capsys, case):
    cfg, out, overrides, expected = case(tmp_path)
    code = main(["train", str(cfg), *overrides, "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("lmtune: error: ")
    assert "Traceback" not in captured.err
    for part in expected:
        assert part in captured.err
    assert not out.exists()
    assert not out.parent.exists()


def test_missing_config_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_bad_override_value_exits_2(tmp_path, capsys):
    cfg, out = write_config(tmp_path, str(write_good_csv(tmp_path)))
    assert main(["train", str(cfg), "method.name=fulll"]) == 2
    err = capsys.readouterr().err
    assert "method.name" in err and "'fulll'" in err and "'lora'" in err
    assert not out.exists()


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_train_with_bad_input_exits_2_as_a_subprocess(tmp_path):
    """The installed console script in a real process (once: starting one costs seconds of imports)."""
    if not LMTUNE.exists():
        pytest.skip(f"no console script at {LMTUNE}")
    cfg, out, overrides, expected = case_non_utf8_csv(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [str(LMTUNE), "train", str(cfg), *overrides, "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[0].startswith("lmtune: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for part in expected:
        assert part in proc.stderr
    assert not out.exists()
    # nothing but the inputs: no output folder, no relative runs/ in the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "latin1.csv"]


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file", "under_proc"])
def test_an_output_dir_that_cannot_be_created_exits_2_before_anything_loads(tmp_path, capsys, where):
    """The model name is made up: an error about it would mean the output check came too late."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = {"under_a_file": blocker / "runs" / "x", "is_a_file": blocker, "under_proc": Path("/proc/lmtune-test/run")}[where]
    if where == "under_proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    cfg, _ = write_config(tmp_path, str(write_good_csv(tmp_path)))
    assert main(["train", str(cfg), f"output.dir={out}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmtune: error: output.dir=") and str(out) in err and "Traceback" not in err
    assert ("/proc" if where == "under_proc" else "is a file") in err
    assert "unused-model" not in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["predict", "generate"])
def test_an_output_file_that_cannot_be_written_exits_2_before_the_model_loads(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    data = write_good_csv(tmp_path)
    assert main([command, str(tmp_path / "no-such-run"), "--input", str(data), "--output", str(blocker / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmtune: error: --output ") and str(blocker / "out.jsonl") in err and "is a file" in err
    assert "no-such-run" not in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_predict_refuses_an_empty_text_as_training_does(tmp_path, capsys, text):
    assert main(["predict", str(tmp_path / "no-such-run"), "--text", "fine", "--text", text]) == 2
    err = capsys.readouterr().err
    assert "--text number 2 (of 2) is empty" in err and "Traceback" not in err


def test_a_hub_id_fails_at_once_when_the_hub_cannot_be_reached(tmp_path):
    """One clear message, no retries: the hub endpoint is a closed local port."""
    cfg, out = write_config(tmp_path, str(write_good_csv(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf-home"))
    proc = subprocess.run(
        [sys.executable, "-m", "lmtune.cli", "train", str(cfg), "model.name_or_path=some-org/some-model", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lmtune: error:")]
    assert len(errors) == 1 and "'some-org/some-model'" in errors[0] and "cannot be reached" in errors[0]
    assert "127.0.0.1:9" in errors[0] and "Retry" not in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(("name", "expected"), [
    ("/no/such/model-folder", "no such folder or file"),
    ("./models/not-here", "no such folder or file"),
    ("not a hub id!", "not a hub id either"),
])
def test_a_model_path_that_does_not_exist_says_so(tmp_path, capsys, name, expected):
    cfg, out = write_config(tmp_path, str(write_good_csv(tmp_path)))
    assert main(["train", str(cfg), f"model.name_or_path={name}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Repo id must be in the form" not in err and not out.exists()
