"""Graceful stop: the first SIGINT/SIGTERM asks the loop to checkpoint and stop; a second stops at once."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger("lmtune")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """While active, records the first stop signal; the loop reads `signal_number` at step boundaries.

    Handlers can only be installed from the main thread; elsewhere (a library call from a worker
    thread) the context does nothing and signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt  # the second signal: stop now, no checkpoint
        self.signal_number = signum
        log.warning(
            "%s received: finishing the current step, then saving a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )
