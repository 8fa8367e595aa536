"""`lmtune serve` a classifier run: httpx against a live server with an API key and small limits.

The server gives the numbers `lmtune.load(run).predict` gives, one request or many at once; every
bad request gets its status and a message naming the field; none of them harms the server.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import lmtune
from conftest import make_config, toy_rows, write_csv
from lmtune.cli import main
from lmtune.inference import load
from servers import Server

KEY = "test-key-123"
MAX_BATCH = 8
TEXTS = ["the food was great", "terrible plot and awful service", "quite a boring show", "the staff was really lovely",
         "poor room", "excellent movie", "the show was very horrible and bad", "superb", "a wonderful plot", "bad"]


@pytest.fixture(scope="module")
def server(classifier_run):
    s = Server(classifier_run, "--api-key", KEY, "--max-batch-size", str(MAX_BATCH), "--max-wait-ms", "20",
               "--max-body-bytes", "2048")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def expected(classifier_run):
    """What the model says of each text alone, in this process."""
    classifier = load(classifier_run, device="cpu")
    return {t: classifier.predict([t])[0] for t in TEXTS}


def same(got: dict, want: dict) -> bool:
    return got["label"] == want["label"] and all(abs(got["probabilities"][k] - p) < 1e-5 for k, p in want["probabilities"].items())


def test_health_models_and_predictions_equal_the_python_api(server, client, expected, classifier_run):
    health = httpx.get(f"{server.url}/health").json()  # no key needed
    assert health["status"] == "ok" and health["task"] == "classification" and health["model"] == classifier_run.name
    assert sorted(health["labels"]) == ["neg", "pos"] and health["device"] == "cpu" and health["uptime_s"] >= 0
    assert health["endpoints"] == ["/v1/classify"] and list(health["inputs"]) == ["text"]  # no text_pair: not trained on pairs
    assert client.get("/v1/models").json()["data"][0]["id"] == classifier_run.name

    r = client.post("/v1/classify", json={"texts": TEXTS[:MAX_BATCH]})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert len(got) == MAX_BATCH and all(same(g, expected[t]) for g, t in zip(got, TEXTS))
    assert client.post("/v1/classify", json={"texts": ["superb"], "model": classifier_run.name}).status_code == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, expected):
    # 48 requests of 1 to 4 texts from 12 threads at once: every answer equals the text's single answer.
    asks = [[TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 4)] for i in range(48)]

    def ask(texts):
        r = client.post("/v1/classify", json={"texts": texts})
        return texts, r.status_code, r.json()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(ask, asks))
    for texts, status, body in results:
        assert status == 200, body
        assert len(body["predictions"]) == len(texts)
        assert all(same(p, expected[t]) for p, t in zip(body["predictions"], texts))
    metrics = client.get("/metrics").text
    sizes = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines() if line.startswith("lmtune_batch_size_")}
    batches = sizes['lmtune_batch_size_count{kind="predict"}']
    assert batches < 48  # some requests shared a forward pass
    assert sizes['lmtune_batch_size_sum{kind="predict"}'] / batches > 1.5


def test_api_key_is_required_everywhere_but_health(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path in (("POST", "/v1/classify"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/nowhere")):
            r = httpx.request(method, f"{server.url}{path}", json={"texts": ["good"]}, headers=headers)
            assert r.status_code == 401, (headers, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer" and "--api-key" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"texts": TEXTS[: MAX_BATCH + 1]}, 400, "at most 8"),
    ({"texts": ["good", "  "]}, 400, "texts[1]"),
    ({"texts": []}, 422, "texts"),
    ({"texts": ["good", 3]}, 422, "texts.1"),
    ({"texts": "good"}, 422, "texts"),
    ({"text": ["good"]}, 422, "text"),
    ({}, 422, "texts"),
    ({"texts": ["good"], "model": "other"}, 404, "'other'"),
])
def test_bad_requests_name_the_field_and_limit(client, body, status, named):
    r = client.post("/v1/classify", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert named in error["message"] and error["type"]


def test_malformed_json_oversized_bodies_and_wrong_paths(client):
    r = client.post("/v1/classify", content=b'{"texts": ["good",', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    big = json.dumps({"texts": ["good " * 500]})
    r = client.post("/v1/classify", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "2048 bytes" in r.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 404  # a classifier has no chat
    assert client.get("/v1/classify").status_code == 405


def test_the_server_survives_it_all_and_counts_it(client, expected):
    r = client.post("/v1/classify", json={"texts": ["superb"]})
    assert r.status_code == 200 and same(r.json()["predictions"][0], expected["superb"])
    metrics = client.get("/metrics").text
    assert 'lmtune_requests_total{endpoint="/v1/classify",status="200"}' in metrics
    assert 'lmtune_requests_total{endpoint="/v1/classify",status="400"}' in metrics
    assert 'lmtune_requests_total{endpoint="/v1/classify",status="413"}' in metrics
    assert 'lmtune_request_seconds_bucket{endpoint="/v1/classify"' in metrics and "lmtune_queue_depth 0.0" in metrics


def test_a_model_trained_on_pairs_takes_text_pairs_served_and_from_the_command_line(tiny_models, tmp_path, capsys):
    rows = [{"text": r["text"], "pair": "the show was fine", "label": r["label"]} for r in toy_rows(120, seed=3)]
    files = {"train": write_csv(tmp_path / "train.csv", rows), "validation": write_csv(tmp_path / "validation.csv", rows[:30])}
    lmtune.train(make_config(tiny_models["bert"], files, tmp_path / "pairs", data={"text_pair_column": "pair"},
                             train={"epochs": 1}), progress=False)
    texts, pairs = [r["text"] for r in rows[:6]], [r["pair"] for r in rows[:6]]
    want = load(tmp_path / "pairs", device="cpu").predict(texts, pairs)
    server = Server(tmp_path / "pairs")
    try:
        with server.client() as client:
            r = client.post("/v1/classify", json={"texts": texts, "text_pairs": pairs})
            assert r.status_code == 200 and all(same(g, w) for g, w in zip(r.json()["predictions"], want))
            r = client.post("/v1/classify", json={"texts": texts})
            assert r.status_code == 422 and r.json()["error"]["param"] == "text_pairs"
            r = client.post("/v1/classify", json={"texts": texts[:2], "text_pairs": pairs[:1]})
            assert r.status_code == 400 and "texts has 2, text_pairs has 1" in r.json()["error"]["message"]
            assert list(client.get("/health").json()["inputs"]) == ["text", "text_pair"]
    finally:
        server.stop()
    argv = ["predict", str(tmp_path / "pairs")]
    for t, p in zip(texts, pairs):
        argv += ["--text", t, "--text-pair", p]
    assert main(argv) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["text_pair"]) for r in printed] == list(zip(texts, pairs))
    assert all(same(r, w) for r, w in zip(printed, want))
    assert main(["predict", str(tmp_path / "pairs"), "--text", texts[0]]) == 2
    assert "give --text and --text-pair (missing --text-pair)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "pairs"), "--text", texts[0], "--text-pair", "  "]) == 2
    assert "--text-pair number 1 (of 1) is empty" in capsys.readouterr().err


def test_a_body_not_sent_as_json_is_told_the_header(client):
    r = client.post("/v1/classify", content=b'{"texts": ["good"]}', headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["error"]["message"]
