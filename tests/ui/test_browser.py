"""The web app in headless Chromium, used as a new user would: data, the form, a live run, its report, the token.

Every test checks that the page made no request to anything but the app itself, and saves
screenshots in its temp folder (set LMTUNE_SCREENSHOTS=DIR to keep a copy, as the README's are).
"""

from __future__ import annotations

import csv
import re
import time

import pytest
import yaml

import lmtune
from lmtune.run_dir import RunDir
from servers import UiServer
from webapp import Tab, run_config


def field(tab: Tab, key: str):
    return tab.page.locator(f'.field[data-key="{key}"]')


def set_field(tab: Tab, key: str, value: str) -> None:
    box = tab.page.locator(f'[name="{key}"]')
    box.fill(value)
    box.dispatch_event("change")


def points(tab: Tab, chart: str) -> int:
    series = tab.page.locator(f"#{chart} path.series")
    return int(series.first.get_attribute("data-points") or 0) if series.count() else 0


def wait_until(check, timeout_s: float, what: str, tab: Tab) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        tab.page.wait_for_timeout(250)
    tab.shot("timeout")
    log = tab.page.locator("#log, #search-output")
    raise AssertionError(f"{what} did not happen within {timeout_s} s; the log reads:\n{log.first.inner_text() if log.count() else ''}")


def test_data_page_shows_labels_lengths_and_rows(tab, workspace):
    tab.open("data")
    tab.page.select_option("#data-file", "skewed.csv")
    tab.page.fill("#data-model", "models/bert")
    tab.page.fill("#data-max-length", "6")
    tab.page.click("#data-show")
    bars = tab.page.locator("#label-chart rect.column")
    bars.first.wait_for()
    assert [(b.get_attribute("data-label"), b.get_attribute("data-value")) for b in bars.all()] == [("pos", "80"), ("neg", "10")]
    assert "class_weights: balanced" in tab.page.locator("#label-warning").inner_text()
    assert re.search(r"\d+ of 90 rows are longer than model.max_length=6", tab.page.locator("#truncated").inner_text())
    assert sum(int(b.get_attribute("data-value")) for b in tab.page.locator("#length-chart rect.column").all()) == 90
    assert tab.page.locator("#data-head tr").count() == 11  # the header and the first 10 rows
    tab.shot("data")

    tab.page.set_input_files("#data-upload", str(workspace / "validation.csv"))  # an upload is summarised at once
    tab.page.locator("#data-shape", has_text="uploads/validation.csv: 60 rows").wait_for()
    tab.page.select_option("#data-file", "broken.csv")
    assert "line 3: malformed CSV" in tab.page.get_by_role("alert").inner_text()


def test_a_path_outside_the_workspace_is_refused_in_the_page(tab, workspace):
    (workspace.parent / "outside.csv").write_text("text,label\nsecret,pos\n")
    tab.open("data?path=../outside.csv")
    alert = tab.page.get_by_role("alert")
    assert "outside the workspace" in alert.inner_text() and "secret" not in tab.page.content()
    response = tab.page.goto(f"{tab.url}/api/file?path=../outside.csv")
    assert response.status == 403 and "secret" not in tab.page.content()


def test_the_form_shows_a_bad_value_at_its_field_and_follows_the_yaml(tab):
    tab.open("new")
    set_field(tab, "train.epochs", "-1")
    problem = field(tab, "train.epochs").locator(".problem")
    problem.filter(has_text="greater than 0").wait_for()
    assert "key 'train.epochs' has invalid value -1" in problem.inner_text()
    assert tab.page.locator("#launch").is_disabled()
    assert "epochs: -1" in tab.page.input_value("#yaml")
    tab.shot("new-run-error")

    tab.page.fill("#yaml", "task: classification\nmodel: {name_or_path: models/bert}\ndata: {train: train.csv}\ntrain:\n  epochs: 3\n  warmup_ratio: 2\n")
    wait_until(lambda: tab.page.input_value('[name="train.epochs"]') == "3", 10, "the form following the YAML", tab)
    warmup = field(tab, "train.warmup_ratio")  # under "more keys", opened to show the problem
    warmup.locator(".problem").filter(has_text="less than 1").wait_for()
    assert warmup.is_visible()


def test_launch_watch_stop_resume_a_run(tab, workspace):
    tab.open("new")
    for key, value in [("model.name_or_path", "models/bert"), ("model.max_length", "32"), ("data.train", "train.csv"),
                       ("data.validation", "validation.csv"), ("train.epochs", "400"), ("train.learning_rate", "0.002"), ("train.save_every_n_steps", "100000")]:
        set_field(tab, key, value)
    tab.page.fill("#run-name", "runs/live")
    wait_until(lambda: tab.page.locator("#launch").is_enabled(), 10, "the config passing its check", tab)
    tab.page.click("#launch")
    tab.page.wait_for_url(re.compile(r"#/run\?path=runs%2Flive"))
    status = tab.page.locator("#run-status")
    wait_until(lambda: points(tab, "loss-chart") >= 2, 120, "the first loss points", tab)
    first = points(tab, "loss-chart")
    assert status.inner_text() == "running"
    wait_until(lambda: points(tab, "loss-chart") > first, 60, "the loss chart gaining points", tab)
    tab.shot("run-live")

    tab.page.click("#stop")
    wait_until(lambda: status.inner_text() == "stopped", 60, "the run stopping", tab)
    assert tab.page.locator("#run-reason").inner_text().startswith("stopped by SIGTERM at step ")
    checkpoints = sorted((workspace / "runs" / "live" / "checkpoints").glob("step-*"))
    assert checkpoints, "Stop left no checkpoint"
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert "stopped by SIGTERM" in tab.page.locator("#log").inner_text()

    tab.page.click("#resume")
    wait_until(lambda: status.inner_text() == "running", 60, "the run resuming", tab)
    wait_until(lambda: "resumed from" in tab.page.locator("#log").inner_text(), 60, "the resume in the log", tab)
    history = lambda: (workspace / "runs" / "live" / "metrics.jsonl").read_text()  # noqa: E731
    wait_until(lambda: f'"step": {stopped_at + 20},' in history(), 60, "steps after the checkpoint", tab)
    tab.page.click("#stop")
    wait_until(lambda: status.inner_text() == "stopped", 60, "the resumed run stopping", tab)


def test_a_finished_run_from_the_cli_shows_in_the_list_with_its_report(tab, workspace):
    config = run_config(workspace)
    for section in ("model", "data"):
        config[section] = {k: str(workspace / v) if k in ("name_or_path", "train", "validation") else v for k, v in config[section].items()}
    result = lmtune.train({**config, "output": {"dir": str(workspace / "runs" / "from-cli")}}, progress=False)
    tab.open("runs")
    row = tab.page.locator('tr[data-run="runs/from-cli"]')
    row.locator(".status", has_text="finished").wait_for()
    assert f"{result.metrics['accuracy']:#.4g}" in row.inner_text()  # as the page writes it: 4 significant digits
    tab.shot("runs")
    row.locator("a").click()
    tab.page.locator("#report-text").wait_for()
    report = tab.page.locator("#report-text")  # report.md rendered: headings, tables and its plots in place
    assert report.locator("h1").inner_text() == "Run report: from-cli" and "# Run" not in report.inner_text()
    assert report.locator("h2", has_text="Metrics").count() == 1 and report.locator("table").count() >= 1
    images = report.locator("img.plot")
    assert images.count() >= 2
    wait_until(lambda: all(i.evaluate("el => el.complete && el.naturalWidth > 0") for i in images.all()), 20, "the plots loading", tab)
    assert points(tab, "loss-chart") >= 2 and tab.page.locator("#download").is_visible()
    assert tab.page.locator("#stop").is_disabled() and tab.page.locator("#resume").is_disabled()
    tab.shot("run-report")


def test_a_wrong_token_is_refused_and_the_printed_link_opens_the_app(browser, workspace, tmp_path):
    server = UiServer(workspace, "--token", "letmein-123")
    try:
        tab = Tab(browser, server.url, tmp_path)
        response = tab.page.goto(f"{server.url}/?token=wrong#/runs")
        assert response.status == 401 and "wrong or missing token" in tab.page.content()
        assert tab.page.goto(f"{server.url}/api/runs").status == 401
        tab.page.goto(f"{server.url}/?token=letmein-123#/runs")
        tab.page.locator("h1", has_text="Runs").wait_for()
        assert "token" not in tab.page.url.split("#")[0]
        assert tab.page.goto(f"{server.url}/api/workspace").status == 200  # the cookie now carries it
        assert tab.foreign_requests() == [] and tab.errors == []
        tab.context.close()
    finally:
        server.stop()


@pytest.mark.parametrize("pages", [2])
def test_several_tabs_at_once(browser, ui, tmp_path, pages):
    tabs = [Tab(browser, ui.url, tmp_path) for _ in range(pages)]
    try:
        tabs[0].open("data")
        tabs[1].open("runs")
        tabs[0].page.select_option("#data-file", "train.csv")
        tabs[0].page.locator("#data-shape", has_text="240 rows").wait_for()
        tabs[1].page.locator("h1", has_text="Runs").wait_for()
        assert all(t.errors == [] and t.foreign_requests() == [] for t in tabs)
    finally:
        for t in tabs:
            t.context.close()


def test_compare_two_runs_side_by_side(tab, workspace):
    for name, lr in (("compare-a", 2e-3), ("compare-b", 5e-3)):
        config = run_config(workspace, learning_rate=lr, epochs=3)
        lmtune.train({**config, "model": {**config["model"], "name_or_path": str(workspace / "models" / "bert")},
                      "data": {"train": str(workspace / "train.csv"), "validation": str(workspace / "validation.csv")},
                      "output": {"dir": str(workspace / "runs" / name)}}, progress=False)
    tab.open("runs")
    for name in ("compare-a", "compare-b"):
        tab.page.locator(f'tr[data-run="runs/{name}"] input.pick').check()
    tab.page.click("#compare")
    tab.page.locator("#compare-metrics").wait_for()
    assert sorted(s.get_attribute("data-name") for s in tab.page.locator("#compare-loss path.series").all()) == ["runs/compare-a", "runs/compare-b"]
    assert all(int(s.get_attribute("data-points")) > 1 for s in tab.page.locator("#compare-metric path.series").all())
    differing = tab.page.locator("#compare-config tr[data-key]")
    assert [r.get_attribute("data-key") for r in differing.all()] == ["train.learning_rate"]
    assert "0.002" in differing.first.inner_text() and "0.005" in differing.first.inner_text()
    accuracy = tab.page.locator("#compare-metrics tr", has_text="accuracy").first.inner_text()
    for name in ("compare-a", "compare-b"):
        assert f"{RunDir(workspace / 'runs' / name).read_metrics()['accuracy']:#.4g}" in accuracy
    tab.shot("compare")


def test_the_search_form_follows_a_typed_yaml_and_shows_its_problems(tab, workspace):
    """The search page's editor is the run page's: a YAML typed in the box fills the form, problems land at their rows."""
    tab.open("new-search")
    config = {**run_config(workspace), "search": {"n_trials": 5, "metric": "loss", "space": {
        "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "method.name": {"type": "categorical", "choices": ["full", "bogus"]}}}}
    tab.page.fill("#search-yaml", yaml.safe_dump(config))
    wait_until(lambda: tab.page.input_value('[name="search.n_trials"]') == "5", 10, "the form following the YAML", tab)
    method = tab.page.locator('.space-row[data-key="search.space.method.name"]')
    assert tab.page.locator(".space-row").count() == 2 and method.locator(".sp-choices").input_value() == "full, bogus"
    method.locator(".problem").filter(has_text="'bogus'").wait_for()
    assert tab.page.input_value('[name="search.metric"]') == "loss" and tab.page.locator("#search-launch").is_disabled()
    method.locator(".sp-remove").click()  # the form's change is checked and written back to the YAML
    wait_until(lambda: tab.page.locator("#search-launch").is_enabled(), 10, "the search passing its check", tab)
    written = yaml.safe_load(tab.page.input_value("#search-yaml"))["search"]
    assert list(written["space"]) == ["train.learning_rate"] and written["n_trials"] == 5


def test_a_search_made_in_the_form_shows_its_trials_the_best_so_far_and_importances(tab, workspace):
    tab.open("new-search")
    tab.page.fill("#search-yaml", yaml.safe_dump(run_config(workspace, epochs=4)))
    set_field(tab, "search.n_trials", "3")
    set_field(tab, "search.metric", "loss")  # a value every trial has its own of (the toy data is easy: accuracy is often 1.0)
    tab.page.select_option('[name="search.pruner"]', "none")  # three trials that all finish
    tab.page.locator('[name="search.pruner"]').dispatch_event("change")
    rate = tab.page.locator(".space-row").first
    rate.locator(".sp-low").fill("0.001")
    rate.locator(".sp-high").fill("0.01")
    rate.locator(".sp-high").dispatch_event("change")
    tab.page.click("#space-add")
    method = tab.page.locator(".space-row").nth(1)
    method.locator(".sp-key").fill("method.name")
    method.locator(".sp-key").dispatch_event("change")
    assert method.locator(".sp-type").input_value() == "categorical"  # the key's kind picks the distribution
    method.locator(".sp-choices").fill("full, bogus")
    method.locator(".sp-choices").dispatch_event("change")
    method.locator(".problem").filter(has_text="'bogus'").wait_for()
    assert "invalid" in method.get_attribute("class") and tab.page.locator("#search-launch").is_disabled()
    tab.shot("new-search-error")
    method.locator(".sp-choices").fill("full, lora")
    method.locator(".sp-choices").dispatch_event("change")
    wait_until(lambda: tab.page.locator("#search-launch").is_enabled(), 10, "the space passing its check", tab)
    written = yaml.safe_load(tab.page.input_value("#search-yaml"))["search"]
    assert written["space"]["method.name"] == {"type": "categorical", "choices": ["full", "lora"]} and written["n_trials"] == 3
    tab.page.fill("#search-folder", "searches/from-form")
    tab.page.click("#search-launch")
    tab.page.wait_for_url(re.compile(r"#/search\?path=searches%2Ffrom-form"))
    status = tab.page.locator("#search-status")
    wait_until(lambda: tab.page.locator("#search-trials tr[data-trial]").count() >= 1, 120, "the first trial", tab)
    wait_until(lambda: status.inner_text() == "finished", 180, "the search finishing", tab)
    with (workspace / "searches" / "from-form" / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["complete"] * 3 and tab.page.locator("#search-trials tr[data-trial]").count() == 3
    best = min(rows, key=lambda r: float(r["loss"]))
    assert f"{float(best['loss']):#.4g}" in tab.page.locator("#search-best-value").inner_text()
    assert f"trial {best['number']}" in tab.page.locator("#search-best-value").inner_text()
    assert tab.page.locator(f'#search-trials tr[data-trial="{best["number"]}"]').get_attribute("class") == "best"
    dots = tab.page.locator("#search-history g.series").first
    assert int(dots.get_attribute("data-points")) == 3
    assert tab.page.locator('#search-history path.series[data-name="best so far"]').count() == 1
    bars = tab.page.locator("#search-importances rect.column")
    wait_until(lambda: bars.count() == 2, 10, "two importance bars", tab)
    assert sorted(b.get_attribute("data-label") for b in bars.all()) == ["method.name", "train.learning_rate"]
    assert abs(sum(float(b.get_attribute("data-value")) for b in bars.all()) - 1) < 1e-6
    tab.shot("search")
    tab.page.click("#search-trials a")  # a trial is a run: its page opens
    tab.page.locator("#run-status", has_text="finished").wait_for()
    tab.open("searches")
    tab.page.locator('tr[data-search="searches/from-form"] .status', has_text="finished").wait_for()
    tab.open("runs")  # the trials are listed under their search, folded, not as runs of their own
    group = tab.page.locator('#runs tr.search-group[data-search="searches/from-form"]')
    group.wait_for()
    assert "3 runs" in group.inner_text() and "3 finished" in group.inner_text()
    assert tab.page.locator('#runs tr[data-run^="searches/from-form/"]').count() == 0
    group.locator("button.fold").click()
    trial_rows = tab.page.locator('#runs tr.trial[data-run^="searches/from-form/trials/"]')
    wait_until(lambda: trial_rows.count() == 3, 10, "the unfolded trials", tab)
    assert trial_rows.first.locator("a").inner_text().startswith("trials/trial-")
    tab.shot("runs-search-group")
