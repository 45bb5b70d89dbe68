"""Per-token rate limiting: a token bucket per caller, in the serving process.

Each API token (each signed-in user, for cookie sessions) has a bucket of ``api_rate_burst``
requests refilled at ``api_rate_per_minute`` / 60 per second. A request takes one; an empty
bucket answers 429 problem+json with ``Retry-After`` (whole seconds until one is back). The
buckets live in the process: with several worker processes each enforces the limit on its own
share of the traffic (documented; a shared store is the step beyond one machine).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from bluerocktel.settings import get_setting


class RateLimitedError(Exception):
    """Too many requests; ``retry_after_s`` says when to come back."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"rate limit exceeded; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, per_minute: float | None = None, burst: int | None = None):
        self.rate = float(per_minute if per_minute is not None else get_setting("api_rate_per_minute")) / 60.0
        self.burst = int(burst if burst is not None else get_setting("api_rate_burst"))
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one request of ``key``'s bucket, or raise :class:`RateLimitedError`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / self.rate if self.rate > 0 else 3600.0
                raise RateLimitedError(max(1, math.ceil(wait)))
            bucket.tokens -= 1.0
