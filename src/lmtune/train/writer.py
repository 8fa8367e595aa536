"""One checkpoint write at a time, in a thread of its own (train.background_checkpoints) or in the caller's.

The training thread hands over a write that reads nothing the training goes on to change (the
snapshot in state.py holds copies, made with `copy`), and goes on training while the thread
writes it. The copies live in CPU buffers kept for the whole run and refilled at each
checkpoint: the first checkpoint allocates them (one copy of the trainable tensors and the
optimizer state), and refilling is a plain memory copy, without the page faults of fresh
memory. Before the next write begins, the previous one is waited for, so two writes never race
on the checkpoints folder. A write that failed is raised in the training thread: at the next step boundary
(`raise_failure`), at the next write, or when the run waits for its last write (`wait`).

Written here rather than with torch distributed checkpoint's `async_save`: that saves a whole
state dict in its own layout, while lmtune's checkpoints keep their format (the trainable
tensors as safetensors, the manifest written last), which `lmtune` reads back and verifies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("lmtune")


class CheckpointWriter:
    def __init__(self, background: bool):
        self.background = background
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def copy(self, value: Any, key: tuple[Any, ...] = ()) -> Any:
        """`value` (nested dicts, lists and tuples of tensors) with each tensor copied into this writer's CPU buffers.

        Call it only once the previous write is done (`submit` waits for it), since that write reads
        the same buffers. `key` names the place of `value`, so each tensor keeps its own buffer.
        """
        if isinstance(value, torch.Tensor):
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
                buffer = self._buffers[key] = torch.empty(value.shape, dtype=value.dtype, device="cpu")
            return buffer.copy_(value.detach())
        if isinstance(value, dict):
            return {k: self.copy(v, (*key, k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.copy(v, (*key, i)) for i, v in enumerate(value))
        return value

    def submit(self, write: Callable[[], None]) -> None:
        """Run `write` once the previous write is done; in the background, return at once."""
        self.wait()
        if not self.background:
            write()
            return
        self._thread = threading.Thread(target=self._run, args=(write,), name="lmtune-checkpoint-writer")
        self._thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            _yield_to_training()
            write()
        except BaseException as err:  # noqa: BLE001 - handed to the training thread, which raises it
            self._failure = err

    @property
    def failed(self) -> bool:
        """A write has failed (and the training thread has not raised it yet)."""
        return self._failure is not None

    def raise_failure(self) -> None:
        """Raise the failure of a finished write, if any, without waiting for one in flight."""
        if self._failure is not None:
            err, self._failure = self._failure, None
            raise err

    def wait(self) -> None:
        """Wait for the write in flight; raise its failure."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.raise_failure()

    def close(self) -> None:
        """Wait for the write in flight while the run ends for another reason: its failure is logged, not raised."""
        try:
            self.wait()
        except BaseException as err:  # noqa: BLE001 - the run is already ending with its own error
            log.error("%s", err)


def _yield_to_training() -> None:
    """Lower this thread's scheduling priority (Linux: nice is per thread), so training threads run first.

    The write still takes the processor time it needs, out of what training leaves idle; where the
    system has no per-thread priority, nothing changes.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
