"""`lmtune serve` under pressure: requests over --timeout get 504, a full queue 503 with Retry-After,
SIGTERM lets the request in flight finish; bad options and a taken port fail before any model loads.

The model is a random tiny LM over a large vocabulary, so its greedy replies run to max_tokens:
a reply's length sets how long it takes (a few milliseconds a token), with nothing slowed on purpose.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from servers import Server

LONG = 8000  # tokens: 8.2 s of generation on an idle 2-core machine, four times the --timeout 2 of these tests


def chat(url: str, max_tokens: int, stream: bool = False, timeout: float = 120) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens, "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


@pytest.fixture(scope="module")
def server(long_lm):
    s = Server(long_lm, "--timeout", "2", "--max-tokens", str(LONG))
    yield s
    s.stop()


def queue_depth(url: str) -> int:
    return int(httpx.get(f"{url}/health").json()["queue_depth"])


def generations(url: str) -> float:
    """Generate calls the model thread has started (from /metrics)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('lmtune_batch_size_count{kind="generate"}'):
            return float(line.split()[-1])
    return 0.0


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.05)


def test_a_request_over_the_timeout_gets_504_and_frees_the_model(server):
    start = time.monotonic()
    r = chat(server.url, LONG)
    assert r.status_code == 504 and "--timeout 2" in r.json()["error"]["message"]
    assert time.monotonic() - start < 15
    # the given-up generation stopped: a short request right after is answered at once
    start = time.monotonic()
    r = chat(server.url, 5)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
    assert time.monotonic() - start < 2


def test_a_streamed_reply_over_the_timeout_ends_with_an_error_event(server):
    r = chat(server.url, LONG, stream=True)
    assert r.status_code == 200
    events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events and json.loads(events[-1])["error"]["code"] == "timeout"
    assert any(json.loads(e).get("choices", [{}])[0].get("delta", {}).get("content") for e in events[:-1])  # text came first


def test_a_full_queue_answers_503_with_retry_after(long_lm):
    server = Server(long_lm, "--max-queue", "1", "--timeout", "60", "--max-tokens", "4000")  # a timeout no queued request comes near
    try:
        _fill_the_queue_and_ask(server)
    finally:
        server.stop()


def _fill_the_queue_and_ask(server: Server) -> None:
    results: dict[str, httpx.Response] = {}
    # the running reply (about 3 s) outlasts the polls that see it start and see the next one queued
    lengths = {"running": 3000, "waiting": 250}
    threads = {name: threading.Thread(target=lambda n=name: results.setdefault(n, chat(server.url, lengths[n]))) for name in lengths}
    before = generations(server.url)
    threads["running"].start()
    wait_until(lambda: generations(server.url) > before)  # the model thread is busy with it
    threads["waiting"].start()
    wait_until(lambda: queue_depth(server.url) == 1)  # the queue (--max-queue 1) is full
    refused = chat(server.url, 5)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "--max-queue 1" in refused.json()["error"]["message"]
    for t in threads.values():
        t.join(30)
    assert results["running"].status_code == 200 and results["waiting"].status_code == 200
    assert chat(server.url, 5).status_code == 200


def test_sigterm_drains_the_request_in_flight_then_exits(long_lm):
    s = Server(long_lm, "--timeout", "60", "--max-tokens", "4000")
    result: dict[str, httpx.Response] = {}
    sender = threading.Thread(target=lambda: result.setdefault("r", chat(s.url, 600)))
    sender.start()
    wait_until(lambda: generations(s.url) == 1)  # the model thread has it
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):  # no new connections while it drains
        httpx.get(f"{s.url}/health", timeout=2)
    sender.join(60)
    assert result["r"].status_code == 200 and result["r"].json()["usage"]["completion_tokens"] == 600
    assert s.proc.wait(timeout=60) in (0, -signal.SIGTERM)


def test_bad_options_and_a_taken_port_fail_fast_with_exit_2(long_lm, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lmtune", "serve", *args], capture_output=True, text=True, timeout=120)

    r = run(str(long_lm), "--max-batch-size", "0")
    assert r.returncode == 2 and "--max-batch-size 0 must be at least 1" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run(str(tmp_path / "no-such-model"), "--port", str(port))  # the port is checked before the model is looked for
        assert r.returncode == 2 and f"--port {port} cannot be used" in r.stderr
    r = run(str(tmp_path / "no-such-model"), "--port", "0")
    assert r.returncode == 2 and "--port 0" in r.stderr
    r = run(str(tmp_path / "no-such-model"))
    assert r.returncode == 2 and "no-such-model" in r.stderr and "Traceback" not in r.stderr


def test_loopback_hosts_need_no_key():
    from lmtune.serve.options import is_loopback
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.com"))
