"""The Try page in headless Chromium: each run is served by a real `lmtune serve`, and the page shows what it answers."""

from __future__ import annotations

import json
import time

import lmtune
from lmtune.eval.generation import Sampling

READY_MS = 180_000  # `lmtune serve` loading torch and the model on a busy 2-core machine


def load(tab, run: str) -> None:
    tab.open(f"try?path={run}")
    tab.page.locator("#try-state", has_text="ready").wait_for(timeout=READY_MS)


def wait_for_reply(tab, timeout_s: float = 60) -> None:
    """Until Send is enabled again: the streamed reply has ended."""
    deadline = time.monotonic() + timeout_s
    while tab.page.locator("#try-send").is_disabled() and time.monotonic() < deadline:
        tab.page.wait_for_timeout(100)


def test_try_classifies_typed_text_as_the_python_api_does(tab, workspace, try_runs):
    run = try_runs["classifier"]
    load(tab, run)
    sentence = "the food was wonderful and the staff great"
    tab.page.fill("#try-text", sentence)
    tab.page.click("#try-classify")
    label = tab.page.locator("#try-out-label")
    label.wait_for()
    [want] = lmtune.load(workspace / run).predict([sentence])
    assert label.inner_text() == want["label"]
    bars = tab.page.locator("#try-probabilities rect.column").all()
    shown = {b.get_attribute("data-label"): float(b.get_attribute("data-value")) for b in bars}
    assert shown.keys() == want["probabilities"].keys()
    assert all(abs(shown[k] - p) < 1e-4 for k, p in want["probabilities"].items())
    assert bars[0].get_attribute("data-label") == want["label"]  # the likeliest first
    tab.shot("try-classify")


def test_try_chats_with_streamed_text_and_keeps_the_history(tab, workspace, try_runs):
    run = try_runs["chat"]
    load(tab, run)
    tab.page.fill("#try-max-tokens", "24")
    tab.page.fill("#try-message", "who are you ?")
    tab.page.click("#try-send")
    reply = tab.page.locator(".msg.assistant").first
    wait_for_reply(tab)
    text = reply.locator(".text").inner_text()
    lm = lmtune.load(workspace / run)
    assert text == lm.reply([[{"role": "user", "content": "who are you ?"}]], Sampling(24))[0] and text.strip()
    assert int(reply.get_attribute("data-chunks")) >= 2  # it came in pieces, as they were made

    tab.page.fill("#try-message", "what is your name ?")
    tab.page.click("#try-send")
    second = tab.page.locator(".msg.assistant").nth(1)
    second.locator(".text").filter(has_text=" ").wait_for(timeout=60_000)
    wait_for_reply(tab)
    history = [{"role": "user", "content": "who are you ?"}, {"role": "assistant", "content": text},
               {"role": "user", "content": "what is your name ?"}]
    assert second.locator(".text").inner_text() == lm.reply([history], Sampling(24))[0]
    tab.shot("try-chat")


def test_try_translates_through_the_runs_instruction_as_training_wrapped_it(tab, workspace, tiny_lms, translation_data):
    from conftest import make_config

    run = "runs/translate"
    lmtune.train(make_config(tiny_lms["llama"], translation_data, workspace / run, "translation",
                             data={"source_lang": "Zorb", "target_lang": "Quix"},
                             train={"epochs": 3, "learning_rate": 1e-2, "save_every_n_steps": 1000}), progress=False)
    load(tab, run)
    text = "hello who"
    tab.page.fill("#try-text", text)
    tab.page.fill("#try-max-tokens", "24")
    with tab.page.expect_request(lambda r: "/api/try/call" in r.url) as sent:
        tab.page.click("#try-reply")
    body = sent.value.post_data_json
    assert body["messages"] == [{"role": "user", "content": f"Translate the following Zorb text to Quix.\n\n{text}"}]
    lm = lmtune.load(workspace / run)
    assert body["messages"][0]["content"] == lm.user_text(text)  # the user message training built
    want = lm.generate([text], Sampling(24))[0]
    assert want.strip()
    tab.page.wait_for_function(f"document.querySelector('#try-result').textContent === {json.dumps(want)}", timeout=60_000)
    tab.shot("try-translate")
