"""Progress bars with an ETA for the long parts of a job: tokenization, training, evaluation,
generation and search.

A bar shows only when standard error is a terminal (tqdm's own test), never in logs or CI, and
not at all inside `quiet()`: `--quiet` on the command line, `train(..., progress=False)` in Python.
Like a log level, this is a setting of the process, not of one call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

_shown = True


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No progress bars inside this block (when `on`)."""
    global _shown
    before = _shown
    _shown = before and not on
    try:
        yield
    finally:
        _shown = before


def bar(
    iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str, leave: bool = False, unit: str = "it",
    initial: int = 0,
) -> Any:
    """A tqdm bar; by default it disappears when done, leaving the log lines that matter."""
    return tqdm(iterable, total=total, desc=desc, leave=leave, unit=unit, initial=initial, dynamic_ncols=True,
                disable=None if _shown else True)

