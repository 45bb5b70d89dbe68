"""CGRateS tariff plans imported into our model, and quotes from our model through the kernel.

The sample plans of ``../shared/fixtures/cgrates-tariffplans`` are read in place (skipped when
absent). Three parts: the rows an import writes (and what it refuses), the six examples of
issue #4 quoted through OUR kernel after import, and an equivalence grid: for many calls, our
kernel's price equals :func:`bluerocktel.rating.cgrates.quote`'s on the same plan.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bluerocktel.db import Database
from bluerocktel.db.models import AuditEntry, Rate, RateDeck, RatingProfile, TimeBand
from bluerocktel.money import quantize
from bluerocktel.rating.cgrates import quote, read_tariff_plan
from bluerocktel.rating.cgrates_import import (
    CGRATES_EPOCH,
    CgratesImportError,
    build_import,
    deck_code,
    import_cgrates,
)
from bluerocktel.workbench import Workbench

UTC = dt.timezone.utc
FIXTURES = Path(os.environ.get("BLUEROCKTEL_CGRATES_FIXTURES") or
                Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "cgrates-tariffplans")
MONDAY_0900 = dt.datetime(2019, 3, 11, 9, 0, tzinfo=UTC)        # 2019-03-11 is a Monday
BIN = Path(sys.executable).parent / "bluerocktel"


def fixture(name: str) -> Path:
    if not (FIXTURES / name).is_dir():
        pytest.skip(f"CGRateS sample tariff plan {name!r} not found under {FIXTURES} "
                    "(set BLUEROCKTEL_CGRATES_FIXTURES to its folder)")
    return FIXTURES / name


def write_plan(folder: Path, **files: str) -> Path:
    """CSV files from keyword arguments: ``Rates="..."`` -> ``Rates.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.csv").write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def load(wb, name: str, **kw):
    with wb.db.transaction() as s:
        return import_cgrates(s, fixture(name), actor="test", skip_unsupported=True, **kw)


def rows(wb, code: str) -> list[tuple]:
    """(call_type, prefix, band, group_start, price, unit_size, fee, first, next, max_cost, action) of a deck."""
    with wb.db.session() as s:
        deck = s.scalars(select(RateDeck).where(RateDeck.code == code)).one()
        return sorted((r.call_type, r.prefix, r.band, r.group_start, r.price, r.unit_size, r.connection_fee,
                       r.first_increment, r.next_increment, r.max_cost, r.max_cost_action)
                      for r in s.scalars(select(Rate).where(Rate.deck_id == deck.id)))


def count(wb, model) -> int:
    with wb.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


D = Decimal


# ---------------------------------------------------------------------------------------------
# The rows an import writes
# ---------------------------------------------------------------------------------------------

def test_tutorial_becomes_five_decks_ten_rates_and_seven_profiles(wb):
    summary = load(wb, "tutorial")
    # RP_MMS serves only category mms, which has no call type of ours: left out with its profile.
    assert (summary.decks_created, summary.rates_added, summary.bands_added, summary.profiles_added) == (5, 10, 0, 7)
    assert any("category mms" in p and "RatingProfiles.csv:7" in p for p in summary.left_out)
    with wb.db.session() as s:
        decks = {d.code: d for d in s.scalars(select(RateDeck))}
        assert sorted(decks) == ["RP_1001", "RP_1002", "RP_1002_LOW", "RP_1003", "RP_SMS"]
        d = decks["RP_1001"]
        # DR_1002_20CNT: *up 4 -> up at 4 decimals; every increment rounded half-up at 5 (the cgrates profile)
        assert (d.name, d.kind, d.rounding_method, d.rounding_decimals, d.increment_rounding_method,
                d.increment_rounding_decimals, d.fallback_deck_id) == (
            "CGRateS RatingPlan RP_1001", "sell", "up", 4, "half_up", 5, None)
        profiles = sorted((p.tenant, p.category, p.subject, p.activation_at, decks_by_id(decks)[p.deck_id],
                           p.fallback_subjects) for p in s.scalars(select(RatingProfile)))
    assert profiles[:3] == [
        ("cgrates.com", "call", "*any", dt.datetime(2014, 1, 14, tzinfo=UTC), "RP_1001", ""),
        ("cgrates.com", "custom_charger", "*any", dt.datetime(2014, 1, 14, tzinfo=UTC), "RP_1001", ""),
        ("cgrates.org", "call", "1001", dt.datetime(2010, 1, 14, tzinfo=UTC), "RP_1002", ""),
    ]
    # RP_1001: DST_1002 -> RT_20CNT (slot 0s: fee 0.4, 0.2/60s by 60s; slot 60s: 0.1/60s by 1s),
    #          DST_1003 -> RT_1CNT_PER_SEC (0.01/1s by 1s) with MaxCost 0.12 *disconnect
    assert rows(wb, "RP_1001") == [
        ("voice", "1002", "", 0, D("0.2"), 60, D("0.4"), 60, 60, None, None),
        ("voice", "1002", "", 60, D("0.1"), 60, D("0"), 60, 1, None, None),
        ("voice", "1003", "", 0, D("0.01"), 1, D("0"), 1, 1, D("0.12"), "disconnect"),
    ]
    # RP_SMS: *any destination -> prefix ''; RateUnit/RateIncrement "1" = 1 unit (1 SMS)
    assert rows(wb, "RP_SMS") == [("sms", "", "", 0, D("0.01"), 1, D("0"), 1, 1, None, None)]
    with wb.db.session() as s:
        assert {r.valid_from for r in s.scalars(select(Rate))} == {CGRATES_EPOCH}
        assert {r.valid_to for r in s.scalars(select(Rate))} == {None}


def decks_by_id(decks: dict) -> dict:
    return {d.id: code for code, d in decks.items()}


def test_tutorial2_timings_become_bands_and_each_band_gets_the_rate_cgrates_would_use(wb):
    summary = load(wb, "tutorial2")
    assert (summary.decks_created, summary.rates_added, summary.bands_added, summary.profiles_added) == (7, 16, 4, 6)
    # NEW_YEAR (Months 1, MonthDays 1) is no week-day band; 'voicemail' is no E.164 prefix
    assert len(summary.left_out) == 2
    assert "Timing NEW_YEAR" in summary.left_out[1] and "RatingPlans.csv:7" in summary.left_out[1]
    assert "DST_VOICEMAIL prefix 'voicemail'" in summary.left_out[0]
    with wb.db.session() as s:
        deck = s.scalars(select(RateDeck).where(RateDeck.code == "RP_STANDARD")).one()
        bands = sorted((b.start_minute, b.name, b.days, b.end_minute, b.priority)
                       for b in s.scalars(select(TimeBand).where(TimeBand.deck_id == deck.id)))
    # A band runs from its timing's start to the next timing of the plan that day (CGRateS: the
    # latest-starting active timing wins): peak 08:00-19:00, evening 19:00-24:00 on weekdays.
    assert bands == [
        (0, "OFFPEAK_MORNING", "mon,tue,wed,thu,fri", 480, 0),
        (0, "OFFPEAK_WEEKEND", "sat,sun", 1440, 1),
        (480, "PEAK", "mon,tue,wed,thu,fri", 1140, 2),
        (1140, "OFFPEAK_EVENING", "mon,tue,wed,thu,fri", 1440, 3),
    ]
    assert rows(wb, "RP_STANDARD") == [
        # DST_10 has no *any binding: no '' rows; RT_60C (fee 0.1, 0.01/1s) off peak, RT_120C at peak.
        # One unit size per prefix: RT_60C's 0.01 per 1 s is written 0.60 per 60 s (x 60, exact).
        ("voice", "10", "OFFPEAK_EVENING", 0, D("0.60"), 60, D("0.1"), 1, 1, None, None),
        ("voice", "10", "OFFPEAK_MORNING", 0, D("0.60"), 60, D("0.1"), 1, 1, None, None),
        ("voice", "10", "OFFPEAK_WEEKEND", 0, D("0.60"), 60, D("0.1"), 1, 1, None, None),
        ("voice", "10", "PEAK", 0, D("1.2"), 60, D("0.2"), 60, 60, None, None),
        ("voice", "10", "PEAK", 60, D("1.2"), 60, D("0"), 60, 1, None, None),
        # DST_2030 (20, 30) bound with *any: '' rows only (DST_20's NEW_YEAR binding was left out)
        ("voice", "20", "", 0, D("1.2"), 60, D("0.2"), 60, 60, None, None),
        ("voice", "20", "", 60, D("1.2"), 60, D("0"), 60, 1, None, None),
        ("voice", "30", "", 0, D("1.2"), 60, D("0.2"), 60, 60, None, None),
        ("voice", "30", "", 60, D("1.2"), 60, D("0"), 60, 1, None, None),
    ]
    # data: RT_1024_1 "1024" = 1024 units (CGRateS counts units as nanoseconds)
    assert rows(wb, "RP_DATA") == [("data", "", "", 0, D("1"), 1024, D("0"), 1024, 1024, None, None)]
    # RT_10C_CN: RateUnit 0 means 1 s; a connect fee and a zero price
    assert rows(wb, "RP_SPECIAL_BLC") == [("voice", "", "", 0, D("0"), 1, D("0.1"), 1, 1, None, None)]
    with wb.db.session() as s:
        profile = s.scalars(select(RatingProfile).where(RatingProfile.subject == "1001")).one()
        assert profile.fallback_subjects == "*any"


def test_oldtutorial_max_cost_strategies_and_data_rows(wb):
    summary = load(wb, "oldtutorial")
    assert (summary.decks_created, summary.rates_added, summary.bands_added, summary.profiles_added) == (4, 36, 8, 4)
    assert any("category generic" in p for p in summary.left_out)
    # DR_1007_MAXCOST_DISC (RP_RETAIL1) and DR_1007_MAXCOST_FREE (RP_RETAIL2): MaxCost 0.62
    assert [r for r in rows(wb, "RP_RETAIL1") if r[1] == "1007"] == [
        ("voice", "1007", "", 0, D("0.01"), 1, D("0"), 1, 1, D("0.62"), "disconnect")]
    assert [r for r in rows(wb, "RP_RETAIL2") if r[1] == "1007"] == [
        ("voice", "1007", "", 0, D("0.01"), 1, D("0"), 1, 1, D("0.62"), "cap")]
    # RT_40CNT at peak: fee 0.8, 0.4/60s by 30s (first increment 30), then 0.2/60s by 10s from 60s
    assert [r for r in rows(wb, "RP_RETAIL2") if r[1] == "1003" and r[2] == "PEAK"] == [
        ("voice", "1003", "PEAK", 0, D("0.4"), 60, D("0.8"), 30, 30, None, None),
        ("voice", "1003", "PEAK", 60, D("0.2"), 60, D("0"), 30, 10, None, None)]
    # RP_GENERIC serves categories generic (left out) and data: data rows
    assert rows(wb, "RP_GENERIC") == [("data", "", "", 0, D("1"), 1, D("0"), 1, 1, None, None)]


def test_an_import_with_unsupported_parts_is_refused_whole_unless_asked_to_skip_them(wb):
    with pytest.raises(CgratesImportError) as err, wb.db.transaction() as s:
        import_cgrates(s, fixture("tutorial2"), actor="test")
    text = str(err.value)
    assert "--skip-unsupported" in text
    assert "Timings.csv:6: Timing NEW_YEAR (Months 1, MonthDays 1) cannot be a time band" in text
    assert "destination DST_VOICEMAIL prefix 'voicemail' is not digits" in text
    assert (count(wb, RateDeck), count(wb, Rate), count(wb, RatingProfile), count(wb, AuditEntry)) == (0, 0, 0, 0)


def test_reimporting_the_same_folder_changes_nothing(wb):
    first = load(wb, "oldtutorial")
    with wb.db.session() as s:
        before = sorted((r.id, r.valid_from, r.valid_to) for r in s.scalars(select(Rate)))
        [entry] = s.scalars(select(AuditEntry)).all()
        assert (entry.actor, entry.action, entry.target_id) == ("test", "rating.import_cgrates", "oldtutorial")
        assert entry.details["changes"] == first.changes == 4 + 36 + 8 + 4
    again = load(wb, "oldtutorial")
    assert again.changes == 0
    assert set(again.decks.values()) == {"unchanged"}
    with wb.db.session() as s:
        assert sorted((r.id, r.valid_from, r.valid_to) for r in s.scalars(select(Rate))) == before
    assert count(wb, AuditEntry) == 1                       # a no-op writes no audit entry


def test_a_changed_plan_is_reimported_effective_dated(wb, tmp_path):
    folder = tmp_path / "tutorial"
    shutil.copytree(fixture("tutorial"), folder)
    with wb.db.transaction() as s:
        import_cgrates(s, folder, actor="test", skip_unsupported=True)
    rates = folder / "Rates.csv"
    rates.write_text(rates.read_text().replace("RT_20CNT,0.4,0.2,60s,60s,0s", "RT_20CNT,0.4,0.3,60s,60s,0s"))
    changed_at = dt.datetime(2026, 6, 1, tzinfo=UTC)
    with wb.db.transaction() as s:
        summary = import_cgrates(s, folder, actor="test", skip_unsupported=True, effective_at=changed_at)
    # RT_20CNT prices DST_1002 in RP_1001 and DST_1001 in RP_1002: 2 slots each, closed and re-added
    assert (summary.rates_closed, summary.rates_added, summary.changes) == (4, 4, 8)
    assert summary.decks == {"RP_1001": "updated", "RP_1002": "updated", "RP_1002_LOW": "unchanged",
                             "RP_1003": "unchanged", "RP_SMS": "unchanged"}
    with wb.db.session() as s:
        deck_id = s.scalars(select(RateDeck.id).where(RateDeck.code == "RP_1001")).one()
        got = sorted((r.prefix, r.group_start, r.price, r.valid_from, r.valid_to)
                     for r in s.scalars(select(Rate).where(Rate.deck_id == deck_id, Rate.prefix == "1002")))
    assert got == [("1002", 0, D("0.2"), CGRATES_EPOCH, changed_at), ("1002", 0, D("0.3"), changed_at, None),
                   ("1002", 60, D("0.1"), CGRATES_EPOCH, changed_at), ("1002", 60, D("0.1"), changed_at, None)]
    # a second change cannot edit the version in force (versions are append-only, as for rate sheets)
    rates.write_text(rates.read_text().replace("RT_20CNT,0.4,0.3,60s,60s,0s", "RT_20CNT,0.4,0.25,60s,60s,0s"))
    in_force = "deck 'RP_1001''s version from 2026-06-01T00:00:00Z is already in force"
    with pytest.raises(CgratesImportError, match=in_force), wb.db.transaction() as s:
        import_cgrates(s, folder, actor="test", skip_unsupported=True, effective_at=changed_at)
    with pytest.raises(CgratesImportError, match=r"already has a version from 2026-06-01T00:00:00Z; versions are "
                                                 r"append-only"), wb.db.transaction() as s:
        import_cgrates(s, folder, actor="test", skip_unsupported=True, effective_at=changed_at - dt.timedelta(days=1))
    # a pending version is replaced by importing again at its instant: its 4 rows deleted, 4 written
    future = dt.datetime(2099, 1, 1, tzinfo=UTC)
    with wb.db.transaction() as s:
        pending = import_cgrates(s, folder, actor="test", skip_unsupported=True, effective_at=future)
    assert (pending.rates_closed, pending.rates_added, pending.rates_replaced) == (4, 4, 0)
    rates.write_text(rates.read_text().replace("RT_20CNT,0.4,0.25,60s,60s,0s", "RT_20CNT,0.4,0.35,60s,60s,0s"))
    with wb.db.transaction() as s:
        replaced = import_cgrates(s, folder, actor="test", skip_unsupported=True, effective_at=future)
    assert (replaced.rates_closed, replaced.rates_added, replaced.rates_replaced, replaced.changes) == (0, 4, 4, 8)
    assert "rates: 4 added, 0 closed, 4 of a pending version replaced" in replaced.describe()
    with wb.db.session() as s:
        got = sorted((r.group_start, r.price, r.valid_from, r.valid_to)
                     for r in s.scalars(select(Rate).where(Rate.deck_id == deck_id, Rate.prefix == "1002")))
    assert got == [(0, D("0.2"), CGRATES_EPOCH, changed_at), (0, D("0.3"), changed_at, future),
                   (0, D("0.35"), future, None), (60, D("0.1"), CGRATES_EPOCH, changed_at),
                   (60, D("0.1"), changed_at, future), (60, D("0.1"), future, None)]


def test_a_deck_code_used_by_another_deck_is_refused_and_a_prefix_avoids_it(wb):
    with wb.db.transaction() as s:
        s.add(RateDeck(code="RP_1001", name="our retail plan"))
    with pytest.raises(CgratesImportError, match=r"deck RP_1001 \('our retail plan'"):
        load(wb, "tutorial")
    assert count(wb, RateDeck) == 1
    summary = load(wb, "tutorial", prefix="CGR_")
    assert sorted(summary.decks) == ["CGR_RP_1001", "CGR_RP_1002", "CGR_RP_1002_LOW", "CGR_RP_1003", "CGR_RP_SMS"]


def test_deck_codes_are_sanitised_cut_to_32_and_kept_unique():
    assert deck_code("RP 1/A") == "RP_1_A"
    assert deck_code("RP_1001", "CGR-") == "CGR-RP_1001"
    plan_a, plan_b = "RP_" + "X" * 40 + "_A", "RP_" + "X" * 40 + "_B"
    assert deck_code(plan_a) == deck_code(plan_b) == ("RP_" + "X" * 40)[:32]


def test_two_plans_whose_codes_would_clash_get_distinct_codes(tmp_path):
    long_a, long_b = "RP_" + "X" * 40 + "_A", "RP_" + "X" * 40 + "_B"
    imported = plan_of(tmp_path, Destinations="DST_A,1\n", Rates="RT,0,0.1,60s,60s,0s\n",
                       DestinationRates="DR,DST_A,RT,*up,4,0,\n",
                       RatingPlans=f"{long_a},DR,*any,10\n{long_b},DR,*any,10\n")
    assert [(d.plan_id, d.code) for d in imported.decks] == [
        (long_a, "RP_" + "X" * 29), (long_b, "RP_" + "X" * 27 + "~2")]
    assert imported.decks[1].name == f"CGRateS RatingPlan {long_b}"


# ---------------------------------------------------------------------------------------------
# Hand-made plans: what the mapping does with each CGRateS feature (no database needed)
# ---------------------------------------------------------------------------------------------

HEADERS = dict(
    Destinations="#Id,Prefix\n",
    Timings="#Id,Years,Months,MonthDays,WeekDays,Time\n",
    Rates="#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n",
    DestinationRates="#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy\n",
    RatingPlans="#Id,DestinationRatesId,TimingTag,Weight\n",
)


def plan_of(tmp_path: Path, **files: str):
    texts = {k: HEADERS.get(k, "") + textwrap.dedent(v).lstrip("\n") for k, v in files.items()}
    return build_import(read_tariff_plan(write_plan(tmp_path, **texts)))


def test_bands_end_where_the_next_timing_starts_that_day(tmp_path):
    # TM_NIGHT runs every day from 00:00, TM_DAY on weekdays from 08:00, TM_EVENING every day from
    # 20:00: the night band ends at 08:00 on weekdays but at 20:00 on weekends (two rows).
    imported = plan_of(
        tmp_path, Destinations="DST_FR,+33\n",
        Timings="TM_DAY,*any,*any,*any,1;2;3;4;5,08:00:00\nTM_NIGHT,*any,*any,*any,*any,00:00:00\n"
                "TM_EVENING,*any,*any,*any,*any,20:00:00\n",
        Rates="RT_DAY,0.05,0.60,60s,1s,0s\nRT_NIGHT,0.10,0.12,60s,1s,0s\n",
        DestinationRates="DR_DAY,DST_FR,RT_DAY,*middle,4,0,\nDR_NIGHT,DST_FR,RT_NIGHT,*middle,4,0,\n",
        RatingPlans="RP_STD,DR_DAY,TM_DAY,10\nRP_STD,DR_NIGHT,TM_NIGHT,10\nRP_STD,DR_NIGHT,TM_EVENING,10\n")
    assert imported.problems == []
    [deck] = imported.decks
    assert deck.rounding == ("half_up", 4)                              # *middle
    assert [(b.name, b.days, b.start_minute, b.end_minute) for b in deck.bands] == [
        ("TM_NIGHT", "mon,tue,wed,thu,fri", 0, 480),
        ("TM_NIGHT", "sat,sun", 0, 1200),
        ("TM_DAY", "mon,tue,wed,thu,fri", 480, 1200),
        ("TM_EVENING", "mon,tue,wed,thu,fri,sat,sun", 1200, 1440),
    ]
    # "+33" is E.164 digits 33; each band gets the rate its timing is bound to
    assert sorted((r.prefix, r.band, r.price) for r in deck.rates) == [
        ("33", "TM_DAY", D("0.60")), ("33", "TM_EVENING", D("0.12")), ("33", "TM_NIGHT", D("0.12"))]


def test_a_heavier_any_time_binding_outranks_a_band_and_a_band_a_destination_lacks_keeps_its_own_rate(tmp_path):
    # DST_A: PEAK (weekdays 08:00) weight 10 only. DST_B: *any weight 20 and PEAK weight 10.
    # DST_C: EVENING (weekdays 19:00) only. Bands: PEAK 08:00-19:00, EVENING 19:00-24:00.
    # CGRateS at Monday 20:00 for DST_A: PEAK is still active (a timing runs to midnight) -> RT_P.
    imported = plan_of(
        tmp_path, Destinations="DST_A,1\nDST_B,2\nDST_C,3\n",
        Timings="PEAK,*any,*any,*any,1;2;3;4;5,08:00:00\nEVENING,*any,*any,*any,1;2;3;4;5,19:00:00\n",
        Rates="RT_P,0,0.5,60s,60s,0s\nRT_E,0,0.1,60s,60s,0s\nRT_ANY,0,0.3,60s,60s,0s\n",
        DestinationRates="DR_AP,DST_A,RT_P,*up,4,0,\nDR_BP,DST_B,RT_P,*up,4,0,\nDR_BANY,DST_B,RT_ANY,*up,4,0,\n"
                         "DR_CE,DST_C,RT_E,*up,4,0,\n",
        RatingPlans="RP,DR_AP,PEAK,10\nRP,DR_BP,PEAK,10\nRP,DR_BANY,*any,20\nRP,DR_CE,EVENING,10\n")
    assert imported.problems == []
    [deck] = imported.decks
    assert sorted((r.prefix, r.band, r.price) for r in deck.rates) == [
        ("1", "EVENING", D("0.5")),           # weekday evenings: PEAK still active for DST_A
        ("1", "PEAK", D("0.5")),
        ("2", "", D("0.3")),                  # the weight-20 *any binding always wins for DST_B
        ("3", "EVENING", D("0.1")),
    ]


def test_a_prefix_priced_differently_on_two_days_of_one_band_is_refused(tmp_path):
    # EVENING runs every day from 19:00; DST_A is bound to PEAK (weekdays from 08:00) only, so
    # CGRateS prices a weekday evening with RT_P and has no rate on a weekend evening.
    imported = plan_of(
        tmp_path, Destinations="DST_A,1\nDST_C,3\n",
        Timings="PEAK,*any,*any,*any,1;2;3;4;5,08:00:00\nEVENING,*any,*any,*any,*any,19:00:00\n",
        Rates="RT_P,0,0.5,60s,60s,0s\nRT_E,0,0.1,60s,60s,0s\n",
        DestinationRates="DR_AP,DST_A,RT_P,*up,4,0,\nDR_CE,DST_C,RT_E,*up,4,0,\n",
        RatingPlans="RP,DR_AP,PEAK,10\nRP,DR_CE,EVENING,10\n")
    assert imported.problems == ["RatingPlan RP: prefix 1 is priced by DR_AP (DST_A), nothing on different days of "
                                 "band EVENING; our bands cannot express it; the prefix is left out"]
    assert sorted((r.prefix, r.band) for r in imported.decks[0].rates) == [("3", "EVENING")]


def test_what_our_model_cannot_express_is_named(tmp_path):
    imported = plan_of(
        tmp_path, Destinations="DST_A,1\nDST_VM,voicemail\n",
        Timings="XMAS,*any,12,25,*any,00:00:00\nODD,*any,*any,*any,1,08:00:30\n",
        Rates="RT_A,0,0.1,60s,1500ms,0s\nRT_B,0,0.1234567,60s,1s,0s\nRT_C,0,0.1,60s,60s,0s\n",
        DestinationRates="DR_A,DST_A,RT_A,*up,4,0,\nDR_B,DST_A,RT_B,*up,4,0,\nDR_C,DST_A,RT_C,*up,4,0,\n"
                         "DR_VM,DST_VM,RT_C,*up,4,0,\nDR_MIX,DST_A,RT_C,*down,2,0,\n",
        RatingPlans="RP_HALF,DR_A,*any,10\nRP_7DEC,DR_B,*any,10\nRP_XMAS,DR_C,XMAS,10\nRP_ODD,DR_C,ODD,10\n"
                    "RP_VM,DR_VM,*any,10\nRP_MIX,DR_C,*any,10\nRP_MIX,DR_MIX,ODD,20\n")
    problems = "\n".join(imported.problems)
    assert "Rates.csv:2: Rate RT_A RateIncrement 1.5s is not a whole number of seconds" in problems
    assert "Rates.csv:3: Rate RT_B Rate 0.1234567 has more than 6 decimals" in problems
    assert "Timings.csv:2: Timing XMAS (Months 12, MonthDays 25) cannot be a time band" in problems
    assert "Timings.csv:3: Timing ODD starts at 08:00:30: time bands start on whole minutes" in problems
    assert "destination DST_VM prefix 'voicemail' is not digits" in problems
    # every plan but RP_MIX lost all its rates; RP_MIX lost its *down binding (timing ODD), so
    # what remains rounds one way
    for plan_id in ("RP_HALF", "RP_7DEC", "RP_VM"):
        assert f"RatingPlan {plan_id}: no rate is left (see above); the plan is left out" in problems
    assert [d.plan_id for d in imported.decks] == ["RP_MIX"]


def test_a_plan_whose_destination_rates_round_differently_is_refused(tmp_path):
    imported = plan_of(
        tmp_path, Destinations="DST_A,1\nDST_B,2\n", Rates="RT_C,0,0.1,60s,60s,0s\n",
        DestinationRates="DR_A,DST_A,RT_C,*up,4,0,\nDR_B,DST_B,RT_C,*down,2,0,\n",
        RatingPlans="RP_MIX,DR_A,*any,10\nRP_MIX,DR_B,*any,10\n")
    assert imported.decks == []
    assert imported.problems == ["RatingPlan RP_MIX: its DestinationRates round differently (down 2: DR_B; "
                                 "up 4: DR_A); a deck has one rounding; the plan is left out"]


# ---------------------------------------------------------------------------------------------
# The six examples of issue #4, quoted through OUR kernel after import
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """``sample(name)``: a SQLite workbench holding that sample plan, imported once per module."""
    opened: dict[str, Workbench] = {}

    def get(name: str) -> Workbench:
        if name not in opened:
            folder = fixture(name)
            path = tmp_path_factory.mktemp(f"cgrates_{name}")
            db = Database(f"sqlite:///{path / 'bluerocktel.db'}")
            db.migrate()
            opened[name] = wb = Workbench(path, db)
            with wb.db.transaction() as s:
                import_cgrates(s, folder, actor="test", skip_unsupported=True)
        return opened[name]

    yield get
    for wb in opened.values():
        wb.close()

def quote_ours(wb, **kw):
    from bluerocktel.rating.quote import quote_call

    return quote_call(wb, **kw)


def test_tutorial_1001_to_1002_120s_costs_0_7002_through_our_kernel(sample):
    # profile cgrates.org:call:1001 -> newest activation 2014-01-14 -> deck RP_1001 -> prefix 1002:
    # group 0 [0,60): one 60 s increment x 0.2/60s = 0.2; group 60 [60,120): 60 x 1 s increments,
    # each 0.1 x 1/60 = 0.001666.. -> 0.00167 (half-up, 5 decimals) -> 60 x 0.00167 = 0.1002;
    # 0.4 (fee) + 0.2 + 0.1002 = 0.7002 -> up at 4 decimals = 0.7002
    wb = sample("tutorial")
    q = quote_ours(wb, tenant="cgrates.org", category="call", subject="1001", to="1002", start=MONDAY_0900,
                   duration=120)
    assert (q["status"], q["price"]) == ("rated", "0.7002")
    t = q["trace"]
    assert (t["deck"], t["prefix"], t["destination"], t["billable_units"], t["increments"]) == (
        "RP_1001", "1002", "DST_1002", 120, 61)
    # unrounded = the exact amount before any rounding: 0.4 + 0.2 + 60 x 0.1/60 = 0.7
    assert D(t["unrounded"]) == D("0.7")
    assert t["rate_valid_from"] == "1970-01-01T00:00:00Z"


def test_tutorial2_1001_to_1003_falls_back_to_the_any_subject_1_4_through_our_kernel(sample):
    # 1001 -> deck RP_1001 (only 1002) -> fallback subject *any -> RP_STANDARD: 1003 -> prefix 10.
    # Monday 09:00 UTC is in band PEAK (08:00-19:00): RT_120C fee 0.2, 1.2/60s by 60s:
    # 45 s -> one 60 s increment = 1.2; 0.2 + 1.2 = 1.4
    wb = sample("tutorial2")
    q = quote_ours(wb, tenant="cgrates.org", category="call", subject="1001", to="1003", start=MONDAY_0900,
                   duration=45)
    assert (q["status"], D(q["price"])) == ("rated", D("1.4"))
    assert q["price"] == "1.4000"                         # the deck's 4 decimals
    t = q["trace"]
    assert (t["deck_chain"], t["deck"], t["prefix"], t["band"], t["billable_units"]) == (
        ["RP_1001", "RP_STANDARD"], "RP_STANDARD", "10", "PEAK", 60)
    assert any("fallback subjects *any" in line for line in t["lookups"])


def test_tutorial2_1001_to_4003_is_unrated_through_our_kernel(sample):
    # RP_1001 has no 4003 and RP_STANDARD neither (no prefix 4..., no *any destination)
    wb = sample("tutorial2")
    q = quote_ours(wb, tenant="cgrates.org", category="call", subject="1001", to="4003", start=MONDAY_0900,
                   duration=45)
    assert (q["status"], q["price"]) == ("unrated", None)
    assert "4003" in q["reason"] and "RP_1001" in q["reason"] and "RP_STANDARD" in q["reason"]


def test_tutorial2_data_2048_units_cost_2_through_our_kernel(sample):
    # cgrates.org:data:1001 does not exist -> cgrates.org:data:*any -> RP_DATA: 1 per 1024 units
    # by 1024: 2048 units = 2 increments x 1 = 2.0
    wb = sample("tutorial2")
    q = quote_ours(wb, tenant="cgrates.org", category="data", subject="1001", to="*any", start=MONDAY_0900,
                   duration=2048)
    assert (q["status"], D(q["price"])) == ("rated", D("2.0"))
    assert (q["trace"]["call_type"], q["trace"]["billable_units"], q["trace"]["increments"]) == ("data", 2048, 2)


def test_oldtutorial_1001_to_1003_monday_13h_20s_costs_1_0_through_our_kernel(sample):
    # 1001 -> RP_RETAIL2; 1003 at Monday 13:00 = band PEAK: RT_40CNT fee 0.8, 0.4/60s by 30 s:
    # 20 s -> one 30 s increment = 0.4 x 30/60 = 0.2; 0.8 + 0.2 = 1.0
    wb = sample("oldtutorial")
    q = quote_ours(wb, tenant="cgrates.org", category="call", subject="1001", to="1003",
                   start=dt.datetime(2014, 8, 4, 13, tzinfo=UTC), duration=20)
    assert (q["status"], D(q["price"]), q["trace"]["band"]) == ("rated", D("1.0"), "PEAK")


def test_oldtutorial_1001_to_1007_70s_is_capped_at_0_62_through_our_kernel(sample):
    # RP_RETAIL2 -> 1007: 0.01/1s, 70 s = 0.70 > MaxCost 0.62 with *free (cap) -> 0.62
    wb = sample("oldtutorial")
    q = quote_ours(wb, tenant="cgrates.org", category="call", subject="1001", to="1007",
                   start=dt.datetime(2014, 8, 4, 13, tzinfo=UTC), duration=70)
    assert (q["status"], D(q["price"])) == ("rated", D("0.62"))
    assert q["trace"]["flags"] == ["max_cost_capped"]
    assert D(q["trace"]["unrounded"]) == D("0.70")


def test_a_plan_code_quotes_directly_and_an_unknown_one_is_refused(sample):
    from bluerocktel.errors import NotFoundError

    wb = sample("tutorial")
    q = quote_ours(wb, plan="RP_1001", to="+1002", start=MONDAY_0900, duration=120)
    assert (q["price"], q["trace"]["deck_chain"]) == ("0.7002", ["RP_1001"])
    with pytest.raises(NotFoundError, match="RP_NOPE"):
        quote_ours(wb, plan="RP_NOPE", to="1002", start=MONDAY_0900, duration=1)


# ---------------------------------------------------------------------------------------------
# Equivalence: our kernel on the imported plan == the CGRateS reference on the folder
# ---------------------------------------------------------------------------------------------

def _reference_price(q) -> Decimal | None:
    """CGRateS' price, except that a *disconnect call keeps its full price here (flagged)."""
    if q.status != "rated":
        return None
    if q.disconnect:
        t = q.trace
        return quantize(t["total_before_max_cost"], t["rounding_decimals"], ROUND_CEILING)   # all samples: *up
    return q.price


def _grid(name):
    """(label, quote kwargs) for a sample plan: profiles x destinations x starts x durations."""
    if name == "tutorial":
        calls = [("call", s, d) for s in ("1001", "1002", "1003") for d in ("1001", "1002", "1003", "1004", "55")]
        calls += [("sms", "1001", "1002")]
        starts = [MONDAY_0900, dt.datetime(2019, 3, 16, 23, 59, 30, tzinfo=UTC)]
        durations = {"call": [1, 59, 60, 61, 90, 120, 125, 601], "sms": [1, 3]}
    elif name == "tutorial2":
        calls = [("call", s, d) for s in ("1001", "1005", "RPF_SPECIAL_BLC") for d in ("1002", "1003", "2001", "3001")]
        calls += [("sms", "1001", "1002"), ("sms", "1001", "1003"), ("data", "1001", "*any"),
                  ("reseller1", "1001", "1002")]
        # the last three cross into the evening band or midnight (see the known difference below)
        starts = [MONDAY_0900, dt.datetime(2019, 3, 11, 7, tzinfo=UTC), dt.datetime(2019, 3, 11, 20, tzinfo=UTC),
                  dt.datetime(2019, 3, 10, 9, tzinfo=UTC), dt.datetime(2019, 3, 11, 18, 58, tzinfo=UTC),
                  dt.datetime(2019, 3, 11, 18, 59, 30, tzinfo=UTC), dt.datetime(2019, 3, 15, 23, 59, 30, tzinfo=UTC)]
        durations = {"call": [1, 45, 60, 61, 125], "reseller1": [1, 300], "sms": [1, 3], "data": [1, 1024, 2049]}
    else:   # oldtutorial
        calls = [("call", s, d) for s in ("1001", "1005", "SPECIAL_1002") for d in ("1002", "1003", "1007", "1099")]
        calls += [("data", "x", "*any")]
        starts = [dt.datetime(2014, 8, 4, 13, tzinfo=UTC), dt.datetime(2014, 8, 4, 7, tzinfo=UTC),
                  dt.datetime(2014, 8, 9, 12, tzinfo=UTC),
                  dt.datetime(2014, 8, 8, 23, 59, 45, tzinfo=UTC)]    # Friday evening -> weekend: same increments
        durations = {"call": [1, 20, 30, 59, 61, 70, 95, 125], "data": [1, 7]}
    for category, subject, to in calls:
        for start in starts:
            for duration in durations[category]:
                yield (f"{category}:{subject} -> {to} at {start:%a %H:%M:%S} for {duration}",
                       dict(tenant="cgrates.org", category=category, subject=subject, to=to, start=start,
                            duration=duration))


@pytest.mark.parametrize("name", ["tutorial", "tutorial2", "oldtutorial"])
def test_our_kernel_prices_like_cgrates_on_the_sample_plans(sample, name):
    from bluerocktel.rating.quote import quote_calls
    from bluerocktel.rating.tariffs import load_tariffs

    plan = read_tariff_plan(fixture(name))
    grid = list(_grid(name))
    with sample(name).db.session() as s:
        tariffs = load_tariffs(s, extra_deck_ids=[d.id for d in s.scalars(select(RateDeck))])
        results = quote_calls(s, [kw for _, kw in grid], tariffs=tariffs)    # one kernel run per deck chain
    mismatches, checked = [], 0
    for (label, kw), ours in zip(grid, results):
        ref = quote(plan, tenant=kw["tenant"], category=kw["category"], subject=kw["subject"],
                    destination=kw["to"], start=kw["start"], usage=kw["duration"])
        expected = _reference_price(ref)
        got = None if ours["price"] is None else D(ours["price"])
        checked += 1
        if got != expected or (ref.disconnect and "max_cost_exceeded" not in ours["trace"]["flags"]):
            mismatches.append(f"{label}: ours {got} ({ours['status']} {ours['reason'] or ''} "
                              f"{ours['trace'].get('band')} {ours['trace'].get('flags')}), CGRateS {expected}")
    assert checked > 100
    assert not mismatches, f"{len(mismatches)} of {checked} calls differ:\n" + "\n".join(mismatches)


def test_known_difference_a_band_change_keeps_the_increment_of_the_call_start(sample):
    # tutorial2 1001 -> 1003 (RP_STANDARD, prefix 10) at Monday 07:59:30 UTC for 45 s: the call
    # starts off peak (RT_60C: fee 0.1, 0.01/s by 1 s) and crosses into PEAK (RT_120C: 1.2/60s by 60 s).
    # Ours (rating spec, step 5): increments keep the size of the call start's row (1 s); each is
    #   priced at the band in force when it starts: 30 x 0.01 + 15 x 1.2/60 = 0.3 + 0.3; + 0.1 = 0.7
    # CGRateS: the PEAK span [30 s, 45 s) is stretched to one 60 s increment: 0.1 + 0.3 + 1.2 = 1.6
    # Wherever both bands bill in the same increments the two agree (see the equivalence grid).
    from bluerocktel.rating.quote import quote_call

    start = dt.datetime(2019, 3, 11, 7, 59, 30, tzinfo=UTC)
    kw = dict(tenant="cgrates.org", category="call", subject="1001", start=start)
    ours = quote_call(sample("tutorial2"), to="1003", duration=45, **kw)
    ref = quote(read_tariff_plan(fixture("tutorial2")), destination="1003", usage=45, **kw)
    assert (D(ours["price"]), ref.price) == (D("0.7"), D("1.6"))
    assert ours["trace"]["band"] == "OFFPEAK_MORNING+PEAK"
    assert [(seg["band"], seg["increments"], seg["units"]) for seg in ours["trace"]["segments"]] == [
        ("OFFPEAK_MORNING", 30, 30), ("PEAK", 15, 15)]


def test_bands_follow_the_time_zone_given_like_cgrates_timing_tz(sample):
    # tutorial2 RP_STANDARD, 1003 at 07:30 UTC on Monday = 08:30 in Paris (UTC+1 in March):
    # peak in Paris (RT_120C: 0.2 + 1.2 = 1.4), morning off-peak in UTC (RT_60C: 0.1 + 45 x 0.01 = 0.55)
    plan = read_tariff_plan(fixture("tutorial2"))
    start = dt.datetime(2019, 3, 11, 7, 30, tzinfo=UTC)
    kw = dict(tenant="cgrates.org", category="call", subject="1001", start=start)
    for zone, price in (("Europe/Paris", "1.4"), ("UTC", "0.55")):
        ours = quote_ours(sample("tutorial2"), to="1003", duration=45, timezone=zone, **kw)
        ref = quote(plan, destination="1003", usage=45, timing_tz=ZoneInfo(zone), **kw)
        assert D(ours["price"]) == ref.price == D(price)


# ---------------------------------------------------------------------------------------------
# The command line, end to end
# ---------------------------------------------------------------------------------------------

def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=120)


def test_cli_import_cgrates_then_quote_in_a_subprocess(data_dir):
    done = cli("rating", "import-cgrates", str(fixture("tutorial2")), "--skip-unsupported", "--json",
               data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["decks_created"], out["rates_added"], out["bands_added"], out["profiles_added"]) == (7, 16, 4, 6)
    assert len(out["left_out"]) == 2
    quoted = cli("rating", "quote", "--tenant", "cgrates.org", "--category", "call", "--subject", "1001",
                 "--to", "1003", "--start", "2019-03-11T09:00:00Z", "--duration", "45", "--json", data_dir=data_dir)
    assert quoted.returncode == 0, quoted.stderr
    out = json.loads(quoted.stdout)
    assert (out["price"], out["trace"]["deck"], out["trace"]["band"]) == ("1.4000", "RP_STANDARD", "PEAK")


def test_cli_refusal_idempotence_text_output_and_exit_codes(data_dir, database_url, capsys):
    from bluerocktel.cli import main

    folder = str(fixture("tutorial2"))
    assert main(["rating", "import-cgrates", folder, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "Timing NEW_YEAR" in err and "--skip-unsupported" in err

    assert main(["rating", "import-cgrates", folder, "--skip-unsupported", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"CGRateS tariff plan {folder}: 33 changes")
    assert main(["rating", "import-cgrates", folder, "--skip-unsupported", "--json", "--data-dir", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == 0
    again = ["rating", "import-cgrates", folder, "--skip-unsupported", "--json", "--data-dir", str(data_dir)]
    assert main([*again, "--effective", "2026-06-01"]) == 0             # no offset: UTC, as `rating import`
    assert json.loads(capsys.readouterr().out)["changes"] == 0
    assert main([*again, "--effective", "June 1st"]) == 2
    assert "--effective 'June 1st' is not an ISO 8601 date or time" in capsys.readouterr().err

    quote_args = ["rating", "quote", "--start", "2019-03-11T09:00:00Z", "--duration", "45", "--data-dir", str(data_dir)]
    assert main([*quote_args, "--plan", "RP_STANDARD", "--to", "1003"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("price 1.4000")
    assert "deck RP_STANDARD (chain RP_STANDARD), prefix 10 DST_10" in text and "band PEAK" in text

    assert main([*quote_args, "--tenant", "cgrates.org", "--category", "call", "--subject", "1001",
                 "--to", "4003", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["price"]) == ("unrated", None)
    assert main([*quote_args, "--plan", "RP_NOPE", "--to", "1003"]) == 2
    assert "no rate deck with code 'RP_NOPE'" in capsys.readouterr().err
