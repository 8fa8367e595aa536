"""What `lmtune serve` is told: where it listens, who may call it, and every request limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmtune.errors import LmtuneError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # this machine only: `lmtune serve` and `lmtune ui` need no key


def is_loopback(host: str) -> bool:
    """Whether a host name or address (an IPv6 one with or without its brackets) reaches this machine only."""
    return host.strip("[]") in LOOPBACK_HOSTS


def option(default: Any, help: str) -> Any:
    """A field that is also a command-line option: `--NAME` (underscores as dashes), with this help."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeOptions:
    """What `lmtune serve` is told; each field with help is also its option (`--max-batch-size` for max_batch_size)."""

    host: str = option("127.0.0.1", "address to listen on (default: this machine only)")
    port: int = option(8000, "port to listen on (default: %(default)s)")
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' on every endpoint but /health (or set LMTUNE_API_KEY)")
    model_name: str | None = option(None, "the model name clients ask for (default: the folder's name)")
    max_batch_size: int = option(32, "inputs gathered into one batch, and the most one request may send (default: %(default)s)")
    forward_batch_size: int = option(16, "inputs per forward pass: a gathered batch runs as length-sorted passes of this many "
                                         "(default: %(default)s)")
    max_wait_ms: float = option(0.0, "how long a batch waits to fill up (default: %(default)s: it takes the requests already waiting)")
    max_queue: int = option(256, "requests that may wait for the model; more get 503 (default: %(default)s)")
    timeout: float = option(60.0, "seconds a request may take, waiting included; longer get 504 (default: %(default)s)")
    max_body_bytes: int = option(1_000_000, "larger request bodies get 413 (default: %(default)s)")
    max_tokens: int = option(1024, "the most new tokens a request may ask for (default: %(default)s)")
    ssl_certfile: str | None = option(None, "serve HTTPS with this PEM certificate (and --ssl-keyfile)")
    ssl_keyfile: str | None = option(None, "the private key of --ssl-certfile (PEM, unencrypted)")
    insecure: bool = option(False, "allow a --host other machines reach without TLS or an API key")
    default_max_tokens: int = 128  # new tokens when a request names none (as `lmtune generate`)

    def check(self) -> None:
        """Refuse values no server can run with, naming the option."""
        rules = [
            (1 <= self.port <= 65535, f"--port {self.port} is not a port number (1-65535)"),
            (self.max_batch_size >= 1, f"--max-batch-size {self.max_batch_size} must be at least 1"),
            (self.forward_batch_size >= 1, f"--forward-batch-size {self.forward_batch_size} must be at least 1"),
            (self.max_wait_ms >= 0, f"--max-wait-ms {self.max_wait_ms} must be 0 or more"),
            (self.max_queue >= 1, f"--max-queue {self.max_queue} must be at least 1"),
            (self.timeout > 0, f"--timeout {self.timeout} must be more than 0 seconds"),
            (self.max_body_bytes >= 1024, f"--max-body-bytes {self.max_body_bytes} must be at least 1024"),
            (self.max_tokens >= 1, f"--max-tokens {self.max_tokens} must be at least 1"),
            (self.api_key is None or self.api_key.strip() != "", "--api-key (or LMTUNE_API_KEY) is empty"),
        ]
        for ok, message in rules:
            if not ok:
                raise LmtuneError(message)
