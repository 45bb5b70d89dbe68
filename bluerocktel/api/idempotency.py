"""``Idempotency-Key`` for POST endpoints: a retried request is replayed, never executed twice.

A client that may retry a POST (a timeout, a lost connection) sends a key it chose, unique per
operation: ``Idempotency-Key: 6f1c…`` (1 to 200 visible ASCII characters). Keys are scoped by
the caller (``user:<id>``): two users may use the same key.

- **First request.** A row of ``idempotency_keys`` (principal, key, the request's fingerprint)
  is committed *before* the work starts, with ``status_code`` 0 ("in progress"). The unique
  constraint on (principal, key) makes exactly one of several concurrent requests win.
- **Success** (the work returns): its status and JSON body are stored in that row and sent.
- **Failure** (the work raises: a refused request, a bug): the row is deleted and the error is
  answered as usual; the same key may be sent again (errors are not replayed).
- **Same key, same request, done**: the stored status and body are sent again with
  ``Idempotency-Replayed: true``; nothing is executed.
- **Same key, different request**: 422 problem "Idempotency-Key reused with a different request".
- **Same key while the first request still runs** (concurrent retry): the second request waits
  up to :data:`WAIT_S` seconds for the first to finish, then replays its response; if it is still
  running, 409 problem with ``Retry-After: 1``. If the first one fails, the waiting request
  answers 409 too (retry it: the key is free again).
- **Expiry**: a key is kept 24 hours (:data:`KEEP_S`); older rows are deleted whenever a new key
  is written. A row left "in progress" longer than :data:`STALE_S` belongs to a killed process
  and is deleted the same way, so the key becomes usable again.

The request fingerprint is the SHA-256 of the method, the path, the sorted query and the body in
a canonical form: a JSON body parsed and written again with sorted keys (whitespace and key
order do not matter); a multipart or URL-encoded form as its sorted fields, each file as its
field name, file name and the SHA-256 of its content (so a retried upload matches even though
its multipart boundary differs); any other body as its bytes.

Usage in a route (a plain ``def``: the waiting runs in the thread pool)::

    @router.post("/things", status_code=201)
    def create_thing(body: ThingIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
        return idempotency.run(request.app.state.wb, principal, lambda: {...}, status_code=201)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from bluerocktel.db.models import IdempotencyKey
from bluerocktel.security import Principal

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotency-Replayed"
KEEP_S = 24 * 3600          # a key is remembered this long
STALE_S = 3600              # an "in progress" row older than this belongs to a killed process
WAIT_S = 30.0               # how long a concurrent retry waits for the first request
POLL_S = 0.05
IN_PROGRESS = 0             # status_code of a reserved, running request
REUSED = "Idempotency-Key reused with a different request"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def principal_key(principal: Principal) -> str:
    return f"user:{principal.user_id}"


@dataclass(frozen=True)
class Idempotency:
    """The key (None: none sent) and fingerprint of one request; :meth:`run` does the work once."""

    key: str | None
    fingerprint: str

    def run(self, wb, principal: Principal, work: Callable[[], Any], status_code: int = 200) -> JSONResponse:
        """Do ``work`` (its result is the JSON body) unless this key's response is to be replayed."""
        if self.key is None:
            return JSONResponse(jsonable_encoder(work()), status_code=status_code)
        who = principal_key(principal)
        row_id = reserve(wb, who, self.key, self.fingerprint)
        if row_id is None:
            return replay(wb, who, self.key, self.fingerprint)
        try:
            body = jsonable_encoder(work())
        except BaseException:
            release(wb, row_id)
            raise
        complete(wb, row_id, status_code, body)
        return JSONResponse(body, status_code=status_code)


def reserve(wb, principal: str, key: str, fingerprint: str) -> int | None:
    """Insert the "in progress" row (purging expired ones first); None when the key is taken."""
    now = dt.datetime.now(dt.timezone.utc)
    try:
        with wb.db.transaction() as s:
            s.execute(delete(IdempotencyKey).where(or_(
                IdempotencyKey.created_at < now - dt.timedelta(seconds=KEEP_S),
                (IdempotencyKey.status_code == IN_PROGRESS)
                & (IdempotencyKey.created_at < now - dt.timedelta(seconds=STALE_S)))))
            row = IdempotencyKey(principal=principal, key=key, request_sha256=fingerprint,
                                 status_code=IN_PROGRESS, response={}, created_at=now)
            s.add(row)
            s.flush()
            return row.id
    except IntegrityError:
        return None


def replay(wb, principal: str, key: str, fingerprint: str, wait_s: float | None = None) -> JSONResponse:
    """The stored response of a key already used, once its first request has finished."""
    deadline = time.monotonic() + (WAIT_S if wait_s is None else wait_s)
    while True:
        with wb.db.session() as s:
            row = s.scalar(select(IdempotencyKey).where(IdempotencyKey.principal == principal,
                                                        IdempotencyKey.key == key))
            found = None if row is None else (row.request_sha256, row.status_code, row.response)
        if found is None:
            # The first request failed (its row was released) or the row just expired.
            raise HTTPException(409, detail=f"the request first sent with this {HEADER} did not complete; "
                                            "send it again", headers={"Retry-After": "1"})
        request_sha256, status_code, response = found
        if request_sha256 != fingerprint:
            raise HTTPException(422, detail=REUSED)
        if status_code != IN_PROGRESS:
            return JSONResponse(response, status_code=status_code, headers={REPLAYED_HEADER: "true"})
        if time.monotonic() >= deadline:
            raise HTTPException(409, detail=f"a request with this {HEADER} is still being processed; "
                                            "retry later", headers={"Retry-After": "1"})
        time.sleep(POLL_S)


def complete(wb, row_id: int, status_code: int, body) -> None:
    with wb.db.transaction() as s:
        row = s.get(IdempotencyKey, row_id)
        row.status_code = status_code
        row.response = body


def release(wb, row_id: int) -> None:
    with wb.db.transaction() as s:
        s.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))


async def request_fingerprint(request: Request) -> str:
    """SHA-256 of the request in canonical form (module doc)."""
    digest = hashlib.sha256()
    query = sorted(request.query_params.multi_items())
    digest.update(json.dumps([request.method, request.url.path, query]).encode())
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        fields = []
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.append([name, "field", value])
            else:                                  # an UploadFile
                content = hashlib.sha256()
                await value.seek(0)
                while block := await value.read(1 << 20):
                    content.update(block)
                await value.seek(0)
                fields.append([name, "file", value.filename or "", content.hexdigest()])
        digest.update(json.dumps(sorted(fields)).encode())
        return digest.hexdigest()
    body = await request.body()
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except ValueError:
        canonical = body
    digest.update(canonical)
    return digest.hexdigest()


async def idempotency(request: Request) -> Idempotency:
    """The dependency: the request's ``Idempotency-Key`` (checked) and fingerprint."""
    key = request.headers.get(HEADER)
    if key is not None and not _KEY.match(key):
        raise HTTPException(400, detail=f"{HEADER} must be 1 to 200 visible ASCII characters, got {key[:40]!r}")
    return Idempotency(key, await request_fingerprint(request) if key is not None else "")


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
