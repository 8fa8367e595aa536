"""One model thread and a bounded queue in front of it: requests that can share a forward pass are gathered into one.

The model runs one batch at a time, in one thread, so torch never runs two forward passes against
each other. Requests wait in one first-in, first-out queue. When the model is free, the first
waiting request starts a batch; queued requests of the same group (classification texts with the
same fields, generations with the same settings) join it until it holds `max_batch_size` inputs or
`max_wait_s` has passed. A request of no group (a streamed reply, a seeded sample) runs alone.
Every request gets exactly its own results back. When a batch fails, each of its requests runs
again alone, so one bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lmtune.serve.errors import ApiError
from lmtune.serve.metrics import ServerMetrics

log = logging.getLogger("lmtune")

# run(kind, payloads, should_stop) -> one result per payload, in order; should_stop() is True once
# every request of the batch has given up (timed out or disconnected).
RunBatch = Callable[[str, list[Any], Callable[[], bool]], list[Any]]


@dataclass(eq=False)
class Job:
    kind: str  # what runs it ("predict", "generate", ...)
    group: Hashable | None  # jobs of one group can share a batch; None runs alone
    size: int  # the inputs it adds to a batch
    payload: Any
    future: asyncio.Future[Any]
    cancelled: threading.Event = field(default_factory=threading.Event)


class Batcher:
    def __init__(self, run: RunBatch, max_batch_size: int, max_wait_s: float, max_queue: int, metrics: ServerMetrics):
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmtune-model")
        self._waiting: deque[Job] = deque()
        self._arrived = asyncio.Event()

    @property
    def depth(self) -> int:
        """Requests waiting for the model."""
        return len(self._waiting)

    def submit(self, kind: str, group: Hashable | None, size: int, payload: Any) -> Job:
        """Queue a request for the model; a full queue refuses it with 503 and `Retry-After`."""
        if len(self._waiting) >= self.max_queue:
            raise ApiError(503, f"the server is busy: {len(self._waiting)} requests are waiting for the model (--max-queue "
                                f"{self.max_queue}); try again shortly", code="queue_full", headers={"Retry-After": "1"})
        job = Job(kind, group, size, payload, asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self.metrics.queue_depth.set(len(self._waiting))
        self._arrived.set()
        return job

    async def result(self, job: Job, timeout: float) -> Any:
        """The job's result; past `timeout` seconds (waiting included) the job is given up and the request gets 504."""
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.cancelled.set()
            raise ApiError(504, f"the request took longer than --timeout {timeout:g} seconds and was given up", code="timeout") from None
        except asyncio.CancelledError:  # the client went away
            job.cancelled.set()
            raise

    async def run_forever(self) -> None:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._waiting.popleft()
            batch = await self._gather(first)
            self.metrics.queue_depth.set(len(self._waiting))
            await self._run([j for j in batch if not (j.future.done() or j.cancelled.is_set())])

    async def _gather(self, first: Job) -> list[Job]:
        batch, rows = [first], first.size
        if first.group is None:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while True:
            for job in list(self._waiting):
                if job.kind == first.kind and job.group == first.group and rows + job.size <= self.max_batch_size:
                    self._waiting.remove(job)
                    batch.append(job)
                    rows += job.size
            left = deadline - loop.time()
            if rows >= self.max_batch_size or left <= 0:
                return batch
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def _run(self, batch: list[Job]) -> None:
        if not batch:
            return
        kind = batch[0].kind
        self.metrics.batch_size.labels(kind).observe(sum(j.size for j in batch))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.run, kind, [j.payload for j in batch],
                                                 lambda: all(j.cancelled.is_set() for j in batch))
        except Exception as err:  # noqa: BLE001 -- handed to the request that caused it, never to the server
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(err)
                return
            for job in batch:  # alone, so a bad input fails only its own request
                await self._run([job])
            return
        for job, res in zip(batch, results):
            if not job.future.done():
                job.future.set_result(res)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
