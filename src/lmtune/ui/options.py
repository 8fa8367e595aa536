"""`lmtune ui`'s settings (a module of its own, so that the CLI reads the defaults without loading the app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class UiOptions:
    workspace: Path = field(default_factory=Path.cwd)
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    max_upload_bytes: int = 100_000_000
