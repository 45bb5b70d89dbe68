"""Billing periods: a calendar month as a half-open ``[period_start, period_end)``."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from bluerocktel.errors import UserFacingError

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(UserFacingError, ValueError):
    """A billing period text is not a valid ``YYYY-MM`` month."""


@dataclass(frozen=True)
class Period:
    """One billing month. ``period_end`` is the first day of the next month (exclusive)."""

    label: str                 # "YYYY-MM", also the lake partition name
    period_start: dt.date
    period_end: dt.date

    @property
    def days(self) -> int:
        return (self.period_end - self.period_start).days

    @property
    def start_at(self) -> dt.datetime:
        """``period_start`` at 00:00 UTC (the lake's months are UTC months)."""
        return dt.datetime.combine(self.period_start, dt.time(0), tzinfo=dt.timezone.utc)

    @property
    def end_at(self) -> dt.datetime:
        return dt.datetime.combine(self.period_end, dt.time(0), tzinfo=dt.timezone.utc)


def parse_period(text: str) -> Period:
    """The month ``text`` (``"2026-03"``) as a :class:`Period`; anything else raises :class:`PeriodError`."""
    if not isinstance(text, str):
        raise PeriodError(f"billing period must be text YYYY-MM, got {type(text).__name__} {text!r}")
    match = _PERIOD_RE.match(text.strip())
    if not match:
        raise PeriodError(f"billing period {text!r} is not a month written YYYY-MM (e.g. 2026-03)")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise PeriodError(f"billing period {text!r}: month {month:02d} is not between 01 and 12")
    if year < 1900:
        raise PeriodError(f"billing period {text!r}: year {year} is out of range")
    start = dt.date(year, month, 1)
    end = dt.date(year + 1, 1, 1) if month == 12 else dt.date(year, month + 1, 1)
    return Period(f"{year:04d}-{month:02d}", start, end)


def add_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after (or before, if negative) the month of ``day``."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def month_of(day: dt.date) -> Period:
    """The calendar month containing ``day``."""
    return parse_period(f"{day.year:04d}-{day.month:02d}")


def previous_period(period: Period) -> Period:
    """The month before ``period``."""
    return month_of(period.period_start - dt.timedelta(days=1))


def overlap_days(start: dt.date, end: dt.date, other_start: dt.date | None, other_end: dt.date | None) -> int:
    """Days ``[start, end)`` shares with ``[other_start, other_end)`` (``None``: unbounded on that side)."""
    lo = max(start, other_start) if other_start is not None else start
    hi = min(end, other_end) if other_end is not None else end
    return max((hi - lo).days, 0)
