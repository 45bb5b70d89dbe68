"""Billing increments, connection fees and half-up rounding at the micro unit."""

import inspect
import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rating_builders import cdr, cdr_table, identifier, identifier_table, rate, rate_rows, rate_table


def price(billsec_s, per_minute_micro, increments, connection_fee_micro, identifiers):
    deck = rate_table(rate("33", per_minute_micro, increments=increments, connection_fee_micro=connection_fee_micro))
    [row] = rate_rows(cdr_table(cdr("+33145678901", billsec_s=billsec_s)), identifiers, deck)
    assert row["rating_status"] == "rated"
    return row["billable_s"], row["price_micro"]


@pytest.mark.parametrize("billsec_s, per_minute_micro, increments, fee, billable_s, price_micro", [
    # 60/60 at 0.0200/min: every started minute
    (1, 20_000, (60, 60), 0, 60, 20_000),
    (60, 20_000, (60, 60), 0, 60, 20_000),
    (61, 20_000, (60, 60), 0, 120, 40_000),
    # 30/6 at 0.0600/min (1000 micro per second): 30 s minimum, then 6 s steps
    (10, 60_000, (30, 6), 0, 30, 30_000),
    (30, 60_000, (30, 6), 0, 30, 30_000),
    (31, 60_000, (30, 6), 0, 36, 36_000),
    (37, 60_000, (30, 6), 0, 42, 42_000),
    # 1/1 at 0.0100/min: 7 s = 70000/60 = 1166.67 -> 1167; 10 s = 1666.67 -> 1667
    (7, 10_000, (1, 1), 0, 7, 1_167),
    (10, 10_000, (1, 1), 0, 10, 1_667),
    # exact halves round up: 30 micro/min x 1 s = 0.5 -> 1; 90 x 1 s = 1.5 -> 2; 29 x 1 s = 0.483 -> 0
    (1, 30, (1, 1), 0, 1, 1),
    (1, 90, (1, 1), 0, 1, 2),
    (1, 29, (1, 1), 0, 1, 0),
    # 60/10 at 0.1200/min with a 0.0500 connection fee
    (60, 120_000, (60, 10), 50_000, 60, 170_000),          # 120000 + 50000
    (65, 120_000, (60, 10), 50_000, 70, 190_000),          # 60 + 10 s: 140000 + 50000
    (71, 120_000, (60, 10), 50_000, 80, 210_000),          # 60 + 20 s: 160000 + 50000
    # a long call at a high rate stays exact: 3600 s at 9.999999/min = 599.99994 -> 599999940 micro
    (3600, 9_999_999, (60, 60), 0, 3600, 599_999_940),
])
def test_billable_seconds_and_price(billsec_s, per_minute_micro, increments, fee, billable_s, price_micro, one_number):
    assert price(billsec_s, per_minute_micro, increments, fee, one_number) == (billable_s, price_micro)


def test_unanswered_zero_second_inbound_and_internal_calls_are_free():
    identifiers = identifier_table(
        identifier("+33123456789"),                           # outbound calls of the caller number
        identifier("ACME", kind="account_code"),
        identifier("+33140000000", kind="did"),               # inbound calls to this number
    )
    deck = rate_table(rate("33", 20_000, connection_fee_micro=50_000))
    rows = rate_rows(cdr_table(
        cdr("+33145678901", billsec_s=0),                                   # unanswered
        cdr("+33145678901", billsec_s=0, disposition="ANSWERED"),           # answered, 0 s
        cdr("+33145678901", billsec_s=30, disposition="BUSY"),              # not answered
        cdr("201", caller="202", billsec_s=45, direction="internal", account_code="ACME"),
        cdr("+33140000000", caller="+33612345678", billsec_s=45, direction="in"),
    ), identifiers, deck)
    assert [r["rating_status"] for r in rows] == ["free"] * 5
    assert [(r["billable_s"], r["price_micro"]) for r in rows] == [(0, 0)] * 5
    assert {r["service_id"] for r in rows} == {1}


def test_who_pays_is_resolved_before_what_it_costs(one_number):
    rows = rate_rows(cdr_table(
        # numbers identify outbound calls only: an inbound call from that number belongs to nobody
        cdr("+33145678901", billsec_s=45, direction="in"),
        cdr("+33145678901", caller="+33999999999", billsec_s=0),  # unknown caller, even unanswered
    ), one_number, rate_table(rate("33", 20_000)))
    assert [(r["rating_status"], r["billable_s"], r["price_micro"], r["service_id"]) for r in rows] == [
        ("unassigned", None, None, None), ("unassigned", None, None, None)]


def test_no_double_arithmetic_in_the_kernel():
    from bluerocktel.rating import kernel

    numpy_pricing = "".join(inspect.getsource(f) for f in (
        kernel._billed_np, kernel._pico_np, kernel._priced_np, kernel._increment_costs, kernel._price_start_band,
        kernel._price_groups, kernel._price_crossing))
    assert "float" not in numpy_pricing and re.search(r"[^/]/[^/]", numpy_pricing) is None  # only //


@given(billsec_s=st.integers(1, 20_000), first=st.integers(0, 120), step=st.integers(1, 120),
       per_minute_micro=st.integers(0, 10_000_000), fee=st.integers(0, 1_000_000))
@settings(max_examples=60, deadline=None)
def test_price_agrees_with_exact_decimal_arithmetic(billsec_s, first, step, per_minute_micro, fee):
    identifiers = identifier_table(identifier())
    if billsec_s <= first:
        billable_s = first
    else:
        billable_s = first + -(-(billsec_s - first) // step) * step
    exact = Decimal(per_minute_micro) * Decimal(billable_s) / Decimal(60)
    expected = fee + int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    got = price(billsec_s, per_minute_micro, (first, step), fee, identifiers)
    assert got == (billable_s, expected)
