"""Fixtures of the web app's tests (tests/ui; loaded by tests/conftest.py as a plugin). The web app under test: a workspace with a tiny model and data, a live `lmtune ui`, and headless Chromium.

The browser is the system Chromium (Debian's `chromium`, which `make test` installs when it can),
driven by Playwright through `executable_path`. Without it these tests are skipped with the
reason, except under CI (CI=true), where a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from servers import UiServer
from toy import toy_rows, write_csv

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    given = os.environ.get("LMTUNE_CHROMIUM")
    return given if given and Path(given).is_file() else next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (under CI the browser tests must run: install chromium, e.g. apt-get install chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        _missing("no Chromium found (install the Debian package chromium, or set LMTUNE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Tab:
    """A browser tab on the app that records every request it makes, and saves screenshots to the test's folder."""

    def __init__(self, browser, url: str, shots: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.url, self.shots, self.requests = url, shots, []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, hash_path: str = "", query: str = "") -> None:
        self.page.goto(f"{self.url}/{query}#/{hash_path}")

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("LMTUNE_SCREENSHOTS"):
            keep = Path(os.environ["LMTUNE_SCREENSHOTS"])
            keep.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(keep / f"{name}.png"))  # the first screen, as the README shows it
        return path

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u.startswith(self.url) or u.startswith(("data:", "blob:")))]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, tiny_models) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(tiny_models["bert"], root / "models" / "bert")
    write_csv(root / "train.csv", toy_rows(240, seed=1))
    write_csv(root / "validation.csv", toy_rows(60, seed=2))
    skewed = [r for r in toy_rows(200, seed=3) if r["label"] == "pos"][:80] + [r for r in toy_rows(200, seed=4) if r["label"] == "neg"][:10]
    write_csv(root / "skewed.csv", skewed)
    (root / "broken.csv").write_text("text,label\nfine,pos\n\"never closed,neg\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def ui(workspace):
    server = UiServer(workspace)
    yield server
    server.stop()


@pytest.fixture
def tab(browser, ui, tmp_path):
    t = Tab(browser, ui.url, tmp_path)
    yield t
    assert t.foreign_requests() == [], "the app asked for something that is not on 127.0.0.1"
    assert t.errors == [], t.errors
    t.context.close()


def run_config(workspace: Path, **train) -> dict:
    """A fast classification config over the workspace's tiny model and data (paths relative to the workspace)."""
    return {
        "task": "classification",
        "model": {"name_or_path": "models/bert", "max_length": 32},
        "data": {"train": "train.csv", "validation": "validation.csv"},
        "train": {"epochs": 6, "batch_size": 16, "learning_rate": 2e-3, "seed": 0, "log_every_n_steps": 2, **train},
    }


@pytest.fixture(scope="session")
def try_runs(workspace, classifier_run, chat_run) -> dict[str, str]:
    """Runs to try, copied into the workspace: a tiny classifier and a tiny chat model (LoRA)."""
    runs = {"classifier": "runs/sentiment", "chat": "runs/chat"}
    shutil.copytree(classifier_run, workspace / runs["classifier"], ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(chat_run, workspace / runs["chat"], ignore=shutil.ignore_patterns("checkpoints"))
    return runs
