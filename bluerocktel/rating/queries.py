"""Rated CDRs read back from the lake: one CDR's trace with its rating history, and pages of a
month's rated CDRs. The REST API (:mod:`bluerocktel.api.rating`) and the staff app
(:class:`bluerocktel.portal.StaffStore`) present what these return.

A CDR may be rated several times (re-rating, unrated reprocessing); the rating with the latest
``rated_at`` is the truth, as billing reads it (:mod:`bluerocktel.billing.usage`). Earlier
ratings are the CDR's ``history``.

Money leaves as Decimal strings of the deck's currency, exact: ``price``, ``cost`` and
``margin`` from the integer micro units of the lake (``*_micro``, 1e-6), ``amount_precise`` and
each segment's ``amount_precise`` from the 1e-12 units of the trace (``*_pico``): the amount
before any rounding, minimum charge, maximum cost or bundle. Trace columns of the lake
(:data:`bluerocktel.lake.RATED_SCHEMA`) keep their names; ``segments`` is parsed from its JSON
and ``flags`` split into a list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from bluerocktel.errors import UserFacingError
from bluerocktel.lake import connect_duckdb, scan_sql
from bluerocktel.money import from_micro
from bluerocktel.rating.pending import check_months
from bluerocktel.vocabulary import RatingFlag, RatingStatus

# Money columns of the lake and the Decimal-string field each becomes.
_MICRO_FIELDS = {"price_micro": "price", "cost_micro": "cost", "margin_micro": "margin"}
_PICO_FIELDS = {"unrounded_pico": "amount_precise"}

# Flags about the buy side: a customer never sees them (nor the cost, the margin, the buy deck).
BUY_SIDE_FLAGS = frozenset({RatingFlag.NEGATIVE_MARGIN.value, RatingFlag.NO_COST.value})
BUY_SIDE_FIELDS = ("cost_deck_id", "cost_deck_code", "cost_currency", "cost_rate_id", "cost", "margin",
                   "dst_channel")

# Columns of a row of :func:`rated_cdrs` (before the money columns become Decimal strings).
LIST_COLUMNS = ("cdr_id", "start_at", "account_id", "service_id", "caller", "callee", "direction", "call_type",
                "billsec_s", "units", "billable_units", "prefix", "destination", "zone", "band", "price_micro",
                "cost_micro", "margin_micro", "bundle_units", "flags", "rating_status", "rating_reason",
                "tariff_version", "rated_at")


@dataclass(frozen=True)
class RatedPage:
    """One page of a month's rated CDRs (latest rating of each), newest call first.
    ``has_more``: a next page exists. (No total: counting the latest ratings of a month means
    deduplicating all its CDRs, seconds for 10M on 2 cores, where a page costs a top-N scan.)"""

    rows: list[dict]
    offset: int
    limit: int
    month: str
    has_more: bool


def check_month(month: str) -> str:
    """``month`` when it is ``YYYY-MM`` (a lake partition name); UserFacingError otherwise."""
    check_months([month])
    return month


def check_status(status: str | None) -> str | None:
    """``status`` when None or a :class:`RatingStatus` value; UserFacingError otherwise."""
    if status is None or status == "":
        return None
    known = [s.value for s in RatingStatus]
    if status not in known:
        raise UserFacingError(f"unknown rating status {status!r}; known: {', '.join(known)}")
    return status


def micro_text(micro: int | None) -> str | None:
    """Micro units (1e-6) as an exact decimal string (``12345`` → ``'0.012345'``); None stays None."""
    return None if micro is None else format(from_micro(micro), "f")


def pico_text(pico: int | None) -> str | None:
    """Pico units (1e-12) as an exact decimal string; None stays None."""
    return None if pico is None else format(Decimal(int(pico)).scaleb(-12), "f")


def rated_cdr(lake_dir: Path, cdr_id: str, months: list[str] | None = None) -> dict | None:
    """The latest rating of ``cdr_id`` with every trace column, and ``history``: its earlier
    ratings, newest first (``rated_at``, ``rating_status``, ``price``, ``tariff_version``).
    None when the lake has no rating of that CDR. ``months`` narrows the scan (the CDR's month
    when known); by default every month is read."""
    con = connect_duckdb()
    try:
        cursor = con.execute(f"SELECT * FROM {scan_sql(lake_dir, 'rated', months)} WHERE cdr_id = ? "
                             "ORDER BY rated_at DESC NULLS LAST", [cdr_id])
        names = [d[0] for d in cursor.description]
        ratings = [dict(zip(names, values)) for values in cursor.fetchall()]
    finally:
        con.close()
    if not ratings:
        return None
    trace = trace_of(ratings[0])
    trace["history"] = [{"rated_at": r["rated_at"], "rating_status": r["rating_status"], "account_id": r["account_id"],
                         "price": micro_text(r["price_micro"]), "tariff_version": r["tariff_version"]}
                        for r in ratings[1:]]
    return trace


def trace_of(row: dict) -> dict:
    """A lake ``rated`` row as a trace: money as Decimal strings, ``segments`` parsed (None when
    all increments used one rate row), ``flags`` and ``bands`` as lists."""
    out = {}
    for name, value in row.items():
        if name in _MICRO_FIELDS:
            out[_MICRO_FIELDS[name]] = micro_text(value)
        elif name in _PICO_FIELDS:
            out[_PICO_FIELDS[name]] = pico_text(value)
        else:
            out[name] = value
    out["flags"] = split_flags(row.get("flags"))
    out["bands"] = [b for b in (row.get("band") or "").split("+") if b]
    out["segments"] = parse_segments(row.get("segments"))
    return out


def split_flags(flags: str | None) -> list[str]:
    return [f for f in (flags or "").split(",") if f]


def parse_segments(text: str | None) -> list[dict] | None:
    """The segments JSON of a trace as a list of dicts, each with ``amount_precise`` (a Decimal
    string) beside its ``amount_pico``; None when the trace has no segments."""
    if text is None or text == "":
        return None
    segments = json.loads(text)
    if not isinstance(segments, list):
        raise ValueError(f"segments of a rated CDR must be a JSON array, not {text[:80]!r}")
    return [{**seg, "amount_precise": pico_text(seg.get("amount_pico"))} for seg in segments]


def hide_buy_side(trace: dict) -> dict:
    """What a customer may see of a trace (or a list row): no cost, margin, buy deck, buy rate or
    carrier trunk (``dst_channel``), no buy-side flag (negative_margin, no_cost), and no earlier
    rating that belonged to another account (a re-rating may have moved the call). Returns a
    new dict."""
    out = {**trace, **{name: None for name in BUY_SIDE_FIELDS if name in trace}}
    if "history" in trace:
        out["history"] = [h for h in trace["history"] if h.get("account_id") == trace.get("account_id")]
    out["flags"] = [f for f in trace.get("flags", []) if f not in BUY_SIDE_FLAGS]
    return out


def rated_cdrs(lake_dir: Path, *, month: str, account_id: int | None = None, status: str | None = None,
               limit: int = 50, offset: int = 0) -> RatedPage:
    """A page of ``month``'s rated CDRs, latest rating of each, newest call first (then by
    ``cdr_id``), optionally of one account and one rating status (of that latest rating).
    UserFacingError for a month not ``YYYY-MM``, an unknown status or a limit below 1.

    Without deduplicating the whole month: the newest ``fetch`` ratings matching the filters are
    candidates (a top-N scan), the ratings of those CDRs are read (bounded by their calls'
    ``start_at``, which all ratings of a CDR share) and the latest of each is kept when it still
    matches. Every latest rating that matches and sorts before the last candidate is found this
    way, so when fewer than the page come back the window grows (×4) until the page is full or
    the month has no more candidates.
    """
    month = check_month(month)
    status = check_status(status)
    if limit < 1:
        raise UserFacingError(f"limit must be at least 1, not {limit}")
    offset = max(0, int(offset))
    source = scan_sql(lake_dir, "rated", [month])
    conditions, params = ["true"], []
    if account_id is not None:
        conditions.append("account_id = ?")
        params.append(int(account_id))
    if status is not None:
        conditions.append("rating_status = ?")
        params.append(status)
    where = " AND ".join(conditions)
    want = offset + limit + 1                        # one more than the page: is there a next one?
    fetch = want
    con = connect_duckdb()
    try:
        while True:
            candidates = con.execute(f"SELECT cdr_id, start_at FROM {source} WHERE {where} "
                                     "ORDER BY start_at DESC, cdr_id LIMIT ?", params + [fetch]).fetchall()
            rows = _latest_matching(con, source, candidates, where, params)
            if len(rows) >= want or len(candidates) < fetch:
                break
            fetch *= 4
    finally:
        con.close()
    page = [list_row(row) for row in rows[offset:offset + limit]]
    return RatedPage(page, offset, limit, month, has_more=len(rows) > offset + limit)


def _latest_matching(con, source: str, candidates: list[tuple], where: str, params: list) -> list[dict]:
    """The latest rating of each candidate CDR (``(cdr_id, start_at)`` pairs) when it matches
    ``where``, newest call first, as :data:`LIST_COLUMNS` dicts."""
    if not candidates:
        return []
    starts = [start for _, start in candidates]
    bounds, bound_params = "true", []
    if None not in starts:                           # lets the scan skip row groups by start_at
        bounds, bound_params = "start_at BETWEEN ? AND ?", [min(starts), max(starts)]
    cursor = con.execute(f"""
        SELECT * FROM (
            SELECT {', '.join(LIST_COLUMNS)} FROM {source}
            WHERE {bounds} AND cdr_id IN (SELECT unnest(CAST(? AS VARCHAR[])))
            QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1)
        WHERE {where}
        ORDER BY start_at DESC, cdr_id""", bound_params + [sorted({cdr_id for cdr_id, _ in candidates})] + params)
    return [dict(zip(LIST_COLUMNS, values)) for values in cursor.fetchall()]


def list_row(row: dict) -> dict:
    """A row of :func:`rated_cdrs`: money as Decimal strings, flags as a list."""
    out = {(_MICRO_FIELDS.get(name, name)): (micro_text(value) if name in _MICRO_FIELDS else value)
           for name, value in row.items()}
    out["flags"] = split_flags(row.get("flags"))
    return out


def add_deck_codes(db, trace: dict) -> dict:
    """``trace`` with ``rate_deck_code`` and ``currency`` (of ``price``: the pricing deck's),
    ``cost_deck_code`` and ``cost_currency`` (of ``cost``: the buy deck's), read from the system
    of record ``db`` (:class:`bluerocktel.db.Database`); None where the trace has no such deck.
    ``margin`` is meaningful only when both currencies are the same."""
    from sqlalchemy import select

    from bluerocktel.db.models import RateDeck

    ids = {i for i in (trace.get("rate_deck_id"), trace.get("cost_deck_id")) if i is not None}
    decks = {}
    if ids:
        with db.session() as s:
            decks = {d.id: (d.code, d.currency) for d in s.scalars(select(RateDeck).where(RateDeck.id.in_(ids)))}
    sell = decks.get(trace.get("rate_deck_id"), (None, None))
    buy = decks.get(trace.get("cost_deck_id"), (None, None))
    return {**trace, "rate_deck_code": sell[0], "currency": sell[1], "cost_deck_code": buy[0],
            "cost_currency": buy[1]}
