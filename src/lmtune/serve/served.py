"""The model a server holds, with what every endpoint shares: its name, options, queue and metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmtune.serve.batching import Batcher
from lmtune.serve.errors import ApiError
from lmtune.serve.metrics import ServerMetrics
from lmtune.serve.options import ServeOptions
from lmtune.tasks.base import Predictor

# kind -> run(payloads, should_stop) -> one result per payload; each endpoint module adds its own
Runner = Callable[[list[Any], Callable[[], bool]], list[Any]]


def split_back(results: list[Any], sizes: list[int]) -> list[list[Any]]:
    """A batch's results cut back into one list per request, `sizes[i]` results for request i, in order."""
    out, start = [], 0
    for n in sizes:
        out.append(results[start : start + n])
        start += n
    return out


@dataclass
class Served:
    predictor: Predictor  # what lmtune.load() gives: a Classifier, QuestionAnswerer or Generator
    name: str  # the model name clients ask for
    task: str
    options: ServeOptions
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    runners: dict[str, Runner] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        o = self.options
        self.batcher = Batcher(self._run, o.max_batch_size, o.max_wait_ms / 1000, o.max_queue, self.metrics)

    def _run(self, kind: str, payloads: list[Any], should_stop: Callable[[], bool]) -> list[Any]:
        return self.runners[kind](payloads, should_stop)

    async def call(self, kind: str, group: Any, size: int, payload: Any) -> Any:
        """Queue one request for the model and wait for its result, within --timeout."""
        job = self.batcher.submit(kind, group, size, payload)
        return await self.batcher.result(job, self.options.timeout)

    def check_model(self, asked: str | None) -> None:
        """A request naming another model than this server's gets 404, as OpenAI answers."""
        if asked is not None and asked != self.name:
            raise ApiError(404, f"model {asked!r} is not served here; this server serves {self.name!r} (see GET /v1/models)",
                           param="model", code="model_not_found")
