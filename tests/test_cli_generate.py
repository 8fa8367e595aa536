"""The command line for language models on a tiny model: train, eval, generate, chat, export.

Every way to ask the trained model (one prompt, a file of prompts, the chat, the merged export)
must give the same greedy reply."""

from __future__ import annotations

import io
import json

import yaml

from conftest import IDENTITY
from lmtune.cli import main


def test_train_eval_generate_chat_export(tiny_lms, identity_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    train = tmp_path / "train.json"  # many copies per epoch: fewer evaluations and checkpoints for the same steps
    train.write_text(json.dumps([{"instruction": q, "output": a} for q, a in IDENTITY] * 32))
    cfg = {
        "task": "causal_lm",
        "model": {"name_or_path": str(tiny_lms["llama-chat"]), "max_length": 64},
        "data": {"train": str(train), "validation": str(identity_data["validation"])},
        "method": {"name": "lora", "lora_rank": 16, "lora_dropout": 0.05},  # a model whose greedy replies are not empty
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-2, "log_every_n_steps": 8},
        "eval": {"generate": True, "max_new_tokens": 16},
        "output": {"dir": str(run)},
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config_file), "--quiet"]) == 0
    trained = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()

    assert main(["eval", str(run), "--data", str(identity_data["validation"])]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert abs(evaluated["loss"] - trained["loss"]) < 1e-5 and evaluated["exact_match"] == trained["exact_match"]

    question = IDENTITY[1][0]
    assert main(["generate", str(run), "--prompt", question, "--max-new-tokens", "16"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["prompt"] == question and reply["reply"]
    # (the tiny model's LoRA learns too little to answer right; tests/tasks checks what full training learns)

    out = tmp_path / "replies.jsonl"
    assert main(["generate", str(run), "--input", str(identity_data["validation"]), "--output", str(out), "--max-new-tokens", "16"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [q for q, _ in IDENTITY]
    assert rows[1]["reply"] == reply["reply"]  # batched generation gives what a single prompt gets

    # chat: a reply is streamed for each line; /reset and end of input are handled
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{question}\n/reset\n{question}\n"))
    assert main(["chat", str(run), "--max-new-tokens", "16"]) == 0
    said = capsys.readouterr()
    assert said.out.count(reply["reply"]) == 2  # (this weak model runs to the limit: the SmolLM2 test checks it stops)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{question}\n"))  # a reply the limit ends is said to be cut
    assert main(["chat", str(run), "--max-new-tokens", "1"]) == 0
    assert "the reply was cut at --max-new-tokens 1: the model did not end it" in capsys.readouterr().err

    assert main(["export", str(run), "--merge"]) == 0
    capsys.readouterr()
    assert main(["generate", str(run / "merged"), "--prompt", question, "--max-new-tokens", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["reply"] == reply["reply"]


def test_generate_refuses_bad_requests(tiny_lms, tiny_models, toy_data, tmp_path, capsys):
    assert main(["generate", str(tiny_lms["llama"])]) == 2
    assert "either --prompt" in capsys.readouterr().err
    assert main(["generate", str(tiny_lms["llama"]), "--prompt", "hi", "--top-p", "0"]) == 2
    assert "--top-p" in capsys.readouterr().err
    # a base model folder works as it is (no lmtune run needed)
    assert main(["generate", str(tiny_lms["llama"]), "--prompt", "hi", "--max-new-tokens", "3"]) == 0
    assert "reply" in json.loads(capsys.readouterr().out)
