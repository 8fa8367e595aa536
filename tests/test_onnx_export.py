"""`lmtune export --format onnx [--quantize int8]`: the exported classifier answers as the PyTorch one,
loads, predicts and serves like any model folder; int8 keeps the labels."""

from __future__ import annotations

import csv
import json

import pytest

import lmtune
from conftest import make_config
from lmtune.cli import main
from lmtune.models.onnx import OnnxClassifierModel
from servers import Server

pytest.importorskip("onnxruntime")


def validation_texts(toy_data) -> list[str]:
    with toy_data["validation"].open(encoding="utf-8") as f:
        return [r["text"] for r in csv.DictReader(f)]


def close(a: list[dict], b: list[dict], tolerance: float) -> bool:
    return all(x["label"] == y["label"] and all(abs(x["probabilities"][k] - y["probabilities"][k]) < tolerance for k in x["probabilities"])
               for x, y in zip(a, b))


def test_onnx_export_predicts_as_pytorch_and_serves(classifier_run, toy_data, capsys):
    assert main(["export", str(classifier_run), "--format", "onnx"]) == 0
    assert "labels agree 100%" in capsys.readouterr().out
    folder = classifier_run / "onnx"
    meta = json.loads((folder / "lmtune.json").read_text())
    assert meta["format"] == "onnx" and meta["export_check"]["max_logit_difference"] < 1e-4
    texts = validation_texts(toy_data)
    torch_preds = lmtune.load(classifier_run).predict(texts)
    exported = lmtune.load(folder)
    assert isinstance(exported.model, OnnxClassifierModel)
    assert close(exported.predict(texts), torch_preds, 1e-5)
    assert exported.evaluate(str(toy_data["validation"]))["accuracy"] == lmtune.load(classifier_run).evaluate(str(toy_data["validation"]))["accuracy"]
    assert main(["predict", str(folder), "--text", texts[0]]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == torch_preds[0]["label"]

    server = Server(folder)
    try:
        with server.client() as client:
            r = client.post("/v1/classify", json={"texts": texts[:16]})
            assert r.status_code == 200 and close(r.json()["predictions"], torch_preds[:16], 1e-5)
    finally:
        server.stop()


def test_int8_keeps_the_labels(classifier_run, toy_data, capsys):
    assert main(["export", str(classifier_run), "--format", "onnx", "--quantize", "int8"]) == 0
    folder = classifier_run / "onnx-int8"
    assert json.loads((folder / "lmtune.json").read_text())["quantized"] == "int8"
    assert not list(folder.glob("*.data")) and not list(folder.glob("fp32*"))  # one self-contained file
    texts = validation_texts(toy_data)
    want = [p["label"] for p in lmtune.load(classifier_run).predict(texts)]
    got = [p["label"] for p in lmtune.load(folder).predict(texts)]
    assert sum(a == b for a, b in zip(got, want)) >= 0.95 * len(texts)


def test_a_lora_classifier_is_merged_into_the_export(tiny_models, toy_data, tmp_path):
    run = tmp_path / "lora"
    lmtune.train(make_config(tiny_models["bert"], toy_data, run, method={"name": "lora"}, train={"epochs": 1}), progress=False)
    assert main(["export", str(run), "--format", "onnx", "--output", str(tmp_path / "exported")]) == 0
    texts = validation_texts(toy_data)
    assert close(lmtune.load(tmp_path / "exported").predict(texts), lmtune.load(run).predict(texts), 1e-5)


def test_export_errors_name_the_option_and_leave_nothing(classifier_run, chat_run, capsys):
    assert main(["export", str(classifier_run), "--quantize", "int8"]) == 2
    assert "--quantize int8 applies to --format onnx" in capsys.readouterr().err
    assert main(["export", str(chat_run), "--format", "onnx"]) == 2
    assert "exports classifiers" in capsys.readouterr().err
    assert not (chat_run / "onnx").exists()
