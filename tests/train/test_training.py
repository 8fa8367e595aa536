"""Training reaches real accuracy, every optimizer and loss lowers the loss, runs are repeatable."""

from __future__ import annotations

import json
import random

import pytest
import torch

import lmtune
from conftest import make_config, toy_sentence, write_csv
from lmtune.errors import ConfigError


def eval_losses(result) -> list[float]:
    return [r["loss"] for r in result.history if r["type"] == "eval"]


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_full_finetuning_learns_the_toy_task(kind, tiny_models, toy_data, tmp_path):
    # gpt2 and llama: decoder classifiers, padded from EOS, batch size 16 (> 1, so padding matters)
    result = lmtune.train(make_config(tiny_models[kind], toy_data, tmp_path / "run", train={"epochs": 8, "learning_rate": 3e-3}), progress=False)
    assert result.metrics["accuracy"] >= 0.9
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "confusion_matrix", "per_class"):
        assert key in metrics
    assert (result.output_dir / "config.yaml").is_file()
    records = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"train", "eval"}


@pytest.mark.parametrize(
    "optimizer,lr", [("sgd", 0.05), ("adagrad", 0.05), ("adadelta", 1.0), ("adam", 3e-3), ("adamw", 3e-3)]
)
def test_each_optimizer_lowers_the_loss(optimizer, lr, tiny_models, toy_data, tmp_path):
    cfg = make_config(
        tiny_models["llama"], toy_data, tmp_path / "run",
        train={"optimizer": optimizer, "learning_rate": lr, "epochs": 3, "weight_decay": 0.01, "scheduler": "cosine", "warmup_ratio": 0.1},
        eval={"at_start": True},
    )
    result = lmtune.train(cfg, progress=False)
    losses = eval_losses(result)
    assert min(losses[1:]) < losses[0] - 0.05, losses


def test_class_weights_label_smoothing_and_accumulation(tiny_models, toy_data, tmp_path):
    cfg = make_config(
        tiny_models["llama"], toy_data, tmp_path / "run",
        train={"class_weights": "balanced", "label_smoothing": 0.1, "gradient_accumulation_steps": 2, "epochs": 4, "learning_rate": 3e-3},
        eval={"at_start": True},
    )
    result = lmtune.train(cfg, progress=False)
    assert result.metrics["steps"] == 4 * 8  # 240 rows / 16 = 15 micro-batches -> 8 optimizer steps per epoch
    assert min(eval_losses(result)[1:]) < eval_losses(result)[0]


def test_regression_with_mse(tiny_models, tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(300):
        positive = rng.random() < 0.5
        rows.append({"text": toy_sentence(rng, positive), "label": f"{(0.9 if positive else 0.1) + rng.uniform(-0.05, 0.05):.3f}"})
    data = {"train": write_csv(tmp_path / "train.csv", rows[:240]), "validation": write_csv(tmp_path / "val.csv", rows[240:])}
    cfg = make_config(tiny_models["llama"], data, tmp_path / "run", train={"epochs": 6, "learning_rate": 3e-3}, eval={"at_start": True})
    result = lmtune.train(cfg, progress=False)
    assert result.metrics["best_metric"] == "mse"
    assert result.metrics["mse"] < 0.05 < result.metrics["initial"]["mse"]
    pred = lmtune.load(result.output_dir).predict(["the movie was great", "awful awful service"])
    assert pred[0]["score"] > 0.5 > pred[1]["score"]


def test_multi_label_with_bce(tiny_models, tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(300):
        words, labels = ["the", "show"], []
        if rng.random() < 0.5:
            words.append("good")
            labels.append("praise")
        if rng.random() < 0.5:
            words.append("staff")
            labels.append("people")
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    for name, part in (("train", rows[:240]), ("val", rows[240:])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
    data = {"train": tmp_path / "train.jsonl", "validation": tmp_path / "val.jsonl"}
    cfg = make_config(tiny_models["llama"], data, tmp_path / "run", data={"label_column": "labels"}, train={"epochs": 8, "learning_rate": 3e-3})
    result = lmtune.train(cfg, progress=False)
    assert result.metrics["f1_micro"] >= 0.9
    pred = lmtune.load(result.output_dir).predict(["good staff"])[0]
    assert sorted(pred["labels"]) == ["people", "praise"]


def test_same_seed_same_run(tiny_models, toy_data, tmp_path):
    runs = [lmtune.train(make_config(tiny_models["bert"], toy_data, tmp_path / f"run{i}", train={"epochs": 1}), progress=False) for i in range(2)]
    losses = [[r["loss"] for r in run.history if r["type"] == "train"] for run in runs]
    assert losses[0] == losses[1]
    from safetensors.torch import load_file

    a, b = (load_file(r.output_dir / "final" / "model.safetensors") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_model_reloads_with_identical_predictions(tiny_models, toy_data, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = lmtune.train(make_config(tiny_models["gpt2"], toy_data, tmp_path / "run", train={"epochs": 2}), progress=False)
    texts = ["the food was terrible", "a lovely room", "staff"]
    ours = torch.tensor(lmtune.load(result.output_dir).scores(texts))
    # plain transformers loads best/ without lmtune
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir / "best")
    model = AutoModelForSequenceClassification.from_pretrained(result.output_dir / "best").eval()
    with torch.no_grad():
        for i, text in enumerate(texts):
            probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
            assert torch.allclose(probs, ours[i], atol=1e-5)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    # a text scored alone equals the same text scored in a padded batch
    alone = torch.tensor(lmtune.load(result.output_dir).scores(texts[2:]))
    assert torch.allclose(alone[0], ours[2], atol=1e-5)


def test_early_stopping_and_best_model(tiny_models, toy_data, tmp_path):
    cfg = make_config(
        tiny_models["bert"], toy_data, tmp_path / "run",
        train={"epochs": 30, "learning_rate": 3e-3},
        eval={"every_n_steps": 5, "early_stopping_patience": 2, "metric": "accuracy"},
    )
    result = lmtune.train(cfg, progress=False)
    evals = [r for r in result.history if r["type"] == "eval"]
    assert result.metrics["steps"] < 30 * 15
    # accuracy must strictly improve: the first evaluation reaching the maximum is the one kept,
    # and the run stops two evaluations after the last gain
    best = max(evals, key=lambda r: r["accuracy"])
    assert result.metrics["best_step"] == best["step"]
    assert result.metrics["loss"] == best["loss"]
    assert evals[-1]["step"] == best["step"] + 2 * 5


def test_test_split_and_existing_output_dir(tiny_models, toy_data, tmp_path):
    cfg = make_config(tiny_models["bert"], toy_data, tmp_path / "run", data={"test": str(toy_data["validation"])}, train={"epochs": 1})
    result = lmtune.train(cfg, progress=False)
    assert "accuracy" in result.metrics["test"]
    with pytest.raises(ConfigError, match="already holds a run"):
        lmtune.train(cfg, progress=False)
    cfg["output"]["overwrite"] = True
    lmtune.train(cfg, progress=False)


def test_bad_metric_and_loss_are_config_errors(tiny_models, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="eval.metric='mse'"):
        lmtune.train(make_config(tiny_models["bert"], toy_data, tmp_path / "a", eval={"metric": "mse"}), progress=False)
    with pytest.raises(ConfigError, match="train.loss=mse"):
        lmtune.train(make_config(tiny_models["bert"], toy_data, tmp_path / "b", train={"loss": "mse"}), progress=False)
    with pytest.raises(ConfigError, match="class_weights has 3 values"):
        lmtune.train(make_config(tiny_models["bert"], toy_data, tmp_path / "c", train={"class_weights": [1, 2, 3]}), progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_texts_longer_than_the_model_takes_are_truncated_and_counted(kind, tiny_models, toy_data, tmp_path):
    """The tiny models take 64 positions; model.max_length asks for 256; some texts have 300 words."""
    rng = random.Random(3)
    rows = [{"text": toy_sentence(rng, i % 2 == 0) + (" movie" * 300 if i % 10 == 0 else ""), "label": ["neg", "pos"][i % 2 == 0]}
            for i in range(80)]
    files = {"train": write_csv(tmp_path / "long.csv", rows), "validation": toy_data["validation"]}
    cfg = make_config(tiny_models[kind], files, tmp_path / "run", train={"epochs": 1})
    cfg["model"]["max_length"] = 256
    lmtune.train(cfg, progress=False)
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "train: 8 of 80 examples reached max_length=64 and were truncated" in log_text
