"""The web app's searches through httpx against a live `lmtune ui`: the space checked at its entries, a search launched, stopped and continued."""

from __future__ import annotations

import csv
import time

import httpx
import pytest
import yaml

from webapp import run_config

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


@pytest.fixture
def client(ui):
    with httpx.Client(base_url=ui.url, timeout=60) as c:
        yield c


def base_yaml(workspace, **train) -> str:
    return yaml.safe_dump(run_config(workspace, **train))


def wait_for_search(client: httpx.Client, path: str, done, timeout_s: float, what: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.get("/api/search", params={"path": path}).json()
        if done(info):
            return info
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout_s} s: {info}")


def test_the_check_puts_each_problem_at_its_space_entry(client, workspace):
    search = {"n_trials": 2, "space": {"train.learning_rate": LR, "method.name": {"type": "categorical", "choices": ["full", "bogus"]},
                                       "train.epochs": {"type": "int", "low": 1.5, "high": 3}}}
    result = client.post("/api/search/check", json={"yaml": base_yaml(workspace), "search": search}).json()
    problems = {p["key"]: p["message"] for p in result["problems"]}
    assert set(problems) == {"search.space.method.name", "search.space.train.epochs"}
    assert "'bogus'" in problems["search.space.method.name"] and "whole ends" in problems["search.space.train.epochs"]
    assert yaml.safe_load(result["yaml"])["search"] == search  # the form's section in the YAML beside it

    empty = client.post("/api/search/check", json={"yaml": base_yaml(workspace), "search": {"n_trials": 2, "space": {}}}).json()
    assert [p["key"] for p in empty["problems"]] == ["search.space"]
    no_stop = client.post("/api/search/check", json={"yaml": base_yaml(workspace), "search": {"space": {"train.learning_rate": LR}}}).json()
    assert "search.n_trials or search.timeout" in no_stop["problems"][0]["message"]
    r = client.post("/api/searches", json={"yaml": base_yaml(workspace), "search": search, "folder": "searches/never"})
    assert r.status_code == 422 and not (workspace / "searches" / "never").exists()
    assert client.post("/api/searches", json={"yaml": "", "search": search, "folder": "../away"}).status_code == 403


def test_a_search_is_launched_stopped_and_given_more_trials(client, workspace):
    path = "searches/stop-and-more"
    search = {"n_trials": 3, "sampler": "random", "pruner": "none", "space": {"train.learning_rate": LR}}
    r = client.post("/api/searches", json={"yaml": base_yaml(workspace, epochs=30), "search": search, "folder": path})
    assert r.status_code == 200, r.text
    first = workspace / path / "trials" / "trial-0000" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not first.exists():
        assert time.monotonic() < deadline, client.get("/api/search", params={"path": path}).json()
        time.sleep(0.2)
    assert client.get("/api/search", params={"path": path}).json()["status"] == "running"
    assert client.post("/api/search/stop", params={"path": path}).status_code == 200
    stopped = wait_for_search(client, path, lambda s: s["status"] == "stopped", 60, "the search stopping")
    assert [t["state"] for t in stopped["trials"]] == ["fail"] and stopped["trials"][0]["error"] == "stopped by SIGTERM"
    assert any((workspace / path / "trials" / "trial-0000" / "checkpoints").glob("step-*"))  # the trial checkpointed
    assert stopped["can_add"] and not (workspace / path / "trials" / "trial-0001").exists()
    listed = {s["path"]: s for s in client.get("/api/searches").json()}
    assert listed[path]["status"] == "stopped"
    runs = {r["path"]: r for r in client.get("/api/runs").json()}
    assert path not in runs and runs[f"{path}/trials/trial-0000"]["status"] == "stopped"
    assert runs[f"{path}/trials/trial-0000"]["search"] == path  # a trial is a run; the search is not

    assert stopped["best_yaml"] is None and stopped["best_value"] is None  # nothing completed: no best config yet
    assert client.post("/api/search/more", params={"path": path, "n_trials": 2}).status_code == 200
    done = wait_for_search(client, path, lambda s: s["status"] == "finished", 180, "two more trials")
    assert done["counts"] == {"fail": 1, "complete": 2} and done["metric"] == "accuracy" and done["direction"] == "maximize"
    complete = [t for t in done["trials"] if t["state"] == "complete"]
    assert done["best_value"] == max(t["value"] for t in complete)
    assert [v for _, v in done["best_so_far"]] == [complete[0]["value"], done["best_value"]]
    with (workspace / path / "trials.csv").open() as f:
        on_disk = {int(row["number"]): row for row in csv.DictReader(f)}
    assert {n: row["state"] for n, row in on_disk.items()} == {t["number"]: t["state"] for t in done["trials"]}
    assert list(done["importances"]) in ([], ["train.learning_rate"])  # one key explains all there is, when values differ
    assert yaml.safe_load(done["best_yaml"])["train"]["learning_rate"] == done["best_params"]["train.learning_rate"]
