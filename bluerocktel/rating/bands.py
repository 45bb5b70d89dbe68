"""The time-band calendar: which band of a deck applies at each instant, as UTC intervals.

A deck's bands (:data:`~bluerocktel.rating.tariffs.BAND_SCHEMA`) are evaluated in the paying
account's time zone: at a local instant, the band is the highest-``priority`` band whose
``days`` contain the local weekday (``mon`` .. ``sun``) — or ``hol`` when the local date is a
public holiday of the deck's ``holiday_calendar`` (the ``holidays`` package) — and whose
``[start_minute, end_minute)`` contains the local minute of the day. Equal priorities go to the
band whose name sorts first. No band: ``''`` (any time).

:func:`band_intervals` turns that rule into contiguous UTC intervals ``[start_us, end_us)``
(microseconds since the epoch) for given (deck, zone) pairs and time ranges, so that the
kernel finds the band at an instant with one join (and the next boundary with it). Daylight
saving time is handled exactly: a boundary inside a skipped hour takes effect at the jump, and
a boundary inside a repeated hour happens twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

import pyarrow as pa

UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# One row per interval; ``key`` is the caller's key of the (deck, zone) pair.
INTERVAL_SCHEMA = pa.schema([("key", pa.int64()), ("start_us", pa.int64()), ("end_us", pa.int64()),
                             ("band", pa.string())])


@dataclass(frozen=True)
class Band:
    name: str
    days: frozenset[str]
    start_minute: int
    end_minute: int
    priority: int


def bands_by_deck(bands: pa.Table) -> dict[int, list[Band]]:
    """BAND_SCHEMA rows grouped by deck, highest priority first (then name)."""
    out: dict[int, list[Band]] = {}
    for row in bands.to_pylist():
        out.setdefault(row["deck_id"], []).append(Band(row["name"], frozenset(row["days"] or ()),
                                                       row["start_minute"], row["end_minute"], row["priority"]))
    for deck_bands in out.values():
        deck_bands.sort(key=lambda b: (-b.priority, b.name))
    return out


@lru_cache(maxsize=256)
def _holiday_dates(calendar: str, year: int) -> frozenset[dt.date]:
    import holidays

    return frozenset(holidays.country_holidays(calendar, years=year).keys())


def band_at_local(bands: list[Band], calendar: str | None, local: dt.datetime) -> str:
    """The band at a local wall time (``bands`` sorted as :func:`bands_by_deck` does)."""
    day = WEEKDAYS[local.weekday()]
    holiday = bool(calendar) and local.date() in _holiday_dates(calendar, local.year)
    minute = local.hour * 60 + local.minute
    for band in bands:
        if (day in band.days or (holiday and "hol" in band.days)) and band.start_minute <= minute < band.end_minute:
            return band.name
    return ""


def _to_us(instant: dt.datetime) -> int:
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _utc_instants(zone: ZoneInfo, local: dt.datetime) -> list[int]:
    """The UTC instants (µs) whose wall time in ``zone`` is ``local`` (0, 1 or 2 of them)."""
    found = []
    for fold in (0, 1):
        instant = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == local:
            found.append(_to_us(instant))
    return found


def _transition(zone: ZoneInfo, lo_us: int, hi_us: int) -> int:
    """The first instant (µs, to the second) in (lo, hi] with hi's UTC offset; lo's offset differs."""
    target = _from_us(hi_us).astimezone(zone).utcoffset()
    lo, hi = lo_us // 1_000_000, hi_us // 1_000_000
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _from_us(mid * 1_000_000).astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi * 1_000_000


def deck_intervals(bands: list[Band], calendar: str | None, zone_name: str, start_us: int, end_us: int
                   ) -> list[tuple[int, int, str]]:
    """Contiguous ``(start_us, end_us, band)`` intervals covering at least ``[start_us, end_us)``."""
    zone = ZoneInfo(zone_name)
    first = _from_us(start_us).astimezone(zone).date() - dt.timedelta(days=1)
    last = _from_us(end_us).astimezone(zone).date() + dt.timedelta(days=1)
    minutes = sorted({0} | {b.start_minute for b in bands} | {b.end_minute % 1440 for b in bands})
    cuts: list[int] = []
    day = first
    while day <= last:
        midnight = dt.datetime.combine(day, dt.time())
        for minute in minutes:
            cuts.extend(_utc_instants(zone, midnight + dt.timedelta(minutes=minute)))
        day += dt.timedelta(days=1)
    cuts = sorted(set(cuts))
    # a UTC offset change between two cuts is a cut too (a boundary may sit in a skipped hour)
    offsets = [_from_us(c).astimezone(zone).utcoffset() for c in cuts]
    jumps = [_transition(zone, a, b) for a, b, oa, ob in zip(cuts, cuts[1:], offsets, offsets[1:]) if oa != ob]
    cuts = sorted(set(cuts) | set(jumps))
    intervals: list[tuple[int, int, str]] = []
    for a, b in zip(cuts, cuts[1:]):
        name = band_at_local(bands, calendar, _from_us(a).astimezone(zone).replace(tzinfo=None))
        if intervals and intervals[-1][2] == name:
            intervals[-1] = (intervals[-1][0], b, name)
        else:
            intervals.append((a, b, name))
    return intervals


def band_intervals(bands: pa.Table, calendars: dict[int, str | None], pairs: dict[int, tuple[int, str]],
                   ranges: list[tuple[int, int]]) -> pa.Table:
    """:data:`INTERVAL_SCHEMA` rows for each ``pairs`` key → (deck_id, zone name), covering every
    ``[start_us, end_us)`` of ``ranges`` (overlapping or adjacent ranges are merged).

    ``calendars`` maps a deck to its holiday calendar (ISO country) or None.
    """
    by_deck = bands_by_deck(bands)
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 4 * _DAY_US:   # day windows widen by 1 day each side
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    keys, starts, ends, names = [], [], [], []
    for key, (deck_id, zone_name) in pairs.items():
        for lo, hi in merged:
            for a, b, name in deck_intervals(by_deck.get(deck_id, []), calendars.get(deck_id), zone_name, lo, hi):
                keys.append(key)
                starts.append(a)
                ends.append(b)
                names.append(name)
    return pa.table({"key": pa.array(keys, pa.int64()), "start_us": pa.array(starts, pa.int64()),
                     "end_us": pa.array(ends, pa.int64()), "band": pa.array(names, pa.string())},
                    schema=INTERVAL_SCHEMA)
