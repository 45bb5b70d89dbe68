from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluerocktel.money import (
    D,
    Money,
    MoneyError,
    allocate,
    div_half_up,
    format_minor,
    from_micro,
    from_minor,
    to_micro,
    to_minor,
)

decimals = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), allow_nan=False,
                       allow_infinity=False, places=8)


def test_floats_and_bools_are_refused():
    with pytest.raises(MoneyError, match="float"):
        D(0.1)
    with pytest.raises(MoneyError, match="bool"):
        D(True)
    with pytest.raises(MoneyError, match="not a decimal"):
        D("1,5")
    with pytest.raises(MoneyError, match="finite"):
        D("NaN")
    assert D(" 1 234.50 ") == Decimal("1234.50")


def test_half_up_is_named_and_applied():
    assert to_minor(D("0.125")) == 13
    assert to_minor(D("-0.125")) == -13           # half away from zero
    assert to_minor(D("0.125"), rounding=ROUND_DOWN) == 12
    assert to_minor(D("2.675")) == 268             # a float would give 2.67
    assert to_minor(D("7"), "JPY") == 7


@given(decimals)
def test_minor_round_trip_is_within_half_a_cent(value):
    minor = to_minor(value)
    assert abs(from_minor(minor) - value) <= Decimal("0.005")
    assert from_minor(minor) == value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@given(decimals)
def test_micro_round_trip(value):
    assert from_micro(to_micro(value)) == value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


@given(st.integers(-10**12, 10**12), st.integers(1, 10**6))
def test_div_half_up_matches_exact_fraction(n, d):
    exact = Fraction(n, d)
    q = div_half_up(n, d)
    assert abs(Fraction(q) - exact) <= Fraction(1, 2)
    if abs(Fraction(q) - exact) == Fraction(1, 2):
        assert abs(q) > abs(exact)                 # ties go away from zero


@given(st.integers(-10**9, 10**9), st.lists(st.integers(0, 10**6), min_size=1, max_size=30).filter(lambda w: sum(w) > 0))
def test_allocate_sums_to_the_whole_and_is_fair(total, weights):
    parts = allocate(total, weights)
    assert sum(parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights):
        exact = Fraction(total * weight, weight_sum)
        assert abs(part - exact) < 1
        if weight == 0:
            assert part == 0


def test_allocate_examples():
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]
    assert allocate(1000, [Decimal("0.5"), Decimal("0.25"), Decimal("0.25")]) == [500, 250, 250]
    with pytest.raises(MoneyError):
        allocate(10, [0, 0])
    with pytest.raises(MoneyError):
        allocate(10, [1, -1])


def test_money_refuses_mixed_currencies():
    assert Money(D("1.10")) + Money(D("2.20")) == Money(D("3.30"))
    with pytest.raises(MoneyError, match="EUR with USD"):
        Money(D("1"), "EUR") + Money(D("1"), "USD")
    with pytest.raises(MoneyError):
        Money(1.5)
    assert Money(D("2.675")).to_minor() == 268
    assert str(Money(D("2.675"))) == "2.68 EUR"


def test_format_minor():
    assert format_minor(123456) == "1\u202f234,56\u00a0€"
    assert format_minor(-5, locale="en") == "-€0.05"


@pytest.mark.parametrize("text, finer", [("0.012346", False), ("0.0123460000", False), ("12", False),
                                         ("0.0000005", True), ("0.01234567", True), ("1E-7", True)])
def test_finer_than_micro_says_whether_to_micro_would_round(text, finer):
    from bluerocktel.money import finer_than_micro, from_micro, to_micro

    assert finer_than_micro(Decimal(text)) is finer
    assert (from_micro(to_micro(Decimal(text))) != Decimal(text)) is finer
