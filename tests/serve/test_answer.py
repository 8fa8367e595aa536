"""`lmtune serve` an extractive QA run: `POST /v1/answer` gives what `lmtune.load(run).predict` gives."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

import lmtune
from conftest import NEGATIVE, POSITIVE, toy_sentence
from servers import Server


@pytest.fixture(scope="module")
def qa_run(tiny_models, tmp_path_factory) -> object:
    """A tiny BERT that learnt to point at the sentiment word of a toy sentence."""
    root = tmp_path_factory.mktemp("qa")
    rng = random.Random(0)
    rows = []
    for i in range(160):
        context = toy_sentence(rng, i % 2 == 0)
        answer = next(w for w in context.split() if w in POSITIVE + NEGATIVE)
        rows.append({"question": "what was it ?", "context": context, "answer": answer})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lmtune.train({
        "task": "extractive_qa", "model": {"name_or_path": str(tiny_models["bert"]), "max_length": 32},
        "data": {"train": str(root / "train.jsonl"), "validation": str(root / "train.jsonl"), "doc_stride": 8},
        "method": {"name": "full"}, "train": {"epochs": 4, "batch_size": 16, "learning_rate": 5e-3, "seed": 0},
        "output": {"dir": str(root / "run")},
    }, progress=False)
    return root / "run", rows


def test_answers_equal_the_python_api_alone_and_concurrently(qa_run):
    run, rows = qa_run
    qa = lmtune.load(run, device="cpu")
    asks = [rows[i : i + 1 + i % 3] for i in range(24)]
    server = Server(run, "--max-batch-size", "4")
    try:
        with server.client() as client:
            assert client.get("/health").json()["task"] == "extractive_qa"

            def ask(batch):
                body = {"questions": [r["question"] for r in batch], "contexts": [r["context"] for r in batch]}
                return batch, client.post("/v1/answer", json=body)

            with ThreadPoolExecutor(6) as pool:
                results = list(pool.map(ask, asks))
            for batch, r in results:
                assert r.status_code == 200, r.text
                want = qa.predict_records([{"question": x["question"], "context": x["context"]} for x in batch])
                got = r.json()["predictions"]
                assert [g["answer"] for g in got] == [w["answer"] for w in want]
                assert [g["start"] for g in got] == [w["start"] for w in want]
                assert all(abs(g["score"] - w["score"]) < 1e-4 for g, w in zip(got, want))
            learnt = sum(g["answer"] == x["answer"] for batch, r in results for g, x in zip(r.json()["predictions"], batch))
            assert learnt >= 0.8 * sum(len(b) for b in asks)
            r = client.post("/v1/answer", json={"questions": ["what ?", "who ?"], "contexts": ["good"]})
            assert r.status_code == 400 and "questions has 2, contexts has 1" in r.json()["error"]["message"]
            r = client.post("/v1/answer", json={"questions": ["what ?"]})
            assert r.status_code == 422 and r.json()["error"]["param"] == "contexts"
    finally:
        server.stop()
