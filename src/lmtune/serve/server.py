"""Start `lmtune serve`: claim the port, load the model once, run uvicorn until SIGTERM or Ctrl-C.

On SIGTERM (or Ctrl-C) uvicorn stops taking connections, lets the requests in flight finish
(up to --timeout), then the process exits.
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.serve.options import ServeOptions
from lmtune.serve.served import Served
from lmtune.serve.tls import Listening
from lmtune.tasks import DEFAULT_TASK

log = logging.getLogger("lmtune")


def serve(path: str, options: ServeOptions, gguf_file: str | None = None) -> None:
    """Serve a run folder, saved model folder, base model folder, hub id or GGUF file until stopped."""
    import uvicorn

    from lmtune.serve.app import build_app

    options.check()
    sock = claim_port(options.host, options.port)  # before the model loads: a taken port fails at once
    try:
        served = load_served(path, options, gguf_file)
        app = build_app(served)
        tls = Listening(options.host, options.ssl_certfile, options.ssl_keyfile)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=int(options.timeout) + 5, **tls.uvicorn_options())
        print(f"lmtune serve: {served.name} ({served.task}) on {tls.scheme}://{options.host}:{options.port} "
              f"(docs at /docs); Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def claim_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Connections inherit it: without, small answers wait out the client's delayed ACK (about 40 ms each).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise LmtuneError(f"--host {host} --port {port} cannot be used ({err.strerror or err}); pick another --port, "
                          f"or stop what listens there") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_served(path: str, options: ServeOptions, gguf_file: str | None = None) -> Served:
    """What `lmtune predict` or `lmtune generate` would load: an lmtune model as its task uses it, else a base LM."""
    from lmtune.generator import load_lm
    from lmtune.inference import load
    from lmtune.run_dir import find_model_dir

    folder = None if gguf_file else find_model_dir(path)
    predictor: Any = load(folder) if folder is not None else load_lm(path, gguf_file=gguf_file)
    task = predictor.meta.get("task", DEFAULT_TASK)
    name = options.model_name or (Path(gguf_file).stem if gguf_file else Path(path).resolve().name)
    return Served(predictor, name, task, options)
