"""Builders for rating tests: CDR, identifier and rate tables from a few keyword rows.

Imported by the tests as ``from rating_builders import ...`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa

from bluerocktel.lake import CDR_SCHEMA, connect_duckdb
from bluerocktel.rating import IDENTIFIER_SCHEMA, RATE_SCHEMA, rate_batch
from bluerocktel.rating.tariffs import Tariffs

UTC = dt.timezone.utc
RATED_AT = dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    """A UTC datetime from ``YYYY-MM-DD[ HH:MM[:SS]]``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def cdr(callee: str = "+33612345678", *, caller: str = "+33123456789", start: str = "2026-10-10 10:00",
        billsec_s: int = 60, direction: str = "out", disposition: str | None = None,
        account_code: str = "", channel: str = "SIP/pbx-00000001", line: int = 1) -> dict:
    """One normalized CDR; answered when ``billsec_s > 0`` unless ``disposition`` says otherwise."""
    start_at = at(start)
    disposition = disposition or ("ANSWERED" if billsec_s > 0 else "NO ANSWER")
    answered = disposition == "ANSWERED"
    return {
        "cdr_id": hashlib.sha256(f"test|{line}|{start}|{caller}|{callee}".encode()).hexdigest()[:32],
        "source": "test", "source_file": "test.csv", "source_line": line,
        "start_at": start_at, "answer_at": start_at if answered else None,
        "end_at": start_at + dt.timedelta(seconds=billsec_s + 5),
        "duration_s": billsec_s + 5, "billsec_s": billsec_s,
        "caller": caller, "callee": callee, "account_code": account_code, "channel": channel,
        "dst_channel": "SIP/carrier-00000002", "disposition": disposition, "direction": direction,
        "call_type": "voice", "unique_id": f"u{line}",
    }


def cdr_table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist([dict(row, source_line=i) for i, row in enumerate(rows, 1)], schema=CDR_SCHEMA)


def identifier(value: str = "+33123456789", *, kind: str = "number", service_id: int = 1, account_id: int = 10,
               rate_deck_id: int | None = 100, valid_from: str = "2026-01-01", valid_to: str | None = None,
               identifier_id: int | None = None) -> dict:
    return {"identifier_id": identifier_id, "service_id": service_id, "account_id": account_id,
            "rate_deck_id": rate_deck_id, "kind": kind, "value": value, "valid_from": at(valid_from),
            "valid_to": at(valid_to) if valid_to else None}


def identifier_table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist([dict(r, identifier_id=r["identifier_id"] or i) for i, r in enumerate(rows, 1)],
                                schema=IDENTIFIER_SCHEMA)


def rate(prefix: str, per_minute_micro: int, *, rate_id: int | None = None, deck_id: int = 100,
         increments: tuple[int, int] = (60, 60), connection_fee_micro: int = 0,
         valid_from: str = "2026-01-01", destination: str | None = None, zone: str = "world") -> dict:
    return {"rate_id": rate_id, "deck_id": deck_id, "prefix": prefix, "destination": destination or f"dest {prefix}",
            "zone": zone, "price_per_minute_micro": per_minute_micro, "connection_fee_micro": connection_fee_micro,
            "first_increment_s": increments[0], "next_increment_s": increments[1], "valid_from": at(valid_from)}


def rate_table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist([dict(r, rate_id=r["rate_id"] or i) for i, r in enumerate(rows, 1)],
                                schema=RATE_SCHEMA)


def rate_rows(cdrs: pa.Table, identifiers: pa.Table, rates: pa.Table) -> list[dict]:
    """Rate with a fresh DuckDB connection; the rated rows as dicts, in CDR order."""
    con = connect_duckdb()
    try:
        return rate_batch(con, cdrs, Tariffs(identifiers, rates, "test"), RATED_AT).to_pylist()
    finally:
        con.close()
