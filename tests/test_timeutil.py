"""One parser for the instants people type (--effective, --since, --start, ActivationTime)."""

from __future__ import annotations

import datetime as dt

import pytest

from bluerocktel.errors import UserFacingError
from bluerocktel.timeutil import parse_instant, parse_zone

UTC = dt.timezone.utc


@pytest.mark.parametrize(("text", "default_tz", "expected"), [
    ("2026-12-01", "UTC", dt.datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),                # a date: its midnight
    (" 2026-12-01T09:30:00Z ", None, dt.datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
    ("2026-12-01T09:30:00+01:00", None, dt.datetime(2026, 12, 1, 8, 30, tzinfo=UTC)),  # 09:30 - 1 h
    ("2026-12-01T09:30", "Europe/Paris", dt.datetime(2026, 12, 1, 8, 30, tzinfo=UTC)),  # winter: UTC+1
    ("2026-07-01T09:30", "Europe/Paris", dt.datetime(2026, 7, 1, 7, 30, tzinfo=UTC)),   # summer: UTC+2
    ("2026-07-01", "Europe/Paris", dt.datetime(2026, 6, 30, 22, 0, tzinfo=UTC)),        # Paris midnight - 2 h
    ("2026-07-01 09:30:00-04:00", "Europe/Paris", dt.datetime(2026, 7, 1, 13, 30, tzinfo=UTC)),  # offset wins
])
def test_instants_are_aware_utc_and_naive_text_is_read_in_the_default_zone(text, default_tz, expected):
    got = parse_instant(text, what="--effective", default_tz=default_tz)
    assert got == expected
    assert got.tzinfo is UTC


@pytest.mark.parametrize(("text", "default_tz", "message"), [
    ("2026-13-01", "UTC", "--since '2026-13-01' is not an ISO 8601 date or time (e.g. 2026-12-01 or "
                          "2026-12-01T00:00:00Z)"),
    ("next monday", "UTC", "--since 'next monday' is not an ISO 8601 date or time"),
    ("2026-12-01T09:30", None, "--since '2026-12-01T09:30' has no time zone: add Z or an offset such as +01:00"),
    ("2026-12-01", "Mars/Olympus", "the time zone of --since 'Mars/Olympus' is not a time zone"),
    ("9999-12-31T23:00:00-05:00", "UTC", "--since '9999-12-31T23:00:00-05:00' is out of range once converted to UTC"),
])
def test_bad_instants_are_refused_naming_the_option_and_the_text(text, default_tz, message):
    with pytest.raises(UserFacingError) as caught:
        parse_instant(text, what="--since", default_tz=default_tz)
    assert str(caught.value).startswith(message)


def test_zones_are_utc_or_iana_names():
    assert parse_zone("z", what="--timing-tz") is UTC
    assert dt.datetime(2026, 7, 1, 12, tzinfo=parse_zone("Europe/Paris", what="--timing-tz")).utcoffset() == \
        dt.timedelta(hours=2)
    with pytest.raises(UserFacingError, match=r"^--timing-tz 'Paris' is not a time zone \(e.g. UTC, Europe/Paris\)$"):
        parse_zone("Paris", what="--timing-tz")
