"""`lmtune ui`'s settings (a module of its own, so that the CLI reads the defaults without loading the app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmtune.serve.options import option


@dataclass
class UiOptions:
    """What `lmtune ui` is told; each field with help is also its option (`--max-upload-bytes` for max_upload_bytes)."""

    workspace: Path = field(default_factory=Path.cwd)
    host: str = option("127.0.0.1", "address to listen on (default: this machine only)")
    port: int = option(7860, "port to listen on (default: %(default)s)")
    token: str | None = option(None, "require this token on every page and call (or set LMTUNE_UI_TOKEN); the printed link carries it")
    max_upload_bytes: int = option(100_000_000, "largest data file an upload may send (default: %(default)s)")
    ssl_certfile: str | None = option(None, "serve HTTPS with this PEM certificate (and --ssl-keyfile)")
    ssl_keyfile: str | None = option(None, "the private key of --ssl-certfile (PEM, unencrypted)")
    insecure: bool = option(False, "allow a --host other machines reach without TLS")
