"""The gate every request of the web app passes: a Host that names this machine, and the token when one is set.

With a token, every path asks for it: `?token=` once (which sets a cookie), the cookie, or an
`Authorization: Bearer` header. Requests whose Host is not this machine are refused, so that a
web page elsewhere cannot reach the app through DNS rebinding.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lmtune.serve.options import is_loopback

COOKIE = "lmtune_ui_token"


class TokenGate:
    """Every request needs the token (when one is set) and a Host that names this machine."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = urlsplit("//" + (request.headers.get("host") or "")).hostname or ""  # "[::1]:8000" -> "::1"
        if not is_loopback(host) and host != scope.get("server", ("",))[0]:
            await JSONResponse({"error": f"host {host!r} is not this machine"}, status_code=403)(scope, receive, send)
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        given = query.get("token", [None])[0]
        if given is not None and hmac.compare_digest(given, self.token):
            rest = {k: v for k, v in query.items() if k != "token"}
            target = request.url.path + ("?" + urlencode(rest, doseq=True) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        cookie = request.cookies.get(COOKIE, "")
        if any(hmac.compare_digest(v, self.token) for v in (bearer, cookie) if v):
            await self.app(scope, receive, send)
            return
        message = "a wrong or missing token: open the link `lmtune ui` printed (it ends in ?token=...)"
        if request.url.path.startswith("/api/"):
            await JSONResponse({"error": message}, status_code=401)(scope, receive, send)
        else:
            await HTMLResponse(f"<!doctype html><title>lmtune ui</title><p>{message}</p>", status_code=401)(scope, receive, send)
