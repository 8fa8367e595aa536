"""Whether the Hugging Face hub can be reached, asked once per process and answered in seconds.

Without this, a hub id on a machine with no network fails only after transformers' and
huggingface_hub's retries (about a minute, every attempt printed twice); with it, the user gets
one clear message at once, and a model already in the local cache loads from there.
"""

from __future__ import annotations

import functools
import socket
import threading
import urllib.request
from urllib.parse import urlparse

PROBE_SECONDS = 3.0


def hub_unreachable() -> str | None:
    """None when the hub answers; else why it cannot be used (offline mode, no route, no name resolution)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return _probe(constants.ENDPOINT)


def offline_mode_set() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.cache
def _probe(endpoint: str) -> str | None:
    """Open (and close) one TCP connection to the hub, or to the proxy that would carry it."""
    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = via.hostname or host, via.port or 8080
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{host}:{port}: {err.strerror or err}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {PROBE_SECONDS:g} s"


def looks_like_local_path(name: str) -> bool:
    """A name that can only mean a file or folder (a hub id is 'name' or 'owner/name')."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name or name.lower().endswith(".gguf")
