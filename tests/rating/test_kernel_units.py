"""Kernel v2: increment schemes per call type (voice seconds, SMS messages, data bytes) and grouped intervals."""

import json

import pytest
from rating_builders import cdr, cdr_table, identifier, identifier_table, rate, rate_rows, rate_table

IDS = identifier_table(identifier())


def one(rates, **cdr_fields) -> dict:
    [row] = rate_rows(cdr_table(cdr("+33145678901", **cdr_fields)), IDS, rate_table(*rates))
    return row


@pytest.mark.parametrize("increments, price_micro, billsec_s, units, amount", [
    # 60/60 at 0.020000/min: every started minute. 61 s -> 120 s = 2 x 0.02 = 0.04
    ((60, 60), 20_000, 61, 120, 40_000),
    # 30/6 at 0.060000/min: 30 s minimum then 6 s steps. 31 s -> 36 s = 36 x 0.06 / 60 = 0.036
    ((30, 6), 60_000, 31, 36, 36_000),
    ((30, 6), 60_000, 12, 30, 30_000),                     # under the first increment: 30 s = 0.03
    # 1/1 at 0.010000/min: 7 s = 7 x 0.01 / 60 = 0.0011666.. -> 0.001167 (half up at 6 dp)
    ((1, 1), 10_000, 7, 7, 1_167),
    # 60/10 at 0.120000/min: 65 s -> 60 + 10 = 70 s = 70 x 0.12 / 60 = 0.14
    ((60, 10), 120_000, 65, 70, 140_000),
    # 0/1 (no first increment, per second) at 0.060000/min: 7 s = 7 x 0.001 = 0.007
    ((0, 1), 60_000, 7, 7, 7_000),
    # 0/60: 61 s -> ceil(61/60) x 60 = 120 s at 0.02/min = 0.04
    ((0, 60), 20_000, 61, 120, 40_000),
])
def test_voice_increment_schemes(increments, price_micro, billsec_s, units, amount):
    row = one([rate("33", price_micro, increments=increments)], billsec_s=billsec_s)
    assert (row["billable_units"], row["billable_s"], row["price_micro"]) == (units, units, amount)
    assert (row["first_increment"], row["next_increment"]) == increments
    assert row["segments"] is None and row["flags"] == "no_cost"


@pytest.mark.parametrize("units, billed, amount, pico", [
    # 0.500000 per MiB (1,048,576 bytes) in 1024-byte increments:
    # 1500 bytes -> 2 x 1024 = 2048 bytes; 2048 x 500000 / 1048576 = 976.5625 micro -> 977 (half up)
    (1_500, 2_048, 977, 976_562_500),
    (2_048, 2_048, 977, 976_562_500),
    # 10 MB = 10,000,000 bytes -> 9766 increments = 10,000,384 bytes; x 0.5 / 1048576 = 4.768554.. -> 4.768555
    (10_000_000, 10_000_384, 4_768_555, 4_768_554_687_500),
])
def test_data_is_billed_in_byte_increments(units, billed, amount, pico):
    row = one([rate("33", 500_000, call_type="data", unit_size=1_048_576, increments=(1024, 1024))],
              call_type="data", units=units)
    assert (row["billable_units"], row["billable_s"], row["price_micro"], row["unrounded_pico"]) == (
        billed, 0, amount, pico)


def test_sms_is_billed_per_message_and_call_types_do_not_mix():
    rates = [rate("33", 20_000),                                                   # voice: 0.02/min
             rate("33", 50_000, call_type="sms", unit_size=1, increments=(1, 1)),  # 0.05 per SMS
             rate("336", 90_000, call_type="data", unit_size=1_000_000, increments=(1, 1))]
    rows = rate_rows(cdr_table(cdr("+33145678901", call_type="sms", units=3),        # 3 x 0.05 = 0.15
                               cdr("+33145678901", billsec_s=60),                     # 1 min = 0.02
                               cdr("+33645678901", call_type="sms", units=1),         # 336 is data only: 33's SMS rate
                               cdr("+33645678901", call_type="sms", units=0)),        # nothing sent: free
                     IDS, rate_table(*rates))
    assert [(r["rate_id"], r["billable_units"], r["billable_s"], r["price_micro"], r["rating_status"]) for r in rows] == [
        (2, 3, 0, 150_000, "rated"), (1, 60, 60, 20_000, "rated"), (2, 1, 0, 50_000, "rated"), (None, 0, 0, 0, "free")]


def test_a_call_type_without_rates_is_unrated():
    row = one([rate("33", 20_000)], call_type="data", units=5_000)
    assert (row["rating_status"], row["price_micro"], row["billable_units"]) == ("unrated", None, None)
    assert row["rating_reason"] == "no rate for +33145678901 (data) in deck D100"


# CGRateS RT_20CNT: ConnectFee 0.4; 0.2 per 60 s in 60 s increments from 0 s, then 0.1 per 60 s
# in 1 s increments from 60 s.
RT_20CNT = [rate("", 200_000, increments=(60, 60), connection_fee_micro=400_000, rate_id=1),
            rate("", 100_000, increments=(0, 1), group_start=60, rate_id=2)]


@pytest.mark.parametrize("billsec_s, units, amount", [
    (120, 120, 700_000),    # 0.4 + 0.2 (first minute) + 60 s x 0.1/60 (= 0.1) = 0.7
    (90, 90, 650_000),      # 0.4 + 0.2 + 30 s x 0.1/60 (= 0.05) = 0.65
    (30, 60, 600_000),      # 0.4 + 0.2: the first minute is billed whole, group 2 has nothing
    (61, 61, 601_667),      # 0.4 + 0.2 + 1 s x 0.1/60 (= 0.0016666..) = 0.6016666.. -> 0.601667
])
def test_grouped_intervals_like_cgrates_rt_20cnt(billsec_s, units, amount):
    row = one(RT_20CNT, billsec_s=billsec_s)
    assert (row["billable_units"], row["price_micro"]) == (units, amount)
    assert row["rate_id"] == 1 and (row["first_increment"], row["next_increment"]) == (60, 60)


def test_grouped_intervals_trace_one_segment_per_group():
    row = one(RT_20CNT, billsec_s=90)
    assert json.loads(row["segments"]) == [
        {"band": "", "rate_id": 1, "group_start": 0, "increments": 1, "units": 60, "amount_pico": 200_000_000_000},
        {"band": "", "rate_id": 2, "group_start": 60, "increments": 30, "units": 30, "amount_pico": 50_000_000_000}]
    assert row["flags"] == "band_split,no_cost" and row["band"] == ""
    assert row["unrounded_pico"] == 650_000_000_000    # 0.4 + 0.2 + 0.05 (the fee is not a segment)


def test_a_group_starts_at_its_start_even_when_the_previous_one_overbilled():
    # 60 s first increment but a new group from 30 s (0.06/min per second): 45 s bills
    # group 0: 30 s of use -> the 60 s first increment; group 1: 15 s -> 15 s. 75 units,
    # 60 x 0.12/60 + 15 x 0.06/60 = 0.12 + 0.015 = 0.135
    row = one([rate("33", 120_000, increments=(60, 60)), rate("33", 60_000, increments=(1, 1), group_start=30)],
              billsec_s=45)
    assert (row["billable_units"], row["price_micro"]) == (75, 135_000)


def test_three_groups_with_a_first_increment():
    # 30/6 at 0.12/min up to 300 s, then 1/1 at 0.06/min up to 600 s, then free per 60 s.
    rates = [rate("33", 120_000, increments=(30, 6)), rate("33", 60_000, increments=(1, 1), group_start=300),
             rate("33", 0, increments=(60, 60), group_start=600)]
    rows = rate_rows(cdr_table(*(cdr("+33145678901", billsec_s=s) for s in (301, 299, 700))), IDS, rate_table(*rates))
    # 301 s: 300 (30 + 45 x 6) at 0.12/min = 0.6, + 1 s at 0.06/min = 0.001 -> 0.601
    # 299 s: 30 + ceil(269/6) x 6 = 30 + 270 = 300 s = 0.6 (group 1 starts at 300: nothing)
    # 700 s: 300 s = 0.6, 300 s x 0.001 = 0.3, then 100 s -> 120 s free: 720 units, 0.9
    assert [(r["billable_units"], r["price_micro"]) for r in rows] == [(301, 601_000), (300, 600_000), (720, 900_000)]
    assert [len(json.loads(r["segments"] or "[1]")) for r in rows] == [2, 1, 3]


def test_an_unknown_call_type_is_unrated_never_free():
    row = one([rate("33", 20_000)], call_type="fax", units=2)
    assert (row["rating_status"], row["price_micro"]) == ("unrated", None)
    assert row["rating_reason"] == "no rate for +33145678901 (unknown call type) in deck D100"
