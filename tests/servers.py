"""Real `lmtune serve` processes on 127.0.0.1 (the models they serve are fixtures in tests/conftest.py).

Each server is a subprocess started as a user starts it (`python -m lmtune serve ...`); a test
talks to it over HTTP only. Waits and request loops are bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_TIMEOUT_S = 180  # loading torch and a model on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lmtune serve MODEL ARGS` on a free port, up once /health answers."""

    command = "serve"
    ready_path = "/health"

    def __init__(self, model: Path | str, *args: str, env: dict[str, str] | None = None, ca: Path | None = None):
        """`ca`: the server speaks HTTPS (its args give --ssl-certfile and --ssl-keyfile) with a certificate this CA signed."""
        self.port = free_port()
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"lmtune-{self.command}-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmtune", self.command, *self.arguments(str(model)), "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lmtune {self.command} exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=2, verify=self.verify).status_code in (200, 401):
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"lmtune {self.command} did not answer {self.ready_path} within {START_TIMEOUT_S} s: {self.output()}")

    def arguments(self, model: str) -> list[str]:
        return [model]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, verify=self.verify, **kwargs)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class UiServer(Server):
    """`lmtune ui --workspace WORKSPACE ARGS` on a free port, up once its page answers."""

    command = "ui"
    ready_path = "/api/workspace"

    def arguments(self, model: str) -> list[str]:
        return ["--workspace", model]
