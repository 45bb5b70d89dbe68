"""A pure ASGI middleware guarding the browser areas (``/portal``, ``/staff``), HTTP and websocket.

Starlette's ``@app.middleware("http")`` never sees websocket connections, and the Panel apps
talk over a websocket (``/portal/ws``), so the guard is a plain ASGI callable (DESIGN.md §4).

For a request under a guarded prefix it

- reads the signed session cookie and loads the user (inactive users are refused);
- refuses what the user may not use: an unauthenticated browser request is redirected to
  ``/login?next=...``; a signed-in user of the wrong kind (a customer on ``/staff``, staff on
  ``/portal``) is sent to their own area; a websocket is closed before it is accepted
  (the client sees HTTP 403), also when its ``Origin`` is not the page's own host;
- puts the :class:`~bluerocktel.security.Principal` on the scope (``scope["user"]``, so
  ``request.user`` works) and removes the session cookie from the request the app sees, so the
  Panel session token embedded in the page never carries the HttpOnly cookie;
- optionally hands Panel a ``user`` cookie signed with Panel's ``cookie_secret`` (the format
  ``pn.state.user`` verifies), after removing any ``user``/``is_guest``/OAuth cookie the browser
  sent: ``pn.state.user`` is then the signed-in e-mail and cannot be forged by the client.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import anyio.to_thread

from bluerocktel.security import SESSION_COOKIE, Principal
from bluerocktel.vocabulary import STAFF_ROLES, Role
from bluerocktel.web.sessions import home_path, login_url, principal_from_cookie

DEFAULT_AREAS: Mapping[str, frozenset[Role]] = {
    "/portal": frozenset({Role.CUSTOMER}),
    "/staff": frozenset(STAFF_ROLES),
}

# Cookies the app behind the guard must never take from the browser: Panel trusts them.
_STRIPPED_COOKIES = frozenset({SESSION_COOKIE, "user", "is_guest", "id_token", "access_token",
                               "refresh_token", "oauth_expiry", "code_verifier"})

# WebSocket close code sent before accept; servers answer the handshake with HTTP 403.
WS_POLICY_VIOLATION = 1008


def parse_cookie_header(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for chunk in value.decode("latin-1").split(";"):
            key, sep, val = chunk.strip().partition("=")
            if sep and key:
                cookies.setdefault(key.strip(), val.strip().strip('"'))
    return cookies


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def same_origin(scope) -> bool:
    """True when the request has no Origin header or its host:port equals the Host header."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    host = (_header(scope, b"host") or "").lower()
    return urlsplit(origin).netloc.lower() == host


class SessionAuthMiddleware:
    """Guard ``areas`` (path prefix → roles allowed) of ``app`` with the session cookie."""

    def __init__(self, app, *, wb, areas: Mapping[str, frozenset[Role]] | None = None,
                 panel_user_cookie: Callable[[Principal], str] | None = None):
        self.app = app
        self.wb = wb
        self.areas = dict(DEFAULT_AREAS if areas is None else areas)
        self.panel_user_cookie = panel_user_cookie

    def area_of(self, path: str) -> str | None:
        for prefix in self.areas:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        area = self.area_of(scope.get("path", ""))
        if area is None:
            return await self.app(scope, receive, send)

        cookies = parse_cookie_header(scope.get("headers", ()))
        principal = await anyio.to_thread.run_sync(principal_from_cookie, self.wb, cookies.get(SESSION_COOKIE))
        allowed = principal is not None and principal.role in self.areas[area]

        if scope["type"] == "websocket":
            if not allowed or not same_origin(scope):
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
                return
        elif not allowed:
            return await self._refuse_http(scope, send, principal)

        scope = dict(scope)
        scope["user"] = principal
        scope["headers"] = self._headers_for_app(scope["headers"], cookies, principal)
        return await self.app(scope, receive, send)

    def _headers_for_app(self, headers, cookies: dict[str, str], principal: Principal) -> list:
        kept = {k: v for k, v in cookies.items() if k not in _STRIPPED_COOKIES}
        if self.panel_user_cookie is not None:
            kept["user"] = self.panel_user_cookie(principal)
        out = [(k, v) for k, v in headers if k.lower() != b"cookie"]
        if kept:
            out.append((b"cookie", "; ".join(f"{k}={v}" for k, v in kept.items()).encode("latin-1")))
        return out

    async def _refuse_http(self, scope, send, principal: Principal | None) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            return await _send_plain(send, 401 if principal is None else 403,
                                     b"sign in at /login" if principal is None else b"forbidden")
        if principal is None:
            target = scope.get("path", "/")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            location = login_url(target)
        else:
            location = home_path(principal)
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0"),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})


async def _send_plain(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
