"""ETags on API reads: ``GET /api/...`` JSON answers carry a strong ETag (SHA-256 of the body);
a request whose ``If-None-Match`` lists it gets ``304 Not Modified`` with no body.

A pure ASGI middleware (it buffers only successful JSON answers of GET requests under
``/api/``; files and streams pass through untouched). Clients that poll (sync jobs, 3CX) save
the transfer and the parsing; the server still computes the answer.
"""

from __future__ import annotations

import hashlib


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _matches(if_none_match: bytes | None, etag: bytes) -> bool:
    if not if_none_match:
        return False
    candidates = [c.strip() for c in if_none_match.split(b",")]
    return b"*" in candidates or etag in candidates or b"W/" + etag in candidates


class ETagMiddleware:
    def __init__(self, app, prefix: str = "/api/"):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if_none_match = _header(scope.get("headers", []), b"if-none-match")
        start: dict | None = None
        chunks: list[bytes] = []
        passthrough = False

        async def capture(message):
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                content_type = _header(message.get("headers", []), b"content-type") or b""
                if message["status"] != 200 or b"json" not in content_type:
                    passthrough = True
                    await send(message)
                else:
                    start = message
                return
            if passthrough:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
            headers = [(k, v) for k, v in start["headers"] if k.lower() not in (b"etag", b"content-length")]
            headers.append((b"etag", etag))
            if _matches(if_none_match, etag):
                await send({"type": "http.response.start", "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
