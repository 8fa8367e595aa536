"""A task written in one file (tests/toy_task.py) and added to the registry: the config, training,
`lmtune predict`, `lmtune serve`, the web app's Try page and the README reference take it with
no other edit."""

from __future__ import annotations

import json
import os

import httpx
import pytest

import lmtune
from conftest import make_config
from lmtune.cli import main
from lmtune.reference import config_reference
from lmtune.tasks import TASKS
from servers import Server, UiServer
from toy import toy_rows, write_csv
from toy_task import SITE, RatingTask
from webapp import Tab

REVIEWS = ["the food was wonderful and the staff great", "awful boring plot"]


@pytest.fixture
def rating(monkeypatch):
    monkeypatch.setitem(TASKS, RatingTask.name, RatingTask)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))}
    return env


def rows(n: int, seed: int) -> list[dict]:
    return [{"review": r["text"], "rating": "good" if r["label"] == "pos" else "bad"} for r in toy_rows(n, seed)]


def test_a_task_in_one_file_trains_predicts_serves_is_tried_and_documented(rating, browser, tiny_models, tmp_path, capsys):
    reference = config_reference()
    assert "### `data` keys of task `rating`" in reference and "Column of the review to rate." in reference

    write_csv(tmp_path / "train.csv", rows(160, 1))
    write_csv(tmp_path / "validation.csv", rows(40, 2))
    files = {"train": tmp_path / "train.csv", "validation": tmp_path / "validation.csv"}
    result = lmtune.train(make_config(tiny_models["bert"], files, tmp_path / "runs" / "rating", "rating", train={"epochs": 6}),
                          progress=False)
    assert result.metrics["accuracy"] >= 0.9  # it learned: a real classifier under the task's own name
    run = tmp_path / "runs" / "rating"
    want = lmtune.load(run).predict_records([{"review": r} for r in REVIEWS])
    assert {w["label"] for w in want} == {"good", "bad"}

    argv = ["predict", str(run)] + [a for r in REVIEWS for a in ("--review", r)]
    assert main(argv) == 0
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == [w["label"] for w in want]

    server = Server(run, env=rating)
    try:
        health = httpx.get(f"{server.url}/health").json()
        assert health["task"] == "rating" and sorted(health["labels"]) == ["bad", "good"]
        assert health["endpoints"] == ["/v1/rate"] and list(health["inputs"]) == ["review"]
        answer = httpx.post(f"{server.url}/v1/rate", json={"reviews": REVIEWS}, timeout=60).json()
        assert [p["label"] for p in answer["predictions"]] == [w["label"] for w in want]
    finally:
        server.stop()

    ui = UiServer(tmp_path, env=rating)
    tab = Tab(browser, ui.url, tmp_path)
    try:
        tab.open("try?path=runs/rating")
        tab.page.locator("#try-state", has_text="ready").wait_for(timeout=180_000)
        tab.page.fill("#try-review", REVIEWS[0])
        tab.page.click("#try-rate")
        assert tab.page.locator("#try-out-label").inner_text() == want[0]["label"]
        bars = tab.page.locator("#try-probabilities rect.column").all()
        assert {b.get_attribute("data-label") for b in bars} == {"good", "bad"}
        tab.shot("try-toy-task")
        assert tab.errors == [] and tab.foreign_requests() == []
    finally:
        tab.context.close()
        ui.stop()
