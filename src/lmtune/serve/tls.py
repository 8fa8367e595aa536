"""Encryption in transit for `lmtune serve` and `lmtune ui`: uvicorn's own TLS, from a certificate and key the user gives.

A server that other machines can reach (any address but loopback) must encrypt and check who
calls it: it needs --ssl-certfile and --ssl-keyfile, and an API key (serve) or token (ui, which
makes one itself), unless --insecure says plain HTTP is wanted anyway (behind a TLS proxy, say).
The certificate and key are loaded once before the server starts, so a wrong path, a key that
does not match its certificate, or an encrypted key is an error at once, never at the first
connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError


@dataclass(frozen=True)
class Listening:
    """Where and how a server listens (what `check_listening` accepted)."""

    host: str
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    def uvicorn_options(self) -> dict[str, Any]:
        return {"ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile} if self.certfile else {}


def check_listening(host: str, certfile: str | None, keyfile: str | None, insecure: bool,
                    authenticated: bool, credential: str) -> Listening:
    """Refuse TLS files that cannot serve, and a reachable server without TLS or `credential` (unless insecure)."""
    from lmtune.serve.options import is_loopback

    if bool(certfile) != bool(keyfile):
        given, missing = ("--ssl-certfile", "--ssl-keyfile") if certfile else ("--ssl-keyfile", "--ssl-certfile")
        raise LmtuneError(f"{given} was given without {missing}; TLS needs both the certificate and its private key")
    if certfile and keyfile:
        _load(certfile, keyfile)
    if not is_loopback(host) and not insecure:
        lacking = [what for what, ok in (("TLS (--ssl-certfile and --ssl-keyfile)", bool(certfile)), (credential, authenticated))
                   if not ok]
        if lacking:
            raise LmtuneError(
                f"--host {host} takes connections from other machines, and without {' and '.join(lacking)} "
                f"anyone on the network could read or send requests. Give {' and '.join(lacking)}, listen on 127.0.0.1, "
                f"or pass --insecure to serve it anyway (behind a TLS proxy that checks callers, say)"
            )
    return Listening(host, certfile, keyfile)


def _load(certfile: str, keyfile: str) -> None:
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not Path(path).is_file():
            raise LmtuneError(f"{option} {path}: no such file")

    def no_password() -> str:
        raise LmtuneError(f"--ssl-keyfile {keyfile} is encrypted with a password; give an unencrypted key "
                          f"(readable by this user only)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=no_password)
    except (ssl.SSLError, OSError) as err:
        raise LmtuneError(f"cannot use --ssl-certfile {certfile} with --ssl-keyfile {keyfile}: {err} (a PEM "
                          f"certificate and the private key that belongs to it are needed)") from None
