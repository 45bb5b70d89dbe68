import datetime as dt

import pytest

from bluerocktel.billing.periods import PeriodError, parse_period
from bluerocktel.errors import UserFacingError


def test_a_month_is_half_open():
    p = parse_period("2026-03")
    assert (p.label, p.period_start, p.period_end, p.days) == ("2026-03", dt.date(2026, 3, 1), dt.date(2026, 4, 1), 31)
    assert p.start_at == dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    assert p.end_at == dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)


def test_december_ends_on_the_first_of_january_and_february_knows_leap_years():
    assert parse_period("2026-12").period_end == dt.date(2027, 1, 1)
    assert parse_period("2028-02").days == 29
    assert parse_period(" 2026-02 ").days == 28


@pytest.mark.parametrize("text, message", [
    ("2026-13", "month 13"), ("2026-00", "month 00"), ("2026-3", "YYYY-MM"), ("03/2026", "YYYY-MM"),
    ("", "YYYY-MM"), ("2026-03-01", "YYYY-MM"), ("0999-01", "year"),
])
def test_bad_periods_are_refused_with_a_clear_message(text, message):
    with pytest.raises(PeriodError, match=message) as info:
        parse_period(text)
    assert isinstance(info.value, UserFacingError)
    assert repr(text) in str(info.value)


def test_non_text_is_refused():
    with pytest.raises(PeriodError, match="text"):
        parse_period(202603)  # type: ignore[arg-type]
