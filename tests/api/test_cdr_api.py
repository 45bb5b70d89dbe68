"""The CDR API on the real app: pushed batches, uploads, Idempotency-Key, ledger, quarantine, sources.

Every test runs on SQLite and on PostgreSQL (the ``wb`` fixture behind ``client``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import func, select

from bluerocktel import lake
from bluerocktel.api import cdr as cdr_api
from bluerocktel.api import idempotency
from bluerocktel.db.models import (
    Account,
    AuditEntry,
    Brand,
    CdrFile,
    CdrSource,
    CdrSourceState,
    IdempotencyKey,
    User,
)
from bluerocktel.security import Principal, create_api_token

PROBLEM = "application/problem+json"
GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"
UTC = dt.timezone.utc


def bearer(token: str, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@pytest.fixture
def tokens(wb):
    """Tokens of an admin, a billing and a sales user and of a customer (no sign-in needed: no
    password hashing, to keep these tests fast), and the configured source ``pbx-paris``."""
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock Telecom", legal_name="BlueRock Telecom SAS")
        s.add(brand)
        s.flush()
        account = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
        s.add(account)
        s.flush()
        users = {key: User(email=f"{key}@bluerock.example", name=key.capitalize(), password_hash="!", role=role,
                           account_id=account.id if role == "customer" else None)
                 for key, role in (("admin", "admin"), ("billing", "billing"), ("sales", "sales"),
                                   ("alice", "customer"))}
        s.add_all(users.values())
        s.add(CdrSource(name="pbx-paris", format="asterisk-csv", timezone="Europe/Paris", country="FR"))
        s.flush()
        return {key: create_api_token(s, user, "test") for key, user in users.items()}


def call(n: int, **fields) -> dict:
    """A realistic pushed CDR: an answered outgoing call from extension 201, 5 s to answer."""
    start = dt.datetime(2026, 10, 5, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))) + dt.timedelta(minutes=n)
    record = {"start": start.isoformat(), "answer": (start + dt.timedelta(seconds=5)).isoformat(),
              "duration": 65 + n, "billsec": 60 + n, "caller": "201", "callee": f"061234{n:04d}",
              "channel": "PJSIP/201", "dst_channel": "PJSIP/ovh", "unique_id": f"1791184323.{n}"}
    record.update(fields)
    return record


def lake_count(wb) -> int:
    con = lake.connect_duckdb()
    try:
        return con.sql(f"SELECT count(*) FROM {lake.scan_sql(wb.lake_dir, 'cdrs')}").fetchall()[0][0]
    finally:
        con.close()


def ledger(wb) -> list[tuple]:
    with wb.db.session() as s:
        return [(f.file_name, f.collector, f.status, f.received, f.imported, f.duplicates, f.quarantined)
                for f in s.scalars(select(CdrFile).order_by(CdrFile.id))]


# --- POST /cdr/batches --------------------------------------------------------------------------

def test_pushed_batch_is_imported_with_issues_by_record_number(wb, client, tokens):
    records = [call(1), call(2), {"start": "2026-10-05T09:10:00+02:00", "duration": 5, "colour": "red"},
               call(3, start="2026-10-05 09:30:00", answer="2026-10-05 09:30:05"), "oops"]
    r = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": records},
                    headers=bearer(tokens["billing"]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("format", "source", "status", "received", "imported", "duplicates",
                                 "quarantined", "months")} == {
        "format": "json-records", "source": "pbx-paris", "status": "imported", "received": 5, "imported": 3,
        "duplicates": 0, "quarantined": 2, "months": ["2026-10"]}
    assert [(i["line"], i["reason"]) for i in body["issues"]] == [
        (3, "unknown field(s): 'colour'"), (5, "record is not a JSON object but a string")]
    assert body["issues"][1]["raw"] == '"oops"'
    assert body["file"].startswith("api-batch-") and body["file"].endswith(".json")
    assert lake_count(wb) == 3

    row = client.get(f"/api/v1/cdr/files/{body['cdr_file_id']}", headers=bearer(tokens["sales"])).json()
    assert (row["file_name"], row["collector"], row["format"], row["status"]) == (
        body["file"], "api", "json-records", "imported")
    assert (row["received"], row["imported"], row["duplicates"], row["quarantined"]) == (5, 3, 0, 2)
    assert row["sha256"] == body["sha256"] and row["finished_at"] is not None and row["duration_ms"] >= 0
    with wb.db.session() as s:
        [audit] = s.scalars(select(AuditEntry).where(AuditEntry.action == "cdr.import")).all()
        assert audit.actor == "billing@bluerock.example" and audit.target_id == str(body["cdr_file_id"])


def test_same_idempotency_key_replays_the_response_and_imports_nothing_again(wb, client, tokens):
    batch = {"source": "pbx-paris", "records": [call(1), call(2), {"start": "never", "duration": 1}]}
    first = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "push-0001"))
    assert first.status_code == 201 and "idempotency-replayed" not in first.headers
    # the same request again (other whitespace and key order: the same JSON)
    again = client.post("/api/v1/cdr/batches", content=b'{"records": ' + _json(batch["records"]) +
                        b', "source": "pbx-paris"}',
                        headers={**bearer(tokens["admin"], "push-0001"), "Content-Type": "application/json"})
    assert again.status_code == 201
    assert again.headers["idempotency-replayed"] == "true"
    assert again.json() == first.json()
    assert len(ledger(wb)) == 1 and lake_count(wb) == 2
    with wb.db.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "cdr.import")) == 1
        [key] = s.scalars(select(IdempotencyKey)).all()
        assert (key.key, key.status_code, key.response["cdr_file_id"]) == ("push-0001", 201,
                                                                           first.json()["cdr_file_id"])


def _json(value) -> bytes:
    import json

    return json.dumps(value, indent=1).encode()


def test_same_key_with_another_request_is_a_422_problem(wb, client, tokens):
    h = bearer(tokens["admin"], "push-0002")
    assert client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": [call(1)]},
                       headers=h).status_code == 201
    r = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": [call(2)]}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"] == "Idempotency-Key reused with a different request"
    assert lake_count(wb) == 1


def test_without_a_key_a_resent_batch_is_deduplicated_record_by_record(wb, client, tokens):
    batch = {"source": "pbx-paris", "records": [call(1), call(2), call(3), {"start": "never", "duration": 1}]}
    first = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"])).json()
    second = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"])).json()
    assert (first["received"], first["imported"], first["duplicates"], first["quarantined"]) == (4, 3, 0, 1)
    assert (second["status"], second["received"], second["imported"], second["duplicates"], second["quarantined"]) \
        == ("imported", 4, 0, 3, 1)
    assert second["cdr_file_id"] != first["cdr_file_id"] and second["file"] == first["file"]
    assert lake_count(wb) == 3
    # the bad record is quarantined once: same file name, record number and raw text
    quarantine = client.get("/api/v1/cdr/quarantine", headers=bearer(tokens["admin"])).json()
    assert quarantine["total"] == 1
    # a batch overlapping the first one imports only what is new
    third = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": [call(3), call(4)]},
                        headers=bearer(tokens["admin"])).json()
    assert (third["imported"], third["duplicates"]) == (1, 1)
    assert lake_count(wb) == 4


def test_keys_belong_to_their_user(wb, client, tokens):
    batch = {"source": "pbx-paris", "records": [call(1)]}
    a = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "shared-key"))
    b = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["billing"], "shared-key"))
    assert a.status_code == b.status_code == 201
    assert "idempotency-replayed" not in b.headers                    # executed, not replayed
    assert (b.json()["imported"], b.json()["duplicates"]) == (0, 1)
    assert len(ledger(wb)) == 2


def test_concurrent_requests_with_one_key_execute_once(wb, client, tokens):
    batch = {"source": "pbx-paris", "records": [call(n) for n in range(40)]}
    barrier = threading.Barrier(3)
    responses = []

    def send():
        barrier.wait()
        responses.append(client.post("/api/v1/cdr/batches", json=batch,
                                     headers=bearer(tokens["admin"], "concurrent-1")))

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert sorted(r.headers.get("idempotency-replayed", "no") for r in responses) == ["no", "true", "true"]
    assert len({r.json()["cdr_file_id"] for r in responses}) == 1
    assert len(ledger(wb)) == 1 and lake_count(wb) == 40


def test_a_retry_waits_for_the_first_request_then_replays_it(wb, client, tokens, monkeypatch):
    with wb.db.session() as s:
        admin = Principal.of(s.scalar(select(User).where(User.email == "admin@bluerock.example")))
    batch = {"source": "pbx-paris", "records": [call(1)]}
    # The first request is "running": its key is reserved with this request's fingerprint.
    fingerprint = _fingerprint("/api/v1/cdr/batches", batch)
    row_id = idempotency.reserve(wb, idempotency.principal_key(admin), "slow-1", fingerprint)
    assert row_id is not None
    done = threading.Timer(0.5, idempotency.complete, (wb, row_id, 201, {"the": "first response"}))
    done.start()
    started = time.monotonic()
    r = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "slow-1"))
    assert r.status_code == 201 and r.json() == {"the": "first response"}
    assert r.headers["idempotency-replayed"] == "true" and time.monotonic() - started >= 0.4
    assert ledger(wb) == []                                           # nothing executed

    # Still running after the wait: 409, retry later.
    monkeypatch.setattr(idempotency, "WAIT_S", 0.2)
    assert idempotency.reserve(wb, idempotency.principal_key(admin), "slow-2", fingerprint) is not None
    r = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "slow-2"))
    assert r.status_code == 409 and r.headers["retry-after"] == "1"
    assert "still being processed" in r.json()["detail"]


def _fingerprint(path: str, body: dict) -> str:
    """What the server computes for a JSON POST of ``body`` to ``path`` (same function, real Request)."""
    import json

    import anyio
    from starlette.requests import Request

    data = json.dumps(body).encode()

    async def receive():
        return {"type": "http.request", "body": data, "more_body": False}

    async def compute():
        scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "root_path": "",
                 "scheme": "http", "server": ("testserver", 80), "headers": [(b"content-type", b"application/json")]}
        return await idempotency.request_fingerprint(Request(scope, receive))

    return anyio.run(compute)


def test_a_failed_request_frees_its_key(wb, client, tokens):
    batch = {"source": "pbx-lyon", "records": [call(1)]}
    r = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "retry-1"))
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert "unknown CDR source 'pbx-lyon'" in r.json()["detail"]
    with wb.db.transaction() as s:
        s.add(CdrSource(name="pbx-lyon", format="asterisk-csv"))
    r = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "retry-1"))
    assert r.status_code == 201 and "idempotency-replayed" not in r.headers and r.json()["imported"] == 1


def test_keys_expire_after_24_hours_and_stale_reservations_are_dropped(wb, client, tokens):
    batch = {"source": "pbx-paris", "records": [call(1)]}
    first = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "old-key"))
    assert first.status_code == 201
    old = dt.datetime.now(UTC) - dt.timedelta(hours=24, minutes=1)
    with wb.db.transaction() as s:
        s.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "old-key")).created_at = old
        s.add(IdempotencyKey(principal="user:999", key="crashed", request_sha256="x" * 64, status_code=0,
                             response={}, created_at=dt.datetime.now(UTC) - dt.timedelta(hours=2)))
        s.add(IdempotencyKey(principal="user:999", key="recent", request_sha256="x" * 64, status_code=201,
                             response={}, created_at=dt.datetime.now(UTC) - dt.timedelta(hours=23)))
    again = client.post("/api/v1/cdr/batches", json=batch, headers=bearer(tokens["admin"], "old-key"))
    assert again.status_code == 201 and "idempotency-replayed" not in again.headers     # executed anew
    assert (again.json()["imported"], again.json()["duplicates"]) == (0, 1)
    with wb.db.session() as s:
        assert sorted(k.key for k in s.scalars(select(IdempotencyKey))) == ["old-key", "recent"]


def test_batch_limits_are_413_problems(wb, client, tokens, monkeypatch):
    too_many = {"source": "pbx-paris", "records": [{}] * 10_001}
    r = client.post("/api/v1/cdr/batches", json=too_many, headers=bearer(tokens["admin"]))
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"] == "10,001 records in one batch; at most 10,000: split it"
    monkeypatch.setattr(cdr_api, "MAX_BATCH_BYTES", 2_000)
    big = {"source": "pbx-paris", "records": [call(n) for n in range(20)]}
    r = client.post("/api/v1/cdr/batches", json=big, headers=bearer(tokens["admin"]))
    assert r.status_code == 413 and r.json()["detail"] == "the request body is larger than 2,000 bytes"
    assert ledger(wb) == []


def test_bad_requests_are_problems(wb, client, tokens):
    h = bearer(tokens["admin"])
    r = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": "nope"}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = client.post("/api/v1/cdr/batches", json={"records": []}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "source"]
    r = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": []},
                    headers={**h, "Idempotency-Key": "bad key with spaces"})
    assert r.status_code == 400 and "Idempotency-Key must be 1 to 200 visible ASCII" in r.json()["detail"]
    with wb.db.transaction() as s:
        s.scalar(select(CdrSource).where(CdrSource.name == "pbx-paris")).enabled = False
    r = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": [call(1)]}, headers=h)
    assert r.status_code == 400 and r.json()["detail"] == "CDR source 'pbx-paris' is disabled"


# --- POST /cdr/files ----------------------------------------------------------------------------

def test_file_upload_imports_with_the_sources_format_and_replays_with_its_key(wb, client, tokens):
    def upload(key=None, **extra):
        return client.post("/api/v1/cdr/files", files={"file": ("Master.csv", GOLDEN.read_bytes(), "text/csv")},
                           data={"source": "pbx-paris", **extra}, headers=bearer(tokens["billing"], key))

    r = upload("upload-1")                       # no format: the source's (asterisk-csv)
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("file", "format", "status", "received", "imported", "duplicates", "quarantined")} \
        == {"file": "Master.csv", "format": "asterisk-csv", "status": "imported", "received": 20, "imported": 17,
            "duplicates": 1, "quarantined": 2}
    assert [(i["line"], i["reason"]) for i in body["issues"]] == [
        (13, "wrong column count: 6 (expected 16, 18 or 21)"), (14, "unparseable start time: '2026-10-32 10:00:00'")]
    # a retry (another multipart boundary, the same file and fields) is replayed
    again = upload("upload-1")
    assert again.status_code == 201 and again.headers["idempotency-replayed"] == "true" and again.json() == body
    # the same key with another format field is another request
    assert upload("upload-1", format="json-records").status_code == 422
    # without a key, the same bytes are a duplicate file: nothing imported
    dup = upload(format="asterisk-csv")
    assert (dup.status_code, dup.json()["status"], dup.json()["imported"]) == (201, "duplicate", 0)
    assert [row[:3] for row in ledger(wb)] == [("Master.csv", "api", "imported"), ("Master.csv", "api", "duplicate")]
    assert lake_count(wb) == 17


def test_gzip_upload_and_format_errors(wb, client, tokens):
    h = bearer(tokens["admin"])
    r = client.post("/api/v1/cdr/files", files={"file": ("Master.csv.gz", gzip.compress(GOLDEN.read_bytes()))},
                    data={"source": "pbx-paris", "format": "asterisk-csv"}, headers=h)
    assert r.status_code == 201 and (r.json()["file"], r.json()["imported"]) == ("Master.csv.gz", 17)
    assert ledger(wb)[0][1:3] == ("api", "imported")
    r = client.post("/api/v1/cdr/files", files={"file": ("x.csv", b"a,b\n")},
                    data={"source": "pbx-paris", "format": "cisco-cdr"}, headers=h)
    assert r.status_code == 400 and "unknown CDR format 'cisco-cdr'; known formats:" in r.json()["detail"]
    r = client.post("/api/v1/cdr/files", files={"file": ("x.json", b"[{")},
                    data={"source": "pbx-paris", "format": "json-records"}, headers=h)
    assert r.status_code == 400 and r.json()["detail"].startswith("x.json: not a JSON document (line 1, column 3")
    assert ledger(wb)[-1][2] == "failed"
    r = client.post("/api/v1/cdr/files", files={"file": ("x.csv", b"a\n")}, data={"source": "nowhere"}, headers=h)
    assert r.status_code == 404 and "unknown CDR source 'nowhere'" in r.json()["detail"]
    r = client.post("/api/v1/cdr/files", data={"source": "pbx-paris"}, headers=h)
    assert r.status_code == 422 and ["body", "file"] in [e["loc"] for e in r.json()["errors"]]


def test_upload_larger_than_the_setting_is_a_413_problem(wb, client, tokens, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_MAX_CDR_FILE_MB", "1")
    lines = GOLDEN.read_bytes().splitlines(keepends=True)[0] * 5_000            # about 1.6 MiB
    r = client.post("/api/v1/cdr/files", files={"file": ("big.csv", lines)}, data={"source": "pbx-paris"},
                    headers=bearer(tokens["admin"]))
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    assert "larger than" in r.json()["detail"]
    small = GOLDEN.read_bytes()[:900_000]
    assert client.post("/api/v1/cdr/files", files={"file": ("ok.csv", small)}, data={"source": "pbx-paris"},
                       headers=bearer(tokens["admin"])).status_code == 201
    assert [row[0] for row in ledger(wb)] == ["ok.csv"]


def test_a_source_with_a_mapping_reads_uploads_through_it(wb, client, tokens):
    mappings = Path(__file__).parent.parent / "data" / "mappings"
    h = bearer(tokens["admin"])
    r = client.post("/api/v1/cdr/sources", headers=h, json={"name": "sbc-acme", "mapping": "[format]\nname = "})
    assert r.status_code == 400 and r.json()["detail"].startswith("mapping: not valid TOML")
    r = client.post("/api/v1/cdr/sources", headers=h,
                    json={"name": "sbc-acme", "mapping": (mappings / "acme-sbc.toml").read_text()})
    assert r.status_code == 201 and r.json()["format"] == "custom"
    # no format field: the source's mapping (latin-1, semicolons, French dates)
    r = client.post("/api/v1/cdr/files", files={"file": ("acme-sbc.csv", (mappings / "acme-sbc.csv").read_bytes())},
                    data={"source": "sbc-acme"}, headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["format"], body["received"], body["imported"], body["quarantined"]) == ("acme-sbc", 8, 5, 3)
    assert [(i["line"], i["reason"]) for i in body["issues"]] == [
        (8, "wrong field count: 3 (expected 12)"), (9, "unparseable start time: '32/10/2026 12:00:00'"),
        (11, "unknown disposition: '7'")]
    # a format named in the request wins over the mapping
    r = client.post("/api/v1/cdr/files", files={"file": ("Master.csv", GOLDEN.read_bytes())},
                    data={"source": "sbc-acme", "format": "asterisk-csv"}, headers=h)
    assert (r.json()["format"], r.json()["imported"]) == ("asterisk-csv", 17)
    # the mapping goes only with a format to use instead
    r = client.patch("/api/v1/cdr/sources/sbc-acme", headers=h, json={"mapping": None})
    assert r.status_code == 400 and "reads its CDRs through its mapping: give a format" in r.json()["detail"]
    r = client.patch("/api/v1/cdr/sources/sbc-acme", headers=h, json={"format": "asterisk-csv"})
    assert (r.json()["format"], r.json()["mapping"]) == ("asterisk-csv", None)


# --- ledger, quarantine, formats, sources ---------------------------------------------------

def test_ledger_is_newest_first_with_cursor_pagination_and_filters(wb, client, tokens):
    with wb.db.transaction() as s:
        s.add(CdrSource(name="pbx-lyon", format="asterisk-csv"))
    for n, source in enumerate(["pbx-paris", "pbx-lyon", "pbx-paris"]):
        assert client.post("/api/v1/cdr/batches", json={"source": source, "records": [call(n)]},
                           headers=bearer(tokens["admin"])).status_code == 201
    h = bearer(tokens["sales"])
    page1 = client.get("/api/v1/cdr/files?limit=2", headers=h).json()
    assert [f["id"] for f in page1["items"]] == [3, 2] and page1["next_cursor"]
    page2 = client.get(f"/api/v1/cdr/files?limit=2&cursor={page1['next_cursor']}", headers=h).json()
    assert [f["id"] for f in page2["items"]] == [1] and page2["next_cursor"] is None
    lyon = client.get("/api/v1/cdr/files?source=pbx-lyon", headers=h).json()["items"]
    assert [(f["id"], f["source"]) for f in lyon] == [(2, "pbx-lyon")]
    assert client.get("/api/v1/cdr/files?status=failed", headers=h).json()["items"] == []
    r = client.get("/api/v1/cdr/files/999", headers=h)
    assert r.status_code == 404 and r.json()["detail"] == "no CDR file 999"


def test_quarantine_lists_file_line_and_reason_newest_first(wb, client, tokens):
    h = bearer(tokens["admin"])
    client.post("/api/v1/cdr/files", files={"file": ("Master.csv", GOLDEN.read_bytes())},
                data={"source": "pbx-paris"}, headers=h)
    pushed = client.post("/api/v1/cdr/batches", json={"source": "pbx-paris", "records": [
        call(1), {"start": "2026-10-05T09:00:00Z", "duration": -3}]}, headers=h).json()
    page = client.get("/api/v1/cdr/quarantine", headers=bearer(tokens["sales"])).json()
    assert page["total"] == 3 and page["offset"] == 0
    assert [(q["source_file"], q["source_line"], q["reason"]) for q in page["items"]] == [
        (pushed["file"], 2, "negative duration: '-3'"),
        ("Master.csv", 13, "wrong column count: 6 (expected 16, 18 or 21)"),
        ("Master.csv", 14, "unparseable start time: '2026-10-32 10:00:00'"),
    ]
    assert page["items"][0]["format"] == "json-records" and page["items"][0]["raw"] == \
        '{"start":"2026-10-05T09:00:00Z","duration":-3}'
    only = client.get("/api/v1/cdr/quarantine?file=Master.csv&limit=1&offset=1", headers=h).json()
    assert (only["total"], [q["source_line"] for q in only["items"]]) == (2, [14])
    assert client.get("/api/v1/cdr/quarantine?source=pbx-lyon", headers=h).json()["total"] == 0
    # a record resolved by a reprocessing leaves the list, unless asked for
    lake.write_partition(wb.lake_dir, "quarantine_resolved", "2026-11", pa.table({
        "quarantine_id": [page["items"][0]["quarantine_id"]], "outcome": ["imported"], "cdr_id": ["c1"],
        "resolved_at": pa.array([dt.datetime(2026, 11, 26, tzinfo=UTC)], lake.UTC_TS)}))
    assert client.get("/api/v1/cdr/quarantine", headers=h).json()["total"] == 2
    every = client.get("/api/v1/cdr/quarantine?include_resolved=true", headers=h).json()
    assert [q["outcome"] for q in every["items"]] == ["imported", None, None]


def test_formats_are_listed(client, tokens):
    formats = {f["name"]: f for f in client.get("/api/v1/cdr/formats", headers=bearer(tokens["sales"])).json()}
    assert formats["json-records"]["raw_kind"] == "document" and formats["json-records"]["line_based"] is False
    assert formats["asterisk-csv"]["line_based"] is True


def test_sources_are_created_listed_and_changed(wb, client, tokens):
    h = bearer(tokens["admin"])
    r = client.post("/api/v1/cdr/sources", headers=h, json={
        "name": "pbx-lyon", "format": "asterisk-csv", "url": "sftp://cdr@pbx-lyon.example:2222/var/log/cdr",
        "timezone": "Europe/Paris", "country": "fr", "options": {"password_env": "BLUEROCKTEL_CDR_PBX_LYON_PASSWORD"},
        "poll_interval_s": 60})
    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created[k] for k in ("name", "format", "url", "country", "timezone", "options", "poll_interval_s",
                                    "enabled", "last_run_at")} == {
        "name": "pbx-lyon", "format": "asterisk-csv", "url": "sftp://cdr@pbx-lyon.example:2222/var/log/cdr",
        "country": "FR", "timezone": "Europe/Paris", "options": {"password_env": "BLUEROCKTEL_CDR_PBX_LYON_PASSWORD"},
        "poll_interval_s": 60, "enabled": True, "last_run_at": None}
    with wb.db.transaction() as s:
        s.add(CdrSourceState(source_id=created["id"], cursor="Master-2026-10.csv", last_status="failed",
                             last_run_at=dt.datetime(2026, 11, 26, 8, 0, tzinfo=UTC), last_error="timed out"))
    listed = client.get("/api/v1/cdr/sources", headers=bearer(tokens["sales"])).json()
    assert [s["name"] for s in listed] == ["pbx-lyon", "pbx-paris"]
    assert (listed[0]["last_status"], listed[0]["last_error"], listed[0]["cursor"], listed[0]["last_run_at"]) == (
        "failed", "timed out", "Master-2026-10.csv", "2026-11-26T08:00:00Z")

    r = client.patch("/api/v1/cdr/sources/pbx-lyon", headers=h,
                     json={"enabled": False, "options": {"password_env": "BLUEROCKTEL_CDR_LYON_PW", "pattern": "*.csv"}})
    assert r.status_code == 200 and (r.json()["enabled"], r.json()["options"]) == (
        False, {"password_env": "BLUEROCKTEL_CDR_LYON_PW", "pattern": "*.csv"})
    assert r.json()["format"] == "asterisk-csv"
    r = client.patch("/api/v1/cdr/sources/pbx-lyon", headers=h, json={"format": "json-records", "url": None})
    assert (r.json()["format"], r.json()["url"], r.json()["enabled"]) == ("json-records", None, False)
    with wb.db.session() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.target_type == "cdr_source")
                                               .order_by(AuditEntry.id))]
        assert actions == ["cdr_source.create", "cdr_source.update", "cdr_source.update"]

    assert client.post("/api/v1/cdr/sources", headers=h, json={"name": "pbx-lyon", "format": "asterisk-csv"}
                       ).status_code == 409
    r = client.patch("/api/v1/cdr/sources/nowhere", headers=h, json={"enabled": True})
    assert r.status_code == 404 and r.json()["detail"] == "unknown CDR source 'nowhere'"
    r = client.patch("/api/v1/cdr/sources/pbx-lyon", headers=h, json={"enabled": None})
    assert r.status_code == 422 and r.json()["detail"] == "enabled cannot be null"


INVALID_SOURCES = [
    ({"name": "bad name!", "format": "asterisk-csv"}, "invalid CDR source name 'bad name!'"),
    ({"name": "x"}, "CDR source 'x' needs a format (one of "),
    ({"name": "x", "format": "cisco-cdr"}, "unknown CDR format 'cisco-cdr'; known formats: "),
    ({"name": "x", "format": "asterisk-csv", "url": "sftp://cdr:s3cret@pbx.example/cdr"},
     "the URL 'sftp://cdr:***@pbx.example/cdr' holds a password: remove it and put the password in an "
     "environment variable named by the option password_env"),
    ({"name": "x", "format": "asterisk-csv", "url": "gopher://pbx.example/cdr"}, "unknown collector URL scheme 'gopher'"),
    ({"name": "x", "format": "asterisk-csv", "timezone": "Europe/Lutece"}, "unknown time zone 'Europe/Lutece'"),
    ({"name": "x", "format": "asterisk-csv", "country": "IT"}, "no national numbering plan for country 'IT'"),
    ({"name": "x", "format": "asterisk-csv", "options": {"password": "s3cret"}},
     "option(s) 'password' would keep a secret in the database"),
    ({"name": "x", "format": "asterisk-csv", "poll_interval_s": 1}, "poll_interval_s must be a whole number of seconds"),
]


def test_invalid_sources_are_refused_with_the_reason(wb, client, tokens):
    for fields, detail in INVALID_SOURCES:
        r = client.post("/api/v1/cdr/sources", json=fields, headers=bearer(tokens["admin"]))
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, (fields, r.text)
        assert r.json()["detail"].startswith(detail), r.json()["detail"]
        assert "s3cret" not in r.text
    with wb.db.session() as s:
        assert [src.name for src in s.scalars(select(CdrSource))] == ["pbx-paris"]


# --- who may do what ----------------------------------------------------------------------------

CDR_ROUTES = [
    ("post", "/api/v1/cdr/batches"), ("post", "/api/v1/cdr/files"), ("get", "/api/v1/cdr/files"),
    ("get", "/api/v1/cdr/files/1"), ("get", "/api/v1/cdr/quarantine"), ("get", "/api/v1/cdr/formats"),
    ("get", "/api/v1/cdr/sources"), ("post", "/api/v1/cdr/sources"), ("patch", "/api/v1/cdr/sources/pbx-paris"),
]


def test_customer_tokens_get_403_everywhere(wb, client, tokens):
    for method, path in CDR_ROUTES:
        kwargs = {}
        if method != "get":
            kwargs = {"json": {"source": "pbx-paris", "records": [call(1)], "name": "x", "format": "asterisk-csv"}}
        if path.endswith("/files") and method == "post":
            kwargs = {"files": {"file": ("a.csv", GOLDEN.read_bytes())}, "data": {"source": "pbx-paris"}}
        r = getattr(client, method)(path, headers=bearer(tokens["alice"]), **kwargs)
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM, (method, path, r.status_code)
        assert "role 'customer' may not use this endpoint" in r.json()["detail"]
        assert getattr(client, method)(path).status_code == 401, (method, path)
    assert ledger(wb) == [] and lake_count(wb) == 0


def test_staff_roles(wb, client, tokens):
    push = {"source": "pbx-paris", "records": [call(1)]}
    r = client.post("/api/v1/cdr/batches", json=push, headers=bearer(tokens["sales"]))
    assert r.status_code == 403 and "(cdrs:import)" in r.json()["detail"]
    r = client.post("/api/v1/cdr/sources", json={"name": "x", "format": "asterisk-csv"},
                    headers=bearer(tokens["billing"]))
    assert r.status_code == 403 and "(cdrs:sources)" in r.json()["detail"]
    assert client.get("/api/v1/cdr/sources", headers=bearer(tokens["sales"])).status_code == 200
    assert ledger(wb) == []


def test_openapi_documents_the_cdr_routes(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/cdr/batches", "/api/v1/cdr/files", "/api/v1/cdr/files/{file_id}", "/api/v1/cdr/quarantine",
            "/api/v1/cdr/formats", "/api/v1/cdr/sources", "/api/v1/cdr/sources/{name}"} <= set(schema["paths"])
    batch = schema["paths"]["/api/v1/cdr/batches"]["post"]
    assert "201" in batch["responses"] and "413" in batch["responses"]
    upload = schema["paths"]["/api/v1/cdr/files"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
