"""CGRateS tariff plans: the reader, the pricing engine and ``rating quote``.

The six examples of the issue run against the CGRateS sample plans in
``../shared/fixtures/cgrates-tariffplans`` (read in place, never copied; skipped when absent).
Every other behaviour is checked on tiny plans written here, next to their arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluerocktel.errors import FormatError, NotFoundError, UserFacingError
from bluerocktel.rating.cgrates import (
    TariffPlanError,
    parse_duration_ns,
    quote,
    read_tariff_plan,
)
from bluerocktel.rating.cgrates_cli import add_rating_quote_parser, cmd_rating_quote

UTC = timezone.utc
FIXTURES = Path(os.environ.get("BLUEROCKTEL_CGRATES_FIXTURES") or
                Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "cgrates-tariffplans")
MONDAY_0900 = datetime(2019, 3, 11, 9, 0, tzinfo=UTC)        # 2019-03-11 is a Monday


@lru_cache(maxsize=None)
def _read_fixture(name: str):
    return read_tariff_plan(FIXTURES / name)


def fixture_plan(name: str):
    if not (FIXTURES / name).is_dir():
        pytest.skip(f"CGRateS sample tariff plan {name!r} not found under {FIXTURES} "
                    "(set BLUEROCKTEL_CGRATES_FIXTURES to its folder)")
    return _read_fixture(name)


def write_plan(folder: Path, **files: str) -> Path:
    """Write CSV files given as keyword arguments: ``Rates="..."`` -> ``Rates.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.csv").write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def call(plan, destination, start, usage, subject="1001", category="call", tenant="cgrates.org", **kw):
    return quote(plan, tenant=tenant, category=category, subject=subject, destination=destination,
                 start=start, usage=usage, **kw)


# ---------------------------------------------------------------------------------------------
# The six examples of the issue (CGRateS sample plans)
# ---------------------------------------------------------------------------------------------

def test_tutorial_1001_to_1002_120s_costs_0_7002():
    # RatingProfile cgrates.org:call:1001, newest activation <= 2019-03-11: 2014-01-14 RP_1001.
    # RP_1001 -> DR_1002_20CNT (DST_1002, prefix 1002) -> RT_20CNT:
    #   slot 0s : ConnectFee 0.4, 0.2 per 60s in 60s increments
    #   slot 60s: 0.1 per 60s in 1s increments
    # [0,60)  : 1 x 60s, raw 0.2 -> increment 0.20000                 = 0.2
    # [60,120): 60 x 1s, raw 0.1 -> 0.1/60 = 0.001666.. -> 0.00167 (5 decimals, half-up)
    #           60 x 0.00167                                           = 0.1002
    # 0.4 + 0.2 + 0.1002 = 0.7002 -> *up 4 decimals = 0.7002 (not 0.7, not 0.70002)
    q = call(fixture_plan("tutorial"), "1002", MONDAY_0900, 120)
    assert (q.status, q.price) == ("rated", Decimal("0.7002"))
    spans = q.trace["timespans"]
    assert [(s.offset_from, s.offset_to, s.increments, s.increment_cost) for s in spans] == [
        (0, 60, 1, Decimal("0.2")), (60, 120, 60, Decimal("0.00167"))]
    assert (spans[0].rating_plan_id, spans[0].destination_id, spans[0].matched_prefix) == ("RP_1001", "DST_1002", "1002")
    assert q.trace["connect_fee"] == Decimal("0.4")
    assert (q.trace["rounding_method"], q.trace["rounding_decimals"]) == ("*up", 4)


def test_tutorial2_1001_to_1003_falls_back_to_any_subject_and_costs_1_4():
    # cgrates.org:call:1001 -> RP_1001 binds only DST_1002: no rate for 1003; its FallbackSubject
    # *any -> cgrates.org:call:*any -> RP_STANDARD: 1003 -> DST_10 (prefix 10).
    # Monday 09:00 UTC: PEAK (weekdays from 08:00) beats OFFPEAK_MORNING (from 00:00): closer start.
    # DR_10_120C -> RT_120C: ConnectFee 0.2; slot 0: 1.2 per 1m in 1m increments.
    # 45 s -> one 1m increment: 1.2; 0.2 + 1.2 = 1.4
    q = call(fixture_plan("tutorial2"), "1003", MONDAY_0900, 45)
    assert (q.status, q.price) == ("rated", Decimal("1.4"))
    [span] = q.trace["timespans"]
    assert (span.rating_profile, span.rating_plan_id, span.destination_id, span.timing_id, span.rate_id) == (
        "cgrates.org:call:*any", "RP_STANDARD", "DST_10", "PEAK", "RT_120C")
    assert (span.offset_to, q.trace["billed_usage"]) == (60, 60)


def test_tutorial2_1001_to_4003_is_unrated_never_free():
    # RP_1001 has no 4003; *any -> RP_STANDARD: prefixes 4003, 400, 40, 4 are in no destination
    # and RP_STANDARD binds no *any destination.
    q = call(fixture_plan("tutorial2"), "4003", MONDAY_0900, 45)
    assert (q.status, q.price) == ("unrated", None)
    assert "4003" in q.reason and "RP_STANDARD" in q.reason


@pytest.mark.parametrize("units, price", [
    # cgrates.org:data:1001 does not exist -> cgrates.org:data:*any -> RP_DATA -> DR_ANY_1024_1
    # (*any destination) -> RT_1024_1: 1 per 1024 units in 1024-unit increments.
    (2048, "2.0"),      # 2 increments x 1
    (2049, "3.0"),      # 3 increments: a started increment is a whole one
    (1, "1.0"),
])
def test_tutorial2_data_is_charged_per_1024_units(units, price):
    q = call(fixture_plan("tutorial2"), "*any", MONDAY_0900, units, category="data")
    assert (q.status, q.price) == ("rated", Decimal(price))
    assert q.trace["unit"] == "units"


def test_oldtutorial_1001_to_1003_monday_13h_20s_costs_1_0():
    # cgrates.org:call:1001 -> RP_RETAIL2; 1003: longest prefix 1003 -> DST_1003 (beats DST_FS "10").
    # Monday 13:00: PEAK -> DR_1003_20CNT -> RT_40CNT: ConnectFee 0.8; 0.4 per 60s in 30s increments.
    # 20 s -> one 30s increment: 0.4 x 30/60 = 0.2; 0.8 + 0.2 = 1.0
    q = call(fixture_plan("oldtutorial"), "1003", datetime(2014, 8, 4, 13, tzinfo=UTC), 20)
    assert (q.status, q.price) == ("rated", Decimal("1.0"))
    assert q.trace["timespans"][0].timing_id == "PEAK"


def test_oldtutorial_1001_to_1007_70s_stops_at_max_cost_0_62_with_free():
    # RP_RETAIL2 -> DR_1007_MAXCOST_FREE (*any timing) -> RT_1CNT_PER_SEC: 0.01 per 1s.
    # 70 x 0.01 = 0.70 >= MaxCost 0.62 with *free: the cost stops at 0.62.
    q = call(fixture_plan("oldtutorial"), "1007", datetime(2014, 8, 4, 13, tzinfo=UTC), 70)
    assert (q.status, q.price, q.max_cost_hit, q.disconnect) == ("rated", Decimal("0.62"), True, False)
    assert q.trace["total_before_max_cost"] == Decimal("0.70")
    # 60 s cost 0.60 < 0.62: no cap
    q = call(fixture_plan("oldtutorial"), "1007", datetime(2014, 8, 4, 13, tzinfo=UTC), 60)
    assert (q.price, q.max_cost_hit) == (Decimal("0.60"), False)


# ---------------------------------------------------------------------------------------------
# More behaviour on the sample plans
# ---------------------------------------------------------------------------------------------

def test_the_four_sample_plans_are_read_whole():
    plan = fixture_plan("tutorial2")
    assert plan.rates["RT_120C"].connect_fee == Decimal("0.2")       # slot 2 has an empty ConnectFee
    assert [s.group_interval_start_ns for s in plan.rates["RT_120C"].slots] == [0, 60 * 10**9]
    assert plan.rates["RT_1024_1"].slots[0].rate_unit_ns == 1024      # bare number = nanoseconds/units
    assert plan.timings["OFFPEAK_WEEKEND"].week_days == {6, 0}        # "6;7": 7 is Sunday
    assert plan.reverse_destinations["20"] == ("DST_20", "DST_2030")
    assert plan.rating_profiles[("cgrates.org", "call", "1001")].activations[0].fallback_subjects == ("*any",)
    for name in ("tutorial", "oldtutorial", "tp_destination_with_any"):
        assert fixture_plan(name).rating_plans


def test_max_cost_disconnect_caps_and_flags():
    # tutorial RP_1001 -> DR_1003_MAXCOST_DISC: RT_1CNT_PER_SEC 0.01/s, MaxCost 0.12 *disconnect.
    # 20 s = 0.20 >= 0.12: capped at 0.12 and flagged; 10 s = 0.10: neither.
    plan = fixture_plan("tutorial")
    q = call(plan, "1003", MONDAY_0900, 20)
    assert (q.price, q.max_cost_hit, q.disconnect) == (Decimal("0.12"), True, True)
    q = call(plan, "1003", MONDAY_0900, 10)
    assert (q.price, q.max_cost_hit, q.disconnect) == (Decimal("0.10"), False, False)


def test_the_activation_in_force_at_the_call_start_is_used():
    # tutorial cgrates.org:call:1001: 2010-01-14 RP_1002, 2014-01-14 RP_1001.
    plan = fixture_plan("tutorial")
    q = call(plan, "1001", datetime(2012, 6, 1, 9, tzinfo=UTC), 120)      # RP_1002 binds DST_1001: RT_20CNT
    assert (q.price, q.trace["timespans"][0].rating_plan_id) == (Decimal("0.7002"), "RP_1002")
    assert call(plan, "1002", datetime(2012, 6, 1, 9, tzinfo=UTC), 120).status == "unrated"   # RP_1002: no 1002
    assert call(plan, "1001", MONDAY_0900, 120).status == "unrated"                           # RP_1001: no 1001
    # before the first activation the call falls back to cgrates.org:call:*any, which does not exist
    assert call(plan, "1002", datetime(2009, 6, 1, tzinfo=UTC), 120).status == "unrated"


def test_any_destination_is_the_last_resort_and_weights_do_not_override_a_longer_prefix():
    # tp_destination_with_any RP_1001: DR_1002_1CNT (DST_1002, weight 20), DR_ANY (*any, weight 10)
    plan = fixture_plan("tp_destination_with_any")
    # 1002 -> DST_1002 -> RT_1CNT 0.01 per 60s in 60s increments: 60 s = 0.01
    q = call(plan, "1002", MONDAY_0900, 60)
    assert (q.price, q.trace["timespans"][0].destination_id) == (Decimal("0.01"), "DST_1002")
    # 5555 -> *any -> RT_10CNT: fee 0.2; [0,60) 1 x 60s x 0.1; [60,120) 60 x round5(0.05/60 = 0.000833..)
    #   = 60 x 0.00083 = 0.0498; 0.2 + 0.1 + 0.0498 = 0.3498
    q = call(plan, "5555", MONDAY_0900, 120)
    assert (q.price, q.trace["timespans"][0].matched_prefix) == (Decimal("0.3498"), "*any")


@pytest.mark.parametrize("destination, sms, price", [
    # cgrates.org:sms:*any -> RP_SMS: 1002 -> DST_1002 -> RT_10C1 0.1 per unit;
    # 1003 -> DST_10 -> RT_20C1 0.2 per unit
    ("1002", 1, "0.1"), ("1003", 1, "0.2"), ("1003", 3, "0.6"),
])
def test_sms_are_counted_in_units(destination, sms, price):
    q = call(fixture_plan("tutorial2"), destination, MONDAY_0900, sms, category="sms")
    assert q.price == Decimal(price)


@pytest.mark.parametrize("start, timing", [
    (datetime(2019, 3, 11, 20, tzinfo=UTC), "OFFPEAK_EVENING"),   # Monday 20:00: evening (19:00) beats peak (08:00)
    (datetime(2019, 3, 11, 7, tzinfo=UTC), "OFFPEAK_MORNING"),    # Monday 07:00: peak has not started
    (datetime(2019, 3, 10, 9, tzinfo=UTC), "OFFPEAK_WEEKEND"),    # Sunday (written 7) 09:00
])
def test_off_peak_bands_of_tutorial2(start, timing):
    # DR_10_60C -> RT_60C: ConnectFee 0.1 + 45 x 0.01 = 0.55
    q = call(fixture_plan("tutorial2"), "1003", start, 45)
    assert (q.price, q.trace["timespans"][0].timing_id) == (Decimal("0.55"), timing)


def test_a_span_rounded_up_past_a_band_boundary_swallows_and_trims_the_next():
    # tutorial2, 1001 -> 1003, Monday 18:59:30 UTC (peak until the evening band at 19:00):
    # 60 s: [18:59:30,19:00) PEAK RT_120C, 30 s -> one 1m increment, now ends 19:00:30 and
    #       swallows [19:00,19:00:30): 0.2 + 1.2 = 1.4
    plan = fixture_plan("tutorial2")
    start = datetime(2019, 3, 11, 18, 59, 30, tzinfo=UTC)
    q = call(plan, "1003", start, 60)
    assert (q.price, len(q.trace["timespans"])) == (Decimal("1.4"), 1)
    # 120 s: the evening span is trimmed to [19:00:30,19:01:30): RT_60C 60 x 0.01 = 0.6;
    #        the connect fee is the first span's only: 0.2 + 1.2 + 0.6 = 2.0
    q = call(plan, "1003", start, 120)
    assert q.price == Decimal("2.0")
    assert [(s.timing_id, s.offset_from, s.offset_to) for s in q.trace["timespans"]] == [
        ("PEAK", 0, 60), ("OFFPEAK_EVENING", 60, 120)]


# ---------------------------------------------------------------------------------------------
# Hand-made plans
# ---------------------------------------------------------------------------------------------

def rounding_plan(folder: Path, method: str, decimals: int, fee: str):
    return read_tariff_plan(write_plan(
        folder,
        Destinations="#Id,Prefix\nDST_A,1\n",
        Rates=f"#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\nRT_A,{fee},0.06,60s,1s,0s\n",
        DestinationRates=f"#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy\n"
                         f"DR_A,DST_A,RT_A,{method},{decimals},0,\n",
        RatingPlans="#Id,DestinationRatesId,TimingTag,Weight\nRP_A,DR_A,*any,10\n",
        RatingProfiles="#Tenant,Category,Subject,ActivationTime,RatingPlanId,FallbackSubject\n"
                       "t1,call,*any,2014-01-01T00:00:00Z,RP_A,\n"))


@pytest.mark.parametrize("method, decimals, fee, price", [
    # 7 s at 0.06/60s in 1s increments: 7 x 0.001 = 0.007, plus the connect fee
    ("*up", 4, "0.00005", "0.0071"),      # 0.00705 -> up
    ("*up", 4, "0.00004", "0.0071"),      # 0.00704 -> up
    ("*middle", 4, "0.00005", "0.0071"),  # 0.00705 -> half-up
    ("*middle", 4, "0.00004", "0.0070"),  # 0.00704 -> down
    ("*down", 4, "0.00009", "0.0070"),    # 0.00709 -> down
    ("*up", 2, "0.00005", "0.01"),        # 0.00705 -> 0.01
    ("", 4, "0.00005", "0.00705"),        # no method: not rounded
    ("*up", 0, "0.00005", "0.00705"),     # 0 decimals: CGRateS' GetLongestRounding rounds nothing
])
def test_rounding_methods(tmp_path, method, decimals, fee, price):
    q = call(rounding_plan(tmp_path, method, decimals, fee), "123", MONDAY_0900, 7, tenant="t1")
    assert q.price == Decimal(price)
    assert str(q.price) == price                    # quantized to the plan's decimals


def test_each_increment_is_rounded_to_5_decimals_before_multiplying(tmp_path):
    # 0.1 per 60s in 1s increments, 7 s: raw = 7 x 0.1/60 = 0.011666.. -> 0.01167;
    # increment = 0.01167/7 = 0.001667.. -> 0.00167; 7 x 0.00167 = 0.01169 (one multiplication
    # would give 0.01167)
    plan = read_tariff_plan(write_plan(
        tmp_path,
        Rates="RT_A,0,0.1,60s,1s,0s\n",
        DestinationRates="DR_A,*any,RT_A,*middle,5,0,\n",
        RatingPlans="RP_A,DR_A,*any,10\n"))
    q = quote(plan, rating_plan="RP_A", destination="99", start=MONDAY_0900, usage=7)
    assert q.price == Decimal("0.01169")
    assert (q.trace["timespans"][0].raw_cost, q.trace["timespans"][0].increment_cost) == (
        Decimal("0.01167"), Decimal("0.00167"))


@pytest.fixture
def grouped_plan(tmp_path):
    return read_tariff_plan(write_plan(
        tmp_path,
        Rates="""\
            #Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart
            RT_G,0.05,0.30,60s,60s,0s
            RT_G,0,0.06,60s,1s,60s
            RT_G,0,0.03,60s,30s,5m
            """,
        DestinationRates="DR_G,*any,RT_G,*middle,4,0,\n",
        RatingPlans="RP_G,DR_G,*any,10\n"))


@pytest.mark.parametrize("seconds, price, spans", [
    # 400 s: [0,60) 1 x 60s x 0.3 = 0.3; [60,300) 240 x 1s x 0.001 = 0.24;
    #        [300,400) 100 s -> 4 x 30s (120 s), 120 x 0.03/60 = 0.06 -> 4 x 0.015 = 0.06
    #        0.05 + 0.3 + 0.24 + 0.06 = 0.65
    (400, "0.65", [(0, 60, 1), (60, 300, 240), (300, 420, 4)]),
    # 30 s: one 60s increment of the first slot: 0.05 + 0.3
    (30, "0.35", [(0, 60, 1)]),
    # 61 s: 0.05 + 0.3 + 1 x 0.001
    (61, "0.351", [(0, 60, 1), (60, 61, 1)]),
])
def test_grouped_interval_rates(grouped_plan, seconds, price, spans):
    q = quote(grouped_plan, rating_plan="RP_G", destination="1", start=MONDAY_0900, usage=seconds)
    assert q.price == Decimal(price)
    assert [(s.offset_from, s.offset_to, s.increments) for s in q.trace["timespans"]] == spans
    assert [s.slot["group_interval_start"] for s in q.trace["timespans"]] == [0, 60, 300][:len(spans)]


BANDS = dict(
    Destinations="#Id,Prefix\nDST_FR,33\nDST_PREM,899\nDST_DISC,898\nDST_MOB,336\n",
    Timings="""\
        #Id,Years,Months,MonthDays,WeekDays,Time
        TM_DAY,*any,*any,*any,1;2;3;4;5,08:00:00
        TM_NIGHT,*any,*any,*any,*any,00:00:00
        TM_EVENING,*any,*any,*any,*any,20:00:00
        """,
    Rates="""\
        #Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart
        RT_DAY,0.05,0.60,60s,1s,0s
        RT_NIGHT,0.10,0.12,60s,1s,0s
        RT_PROMO,0,0.06,60s,1s,0s
        RT_PREM,0.5,1.20,60s,1s,0s
        """,
    DestinationRates="""\
        #Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy
        DR_DAY,DST_FR,RT_DAY,*middle,4,0,
        DR_NIGHT,DST_FR,RT_NIGHT,*middle,4,0,
        DR_PROMO,*any,RT_PROMO,*middle,4,0,
        DR_PREM,DST_PREM,RT_PREM,*middle,4,1.0,*free
        DR_PREM,DST_DISC,RT_PREM,*middle,4,1.0,*disconnect
        DR_MOB,DST_MOB,RT_DAY,*middle,4,0,
        """,
    RatingPlans="""\
        #Id,DestinationRatesId,TimingTag,Weight
        RP_STD,DR_DAY,TM_DAY,10
        RP_STD,DR_NIGHT,TM_NIGHT,10
        RP_STD,DR_NIGHT,TM_EVENING,10
        RP_STD,DR_PREM,*any,10
        RP_PROMO,DR_PROMO,*any,10
        RP_MOBILE,DR_MOB,*any,10
        """,
    RatingProfiles="""\
        #Tenant,Category,Subject,ActivationTime,RatingPlanId,FallbackSubject
        t1,call,*any,2024-01-01T00:00:00Z,RP_STD,
        t1,call,alice,2024-01-01T00:00:00Z,RP_STD,
        t1,call,alice,2024-03-04T20:00:30Z,RP_PROMO,
        t1,call,carol,2024-01-01T00:00:00Z,RP_MOBILE,*any
        t1,call,dave,2024-01-01T00:00:00Z,RP_MOBILE,
        """)
MON_1959 = datetime(2024, 3, 4, 19, 59, tzinfo=UTC)          # 2024-03-04 is a Monday


@pytest.fixture
def bands(tmp_path):
    return read_tariff_plan(write_plan(tmp_path, **BANDS))


def test_a_call_crossing_from_day_to_evening_is_split_in_two_timespans(bands):
    # Monday 19:59:00 + 120 s to 33 1 23 45 67 89:
    # [19:59,20:00) TM_DAY  RT_DAY   60 x 1s x 0.01  = 0.60
    # [20:00,20:01) TM_EVENING (20:00 beats the night band's 00:00) RT_NIGHT 60 x 0.002 = 0.12
    # connect fee of the first span only (RT_DAY 0.05, not RT_NIGHT 0.10): 0.05 + 0.60 + 0.12 = 0.77
    q = call(bands, "33123456789", MON_1959, 120, subject="bob", tenant="t1")
    assert q.price == Decimal("0.77")
    assert [(s.timing_id, s.rate_id, s.start_at, s.increments, s.cost) for s in q.trace["timespans"]] == [
        ("TM_DAY", "RT_DAY", MON_1959, 60, Decimal("0.60")),
        ("TM_EVENING", "RT_NIGHT", datetime(2024, 3, 4, 20, tzinfo=UTC), 60, Decimal("0.12"))]
    assert (q.trace["connect_fee"], q.trace["connect_fee_rate_id"]) == (Decimal("0.05"), "RT_DAY")
    # a call starting in the evening pays the night connect fee: 0.10 + 60 x 0.002 = 0.22
    assert call(bands, "33123", datetime(2024, 3, 4, 20, tzinfo=UTC), 60, subject="bob", tenant="t1").price == \
        Decimal("0.22")
    # Saturday 10:00: TM_DAY is weekdays only: night band, 0.22
    assert call(bands, "33123", datetime(2024, 3, 9, 10, tzinfo=UTC), 60, subject="bob", tenant="t1").price == \
        Decimal("0.22")


def test_time_bands_follow_the_timing_time_zone(bands):
    # 18:59 UTC = 19:59 in Paris (CET, +01:00): with timing_tz Paris the day/evening boundary is 19:00 UTC
    start = datetime(2024, 3, 4, 18, 59, tzinfo=UTC)
    assert call(bands, "33123", start, 120, subject="bob", tenant="t1",
                timing_tz=ZoneInfo("Europe/Paris")).price == Decimal("0.77")
    # evaluated in UTC, the same call is all day band: 0.05 + 120 x 0.01 = 1.25
    assert call(bands, "33123", start, 120, subject="bob", tenant="t1").price == Decimal("1.25")


def test_a_call_crossing_midnight_is_split_at_midnight(bands):
    # carol -> 336.. is RP_MOBILE's DST_MOB, bound with the *any timing: the same band on both sides
    # of midnight, but CGRateS splits timespans by day: [23:59:30,00:00) and [00:00,00:00:30).
    # RT_DAY: 0.05 + 60 x 0.01 = 0.65
    q = call(bands, "33612", datetime(2024, 3, 4, 23, 59, 30, tzinfo=UTC), 60, subject="carol", tenant="t1")
    assert [(s.timing_id, s.offset_from, s.offset_to) for s in q.trace["timespans"]] == [
        ("*any", 0, 30), ("*any", 30, 60)]
    assert q.price == Decimal("0.65")


def test_activation_times_choose_and_split_the_rating_plan(bands):
    # alice: RP_STD from 2024-01-01, RP_PROMO (0.001/s, no fee, any destination) from 2024-03-04 20:00:30
    alice = dict(subject="alice", tenant="t1")
    assert call(bands, "33123", datetime(2024, 2, 5, 19, 59, tzinfo=UTC), 60, **alice).price == Decimal("0.65")
    assert call(bands, "33123", datetime(2024, 4, 1, 12, tzinfo=UTC), 60, **alice).price == Decimal("0.06")
    # Monday 19:59:00 + 120 s: [19:59,20:00) RP_STD day 0.60; [20:00,20:00:30) RP_STD evening 30 x 0.002
    # = 0.06; [20:00:30,20:01) RP_PROMO 30 x 0.001 = 0.03; fee 0.05 (RT_DAY) -> 0.74
    q = call(bands, "33123", MON_1959, 120, **alice)
    assert q.price == Decimal("0.74")
    assert [(s.rating_plan_id, s.offset_from, s.offset_to) for s in q.trace["timespans"]] == [
        ("RP_STD", 0, 60), ("RP_STD", 60, 90), ("RP_PROMO", 90, 120)]
    assert q.trace["timespans"][2].activation_at == datetime(2024, 3, 4, 20, 0, 30, tzinfo=UTC)


def test_fallback_subjects_and_the_any_subject(bands):
    saturday = datetime(2024, 3, 9, 10, tzinfo=UTC)
    # bob has no profile: t1:call:*any -> RP_STD
    q = call(bands, "33123", saturday, 60, subject="bob", tenant="t1")
    assert (q.price, q.trace["timespans"][0].rating_profile) == (Decimal("0.22"), "t1:call:*any")
    # carol's RP_MOBILE has no rate for 33 1..: her FallbackSubject *any prices it
    q = call(bands, "33123", saturday, 60, subject="carol", tenant="t1")
    assert (q.price, q.trace["timespans"][0].rating_profile) == (Decimal("0.22"), "t1:call:*any")
    # ...but 336 is RP_MOBILE's own (DST_MOB, RT_DAY at any time): 0.05 + 0.60
    assert call(bands, "33612", saturday, 60, subject="carol", tenant="t1").price == Decimal("0.65")
    # dave has a profile without fallback: *any is not tried (CGRateS uses *any only for unknown subjects)
    q = call(bands, "33123", saturday, 60, subject="dave", tenant="t1")
    assert (q.status, q.price) == ("unrated", None)
    # an unknown tenant has no profile at all
    assert call(bands, "33123", saturday, 60, subject="bob", tenant="t2").status == "unrated"


def test_a_destination_no_plan_prices_is_unrated_even_for_zero_seconds(bands):
    # RP_STD has no 44... and no *any destination
    for seconds in (60, 0):
        q = call(bands, "4420", MON_1959, seconds, subject="bob", tenant="t1")
        assert (q.status, q.price) == ("unrated", None)
    # a zero-second call to a priced destination costs nothing, not even the connect fee
    q = call(bands, "33123", MON_1959, 0, subject="bob", tenant="t1")
    assert (q.status, q.price) == ("rated", Decimal(0))


def test_among_destinations_sharing_the_longest_prefix_the_heaviest_active_one_wins(tmp_path):
    plan = read_tariff_plan(write_plan(
        tmp_path,
        Destinations="DST_A,44\nDST_B,44\n",
        Timings="TM_XMAS,*any,12,25,*any,00:00:00\n",
        Rates="RT_1,0,0.60,60s,1s,0\nRT_2,0,0.06,60s,1s,0\n",
        DestinationRates="DR_A,DST_A,RT_1,*middle,4,0,\nDR_B,DST_B,RT_2,*middle,4,0,\n",
        RatingPlans="RP_W,DR_A,*any,10\nRP_W,DR_B,TM_XMAS,20\n"))
    # 25 December: DST_B (weight 20, its band active) -> 60 x 0.001 = 0.06
    q = quote(plan, rating_plan="RP_W", destination="4420", start=datetime(2024, 12, 25, 9, tzinfo=UTC), usage=60)
    assert (q.price, q.trace["timespans"][0].destination_id) == (Decimal("0.06"), "DST_B")
    # 26 December: DST_B has no active band, so DST_A -> 60 x 0.01 = 0.60 (not unrated)
    q = quote(plan, rating_plan="RP_W", destination="4420", start=datetime(2024, 12, 26, 9, tzinfo=UTC), usage=60)
    assert (q.price, q.trace["timespans"][0].destination_id) == (Decimal("0.60"), "DST_A")


def test_tutorial2_new_year_destination_outweighs_the_shared_prefix():
    # 2012: prefix 20 is in DST_20 (RP_STANDARD: DR_20_60C on NEW_YEAR, weight 20) and DST_2030
    # (DR_2030_120C, *any, weight 10).
    plan = fixture_plan("tutorial2")
    # 1 January 2020 09:00 (the profiles start 2019-03-01): DST_20 -> RT_60C: 0.1 + 45 x 0.01 = 0.55
    q = call(plan, "2012", datetime(2020, 1, 1, 9, tzinfo=UTC), 45)
    assert (q.price, q.trace["timespans"][0].destination_id) == (Decimal("0.55"), "DST_20")
    # another day: DST_20's band is not active -> DST_2030 -> RT_120C: 0.2 + 1 x 1m x 1.2 = 1.4
    q = call(plan, "2012", MONDAY_0900, 45)
    assert (q.price, q.trace["timespans"][0].destination_id) == (Decimal("1.4"), "DST_2030")


@pytest.mark.parametrize("pm_decimals, start, price", [
    # 11:59:30 + 60 s: [11:59:30,12:00) DR_AM (*up 4), [12:00,12:00:30) DR_PM (*down N);
    # 30 x 0.001 + 30 x 0.001 + fee 0.00005 = 0.06005
    (4, datetime(2024, 3, 4, 11, 59, 30, tzinfo=UTC), "0.0601"),    # same decimals: the first span's *up
    (5, datetime(2024, 3, 4, 11, 59, 30, tzinfo=UTC), "0.06005"),   # more decimals win: *down 5
    (4, datetime(2024, 3, 4, 12, 0, tzinfo=UTC), "0.0600"),         # afternoon only: *down 4
])
def test_the_total_is_rounded_by_the_span_with_the_most_decimals(tmp_path, pm_decimals, start, price):
    plan = read_tariff_plan(write_plan(
        tmp_path,
        Timings="TM_AM,*any,*any,*any,*any,00:00:00\nTM_PM,*any,*any,*any,*any,12:00:00\n",
        Rates="RT_X,0.00005,0.06,60s,1s,0s\n",
        DestinationRates=f"DR_AM,*any,RT_X,*up,4,0,\nDR_PM,*any,RT_X,*down,{pm_decimals},0,\n",
        RatingPlans="RP_M,DR_AM,TM_AM,10\nRP_M,DR_PM,TM_PM,10\n"))
    q = quote(plan, rating_plan="RP_M", destination="1", start=start, usage=60)
    assert str(q.price) == price


@pytest.mark.parametrize("destination, seconds, price, hit, disconnect", [
    # RT_PREM: fee 0.5 + 0.02/s; MaxCost 1.0
    ("899", 20, "0.9", False, False),     # 0.5 + 0.4
    ("899", 30, "1.0", True, False),      # 0.5 + 0.6 = 1.1 -> stops at 1.0 (*free)
    ("899", 3600, "1.0", True, False),
    ("898", 30, "1.0", True, True),       # *disconnect: capped and flagged
    ("898", 25, "1.0", True, True),       # 0.5 + 0.5 = 1.0 reaches MaxCost
])
def test_max_cost(bands, destination, seconds, price, hit, disconnect):
    q = call(bands, destination, MON_1959, seconds, subject="bob", tenant="t1")
    assert (q.price, q.max_cost_hit, q.disconnect) == (Decimal(price), hit, disconnect)


def test_data_units_on_a_hand_made_plan(tmp_path):
    # 0.01 per MiB (1048576 units) in 1 MiB increments
    plan = read_tariff_plan(write_plan(
        tmp_path,
        Rates="RT_MB,0,0.01,1048576,1048576,0\n",
        DestinationRates="DR_DATA,*any,RT_MB,*up,2,0,\n",
        RatingPlans="RP_DATA,DR_DATA,*any,10\n",
        RatingProfiles="t1,data,*any,2014-01-01T00:00:00Z,RP_DATA,\n"))
    for units, price in ((1, "0.01"), (3 * 1048576, "0.03"), (3 * 1048576 + 1, "0.04")):
        q = quote(plan, tenant="t1", category="data", subject="x", destination="internet",
                  start=MONDAY_0900, usage=units)
        assert q.price == Decimal(price)


# ---------------------------------------------------------------------------------------------
# Reading errors
# ---------------------------------------------------------------------------------------------

def test_malformed_csv_lists_every_problem_with_file_and_line(tmp_path):
    folder = write_plan(
        tmp_path,
        Destinations="""\
            #Id,Prefix
            DST_A,1
            DST_B
            """,
        Timings="""\
            #Id,Years,Months,MonthDays,WeekDays,Time
            TM_X,*any,13,*any,*any,25:00:00
            """,
        Rates="""\
            #Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart
            RT_A,0,0.1,60s,1s,0s

            # a comment with a "quote" and, commas
            RT_B,0,abc,60s,1s,0s
            RT_C,0,0.1,60s,1s,0s
            RT_C,0,0.1,60x,1s,60s
            RT_D,0,0.1,60s,1s,30s
            RT_E,-0.1,0.1,60s,1s,0s
            """,
        DestinationRates="""\
            #Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy
            DR_A,DST_A,RT_A,*up,4,0,
            DR_B,DST_A,RT_NOPE,*up,4,0,
            DR_C,DST_Z,RT_A,*sideways,x,0,*never
            """,
        RatingPlans="""\
            #Id,DestinationRatesId,TimingTag,Weight
            RP_A,DR_A,TM_NOPE,10
            RP_A,DR_MISSING,*any,ten
            """,
        RatingProfiles="""\
            #Tenant,Category,Subject,ActivationTime,RatingPlanId,FallbackSubject
            cgrates.org,call,1001,yesterday,RP_A,
            cgrates.org,call,1002,2014-01-14T00:00:00Z,RP_NONE,
            """)
    with pytest.raises(TariffPlanError) as info:
        read_tariff_plan(folder)
    assert isinstance(info.value, FormatError)
    problems = info.value.problems
    expected = [
        ("Destinations.csv:3:", "expected 2 columns"),
        ("Timings.csv:2:", "Months '13'"),
        ("Timings.csv:2:", "Time '25:00:00' is not HH:MM:SS"),
        ("Rates.csv:5:", "Rate 'abc' is not a decimal number"),
        ("Rates.csv:7:", "RateUnit '60x' is not a duration"),
        ("Rates.csv:8:", "Rate 'RT_D' has no slot at GroupIntervalStart 0"),
        ("Rates.csv:9:", "ConnectFee '-0.1' is negative"),
        ("DestinationRates.csv:3:", "RatesID 'RT_NOPE' is not in Rates.csv"),
        ("DestinationRates.csv:4:", "DestinationsID 'DST_Z' is not in Destinations.csv"),
        ("DestinationRates.csv:4:", "RoundingMethod '*sideways'"),
        ("DestinationRates.csv:4:", "RoundingDecimals 'x'"),
        ("DestinationRates.csv:4:", "MaxCostStrategy '*never'"),
        ("RatingPlans.csv:2:", "TimingID 'TM_NOPE' is not in Timings.csv"),
        ("RatingPlans.csv:3:", "DestinationRatesID 'DR_MISSING' is not in DestinationRates.csv"),
        ("RatingPlans.csv:3:", "Weight 'ten' is not a decimal number"),
        ("RatingProfiles.csv:2:", "ActivationTime 'yesterday'"),
        ("RatingProfiles.csv:2:", "RatingPlanID 'RP_A' is unusable"),
        ("RatingProfiles.csv:3:", "RatingPlanID 'RP_NONE' is not in RatingPlans.csv"),
    ]
    for where, what in expected:
        assert any(p.startswith(where) and what in p for p in problems), (where, what, problems)
    assert len(problems) == len(expected)
    assert "Rates.csv:7: RateUnit '60x' is not a duration" in str(info.value)


def test_an_empty_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(TariffPlanError, match="none of Destinations.csv"):
        read_tariff_plan(tmp_path)
    with pytest.raises(NotFoundError):
        read_tariff_plan(tmp_path / "nope")


@pytest.mark.parametrize("text, ns", [
    ("60s", 60 * 10**9), ("1m", 60 * 10**9), ("1m30s", 90 * 10**9), ("1.5s", 1_500_000_000),
    ("1024", 1024), ("0", 0), ("", 0), ("250ms", 250_000_000), ("0s", 0), ("1h", 3600 * 10**9),
])
def test_durations_are_go_durations_or_nanoseconds(text, ns):
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["60x", "-1s", "1.5", "s", "1 m", "1e3"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration_ns(text)


def test_requests_that_cannot_be_answered_are_refused(bands):
    with pytest.raises(UserFacingError, match="no time zone"):
        call(bands, "33123", datetime(2024, 3, 4, 19, 59), 60, subject="bob", tenant="t1")
    with pytest.raises(UserFacingError, match="negative"):
        call(bands, "33123", MON_1959, -1, subject="bob", tenant="t1")
    with pytest.raises(NotFoundError, match="RP_NOPE"):
        quote(bands, rating_plan="RP_NOPE", destination="33", start=MON_1959, usage=1)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

PROPERTY_PLAN = dict(
    Destinations="#Id,Prefix\nDST_10,10\nDST_20,20\n",
    Timings="""\
        PEAK,*any,*any,*any,1;2;3;4;5,08:00:00
        OFFPEAK_MORNING,*any,*any,*any,1;2;3;4;5,00:00:00
        OFFPEAK_EVENING,*any,*any,*any,1;2;3;4;5,19:00:00
        OFFPEAK_WEEKEND,*any,*any,*any,6;7,00:00:00
        """,
    Rates="""\
        RT_120C,0.2,1.2,1m,1m,0
        RT_120C,,1.2,1m,1s,1m
        RT_40,0.8,0.4,60s,30s,0s
        RT_40,0,0.2,60s,10s,60s
        RT_60C,0.1,0.01,1s,1s,0
        """,
    DestinationRates="""\
        DR_10_120C,DST_10,RT_120C,*up,4,,
        DR_10_60C,DST_10,RT_60C,*up,4,,
        DR_20_40,DST_20,RT_40,*middle,3,2.5,*free
        DR_20_60C,DST_20,RT_60C,*down,2,2.5,*free
        """,
    RatingPlans="""\
        RP,DR_10_120C,PEAK,10
        RP,DR_10_60C,OFFPEAK_MORNING,10
        RP,DR_10_60C,OFFPEAK_EVENING,10
        RP,DR_10_60C,OFFPEAK_WEEKEND,10
        RP,DR_20_40,PEAK,10
        RP,DR_20_60C,OFFPEAK_EVENING,10
        RP,DR_20_60C,OFFPEAK_MORNING,10
        RP,DR_20_60C,OFFPEAK_WEEKEND,10
        """)


@pytest.fixture(scope="module")
def property_plan(tmp_path_factory):
    return read_tariff_plan(write_plan(tmp_path_factory.mktemp("prop"), **PROPERTY_PLAN))


starts = st.integers(min_value=0, max_value=7 * 86_400 - 1).map(
    lambda s: datetime(2024, 3, 4, tzinfo=UTC) + timedelta(seconds=s))
destinations = st.sampled_from(["1003", "2001"])
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(start=starts, destination=destinations, d1=st.integers(0, 3 * 3600), extra=st.integers(0, 3 * 3600))
def test_price_never_decreases_with_duration(property_plan, start, destination, d1, extra):
    p1 = quote(property_plan, rating_plan="RP", destination=destination, start=start, usage=d1).price
    p2 = quote(property_plan, rating_plan="RP", destination=destination, start=start, usage=d1 + extra).price
    assert p1 is not None and p2 is not None
    assert p1 <= p2


@PROPERTY
@given(start=starts, destination=destinations, seconds=st.integers(1, 3 * 3600))
def test_timespans_tile_the_call_and_their_sum_is_the_whole_before_rounding(property_plan, start, destination,
                                                                            seconds):
    q = quote(property_plan, rating_plan="RP", destination=destination, start=start, usage=seconds)
    t = q.trace
    spans = t["timespans"]
    assert spans[0].offset_from == 0
    for a, b in zip(spans, spans[1:]):
        assert a.offset_to == b.offset_from                     # contiguous, no overlap
        assert a.end_at == b.start_at
    assert spans[-1].offset_to == t["billed_usage"] >= seconds
    for s in spans:
        assert s.offset_to - s.offset_from == s.increments * s.increment
        assert s.cost == s.increments * s.increment_cost
    assert sum(s.cost for s in spans) + t["connect_fee"] == t["total_before_max_cost"]
    if not q.max_cost_hit:
        assert t["unrounded_total"] == t["total_before_max_cost"]
    else:
        assert t["unrounded_total"] == Decimal("2.5") <= t["total_before_max_cost"]
    mode = {"*up": ROUND_CEILING, "*middle": ROUND_HALF_UP, "*down": ROUND_FLOOR}[t["rounding_method"]]
    assert q.price == t["unrounded_total"].quantize(Decimal(1).scaleb(-t["rounding_decimals"]), rounding=mode)
    assert abs(q.price - t["unrounded_total"]) < Decimal(1).scaleb(-t["rounding_decimals"])


# ---------------------------------------------------------------------------------------------
# bluerocktel rating quote
# ---------------------------------------------------------------------------------------------

def parse_quote_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser(prog="bluerocktel rating")
    add_rating_quote_parser(parser.add_subparsers(dest="rating_command", required=True), common)
    return parser.parse_args(["quote", *argv])


def test_cli_quote_prints_price_and_trace_as_json(capsys):
    fixture_plan("tutorial")
    args = parse_quote_args(["--cgrates-dir", str(FIXTURES / "tutorial"), "--tenant", "cgrates.org",
                             "--category", "call", "--subject", "1001", "--to", "1002",
                             "--start", "2019-03-11T09:00:00Z", "--duration", "120", "--json"])
    assert cmd_rating_quote(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["price"] == "0.7002"
    assert [s["increment_cost"] for s in out["trace"]["timespans"]] == ["0.20000", "0.00167"]
    assert out["trace"]["connect_fee"] == "0.4"


def test_cli_quote_with_a_plan_text_and_unrated(tmp_path, capsys):
    folder = write_plan(tmp_path, **BANDS)
    args = parse_quote_args(["--cgrates-dir", str(folder), "--plan", "RP_STD", "--to", "33123",
                             "--start", "2024-03-04T19:59:00+00:00", "--duration", "120"])
    assert cmd_rating_quote(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("price 0.77")
    assert "RT_DAY" in text and "RT_NIGHT" in text
    args = parse_quote_args(["--cgrates-dir", str(folder), "--plan", "RP_STD", "--to", "4420",
                             "--start", "2024-03-04T19:59:00Z", "--duration", "60", "--json"])
    assert cmd_rating_quote(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["price"]) == ("unrated", None)
    assert "4420" in out["reason"]


def test_cli_quote_refuses_a_start_without_time_zone_and_a_missing_subject(tmp_path):
    folder = write_plan(tmp_path, **BANDS)
    with pytest.raises(UserFacingError, match="no time zone"):
        cmd_rating_quote(parse_quote_args(["--cgrates-dir", str(folder), "--plan", "RP_STD", "--to", "33",
                                           "--start", "2024-03-04T19:59:00", "--duration", "1"]))
    with pytest.raises(UserFacingError, match="--subject"):
        cmd_rating_quote(parse_quote_args(["--cgrates-dir", str(folder), "--tenant", "t1", "--to", "33",
                                           "--start", "2024-03-04T19:59:00Z", "--duration", "1"]))
