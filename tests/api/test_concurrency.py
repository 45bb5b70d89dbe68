"""Many concurrent API requests: at most ``limit`` run at once per process, so that requests never
wait for each other's pooled database connections (a pool exhausted by 50 concurrent clients
answered 500 after its 30 s timeout before the limit existed)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sample_operator import make_token

from bluerocktel.api.concurrency import ApiConcurrencyLimit, api_concurrency_for


def test_at_most_limit_api_requests_run_at_once_and_other_paths_are_not_held():
    running = {"now": 0, "max": 0, "other_max": 0}

    async def inner(scope, receive, send):
        key = "max" if scope["path"].startswith("/api/") else "other_max"
        running["now"] += 1
        running[key] = max(running[key], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1

    limited = ApiConcurrencyLimit(inner, limit=3)

    async def main():
        await asyncio.gather(*(limited({"type": "http", "path": "/api/v1/x"}, None, None) for _ in range(20)))
        await asyncio.gather(*(limited({"type": "http", "path": "/portal"}, None, None) for _ in range(20)))

    asyncio.run(main())
    assert running["max"] == 3
    assert running["other_max"] == 20


def test_the_limit_is_half_the_pool(wb):
    pool = wb.db.engine.pool
    assert api_concurrency_for(wb.db.engine) == (pool.size() + pool._max_overflow) // 2 >= 1


def test_sixty_concurrent_reads_and_idempotent_writes_all_succeed(app, wb, sample):
    """Each write holds two connections at once (the request's session and its own transaction,
    and the idempotency key's); 60 at a time must all answer 2xx; a pool wait is cut to 5 s so that
    an exhausted pool fails the test instead of waiting 30 s."""
    token = make_token(wb, sample.user_ids["admin"])
    wb.db.engine.pool._timeout = 5

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portal.bluerock.localhost",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            async def write(i):
                return await client.post("/api/v1/tickets", headers={"Idempotency-Key": uuid.uuid4().hex},
                                         json={"subject": f"Load {i}", "body": "Line down?",
                                               "account_id": sample.account_ids["martin"]})

            async def read(i):
                return await client.get("/api/v1/invoices?limit=50")

            return await asyncio.gather(*(write(i) if i % 2 else read(i) for i in range(60)))

    responses = asyncio.run(main())
    assert sorted({r.status_code for r in responses}) == [200, 201], [r.text[:200] for r in responses
                                                                       if r.status_code >= 300][:3]
    assert sum(r.status_code == 201 for r in responses) == 30


def test_the_token_lookup_and_list_pages_make_no_thread_hop(app, wb, sample, monkeypatch):
    """The token lookup, the list GETs and the end of a read run on the event loop (a hand-off to a
    worker thread cost more than their queries); a route that is not a list still runs in a worker thread."""
    import anyio.to_thread

    token = make_token(wb, sample.user_ids["admin"])
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        hops.append(repr(func))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)

    async def get(path):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portal.bluerock.localhost",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            return await client.get(path)

    for path in ("/api/v1/invoices", "/api/v1/accounts", "/api/v1/services", "/api/v1/tickets"):
        hops.clear()
        response = asyncio.run(get(path))
        assert response.status_code == 200, path
        assert hops == [], (path, hops)
    account_id = asyncio.run(get("/api/v1/accounts")).json()["items"][0]["id"]
    hops.clear()
    assert asyncio.run(get(f"/api/v1/accounts/{account_id}")).status_code == 200
    assert any("get_account" in hop for hop in hops), hops          # the hook sees worker-thread hand-offs
