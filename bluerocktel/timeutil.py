"""Instants typed by people (command options, settings, tariff plan files) as aware UTC datetimes.

One parser, so that every option reads ``2026-12-01``, ``2026-12-01T09:00:00Z`` and
``2026-12-01T09:00:00+01:00`` alike and refuses bad text with the same words.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bluerocktel.errors import UserFacingError

UTC = dt.timezone.utc


def parse_instant(text: str, *, what: str, default_tz: str | None) -> dt.datetime:
    """The aware UTC instant ISO 8601 ``text`` names. Text without an offset (a bare date is its
    midnight) is a wall time in ``default_tz`` (``"UTC"``, ``"Europe/Paris"``…); with
    ``default_tz=None`` it is refused. Raises :class:`UserFacingError` naming ``what`` (e.g.
    ``--effective``) and the text."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserFacingError(f"{what} {text!r} is not an ISO 8601 date or time "
                              "(e.g. 2026-12-01 or 2026-12-01T00:00:00Z)") from None
    if value.tzinfo is None:
        if default_tz is None:
            raise UserFacingError(f"{what} {text!r} has no time zone: add Z or an offset such as +01:00")
        value = value.replace(tzinfo=parse_zone(default_tz, what=f"the time zone of {what}"))
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise UserFacingError(f"{what} {text!r} is out of range once converted to UTC") from None


def parse_zone(name: str, *, what: str) -> dt.tzinfo:
    """The time zone ``name`` (``UTC``, ``Z`` or an IANA name); :class:`UserFacingError` naming
    ``what`` when there is no such zone."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserFacingError(f"{what} {name!r} is not a time zone (e.g. UTC, Europe/Paris)") from None
