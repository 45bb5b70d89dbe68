"""At most ``limit`` API requests run at once in a server process; the others wait their turn on
the event loop (first come, first served).

Why: a sync route runs in a worker thread and holds up to two pooled database connections (the
request's session, and the short transaction of a write or of an idempotency key). If more
requests ran than the pool can serve twice over, threads would block waiting for connections
that requests parked between two thread hops hold, and the pool would time out (seen at 50
concurrent clients). With ``limit`` at most half the pool, no checkout ever waits for another
request; and a process that is CPU-bound anyway answers no slower for running fewer requests at
once (less thread switching).
"""

from __future__ import annotations

import asyncio


def api_concurrency_for(engine) -> int:
    """Half the connections ``engine``'s pool may open (at least 1)."""
    pool = engine.pool
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", 0)
    if not callable(size):
        return 8
    return max(1, (size() + max(overflow, 0)) // 2)


class ApiConcurrencyLimit:
    def __init__(self, app, limit: int, prefix: str = "/api/"):
        self.app = app
        self.prefix = prefix
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:             # created in the running loop
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)
