"""Metrics equal values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lmtune.eval.metrics import multi_label_metrics, regression_metrics, scalar_metrics, single_label_metrics
from lmtune.losses import balanced_weights


def test_binary_metrics_by_hand():
    # refs: 1 1 1 0 0 ; preds (argmax): 1 1 0 0 1
    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1], [0.45, 0.55]])
    refs = np.array([1, 1, 1, 0, 0])
    m = single_label_metrics(probs, refs, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # class pos: tp=2 fp=1 fn=1 -> p=2/3 r=2/3 ; class neg: tp=1 fp=1 fn=1 -> p=1/2 r=1/2
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    # ROC-AUC: pos scores .8 .6 .3 vs neg scores .1 .55 -> pairs won: (.8>.1,.8>.55,.6>.1,.6>.55,.3>.1) = 5 of 6
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["per_class"]["pos"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "support": 3}


def test_multiclass_metrics_and_missing_class_auc():
    probs = np.eye(3)[[0, 1, 2, 2]] * 0.85 + 0.05  # rows sum to 1
    refs = np.array([0, 1, 2, 1])
    m = single_label_metrics(probs, refs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    # b: p=1 r=1/2 f1=2/3 ; c: p=1/2 r=1 f1=2/3 ; a: 1 1 1
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert "roc_auc" in m
    only_two = single_label_metrics(probs[:2], refs[:2], ["a", "b", "c"])
    assert "roc_auc" not in only_two  # undefined when a class is absent from the references


def test_multi_label_metrics_by_hand():
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]])
    refs = np.array([[1, 0], [1, 1], [0, 1]])
    m = multi_label_metrics(probs, refs, ["x", "y"], threshold=0.5)
    # preds: [1,0] [1,1] [0,0] -> exact match 2/3; y: tp=1 fn=1 -> r=1/2
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["hamming_loss"] == pytest.approx(1 / 6)
    # micro: tp=3 fp=0 fn=1 -> f1 = 6/7
    assert m["f1_micro"] == pytest.approx(6 / 7)
    assert m["per_class"]["y"]["recall"] == pytest.approx(0.5)


def test_regression_metrics_by_hand():
    m = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 3.0]))
    assert m["mse"] == pytest.approx(2 / 3)
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx((2 / 3) ** 0.5)
    # r2 = 1 - SS_res/SS_tot = 1 - 2 / (4/9+4/9+... ) ; mean ref 7/3: SS_tot = 16/9+4/9+4/9 = 24/9
    assert m["r2"] == pytest.approx(1 - 2 / (24 / 9))


def test_balanced_class_weights():
    # 6 examples: 4 of class 0, 2 of class 1 -> n/(k*count) = 6/8, 6/4
    assert balanced_weights([0, 0, 0, 0, 1, 1], 2) == pytest.approx([0.75, 1.5])


def test_scalar_metrics_keep_the_finite_numbers_of_a_record_only():
    record = {"type": "eval", "step": 5, "epoch": 0.5, "loss": 0.25, "accuracy": 1, "early": True, "roc_auc": float("nan"),
              "per_class": {"a": {"f1": 1.0}}, "confusion_matrix": [[1, 0], [0, 1]], "note": "x", "skipped": None}
    assert scalar_metrics(record) == {"loss": 0.25, "accuracy": 1.0}
