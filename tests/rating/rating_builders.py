"""Builders for rating tests: CDR, identifier, deck, rate, band and trunk tables from a few keyword rows.

Imported by the tests as ``from rating_builders import ...`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa

from bluerocktel.lake import CDR_SCHEMA, connect_duckdb
from bluerocktel.rating import IDENTIFIER_SCHEMA, RATE_SCHEMA, rate_batch
from bluerocktel.rating.tariffs import BAND_SCHEMA, DECK_SCHEMA, TRUNK_SCHEMA, Tariffs, build_tariffs

UTC = dt.timezone.utc
RATED_AT = dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    """A UTC datetime from ``YYYY-MM-DD[ HH:MM[:SS]]``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def cdr(callee: str = "+33612345678", *, caller: str = "+33123456789", start: str = "2026-10-10 10:00",
        billsec_s: int = 60, direction: str = "out", disposition: str | None = None,
        account_code: str = "", channel: str = "SIP/pbx-00000001", dst_channel: str = "SIP/carrier-00000002",
        call_type: str = "voice", units: int = 0, ring_s: int = 0, line: int = 1) -> dict:
    """One normalized CDR (start = ``start`` UTC, answered ``ring_s`` later); answered when
    ``billsec_s > 0`` (voice) or ``units > 0`` (sms, data) unless ``disposition`` says otherwise."""
    start_at = at(start)
    quantity = billsec_s if call_type == "voice" else units
    disposition = disposition or ("ANSWERED" if quantity > 0 else "NO ANSWER")
    answered = disposition == "ANSWERED"
    if call_type != "voice":
        billsec_s = 0
    return {
        "cdr_id": hashlib.sha256(f"test|{line}|{start}|{caller}|{callee}|{quantity}".encode()).hexdigest()[:32],
        "source": "test", "source_file": "test.csv", "source_line": line,
        "start_at": start_at, "answer_at": start_at + dt.timedelta(seconds=ring_s) if answered else None,
        "end_at": start_at + dt.timedelta(seconds=ring_s + billsec_s),
        "duration_s": ring_s + billsec_s, "billsec_s": billsec_s,
        "caller": caller, "callee": callee, "account_code": account_code, "channel": channel,
        "dst_channel": dst_channel, "disposition": disposition, "direction": direction,
        "call_type": call_type, "units": units, "unique_id": f"u{line}",
    }


def cdr_table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist([dict(row, source_line=i) for i, row in enumerate(rows, 1)], schema=CDR_SCHEMA)


def identifier(value: str = "+33123456789", *, kind: str = "number", service_id: int = 1, account_id: int = 10,
               rate_deck_id: int | None = 100, valid_from: str = "2026-01-01", valid_to: str | None = None,
               identifier_id: int | None = None, timezone: str = "Europe/Paris") -> dict:
    return {"identifier_id": identifier_id, "service_id": service_id, "account_id": account_id,
            "rate_deck_id": rate_deck_id, "kind": kind, "value": value, "valid_from": at(valid_from),
            "valid_to": at(valid_to) if valid_to else None, "timezone": timezone}


def identifier_table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist([dict(r, identifier_id=r["identifier_id"] or i) for i, r in enumerate(rows, 1)],
                                schema=IDENTIFIER_SCHEMA)


def deck(deck_id: int = 100, *, code: str | None = None, kind: str = "sell", rounding: str = "half_up",
         decimals: int = 6, increment_rounding: str | None = None, increment_decimals: int | None = None,
         fallback: int | None = None, holidays: str | None = None) -> dict:
    return {"deck_id": deck_id, "code": code or f"D{deck_id}", "kind": kind, "currency": "EUR",
            "rounding_method": rounding, "rounding_decimals": decimals,
            "increment_rounding_method": increment_rounding, "increment_rounding_decimals": increment_decimals,
            "fallback_deck_id": fallback, "holiday_calendar": holidays}


def rate(prefix: str, price_micro: int, *, rate_id: int | None = None, deck_id: int = 100,
         increments: tuple[int, int] = (60, 60), unit_size: int = 60, connection_fee_micro: int = 0,
         band: str = "", group_start: int = 0, call_type: str = "voice", min_charge_micro: int = 0,
         max_cost_micro: int | None = None, max_cost_action: str | None = None,
         valid_from: str = "2026-01-01", valid_to: str | None = None, destination: str | None = None,
         zone: str = "world") -> dict:
    """One rate row; ``price_micro`` per ``unit_size`` base units (default 60: per minute)."""
    return {"rate_id": rate_id, "deck_id": deck_id, "call_type": call_type, "prefix": prefix,
            "destination": destination or f"dest {prefix}", "zone": zone, "band": band, "group_start": group_start,
            "price_micro": price_micro, "unit_size": unit_size, "connection_fee_micro": connection_fee_micro,
            "first_increment": increments[0], "next_increment": increments[1], "min_charge_micro": min_charge_micro,
            "max_cost_micro": max_cost_micro, "max_cost_action": max_cost_action, "valid_from": at(valid_from),
            "valid_to": at(valid_to) if valid_to else None}


def rate_table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist([dict(r, rate_id=r["rate_id"] or i) for i, r in enumerate(rows, 1)],
                                schema=RATE_SCHEMA)


def band(name: str, days: str, start: str = "00:00", end: str = "24:00", *, deck_id: int = 100,
         priority: int = 0) -> dict:
    """A time band: ``days`` comma-separated (mon..sun, hol), local ``[start, end)`` as HH:MM."""
    def minute(text: str) -> int:
        hours, minutes = text.split(":")
        return int(hours) * 60 + int(minutes)
    return {"deck_id": deck_id, "name": name, "days": days.split(","), "start_minute": minute(start),
            "end_minute": minute(end), "priority": priority}


# The usual peak / off-peak / weekend calendar: peak on weekdays 08:00-19:00, off-peak the other
# weekday hours, weekend all Saturday, Sunday and French public holidays (priority over the rest).
def peak_offpeak_weekend(deck_id: int = 100) -> list[dict]:
    return [band("peak", "mon,tue,wed,thu,fri", "08:00", "19:00", deck_id=deck_id, priority=1),
            band("offpeak", "mon,tue,wed,thu,fri", deck_id=deck_id, priority=0),
            band("weekend", "sat,sun,hol", deck_id=deck_id, priority=2)]


def trunk(prefix: str = "SIP/carrier", deck_id: int = 900, *, trunk_id: int | None = None,
          valid_from: str = "2026-01-01", valid_to: str | None = None) -> dict:
    return {"trunk_id": trunk_id, "deck_id": deck_id, "trunk": prefix, "valid_from": at(valid_from),
            "valid_to": at(valid_to) if valid_to else None}


def tariffs(identifiers: pa.Table, rates: pa.Table, *, decks: list[dict] | None = None,
            bands: list[dict] | None = None, trunks: list[dict] | None = None) -> Tariffs:
    """Tariffs from test tables; decks not given get the defaults of :func:`deck` (half_up, 6 dp)."""
    decks = list(decks or [])
    given = {d["deck_id"] for d in decks}
    used = set(rates["deck_id"].to_pylist()) | {d for d in identifiers["rate_deck_id"].to_pylist() if d is not None}
    used |= {t["deck_id"] for t in trunks or []}
    decks += [deck(d) for d in sorted(used - given)]
    trunk_rows = [dict(t, trunk_id=t["trunk_id"] or i) for i, t in enumerate(trunks or [], 1)]
    return build_tariffs(identifiers, pa.Table.from_pylist(decks, schema=DECK_SCHEMA), rates,
                         pa.Table.from_pylist(bands or [], schema=BAND_SCHEMA),
                         pa.Table.from_pylist(trunk_rows, schema=TRUNK_SCHEMA))


def rate_rows(cdrs: pa.Table, identifiers: pa.Table, rates: pa.Table, **tables) -> list[dict]:
    """Rate with a fresh DuckDB connection; the rated rows as dicts, in CDR order. ``tables``:
    the keyword arguments of :func:`tariffs` (decks, bands, trunks)."""
    con = connect_duckdb()
    try:
        return rate_batch(con, cdrs, tariffs(identifiers, rates, **tables), RATED_AT).to_pylist()
    finally:
        con.close()
