"""Anomaly alerts over rated traffic: high-cost spikes (IRSF), very long calls, off-hours bursts.

:func:`find_anomalies` reads the lake's ``rated`` dataset with DuckDB (set-based; no per-CDR
Python) and returns :class:`Anomaly` values, one per account and window (or per call for long
calls). Only the latest rating of each ``cdr_id`` counts (highest ``rated_at``), so a re-rated
call counts once. The traffic considered is the paying account's answered outbound voice calls
(``direction = 'out'``, ``billsec_s > 0``) whose ``start_at`` lies in ``[since, until)``.

Windows are fixed, ``anomaly_window_minutes`` long, aligned on UTC multiples of their length
(the hour by default); a window cut by ``since`` or ``until`` counts only the calls inside the
range and reports the cut bounds.

Detectors (thresholds are settings, :mod:`bluerocktel.settings`):

``high_cost_spike`` (the IRSF pattern)
    A call is *high-cost* when the rate that priced it (``rate_id``, read from the ``rates``
    table) costs at least ``anomaly_high_cost_per_minute`` per minute (price × 60 / unit_size),
    or when its ``zone`` is listed in ``anomaly_high_risk_zones``. Per account and window, the
    high-cost calls, minutes and amount (``price_micro``) are compared with a threshold each:
    the larger of the absolute floor (``anomaly_spike_calls``, ``anomaly_spike_minutes``,
    ``anomaly_spike_amount``) and ``anomaly_spike_factor`` × the account's baseline, the median
    of the same window on each of the previous 7 days (a day without such calls counts 0, so a
    new account is held to the floor). The window is flagged when any of the three is *more
    than* its threshold.
``long_call``
    One per call with ``billsec_s`` more than ``anomaly_long_call_s``.
``off_hours_burst``
    Per account and window, more than ``anomaly_off_hours_calls`` calls started outside business
    hours in the account's time zone (``accounts.timezone``): outside the days
    ``anomaly_business_days`` and the hours ``anomaly_business_hours``, or on a public holiday
    of the account's country (``holidays`` package).

Severity is ``critical`` when the measured value is at least twice its threshold (for a spike:
any of the three metrics), else ``warning``.

:func:`export_anomalies` writes them as CSV, or XLSX when the file name ends with ``.xlsx``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.errors import UserFacingError
from bluerocktel.money import D, MoneyError, from_micro, to_micro
from bluerocktel.settings import SETTINGS, get_setting
from bluerocktel.timeutil import parse_instant

UTC = dt.timezone.utc
BASELINE_DAYS = 7
DAY_US = 86_400_000_000
DESTINATIONS_SHOWN = 10          # an anomaly lists at most this many destinations / zones (most calls first)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class AnomalyKind(StrEnum):
    HIGH_COST_SPIKE = "high_cost_spike"
    LONG_CALL = "long_call"
    OFF_HOURS_BURST = "off_hours_burst"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AnomalyError(UserFacingError):
    """An anomaly search was refused: a bad time range or a malformed ``anomaly_*`` setting."""


@dataclass(frozen=True)
class Anomaly:
    """One alert: an account's traffic in ``[window_start, window_end)`` (UTC) that looks wrong."""

    kind: str                       # AnomalyKind value
    severity: str                   # Severity value
    account_id: int
    account_number: str | None      # from the system of record; None when the account is unknown there
    account_name: str | None
    window_start: dt.datetime       # UTC; for a long call: its start
    window_end: dt.datetime         # UTC, exclusive; for a long call: its end
    calls: int                      # calls counted by the detector in the window
    billsec_s: int                  # their answered seconds
    minutes: Decimal                # billsec_s / 60, 2 decimals (ROUND_HALF_UP)
    amount_micro: int               # sum of their price_micro (customer price, 1e-6 of the currency)
    currency: str | None            # the account's currency
    destinations: tuple[str, ...]   # destination names, most calls first (at most DESTINATIONS_SHOWN)
    zones: tuple[str, ...]          # zones, most calls first
    detail: str                     # one sentence a person can check: values, thresholds, baseline
    cdr_id: str | None = None       # the call, for long_call

    @property
    def amount(self) -> Decimal:
        return from_micro(self.amount_micro)

    def as_dict(self) -> dict:
        """JSON-ready: times in ISO 8601, money and minutes as decimal strings."""
        return {"kind": self.kind, "severity": self.severity, "account_id": self.account_id,
                "account_number": self.account_number, "account_name": self.account_name,
                "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
                "calls": self.calls, "billsec_s": self.billsec_s, "minutes": str(self.minutes),
                "amount_micro": self.amount_micro, "amount": format_amount(self.amount_micro),
                "currency": self.currency, "destinations": list(self.destinations), "zones": list(self.zones),
                "cdr_id": self.cdr_id, "detail": self.detail}


def format_amount(micro: int) -> str:
    """``micro`` units as a decimal string with at least 2 and at most 6 decimals (3.60, 0.123456)."""
    value = from_micro(micro)
    return str(value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value.normalize())


def _minutes(billsec_s: int) -> Decimal:
    return (Decimal(int(billsec_s)) / 60).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --- settings ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """The ``anomaly_*`` settings, parsed and checked."""

    window_minutes: int
    high_cost_per_minute: Decimal
    high_risk_zones: tuple[str, ...]
    spike_calls: int
    spike_minutes: int
    spike_amount_micro: int
    spike_factor: int
    long_call_s: int
    off_hours_calls: int
    business_days: tuple[str, ...]
    business_start_minute: int
    business_end_minute: int

    @property
    def window_us(self) -> int:
        return self.window_minutes * 60_000_000


def _setting_error(name: str, value: str, expected: str) -> AnomalyError:
    env = next(s.env_var for s in SETTINGS if s.name == name)
    return AnomalyError(f"setting {env}={value!r}: {expected}")


def _int_setting(name: str, minimum: int) -> int:
    text = get_setting(name).strip()
    try:
        value = int(text)
    except ValueError:
        raise _setting_error(name, text, "expected a whole number") from None
    if value < minimum:
        raise _setting_error(name, text, f"expected a whole number of at least {minimum}")
    return value


def _decimal_setting(name: str) -> Decimal:
    text = get_setting(name).strip()
    try:
        value = D(text)
    except MoneyError:
        raise _setting_error(name, text, "expected a decimal amount such as 1.00") from None
    if value < 0:
        raise _setting_error(name, text, "expected an amount of at least 0")
    return value


def _clock_minute(text: str) -> int:
    hours, minutes = text.split(":")
    if len(minutes) != 2 or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(text)
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 1440:
        raise ValueError(text)
    return value


def load_thresholds() -> Thresholds:
    """The ``anomaly_*`` settings; :class:`AnomalyError` names the variable of a malformed one."""
    window = _int_setting("anomaly_window_minutes", 1)
    if 1440 % window:
        raise _setting_error("anomaly_window_minutes", str(window), "expected a divisor of 1440 (a day's minutes)")
    days_text = get_setting("anomaly_business_days")
    days = tuple(d.strip().lower() for d in days_text.split(",") if d.strip())
    unknown = [d for d in days if d not in WEEKDAYS]
    if unknown:
        raise _setting_error("anomaly_business_days", days_text,
                             f"unknown day {unknown[0]!r}; use {','.join(WEEKDAYS)}")
    hours_text = get_setting("anomaly_business_hours")
    try:
        start_text, end_text = hours_text.strip().split("-")
        start, end = _clock_minute(start_text.strip()), _clock_minute(end_text.strip())
    except ValueError:
        raise _setting_error("anomaly_business_hours", hours_text, "expected HH:MM-HH:MM, e.g. 08:00-19:00") from None
    if start >= end:
        raise _setting_error("anomaly_business_hours", hours_text, "the start must be before the end")
    return Thresholds(
        window_minutes=window,
        high_cost_per_minute=_decimal_setting("anomaly_high_cost_per_minute"),
        high_risk_zones=tuple(z.strip() for z in get_setting("anomaly_high_risk_zones").split(",") if z.strip()),
        spike_calls=_int_setting("anomaly_spike_calls", 0),
        spike_minutes=_int_setting("anomaly_spike_minutes", 0),
        spike_amount_micro=to_micro(_decimal_setting("anomaly_spike_amount")),
        spike_factor=_int_setting("anomaly_spike_factor", 1),
        long_call_s=_int_setting("anomaly_long_call_s", 1),
        off_hours_calls=_int_setting("anomaly_off_hours_calls", 0),
        business_days=days, business_start_minute=start, business_end_minute=end,
    )


# --- reference tables from the system of record ----------------------------------------------

ACCOUNT_SCHEMA = pa.schema([("account_id", pa.int64()), ("number", pa.string()), ("name", pa.string()),
                            ("tz", pa.string()), ("tz_note", pa.string()), ("country", pa.string()),
                            ("currency", pa.string())])
HOLIDAY_SCHEMA = pa.schema([("country", pa.string()), ("day", pa.date32())])


def _accounts(session, account_id: int | None) -> pa.Table:
    """Accounts with a time zone DuckDB can use: an unknown zone becomes the default one, noted."""
    from bluerocktel.db.models import Account

    query = select(Account.id, Account.number, Account.name, Account.timezone, Account.country, Account.currency)
    if account_id is not None:
        query = query.where(Account.id == account_id)
    default_tz = get_setting("default_timezone")
    rows = []
    for id_, number, name, tz, country, currency in session.execute(query):
        note = ""
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            note = f" (account time zone {tz!r} unknown: {default_tz} used)"
            tz = default_tz
        rows.append({"account_id": id_, "number": number, "name": name, "tz": tz, "tz_note": note,
                     "country": country, "currency": currency})
    return pa.Table.from_pylist(rows, schema=ACCOUNT_SCHEMA)


def _high_cost_rate_ids(session, per_minute: Decimal) -> pa.Table:
    """Ids of the voice rates whose price per minute (price × 60 / unit_size) is at least ``per_minute``."""
    from bluerocktel.db.models import Rate

    ids = [id_ for id_, price, unit_size in session.execute(
               select(Rate.id, Rate.price, Rate.unit_size).where(Rate.call_type == "voice"))
           if price * 60 >= per_minute * max(int(unit_size or 1), 1)]
    return pa.table({"rate_id": pa.array(ids, pa.int64())})


def _holidays(countries: set[str], since: dt.datetime, until: dt.datetime) -> pa.Table:
    """Public holidays of the given countries in the years of ``[since - 1 day, until + 1 day]``."""
    import holidays

    years = list(range((since - dt.timedelta(days=1)).year, (until + dt.timedelta(days=1)).year + 1))
    rows = []
    for country in sorted(c for c in countries if c):
        try:
            calendar = holidays.country_holidays(country, years=years)
        except NotImplementedError:     # a country the package does not know: no holidays
            continue
        rows += [{"country": country, "day": day} for day in sorted(calendar)]
    return pa.Table.from_pylist(rows, schema=HOLIDAY_SCHEMA)


# --- the search --------------------------------------------------------------------------------

def _utc(value, name: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise AnomalyError(f"{name} {value.isoformat()} has no time zone: give an aware datetime (UTC)")
        return value.astimezone(UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), tzinfo=UTC)
    raise AnomalyError(f"{name} must be a datetime or a date, not {type(value).__name__}")


def _months(start: dt.datetime, end: dt.datetime) -> list[str]:
    """Lake month labels of ``[start, end)``."""
    last = end - dt.timedelta(microseconds=1)
    year, month, months = start.year, start.month, []
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _us(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)


def _at(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(us))


def find_anomalies(wb, *, since, until, account_id: int | None = None) -> list[Anomaly]:
    """The anomalies of the calls started in ``[since, until)`` (aware datetimes, or dates = UTC
    midnight), of one account or all, ordered by window start, account, kind.

    Raises :class:`AnomalyError` when ``since >= until`` or an ``anomaly_*`` setting is malformed.
    """
    since, until = _utc(since, "since"), _utc(until, "until")
    if since >= until:
        raise AnomalyError(f"since {since.isoformat()} must be before until {until.isoformat()}")
    th = load_thresholds()
    since_us, until_us = _us(since), _us(until)
    first_window_us = since_us - since_us % th.window_us
    read_from = _at(first_window_us - BASELINE_DAYS * DAY_US)

    with wb.db.session() as session:
        accounts = _accounts(session, account_id)
        hc_rates = _high_cost_rate_ids(session, th.high_cost_per_minute)
    holiday_table = _holidays(set(accounts.column("country").to_pylist()), since, until)

    con = lake.connect_duckdb()
    try:
        con.register("accounts_in", accounts)
        con.register("hc_rates", hc_rates)
        con.register("holidays_in", holiday_table)
        con.register("hr_zones", pa.table({"zone": pa.array(th.high_risk_zones, pa.string())}))
        params = {"read_from": read_from, "since": since, "until": until, "w_us": th.window_us}
        source = lake.scan_sql(wb.lake_dir, "rated", _months(read_from, until))
        account_filter = ""
        if account_id is not None:
            # Only CDRs one of whose ratings names the account can have it in their latest rating.
            account_filter = (f"AND cdr_id IN (SELECT cdr_id FROM {source} WHERE start_at >= $read_from "
                              f"AND start_at < $until AND account_id = $account_id)")
            params["account_id"] = int(account_id)
        # One row per answered outbound voice call of an account: the latest rating of each cdr_id.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE anomaly_calls AS
            WITH latest AS (
                SELECT cdr_id, start_at, end_at, billsec_s, callee, account_id, rate_id, destination, zone,
                       price_micro
                FROM {source}      -- CDR columns are the same in every rating: filter before dedup
                WHERE start_at >= $read_from AND start_at < $until AND direction = 'out'
                      AND call_type = 'voice' AND billsec_s > 0 {account_filter}
                QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1
            )
            SELECT cdr_id, start_at, end_at, billsec_s, callee, account_id, destination, zone,
                   coalesce(price_micro, 0) AS price_micro,
                   start_at >= $since AS in_range,
                   (epoch_us(start_at) // $w_us) * $w_us AS w,
                   (rate_id IN (SELECT rate_id FROM hc_rates) OR zone IN (SELECT zone FROM hr_zones))
                       IS TRUE AS high_cost
            FROM latest
            WHERE account_id IS NOT NULL {"AND account_id = $account_id" if account_id is not None else ""}
        """, params)
        rows = (_find_spikes(con, th, first_window_us) + _find_long_calls(con, th)
                + _find_off_hours(con, th))
        named = {r["account_id"]: r for r in accounts.to_pylist()}
        anomalies = [_anomaly(row, named.get(row["account_id"]), since_us, until_us, th) for row in rows]
    finally:
        con.close()
    order = list(AnomalyKind)
    anomalies.sort(key=lambda a: (a.window_start, a.account_id, order.index(AnomalyKind(a.kind)), a.cdr_id or ""))
    return anomalies


def _lists(con, source: str, where: str, windows: list[tuple[int, int]]) -> dict:
    """(account_id, w) -> (destinations, zones) of the calls of ``source`` matching ``where`` in
    the given ``windows`` only, most calls first (ties by name), at most :data:`DESTINATIONS_SHOWN` each."""
    con.register("anomaly_windows", pa.table({"account_id": pa.array([a for a, _ in windows], pa.int64()),
                                              "w": pa.array([w for _, w in windows], pa.int64())}))
    found: dict = {}
    for column, slot in (("destination", 0), ("zone", 1)):
        for acc, w, names in con.execute(f"""
                SELECT account_id, w, list(name ORDER BY n DESC, name)[1:{DESTINATIONS_SHOWN}]
                FROM (SELECT account_id, w, {column} AS name, count(*) AS n
                      FROM {source} SEMI JOIN anomaly_windows USING (account_id, w)
                      WHERE {where} AND coalesce({column}, '') <> '' GROUP BY ALL)
                GROUP BY ALL""").fetchall():
            found.setdefault((acc, w), [(), ()])[slot] = tuple(names)
    con.unregister("anomaly_windows")
    return found


def _find_spikes(con, th: Thresholds, first_window_us: int) -> list[dict]:
    """High-cost windows over max(floor, factor × 7-day median), as dict rows."""
    rows = con.execute(f"""
        WITH hc AS (
            SELECT account_id, w,
                   count(*) AS all_calls, sum(billsec_s) AS all_billsec, sum(price_micro) AS all_amount,
                   count(*) FILTER (WHERE in_range) AS calls,
                   coalesce(sum(billsec_s) FILTER (WHERE in_range), 0) AS billsec,
                   coalesce(sum(price_micro) FILTER (WHERE in_range), 0) AS amount
            FROM anomaly_calls WHERE high_cost GROUP BY ALL
        ), candidate AS (      -- over the floor: only these need a baseline
            SELECT * FROM hc
            WHERE w >= $first_w AND (calls > $floor_calls OR billsec > $floor_billsec OR amount > $floor_amount)
        ), baseline AS (
            SELECT c.account_id, c.w,
                   quantile_disc(coalesce(h.all_calls, 0), 0.5) AS b_calls,
                   quantile_disc(coalesce(h.all_billsec, 0), 0.5) AS b_billsec,
                   quantile_disc(coalesce(h.all_amount, 0), 0.5) AS b_amount
            FROM candidate c CROSS JOIN range(1, {BASELINE_DAYS + 1}) AS d(d)
            LEFT JOIN hc h ON h.account_id = c.account_id AND h.w = c.w - d.d * {DAY_US}
            GROUP BY c.account_id, c.w
        )
        SELECT c.account_id, c.w, c.calls, c.billsec, c.amount, b.b_calls, b.b_billsec, b.b_amount,
               greatest($floor_calls, $factor * b.b_calls) AS t_calls,
               greatest($floor_billsec, $factor * b.b_billsec) AS t_billsec,
               greatest($floor_amount, $factor * b.b_amount) AS t_amount
        FROM candidate c JOIN baseline b USING (account_id, w)
        WHERE c.calls > greatest($floor_calls, $factor * b.b_calls)
           OR c.billsec > greatest($floor_billsec, $factor * b.b_billsec)
           OR c.amount > greatest($floor_amount, $factor * b.b_amount)
    """, {"first_w": first_window_us, "floor_calls": th.spike_calls, "floor_billsec": th.spike_minutes * 60,
          "floor_amount": th.spike_amount_micro, "factor": th.spike_factor}).fetchall()
    if not rows:
        return []
    lists = _lists(con, "anomaly_calls", "in_range AND high_cost", [(r[0], r[1]) for r in rows])
    out = []
    for (acc, w, calls, billsec, amount, b_calls, b_billsec, b_amount, t_calls, t_billsec, t_amount) in rows:
        critical = any(v > t and v >= 2 * t for v, t in
                       ((calls, t_calls), (billsec, t_billsec), (amount, t_amount)))
        out.append({"kind": AnomalyKind.HIGH_COST_SPIKE, "account_id": acc, "w": w, "calls": calls,
                    "billsec_s": billsec, "amount_micro": amount, "critical": critical,
                    "destinations": lists.get((acc, w), ((), ()))[0], "zones": lists.get((acc, w), ((), ()))[1],
                    "baseline": (b_calls, b_billsec, b_amount), "threshold": (t_calls, t_billsec, t_amount)})
    return out


def _find_long_calls(con, th: Thresholds) -> list[dict]:
    rows = con.execute("""
        SELECT account_id, cdr_id, epoch_us(start_at), epoch_us(coalesce(end_at, start_at)), billsec_s,
               price_micro, callee, destination, zone
        FROM anomaly_calls WHERE in_range AND billsec_s > $limit
    """, {"limit": th.long_call_s}).fetchall()
    return [{"kind": AnomalyKind.LONG_CALL, "account_id": acc, "cdr_id": cdr_id, "start_us": start_us,
             "end_us": max(end_us, start_us + billsec * 1_000_000), "calls": 1, "billsec_s": billsec,
             "amount_micro": price, "callee": callee, "critical": billsec >= 2 * th.long_call_s,
             "destinations": (destination,) if destination else (), "zones": (zone,) if zone else ()}
            for acc, cdr_id, start_us, end_us, billsec, price, callee, destination, zone in rows]


def _find_off_hours(con, th: Thresholds) -> list[dict]:
    """Windows with more than ``off_hours_calls`` calls started outside the account's business hours."""
    days = [WEEKDAYS.index(d) + 1 for d in th.business_days] or [0]      # ISO day numbers; [0]: no business day
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE anomaly_off AS
        SELECT c.account_id, c.w, c.billsec_s, c.price_micro, c.destination, c.zone
        FROM (SELECT c.*, timezone(coalesce(a.tz, $default_tz), c.start_at) AS local_at, a.country
              FROM anomaly_calls c LEFT JOIN accounts_in a USING (account_id)
              WHERE c.in_range) c
        LEFT JOIN holidays_in h ON h.country = c.country AND h.day = CAST(c.local_at AS DATE)
        WHERE h.day IS NOT NULL
           OR isodow(c.local_at) NOT IN ({", ".join(map(str, days))})
           OR hour(c.local_at) * 60 + minute(c.local_at) NOT BETWEEN $start AND $end - 1
    """, {"default_tz": get_setting("default_timezone"), "start": th.business_start_minute,
          "end": th.business_end_minute})
    rows = con.execute("""
        SELECT account_id, w, count(*), sum(billsec_s), sum(price_micro) FROM anomaly_off
        GROUP BY ALL HAVING count(*) > $limit
    """, {"limit": th.off_hours_calls}).fetchall()
    lists = _lists(con, "anomaly_off", "true", [(r[0], r[1]) for r in rows]) if rows else {}
    return [{"kind": AnomalyKind.OFF_HOURS_BURST, "account_id": acc, "w": w, "calls": calls, "billsec_s": billsec,
             "amount_micro": amount, "critical": calls >= 2 * th.off_hours_calls,
             "destinations": lists.get((acc, w), ((), ()))[0], "zones": lists.get((acc, w), ((), ()))[1]}
            for acc, w, calls, billsec, amount in rows]


def _anomaly(row: dict, account: dict | None, since_us: int, until_us: int, th: Thresholds) -> Anomaly:
    """An :class:`Anomaly` from a detector row, with its account's names and a detail sentence."""
    kind = row["kind"]
    currency = account["currency"] if account else None
    money = (lambda micro: f"{format_amount(micro)} {currency}" if currency else format_amount(micro))
    if kind is AnomalyKind.LONG_CALL:
        start_us, end_us = row["start_us"], row["end_us"]
        hours, rest = divmod(row["billsec_s"], 3600)
        detail = (f"call of {hours} h {rest // 60:02d} min {rest % 60:02d} s to {row['callee']}"
                  f"{' (' + row['destinations'][0] + ')' if row['destinations'] else ''}, "
                  f"over the {th.long_call_s} s limit; cdr {row['cdr_id']}")
        critical = row["critical"]
    else:
        start_us, end_us = max(row["w"], since_us), min(row["w"] + th.window_us, until_us)
        if kind is AnomalyKind.HIGH_COST_SPIKE:
            b_calls, b_billsec, b_amount = row["baseline"]
            t_calls, t_billsec, t_amount = row["threshold"]
            detail = (f"{row['calls']} calls, {_minutes(row['billsec_s'])} min, {money(row['amount_micro'])} "
                      f"to high-cost destinations in {th.window_minutes} min; thresholds (more than) "
                      f"{t_calls} calls, {_minutes(t_billsec)} min, {money(t_amount)} = the larger of the floor "
                      f"and {th.spike_factor} x the median of the same window over {BASELINE_DAYS} days "
                      f"({b_calls} calls, {_minutes(b_billsec)} min, {money(b_amount)})")
            critical = row["critical"]
        else:
            tz = account["tz"] if account else get_setting("default_timezone")
            local = ZoneInfo(tz)
            first, last = _at(start_us).astimezone(local), _at(end_us).astimezone(local)
            detail = (f"{row['calls']} answered outbound calls from {first:%a %Y-%m-%d %H:%M} to {last:%H:%M} {tz}"
                      f"{account['tz_note'] if account else ''}, outside business hours "
                      f"({','.join(th.business_days)} {_clock(th.business_start_minute)}-"
                      f"{_clock(th.business_end_minute)} except public holidays); more than "
                      f"{th.off_hours_calls} in {th.window_minutes} min")
            critical = row["critical"]
    return Anomaly(
        kind=str(kind), severity=str(Severity.CRITICAL if critical else Severity.WARNING),
        account_id=int(row["account_id"]),
        account_number=account["number"] if account else None, account_name=account["name"] if account else None,
        window_start=_at(start_us), window_end=_at(end_us), calls=int(row["calls"]),
        billsec_s=int(row["billsec_s"]), minutes=_minutes(row["billsec_s"]), amount_micro=int(row["amount_micro"]),
        currency=currency, destinations=tuple(row["destinations"]), zones=tuple(row["zones"]), detail=detail,
        cdr_id=row.get("cdr_id"))


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# --- export ------------------------------------------------------------------------------------

EXPORT_COLUMNS = ("kind", "severity", "account_number", "account_name", "account_id", "window_start",
                  "window_end", "calls", "minutes", "amount", "currency", "destinations", "zones", "cdr_id",
                  "detail")


def _export_row(a: Anomaly) -> list:
    return [a.kind, a.severity, a.account_number or "", a.account_name or "", a.account_id,
            a.window_start.strftime("%Y-%m-%d %H:%M:%S"), a.window_end.strftime("%Y-%m-%d %H:%M:%S"),
            a.calls, a.minutes, format_amount(a.amount_micro), a.currency or "", "; ".join(a.destinations),
            "; ".join(a.zones), a.cdr_id or "", a.detail]


def export_anomalies(anomalies: list[Anomaly], path) -> Path:
    """Write ``anomalies`` to ``path``: XLSX when it ends with ``.xlsx``, else CSV (UTF-8, comma).

    Columns, in this order: :data:`EXPORT_COLUMNS`. Times are UTC (``YYYY-MM-DD HH:MM:SS``);
    minutes and amounts are exact decimals (numbers in XLSX, text in CSV); lists are ``"; "``-joined.
    """
    path = Path(path)
    rows = [_export_row(a) for a in anomalies]
    if path.suffix.lower() == ".xlsx":
        from openpyxl import Workbook
        from openpyxl.styles import Font

        book = Workbook()
        sheet = book.active
        sheet.title = "anomalies"
        sheet.append(list(EXPORT_COLUMNS))
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        money_col = EXPORT_COLUMNS.index("amount")
        for a, row in zip(anomalies, rows):
            row[money_col] = a.amount          # a number in the sheet (exact decimal text in the file)
            sheet.append(row)
        sheet.freeze_panes = "A2"
        book.save(path)
    else:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows([[str(v) for v in row] for row in rows])
    return path


# --- CLI ---------------------------------------------------------------------------------------

def add_rating_anomalies_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``bluerocktel rating anomalies --since ISO --until ISO [--account NUMBER] [--json] [--export FILE]``."""
    p = subparsers.add_parser(
        "anomalies", parents=[common], help="list traffic anomalies (IRSF spikes, long calls, off-hours bursts)",
        description="Anomalies of the rated calls started in [--since, --until); thresholds are the "
                    "BLUEROCKTEL_ANOMALY_* settings.")
    p.add_argument("--since", required=True, help="ISO 8601 start, e.g. 2026-10-01 or 2026-10-01T00:00:00+02:00 "
                                                  "(without an offset: UTC; a date means midnight UTC)")
    p.add_argument("--until", required=True, help="ISO 8601 end (exclusive)")
    p.add_argument("--account", default=None, help="only this account number")
    p.add_argument("--export", default=None, metavar="FILE", help="also write them to FILE (.csv, or .xlsx)")
    p.set_defaults(func=cmd_rating_anomalies)
    return p


def describe_anomalies(anomalies: list[Anomaly]) -> str:
    """A text table, one line per anomaly, then the detail sentence indented."""
    if not anomalies:
        return "no anomalies"
    lines = []
    for a in anomalies:
        who = a.account_number or f"#{a.account_id}"
        lines.append(f"{a.severity:8} {a.kind:16} {who:10} {a.window_start:%Y-%m-%d %H:%M}-{a.window_end:%H:%M} UTC "
                     f"{a.calls:6} calls {a.minutes:>9} min {format_amount(a.amount_micro):>12} "
                     f"{', '.join(a.zones)}")
        lines.append(f"{'':9}{a.detail}")
    return "\n".join(lines)


def cmd_rating_anomalies(args) -> int:
    from bluerocktel.db.models import Account
    from bluerocktel.errors import NotFoundError
    from bluerocktel.workbench import Workbench

    since = parse_instant(args.since, what="--since", default_tz="UTC")
    until = parse_instant(args.until, what="--until", default_tz="UTC")
    wb = Workbench.open(args.data_dir)
    try:
        account_id = None
        if args.account:
            with wb.db.session() as session:
                account_id = session.scalar(select(Account.id).where(Account.number == args.account))
            if account_id is None:
                raise NotFoundError(f"--account {args.account!r}: no account has that number")
        anomalies = find_anomalies(wb, since=since, until=until, account_id=account_id)
    finally:
        wb.close()
    if args.export:
        export_anomalies(anomalies, args.export)
    if getattr(args, "json", False):
        print(json.dumps({"since": since.isoformat(), "until": until.isoformat(), "export": args.export,
                          "anomalies": [a.as_dict() for a in anomalies]}, indent=2))
    else:
        print(describe_anomalies(anomalies))
        if args.export:
            print(f"wrote {len(anomalies)} anomalies to {args.export}")
    return 0
