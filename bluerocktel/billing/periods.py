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
