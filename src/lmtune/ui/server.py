"""`lmtune ui`: claim the port (as `lmtune serve` does), print the link, serve the app until Ctrl-C."""

from __future__ import annotations

import os
import secrets
import sys

from lmtune.errors import ConfigError
from lmtune.paths import check_creatable
from lmtune.serve.options import is_loopback
from lmtune.serve.server import claim_port
from lmtune.serve.tls import Listening
from lmtune.ui.app import build_app
from lmtune.ui.options import UiOptions

TOKEN_ENV = "LMTUNE_UI_TOKEN"


def resolve_token(given: str | None, host: str) -> str | None:
    """--token, else LMTUNE_UI_TOKEN; on an address other machines reach, a fresh one is made if neither is set."""
    token = given or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    return token


def run_ui(options: UiOptions) -> None:
    import uvicorn

    if options.workspace.exists() and not options.workspace.is_dir():
        raise ConfigError(f"--workspace {options.workspace} is a file; give a folder")
    check_creatable(options.workspace, "--workspace")
    options.workspace.mkdir(parents=True, exist_ok=True)
    sock = claim_port(options.host, options.port)
    app = build_app(options)
    shown_host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    tls = Listening(options.host, options.ssl_certfile, options.ssl_keyfile)
    link = f"{tls.scheme}://{shown_host}:{sock.getsockname()[1]}/" + (f"?token={options.token}" if options.token else "")
    print(f"lmtune ui: workspace {options.workspace.resolve()}\n  open {link}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **tls.uvicorn_options())).run(sockets=[sock])
