"""Kernel v2 against an independent pure-Python exact reference, plus properties (hypothesis).

The reference below re-implements the rating rules of one call the slow, obvious way: it lists
every increment, finds the band at its start instant from the local wall time (zoneinfo and
the ``holidays`` package, no precomputed calendar), prices it with exact fractions (a
per-minute price over a 10 s increment is a repeating decimal) and rounds them by hand. The
kernel must agree on every random plan and call.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
import math
from fractions import Fraction
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rating_builders import (
    RATED_AT,
    band,
    cdr,
    cdr_table,
    deck,
    identifier,
    identifier_table,
    rate,
    rate_table,
    tariffs,
)

from bluerocktel.lake import connect_duckdb
from bluerocktel.rating import rate_batch

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ROUNDING = ("down", "half_up", "up")
BAND_SETS = {
    "none": [],
    "peak": [band("peak", "mon,tue,wed,thu,fri", "08:00", "19:00", priority=1),
             band("offpeak", "mon,tue,wed,thu,fri"), band("weekend", "sat,sun,hol", priority=2)],
    "night": [band("night", "mon,tue,wed,thu,fri,sat,sun", "00:00", "06:00", priority=1),
              band("day", "mon,tue,wed,thu,fri,sat,sun", "06:00", "24:00"),
              band("late", "sun", "02:30", "03:30", priority=5)],
}
# windows around the interesting instants: DST spring and autumn nights, 14 July, a Friday evening
WINDOWS = [(dt.datetime(2026, 3, 28, 22, tzinfo=dt.timezone.utc), 8 * 3600),
           (dt.datetime(2026, 7, 13, 15, tzinfo=dt.timezone.utc), 34 * 3600),
           (dt.datetime(2026, 10, 9, 15, tzinfo=dt.timezone.utc), 12 * 3600),
           (dt.datetime(2026, 10, 24, 22, tzinfo=dt.timezone.utc), 8 * 3600)]
INCREMENTS = [(60, 60), (30, 6), (1, 1), (60, 10), (0, 1), (0, 60), (45, 15)]


@dataclass(frozen=True)
class Row:
    rate_id: int
    band: str
    group_start: int
    price: int          # micro per 60 s
    fee: int
    first: int
    next: int
    min_charge: int
    max_cost: int | None
    action: str | None


# -- the reference ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _is_holiday(day: dt.date) -> bool:
    return day in holidays.country_holidays("FR", years=day.year)


def band_at(band_set: str, calendar: bool, instant: dt.datetime) -> str:
    # bands change on whole local minutes and Paris is a whole number of hours from UTC
    return _band_at_minute(band_set, calendar, instant.replace(second=0, microsecond=0))


@lru_cache(maxsize=100_000)
def _band_at_minute(band_set: str, calendar: bool, instant: dt.datetime) -> str:
    local = instant.astimezone(PARIS)
    minute = local.hour * 60 + local.minute
    day, holiday = WEEKDAYS[local.weekday()], calendar and _is_holiday(local.date())
    matching = [b for b in BAND_SETS[band_set]
                if (day in b["days"] or (holiday and "hol" in b["days"])) and b["start_minute"] <= minute < b["end_minute"]]
    return max(matching, key=lambda b: (b["priority"], [-ord(c) for c in b["name"]]))["name"] if matching else ""


def rounded(amount: Fraction, decimals: int, method: str) -> Fraction:
    """``amount`` (exact, >= 0) rounded to ``decimals`` with ``method``."""
    scaled = amount * 10 ** decimals
    whole = {"down": math.floor(scaled), "up": math.ceil(scaled), "half_up": math.floor(scaled + Fraction(1, 2))}[method]
    return Fraction(whole, 10 ** decimals)


def reference(rows: list[Row], band_set: str, calendar: bool, rounding: tuple, answer: dt.datetime, q: int) -> dict:
    """What one voice call of ``q`` seconds answered at ``answer`` costs; prices per 60 s."""
    def rows_of(name: str) -> list[Row] | None:
        return [r for r in rows if r.band == name] or [r for r in rows if r.band == ""] or None

    method, decimals, inc_method, inc_decimals = rounding
    start_rows = rows_of(band_at(band_set, calendar, answer))
    if start_rows is None:
        return {"status": "unrated"}
    groups = sorted(start_rows, key=lambda r: r.group_start)
    increments = []     # (offset, size, group index)
    for g, row in enumerate(groups):
        s, end = row.group_start, (groups[g + 1].group_start if g + 1 < len(groups) else None)
        u = (max(q, s) if end is None else min(max(q, s), end)) - s
        if u == 0:
            continue
        if g == 0:
            billed = row.first if u <= row.first else row.first + -(-(u - row.first) // row.next) * row.next
            offset = 0
            if row.first > 0:
                increments.append((0, row.first, 0))
                offset = row.first
        else:
            billed = -(-u // row.next) * row.next
            offset = s
        while offset < s + billed:
            increments.append((offset, row.next, g))
            offset += row.next
    increments.sort(key=lambda inc: (inc[0], inc[2]))
    first = groups[0]
    exact = Fraction(first.fee, 1_000_000)
    charged = exact
    segments: list[list] = []            # [band, rate_id, units, increments]
    for offset, size, g in increments:
        band_rows = rows_of(band_at(band_set, calendar, answer + dt.timedelta(seconds=offset)))
        if band_rows is None:
            return {"status": "unrated"}
        row = max((r for r in band_rows if r.group_start <= groups[g].group_start), key=lambda r: r.group_start)
        cost = Fraction(row.price * size, 60 * 1_000_000)
        exact += cost
        charged += rounded(cost, inc_decimals, inc_method) if inc_method else cost
        if segments and segments[-1][1] == row.rate_id:
            segments[-1][2] += size
            segments[-1][3] += 1
        else:
            segments.append([row.band, row.rate_id, size, 1])
    price = rounded(charged, decimals, method)
    if 0 < price < Fraction(first.min_charge, 1_000_000):
        price = Fraction(first.min_charge, 1_000_000)
    if first.max_cost is not None and price > Fraction(first.max_cost, 1_000_000) and first.action == "cap":
        price = Fraction(first.max_cost, 1_000_000)
    bands = list(dict.fromkeys(s[0] for s in segments))
    return {"status": "rated", "units": sum(size for _, size, _ in increments),
            "price_micro": int(price * 1_000_000),
            "unrounded_pico": math.floor(exact * 10 ** 12 + Fraction(1, 2)),
            "band": "+".join(bands),
            "segments": [(s[0], s[1], s[2], s[3]) for s in segments] if len(segments) > 1 else None}


# -- strategies --------------------------------------------------------------------------------

@st.composite
def plans(draw, max_cost: bool = True):
    band_set = draw(st.sampled_from(sorted(BAND_SETS)))
    names = [b["name"] for b in BAND_SETS[band_set]]
    priced_bands = draw(st.lists(st.sampled_from([""] + names), min_size=1, max_size=len(names) + 1, unique=True))
    rows, rate_id = [], 1
    for name in priced_bands:
        starts = [0] + draw(st.lists(st.sampled_from([30, 60, 120, 300]), max_size=2, unique=True))
        edge, step = 0, 1     # a group starts on an increment boundary of the one before (load_tariffs refuses others)
        for start in sorted(starts):
            if start < edge or (start - edge) % step:
                continue
            first, nxt = draw(st.sampled_from(INCREMENTS))
            edge, step = (first if start == 0 else start), nxt
            capped = max_cost and start == 0 and draw(st.booleans())
            rows.append(Row(rate_id, name, start, draw(st.integers(0, 3_000_000)),
                            draw(st.sampled_from([0, 15_000, 400_000])) if start == 0 else 0,
                            first, nxt, draw(st.sampled_from([0, 0, 50_000])) if start == 0 else 0,
                            draw(st.integers(0, 2_000_000)) if capped else None,
                            draw(st.sampled_from(["cap", "disconnect"])) if capped else None))
            rate_id += 1
    method = draw(st.sampled_from(sorted(ROUNDING)))
    increment_method = draw(st.sampled_from([None, "up", "half_up", "down"]))
    rounding = (method, draw(st.integers(0, 6)), increment_method,
                draw(st.integers(0, 6)) if increment_method else None)
    return rows, band_set, draw(st.booleans()), rounding


calls = st.tuples(st.integers(0, len(WINDOWS) - 1), st.integers(0, 10 ** 9), st.integers(1, 3_000))


def kernel_rows(rows, band_set, calendar, rounding, cdrs, reverse: bool = False) -> list[dict]:
    """Rate ``cdrs`` with the plan (``reverse``: in reverse order, results put back in order)."""
    rates = rate_table(*(rate("33", r.price, rate_id=r.rate_id, band=r.band, group_start=r.group_start,
                              increments=(r.first, r.next), connection_fee_micro=r.fee,
                              min_charge_micro=r.min_charge, max_cost_micro=r.max_cost, max_cost_action=r.action)
                         for r in rows))
    decks = [deck(100, rounding=rounding[0], decimals=rounding[1], increment_rounding=rounding[2],
                  increment_decimals=rounding[3], holidays="FR" if calendar else None)]
    table = cdr_table(*cdrs)
    if reverse:
        table = table.take(list(range(table.num_rows))[::-1])
    con = connect_duckdb()
    try:
        rated = rate_batch(con, table, tariffs(identifier_table(identifier()), rates, decks=decks,
                                               bands=BAND_SETS[band_set]), RATED_AT).to_pylist()
    finally:
        con.close()
    return rated[::-1] if reverse else rated


def answer_time(window: int, offset: int) -> dt.datetime:
    start, length = WINDOWS[window]
    return start + dt.timedelta(seconds=offset % length)


# -- the properties ------------------------------------------------------------------------------

@given(plan=plans(), drawn=st.lists(calls, min_size=1, max_size=10))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_kernel_agrees_with_the_decimal_reference(plan, drawn):
    rows, band_set, calendar, rounding = plan
    answers = [(answer_time(w, o), q) for w, o, q in drawn]
    cdrs = [cdr("+33145678901", start=a.strftime("%Y-%m-%d %H:%M:%S"), billsec_s=q, line=i)
            for i, (a, q) in enumerate(answers)]
    got = kernel_rows(rows, band_set, calendar, rounding, cdrs)
    for (answer, q), row in zip(answers, got, strict=True):
        want = reference(rows, band_set, calendar, rounding, answer, q)
        context = f"answered {answer.isoformat()} for {q} s"
        assert row["rating_status"] == want["status"], context
        if want["status"] != "rated":
            assert row["price_micro"] is None
            continue
        assert (row["billable_units"], row["price_micro"], row["unrounded_pico"], row["band"]) == (
            want["units"], want["price_micro"], want["unrounded_pico"], want["band"]), context
        segments = None if row["segments"] is None else [
            (s["band"], s["rate_id"], s["units"], s["increments"]) for s in json.loads(row["segments"])]
        assert segments == want["segments"], context
        if segments:
            assert sum(s[2] for s in segments) == row["billable_units"]     # a split adds up to the whole
            assert "band_split" in row["flags"]


@given(plan=plans(max_cost=False), window=st.integers(0, len(WINDOWS) - 1), offset=st.integers(0, 10 ** 9),
       durations=st.lists(st.integers(1, 5_000), min_size=2, max_size=12, unique=True))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_price_never_decreases_with_duration(plan, window, offset, durations):
    rows, band_set, calendar, rounding = plan
    start = answer_time(window, offset).strftime("%Y-%m-%d %H:%M:%S")
    durations.sort()
    got = kernel_rows(rows, band_set, calendar, rounding,
                      [cdr("+33145678901", start=start, billsec_s=q, line=i) for i, q in enumerate(durations)])
    prices = [r["price_micro"] for r in got if r["rating_status"] == "rated"]
    units = [r["billable_units"] for r in got if r["rating_status"] == "rated"]
    assert prices == sorted(prices) and units == sorted(units)


@given(plan=plans(), drawn=st.lists(calls, min_size=1, max_size=10))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rating_twice_gives_the_same_rows(plan, drawn):
    rows, band_set, calendar, rounding = plan
    cdrs = [cdr("+33145678901", start=answer_time(w, o).strftime("%Y-%m-%d %H:%M:%S"), billsec_s=q, line=i)
            for i, (w, o, q) in enumerate(drawn)]
    first = kernel_rows(rows, band_set, calendar, rounding, cdrs)
    again = kernel_rows(rows, band_set, calendar, rounding, cdrs, reverse=True)   # other order, new tariffs
    assert [dict(r, rated_at=None) for r in first] == [dict(r, rated_at=None) for r in again]
