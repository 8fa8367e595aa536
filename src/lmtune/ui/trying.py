"""The Try page's models: each tried run is served by a real `lmtune serve` process, and the app passes calls on.

So a sentence classified or a chat reply on the Try page goes through exactly the code a client
of `lmtune serve` meets: the same batching, limits, stop texts and streaming. At most
MAX_SERVED runs are served at once; trying one more stops the one tried longest ago.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lmtune.tasks import TASKS
from lmtune.ui.workspace import UiError, Workspace

MAX_SERVED = 2


def try_info(health: dict[str, Any]) -> dict[str, Any]:
    """The served model's /health, with what its task declares for the Try page: the panel, and the endpoint it posts to."""
    task = TASKS.get(health.get("task", ""))
    if task is None:
        raise UiError(f"the served model is of task {health.get('task')!r}, which this app does not know", 500)
    endpoint = f"/v1/{task.predict_endpoint}" if task.predict_endpoint else "/v1/chat/completions"
    return {**health, "panel": task.try_panel, "endpoint": endpoint}


@dataclass
class Tried:
    run: str
    port: int
    process: subprocess.Popen[bytes]
    output: Path
    used: float = field(default_factory=time.time)
    info: dict[str, Any] | None = None  # /health, once it answers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Tryouts:
    def __init__(self, workspace: Workspace):
        self.ws = workspace
        self.served: dict[str, Tried] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=5))

    def start(self, run: str, model_dir: Path) -> Tried:
        tried = self.served.get(run)
        if tried is not None and tried.process.poll() is None:
            tried.used = time.time()
            return tried
        while len(self.served) >= MAX_SERVED:
            self.stop(min(self.served.values(), key=lambda t: t.used).run)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        folder = self.ws.app_folder / "try"
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / f"{Path(run).name}-{port}.log"
        with output.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "lmtune", "serve", str(model_dir), "--port", str(port),
                                        "--model-name", Path(run).name], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.served[run] = tried = Tried(run, port, process, output)
        return tried

    async def status(self, run: str) -> dict[str, Any]:
        tried = self.served.get(run)
        if tried is None:
            return {"state": "not loaded"}
        if tried.process.poll() is not None:
            text = tried.output.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            del self.served[run]
            raise UiError(f"the model of {run} could not be served: {text[-1] if text else 'no output'}", 500)
        if tried.info is None:
            try:
                answer = await self.client.get(f"{tried.url}/health", timeout=2)
            except httpx.TransportError:
                return {"state": "loading"}
            tried.info = try_info(answer.json())
        return {"state": "ready", **tried.info}

    def _ready(self, run: str, endpoint: str) -> Tried:
        tried = self.served.get(run)
        if tried is None or tried.info is None:
            raise UiError(f"{run} is not loaded yet: load it first", 409)
        if endpoint not in tried.info["endpoints"]:
            raise UiError(f"{endpoint} is not an endpoint of the model served for {run} (it has {', '.join(tried.info['endpoints'])})", 404)
        tried.used = time.time()
        return tried

    async def call(self, run: str, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        tried = self._ready(run, endpoint)
        answer = await self.client.post(tried.url + endpoint, json={**body, "model": tried.info["model"] if tried.info else None})
        return answer.status_code, answer.json()

    def stream(self, run: str, endpoint: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The server's SSE events as they come (an error status comes as one `error` event)."""
        tried = self._ready(run, endpoint)  # refused here, before the response starts
        return self._events(tried, endpoint, {**body, "model": tried.info["model"] if tried.info else None, "stream": True})

    async def _events(self, tried: Tried, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[bytes]:
        async with self.client.stream("POST", tried.url + endpoint, json=payload) as answer:
            if answer.status_code != 200:
                text = (await answer.aread()).decode(errors="replace")
                yield f"data: {json.dumps({'error': _message(text)})}\n\n".encode()
                return
            async for chunk in answer.aiter_raw():
                yield chunk

    def stop(self, run: str) -> None:
        tried = self.served.pop(run, None)
        if tried is not None and tried.process.poll() is None:
            tried.process.send_signal(signal.SIGTERM)
            try:
                tried.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                tried.process.kill()

    async def close(self) -> None:
        for run in list(self.served):
            self.stop(run)
        await self.client.aclose()


def _message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:500]
