"""Cross-cutting API behaviour: ETags and 304s, per-token rate limiting with Retry-After, updated-since sync."""

from __future__ import annotations

import datetime as dt

import pytest
from sample_operator import make_token

from bluerocktel.api.ratelimit import RateLimitedError, RateLimiter
from bluerocktel.db.models import Account

UTC = dt.timezone.utc


def bearer(token: str, **extra) -> dict:
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
def admin(wb, sample):
    return make_token(wb, sample.user_ids["admin"])


def test_reads_carry_an_etag_and_answer_304_when_unchanged(wb, client, sample, admin):
    url = f"/api/v1/accounts/{sample.account_ids['martin']}"
    first = client.get(url, headers=bearer(admin))
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"') and len(etag) == 34
    same = client.get(url, headers=bearer(admin, **{"If-None-Match": etag}))
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    assert client.get(url, headers=bearer(admin, **{"If-None-Match": f'"other", W/{etag}'})).status_code == 304
    with wb.db.transaction() as s:
        s.get(Account, sample.account_ids["martin"]).city = "Villeurbanne"
    changed = client.get(url, headers=bearer(admin, **{"If-None-Match": etag}))
    assert changed.status_code == 200 and changed.json()["city"] == "Villeurbanne" and changed.headers["etag"] != etag
    # errors and files carry no ETag; writes are never answered 304
    assert "etag" not in client.get("/api/v1/accounts/999", headers=bearer(admin)).headers


def test_rate_limit_per_token_answers_429_with_retry_after(wb, client, app, sample, admin):
    app.state.rate_limiter = RateLimiter(per_minute=6, burst=3)      # one request back every 10 s
    other = make_token(wb, sample.user_ids["sales"])
    for _ in range(3):
        assert client.get("/api/v1/accounts", headers=bearer(admin)).status_code == 200
    limited = client.get("/api/v1/accounts", headers=bearer(admin))
    assert limited.status_code == 429 and limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 10     # 10 s per request, less what refilled meanwhile
    assert "rate limit exceeded" in limited.json()["detail"]
    assert client.get("/api/v1/accounts", headers=bearer(other)).status_code == 200   # buckets are per token


def test_token_bucket_refills_at_the_sustained_rate():
    limiter = RateLimiter(per_minute=60, burst=2)           # 1 per second
    limiter.take("k", now=100.0)
    limiter.take("k", now=100.0)
    with pytest.raises(RateLimitedError) as exc:
        limiter.take("k", now=100.4)
    assert exc.value.retry_after_s == 1
    limiter.take("k", now=101.0)                           # 0.6 left + 0.6 refilled ≥ 1
    with pytest.raises(RateLimitedError):
        limiter.take("k", now=101.1)
    limiter.take("k", now=110.0)
    limiter.take("k", now=110.0)                           # refilled to the burst, not beyond
    with pytest.raises(RateLimitedError):
        limiter.take("k", now=110.0)


def test_updated_since_returns_only_what_changed(wb, client, sample, admin):
    everything = client.get("/api/v1/accounts", headers=bearer(admin)).json()["items"]
    assert len(everything) == 2
    mark = dt.datetime.now(UTC)
    with wb.db.transaction() as s:
        s.get(Account, sample.account_ids["durand"]).phone = "+33493000099"
    since = client.get("/api/v1/accounts", params={"updated_since": mark.isoformat()}, headers=bearer(admin))
    assert [a["number"] for a in since.json()["items"]] == ["C0002"]
    later = (mark + dt.timedelta(hours=1)).isoformat()
    assert client.get("/api/v1/services", params={"updated_since": later},
                      headers=bearer(admin)).json()["items"] == []
    assert client.get("/api/v1/invoices", params={"updated_since": "not a date"},
                      headers=bearer(admin)).status_code == 422
