"""Output paths checked before any work starts: a folder or file that cannot be written fails at once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lmtune.errors import OutputError


def check_creatable(folder: str | Path, what: str) -> None:
    """Raise OutputError naming `what` (a config key or an option) if `folder` cannot be created or written in."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what}={path} is a file, not a folder; choose another {what}")
    reason = _blocked(path)
    if reason:
        raise OutputError(f"{what}={path} cannot be {reason}; choose another {what}")


def check_writable_file(file: str | Path, what: str) -> None:
    """Raise OutputError naming `what` if the file cannot be written (its folder created, if need be)."""
    path = Path(file)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    reason = _blocked(path.parent)
    if reason:
        raise OutputError(f"{what} {path} cannot be written: its folder {path.parent} cannot be {reason}")


def _blocked(folder: Path) -> str | None:
    """Why `folder` cannot be created or written in, or None.

    The test is real: one empty probe folder is created and removed in the nearest folder that
    exists (permission bits alone do not tell: root ignores them, /proc refuses anyway).
    """
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    verb = "written to" if nearest == folder else "created"
    if not nearest.is_dir():
        return f"created: {nearest} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lmtune-probe-", dir=nearest))
    except OSError as err:
        return f"{verb}: {nearest} does not let anything be created in it ({err.strerror or type(err).__name__})"
    return None
