"""Bundles: included minutes / SMS / bytes per month, consumed in call order, prorated.

Inputs are built directly as RATED_SCHEMA rows (as the kernel's pricing steps leave them) and
a Tariffs object with ``bundles`` (SERVICE_BUNDLE_SCHEMA) and ``decks`` (DECK_SCHEMA).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bluerocktel import lake
from bluerocktel.lake import RATED_SCHEMA, connect_duckdb, write_partition
from bluerocktel.rating.bundles import BUNDLE_USED_SCHEMA, apply_bundles, bundle_usage
from bluerocktel.rating.tariffs import (BAND_SCHEMA, DECK_SCHEMA, IDENTIFIER_SCHEMA, RATE_SCHEMA,
                                        SERVICE_BUNDLE_SCHEMA, TRUNK_SCHEMA, Tariffs)

UTC = dt.timezone.utc
RATED_AT = dt.datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def deck(deck_id: int = 100, method: str = "half_up", decimals: int = 4) -> dict:
    return {"deck_id": deck_id, "code": f"D{deck_id}", "kind": "sell", "currency": "EUR",
            "rounding_method": method, "rounding_decimals": decimals, "increment_rounding_method": None,
            "increment_rounding_decimals": None, "fallback_deck_id": None, "holiday_calendar": None}


def grant(sbid: int, *, service_id: int = 1, call_type: str = "voice", zones=("fr_mobile",),
          allowance: int | None = 60_000, cap: int | None = None, valid_from: str = "2026-01-01",
          valid_to: str | None = None) -> dict:
    """A service bundle: ``allowance`` base units a month (None = unlimited, ``cap`` = fair use)."""
    return {"service_bundle_id": sbid, "service_id": service_id, "bundle_id": 1000 + sbid, "code": f"B{sbid}",
            "call_type": call_type, "zones": list(zones), "allowance": allowance, "fair_use_cap": cap,
            "valid_from": at(valid_from), "valid_to": at(valid_to) if valid_to else None}


def make_tariffs(grants: list[dict], decks: list[dict] | None = None) -> Tariffs:
    """Tariffs with these service bundles and decks (deck 100 by default); other tables empty."""
    return Tariffs(identifiers=IDENTIFIER_SCHEMA.empty_table(),
                   decks=pa.Table.from_pylist(decks if decks is not None else [deck()], schema=DECK_SCHEMA),
                   rates=RATE_SCHEMA.empty_table(), bands=BAND_SCHEMA.empty_table(),
                   trunks=TRUNK_SCHEMA.empty_table(),
                   bundles=pa.Table.from_pylist(grants, schema=SERVICE_BUNDLE_SCHEMA), version="test")


def rated(cdr_id: str, start: str, b: int, price: int, *, service_id: int = 1, call_type: str = "voice",
          zone: str = "fr_mobile", deck_id: int = 100, cost: int | None = None, flags: str = "",
          status: str = "rated") -> dict:
    """A RATED_SCHEMA row as pricing leaves it: ``b`` billable units, ``price`` micro units."""
    row = dict.fromkeys(RATED_SCHEMA.names)
    start_at = at(start)
    row.update(
        cdr_id=cdr_id, source="test", source_file="t.csv", source_line=1, start_at=start_at, answer_at=start_at,
        end_at=start_at + dt.timedelta(seconds=b if call_type == "voice" else 1), caller="+33123456789",
        callee="+33612345678", direction="out", disposition="ANSWERED", call_type=call_type,
        billsec_s=b if call_type == "voice" else 0, units=0 if call_type == "voice" else b,
        account_id=service_id and 10 * service_id, service_id=service_id, rate_deck_id=deck_id, zone=zone,
        billable_s=b if call_type == "voice" else 0, billable_units=b, price_micro=price, cost_micro=cost,
        margin_micro=None if cost is None or price is None else price - cost, flags=flags,
        rating_status=status, rating_reason="", tariff_version="test", rated_at=RATED_AT)
    return row


def table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=RATED_SCHEMA)


def used_table(*rows: tuple[int, str, int]) -> pa.Table:
    return pa.Table.from_pylist([{"service_bundle_id": s, "month": m, "units": u} for s, m, u in rows],
                                schema=BUNDLE_USED_SCHEMA)


@pytest.fixture
def con():
    cursor = connect_duckdb()
    yield cursor
    cursor.close()


def apply(con, rows: list[dict], grants: list[dict], used: pa.Table | None = None, decks=None) -> list[dict]:
    return apply_bundles(con, table(*rows), make_tariffs(grants, decks), used).to_pylist()


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["cdr_id"]: r for r in rows}


def summary(row: dict) -> tuple:
    return row["bundle_id"], row["bundle_units"], row["price_micro"], row["flags"]


# --- golden stories -------------------------------------------------------------------------

def test_1000_minutes_to_french_mobiles_are_consumed_in_call_order(con):
    # Bundle 7: 1000 min = 60000 s a month to zone fr_mobile. Calls given out of order.
    rows = [
        rated("d", "2026-11-20 13:00", 60, 20_000),        # 4th: nothing left
        rated("b", "2026-11-05 11:00", 29_400, 9_800_000),  # 2nd: 30000 + 29400 = 59400, fully covered
        rated("c2", "2026-11-12 12:00", 1_200, 333_333),   # 3rd (same start as c1, cdr_id c1 < c2): partly
        rated("a", "2026-11-02 10:00", 30_000, 10_000_000),  # 1st: fully covered, 30000 left
        rated("c1", "2026-11-12 12:00", 540, 180_000),     # 3rd: 59400 + 540 = 59940, fully covered
    ]
    out = apply(con, rows, [grant(7)])
    assert [r["cdr_id"] for r in out] == ["d", "b", "c2", "a", "c1"]   # input order kept
    got = by_id(out)
    assert summary(got["a"]) == (7, 30_000, 0, "bundle")
    assert summary(got["b"]) == (7, 29_400, 0, "bundle")
    assert summary(got["c1"]) == (7, 540, 0, "bundle")
    # c2: 60000 - 59940 = 60 s left of 1200 billable: price 333333 x (1200 - 60) / 1200 = 316666.35 micro
    # = 0.31666635 -> deck rounding half_up at 4 decimals: 0.3167 = 316700 micro
    assert summary(got["c2"]) == (7, 60, 316_700, "bundle")
    # d: the allowance is used up: charged in full, the bundle that matched is recorded with 0 units
    assert summary(got["d"]) == (7, 0, 20_000, "")
    # nothing else changed
    for before, after in zip(rows, out):
        for name in RATED_SCHEMA.names:
            if name not in ("price_micro", "bundle_id", "bundle_units", "margin_micro", "flags"):
                assert after[name] == before[name], name


@pytest.mark.parametrize("method, decimals, price", [
    # 2 of 7 SMS charged: 1000 micro x 2 / 7 = 285.714... micro = 0.000285714...
    ("up", 3, 1_000),          # 0.001
    ("half_up", 3, 0),         # 0.000 (0.00029 is below half of 0.001)
    ("down", 3, 0),            # 0.000
    ("up", 6, 286),
    ("half_up", 6, 286),
    ("down", 6, 285),
    ("half_up", 4, 300),       # 0.0003
    ("up", 0, 1_000_000),      # any positive amount rounds up to 1 at 0 decimals
])
def test_partly_covered_price_uses_the_deck_rounding(con, method, decimals, price):
    # 5 SMS left in the bundle; a batch of 7 SMS costs 1000 micro: 2 are charged
    out = apply(con, [rated("x", "2026-11-03 10:00", 7, 1_000, call_type="sms")],
                [grant(1, call_type="sms", allowance=5)], decks=[deck(100, method, decimals)])
    assert summary(out[0]) == (1, 5, price, "bundle")


def test_half_up_rounds_an_exact_half_up(con):
    # 100 micro x (2 - 1) / 2 = 50 micro = 0.00005 -> half_up at 4 decimals: 0.0001 = 100; down: 0
    sms = [rated("x", "2026-11-03 10:00", 2, 100, call_type="sms")]
    half = apply(con, sms, [grant(1, call_type="sms", allowance=1)], decks=[deck(100, "half_up", 4)])
    down = apply(con, sms, [grant(1, call_type="sms", allowance=1)], decks=[deck(100, "down", 4)])
    assert (half[0]["price_micro"], down[0]["price_micro"]) == (100, 0)


def test_allowance_left_after_an_earlier_rating(con):
    # 59000 of 60000 s used by earlier ratings of November: 1000 s left
    rows = [rated("a", "2026-11-20 10:00", 600, 100_000), rated("b", "2026-11-20 11:00", 600, 100_000),
            rated("c", "2026-11-20 12:00", 600, 100_000)]
    used = used_table((7, "2026-11", 59_000), (7, "2026-10", 60_000), (8, "2026-11", 60_000))
    got = by_id(apply(con, rows, [grant(7)], used))
    assert summary(got["a"]) == (7, 600, 0, "bundle")                 # 400 left
    # b: 400 of 600 covered: 100000 x 200 / 600 = 33333.33 micro -> 0.0333 (half_up, 4 dp) = 33300
    assert summary(got["b"]) == (7, 400, 33_300, "bundle")
    assert summary(got["c"]) == (7, 0, 100_000, "")
    # more used than the allowance (e.g. after a tariff change) leaves nothing, never a negative
    got = by_id(apply(con, rows, [grant(7)], used_table((7, "2026-11", 70_000))))
    assert [got[k]["bundle_units"] for k in "abc"] == [0, 0, 0]


def test_grant_from_the_11th_of_a_30_day_month_is_prorated(con):
    # 100 SMS a month, granted from 2026-11-11 00:00 UTC: November has 30 days, 20 are covered:
    # floor(100 x 20 / 30) = floor(66.67) = 66 SMS. Seven batches of 10 SMS at 0.10 each (100000 micro).
    rows = [rated(f"s{i}", f"2026-11-{11 + i:02d} 09:00", 10, 1_000_000, call_type="sms") for i in range(7)]
    got = by_id(apply(con, rows, [grant(3, call_type="sms", allowance=100, valid_from="2026-11-11")]))
    assert [got[f"s{i}"]["bundle_units"] for i in range(7)] == [10] * 6 + [6]   # 60 + 6 = 66
    # s6: 4 of 10 charged: 1000000 x 4 / 10 = 400000
    assert summary(got["s6"]) == (3, 6, 400_000, "bundle")
    # December is a whole month: the full 100
    december = apply(con, [rated("d", "2026-12-05 09:00", 150, 1_500_000, call_type="sms")],
                     [grant(3, call_type="sms", allowance=100, valid_from="2026-11-11")])
    assert december[0]["bundle_units"] == 100


def test_grant_ending_mid_month_is_prorated_and_stops_covering(con):
    # allowance 3100 s, grant [2026-10-01, 2026-10-11 12:00): 10.5 of 31 days:
    # floor(3100 x 907200 s / 2678400 s) = floor(1050) = 1050 s
    grants = [grant(4, allowance=3_100, valid_from="2026-10-01", valid_to="2026-10-11 12:00")]
    rows = [rated("a", "2026-10-02 10:00", 2_000, 200_000), rated("b", "2026-10-11 12:00", 60, 10_000)]
    got = by_id(apply(con, rows, grants))
    # a: 1050 of 2000 covered: 200000 x 950 / 2000 = 95000
    assert summary(got["a"]) == (4, 1_050, 95_000, "bundle")
    assert summary(got["b"]) == (None, None, 10_000, "")        # the grant has ended at that instant


def test_unlimited_bundle_with_a_fair_use_cap(con):
    # Unlimited French fixed, fair use 600 s a month
    grants = [grant(5, zones=["fr_fixed"], allowance=None, cap=600)]
    rows = [rated("a", "2026-11-02 10:00", 300, 30_000, zone="fr_fixed"),
            rated("b", "2026-11-02 11:00", 200, 20_000, zone="fr_fixed"),
            rated("c", "2026-11-02 12:00", 200, 20_000, zone="fr_fixed"),    # 100 left of 200
            rated("d", "2026-11-02 13:00", 120, 12_000, zone="fr_fixed")]    # beyond the cap
    got = by_id(apply(con, rows, grants))
    assert summary(got["a"]) == (5, 300, 0, "bundle")
    assert summary(got["b"]) == (5, 200, 0, "bundle")
    # c: 100 of 200 covered: 20000 x 100 / 200 = 10000, charged part beyond the cap
    assert summary(got["c"]) == (5, 100, 10_000, "bundle,fair_use_exceeded")
    assert summary(got["d"]) == (5, 0, 12_000, "fair_use_exceeded")
    # without a cap everything is covered, whatever the volume
    uncapped = apply(con, rows, [grant(5, zones=["fr_fixed"], allowance=None, cap=None)])
    assert [summary(r) for r in uncapped] == [(5, r["billable_units"], 0, "bundle") for r in rows]


def test_fair_use_cap_is_prorated_like_an_allowance(con):
    # cap 900 s, granted from 2026-11-21: 10 of 30 days -> floor(900 x 10 / 30) = 300 s
    grants = [grant(5, zones=["fr_fixed"], allowance=None, cap=900, valid_from="2026-11-21")]
    out = apply(con, [rated("a", "2026-11-22 10:00", 400, 40_000, zone="fr_fixed")], grants)
    # 300 of 400 covered: 40000 x 100 / 400 = 10000
    assert summary(out[0]) == (5, 300, 10_000, "bundle,fair_use_exceeded")


def test_two_bundles_on_one_service_lowest_id_first(con):
    # 8: 500 s to mobiles and fixed; 7: 100 s to mobiles. Listed out of id order on purpose.
    grants = [grant(8, zones=["fr_mobile", "fr_fixed"], allowance=500), grant(7, allowance=100)]
    rows = [rated("a", "2026-11-02 10:00", 80, 8_000),                   # 7: 80 (20 left)
            rated("b", "2026-11-02 11:00", 100, 10_000, zone="fr_fixed"),  # only 8 matches: 100 (400 left)
            rated("c", "2026-11-02 12:00", 50, 5_000),                   # 7: 20, then 8: 30 (370 left)
            rated("d", "2026-11-02 13:00", 400, 40_000),                 # 7: 0, 8: 370 of 400
            rated("e", "2026-11-02 14:00", 60, 6_000, zone="fr_fixed")]  # 8: nothing left
    got = by_id(apply(con, rows, grants))
    assert summary(got["a"]) == (7, 80, 0, "bundle")
    assert summary(got["b"]) == (8, 100, 0, "bundle")
    assert summary(got["c"]) == (7, 50, 0, "bundle")          # recorded on the first bundle that covered
    # d: 370 of 400 covered: 40000 x 30 / 400 = 3000
    assert summary(got["d"]) == (8, 370, 3_000, "bundle")
    assert summary(got["e"]) == (8, 0, 6_000, "")
    assert got["c"]["bundle_split"] == "7:20,8:30"            # the only call two bundles covered
    assert [r for r in got if got[r]["bundle_split"] is not None] == ["c"]


def test_a_call_split_over_two_bundles_counts_for_both_in_a_later_rating(con, tmp_path):
    """c takes 20 s from bundle 7 and 30 s from 8; rated again later (a second batch), the lake's
    usage must leave 8 with 500 - 100 - 30 = 370 s, not 400 (which the first bundle alone would say)."""
    grants = [grant(8, zones=["fr_mobile", "fr_fixed"], allowance=500), grant(7, allowance=100)]
    early = [rated("a", "2026-11-02 10:00", 80, 8_000), rated("b", "2026-11-02 11:00", 100, 10_000, zone="fr_fixed"),
             rated("c", "2026-11-02 12:00", 50, 5_000)]
    write_partition(tmp_path, "rated", "2026-11", apply_bundles(con, table(*early), make_tariffs(grants), None))
    used = bundle_usage(con, tmp_path, ["2026-11"]).to_pylist()
    assert used == [{"service_bundle_id": 7, "month": "2026-11", "units": 100},
                    {"service_bundle_id": 8, "month": "2026-11", "units": 130}]
    late = by_id(apply(con, [rated("d", "2026-11-02 13:00", 400, 40_000)], grants, bundle_usage(con, tmp_path,
                                                                                                ["2026-11"])))
    assert summary(late["d"]) == (8, 370, 3_000, "bundle")     # as when rated with the others at once


def test_an_unlimited_bundle_after_a_finite_one_takes_the_rest(con):
    # 1: 100 s to mobiles; 2: unlimited mobiles with a 150 s fair-use cap
    grants = [grant(1, allowance=100), grant(2, allowance=None, cap=150)]
    rows = [rated("a", "2026-11-02 10:00", 200, 20_000),   # 1: 100, 2: 100 (50 left)
            rated("b", "2026-11-02 11:00", 100, 10_000)]   # 1: 0, 2: 50 of 100
    got = by_id(apply(con, rows, grants))
    assert summary(got["a"]) == (1, 200, 0, "bundle")
    # b: 50 of 100 covered: 10000 x 50 / 100 = 5000, the rest beyond the fair-use cap
    assert summary(got["b"]) == (2, 50, 5_000, "bundle,fair_use_exceeded")


def test_fair_use_is_flagged_only_when_units_stay_charged(con):
    # 1: unlimited mobiles, fair use 100 s; 2: 500 s to mobiles, used after 1
    grants = [grant(1, allowance=None, cap=100), grant(2, allowance=500)]
    rows = [rated("a", "2026-11-02 10:00", 150, 15_000),   # 1: 100 (cap reached), 2: 50 -> all covered
            rated("b", "2026-11-02 11:00", 600, 60_000)]   # 1: 0, 2: 450 of 600
    got = by_id(apply(con, rows, grants))
    assert summary(got["a"]) == (1, 150, 0, "bundle")
    # b: 150 charged: 60000 x 150 / 600 = 15000
    assert summary(got["b"]) == (2, 450, 15_000, "bundle,fair_use_exceeded")


def test_sms_and_data_bundles(con):
    grants = [grant(1, call_type="sms", zones=["fr_mobile"], allowance=3),
              grant(2, call_type="data", zones=["eu"], allowance=10_000_000_000)]       # 10 GB
    rows = [rated("s1", "2026-11-02 10:00", 2, 200_000, call_type="sms"),             # 2 SMS
            rated("v", "2026-11-02 10:30", 60, 20_000),                               # voice: no voice bundle
            rated("s2", "2026-11-02 11:00", 2, 200_000, call_type="sms"),             # 1 of 2 SMS
            rated("d1", "2026-11-03 00:00", 9_500_000_000, 9_500_000, call_type="data", zone="eu"),
            rated("d2", "2026-11-04 00:00", 1_000_000_000, 1_000_000, call_type="data", zone="eu")]
    got = by_id(apply(con, rows, grants))
    assert summary(got["s1"]) == (1, 2, 0, "bundle")
    assert summary(got["s2"]) == (1, 1, 100_000, "bundle")    # 200000 x 1 / 2
    assert summary(got["v"]) == (None, None, 20_000, "")
    assert summary(got["d1"]) == (2, 9_500_000_000, 0, "bundle")
    # d2: 500 MB of 1 GB covered: 1000000 x 500000000 / 1000000000 = 500000
    assert summary(got["d2"]) == (2, 500_000_000, 500_000, "bundle")


def test_huge_data_allowances_are_prorated_without_overflow(con):
    # 10 TB a month from the 11th of November: floor(10^13 x 20 / 30) = 6666666666666 bytes.
    # (10^13 x 1728000000000 us does not fit in BIGINT: the product is HUGEINT.)
    grants = [grant(2, call_type="data", zones=["eu"], allowance=10**13, valid_from="2026-11-11")]
    out = apply(con, [rated("d", "2026-11-12 00:00", 7 * 10**12, 7_000_000_000, call_type="data", zone="eu")],
                grants)
    # 333333333334 bytes charged of 7 x 10^12: 7000000000 x 333333333334 / 7 x 10^12 = 333333333.334 micro
    # -> half_up at 4 decimals of the currency (100 micro): 333.3333 = 333333300
    assert summary(out[0]) == (2, 6_666_666_666_666, 333_333_300, "bundle")


def test_other_zones_other_services_and_non_rated_rows_are_untouched(con):
    rows = [rated("zone", "2026-11-02 10:00", 60, 20_000, zone="world"),
            rated("svc", "2026-11-02 10:00", 60, 20_000, service_id=2),
            rated("free", "2026-11-02 10:00", 0, 0, status="free"),
            rated("unrated", "2026-11-02 10:00", 60, None, status="unrated"),
            rated("unassigned", "2026-11-02 10:00", 60, None, status="unassigned", service_id=None),
            rated("before", "2026-10-31 23:59:59", 60, 20_000),          # before the grant
            rated("ok", "2026-11-02 10:00", 60, 20_000)]
    out = apply(con, rows, [grant(7, valid_from="2026-11-01")])
    assert out[:-1] == rows[:-1]
    assert summary(out[-1]) == (7, 60, 0, "bundle")


def test_no_bundle_for_any_row_returns_the_input_itself(con):
    priced = table(rated("a", "2026-11-02 10:00", 60, 20_000, service_id=2),
                   rated("b", "2026-11-02 10:00", 60, None, status="unrated"))
    assert apply_bundles(con, priced, make_tariffs([grant(7)]), None) is priced
    assert apply_bundles(con, priced, make_tariffs([]), None) is priced


def test_margin_is_recomputed_and_negative_margin_stays_the_tariffs(con):
    rows = [
        # price 50000 (min charge applied), cost 30000: fully covered -> price 0, margin -30000, but
        # no negative_margin flag: the tariff sells above cost, the bundle's subscription pays
        rated("a", "2026-11-02 10:00", 100, 50_000, cost=30_000, flags="min_charge"),
        # a tariff below cost keeps its flag whether or not a bundle covers the call
        rated("d", "2026-11-02 09:00", 10, 1_000, cost=2_000, flags="negative_margin"),
        # 300000, cost 100000: the 170 - 10 - 100 = 60 units left cover 60 of 300 -> 300000 x 240 / 300 = 240000,
        # margin 240000 - 100000 = 140000
        rated("b", "2026-11-02 11:00", 300, 300_000, cost=100_000),
        # no buy rate: the margin stays null and no_cost stays
        rated("c", "2026-11-02 12:00", 100, 100_000, flags="no_cost"),
    ]
    got = by_id(apply(con, rows, [grant(7, allowance=170)]))
    assert (got["a"]["price_micro"], got["a"]["margin_micro"], got["a"]["flags"]) == \
        (0, -30_000, "min_charge,bundle")
    assert (got["d"]["price_micro"], got["d"]["margin_micro"], got["d"]["flags"]) == (0, -2_000, "bundle,negative_margin")
    assert (got["b"]["price_micro"], got["b"]["margin_micro"], got["b"]["flags"]) == (240_000, 140_000, "bundle")
    assert (got["c"]["price_micro"], got["c"]["margin_micro"], got["c"]["flags"]) == (100_000, None, "no_cost")


def test_a_month_boundary_resets_usage(con):
    # 100 s a month; October's last call uses it all, November starts again (UTC months)
    rows = [rated("oct", "2026-10-31 23:50", 100, 10_000), rated("oct2", "2026-10-31 23:59", 60, 6_000),
            rated("nov", "2026-11-01 00:10", 60, 6_000), rated("nov2", "2026-11-01 00:20", 60, 6_000)]
    got = by_id(apply(con, rows, [grant(7, allowance=100)], used_table((7, "2026-10", 0))))
    # October: 100 + 0; November: 60 + 40
    assert [got[k]["bundle_units"] for k in ("oct", "oct2", "nov", "nov2")] == [100, 0, 60, 40]


def test_purity_per_service(con):
    """Rating two services together gives, for each, what rating it alone gives."""
    grants = [grant(1, service_id=1, allowance=150), grant(2, service_id=2, allowance=100),
              grant(3, service_id=2, zones=["fr_fixed"], allowance=None, cap=50)]
    rng = random.Random(4)
    rows = [rated(f"c{i:02d}", f"2026-11-{rng.randint(1, 30):02d} {rng.randint(0, 23):02d}:00",
                  rng.randint(1, 90), rng.randint(0, 50_000), service_id=rng.choice([1, 2]),
                  zone=rng.choice(["fr_mobile", "fr_fixed"])) for i in range(40)]
    together = by_id(apply(con, rows, grants))
    for service in (1, 2):
        alone = by_id(apply(con, [r for r in rows if r["service_id"] == service], grants))
        assert alone == {k: v for k, v in together.items() if v["service_id"] == service}
    assert sum(r["bundle_units"] or 0 for r in together.values()) > 0


def test_missing_deck_of_a_partly_covered_call_is_an_error(con):
    with pytest.raises(ValueError, match=r"rate deck\(s\) \[555\]"):
        apply(con, [rated("a", "2026-11-02 10:00", 100, 1_000, deck_id=555)], [grant(7, allowance=50)])


# --- the lake: bundle_usage -----------------------------------------------------------------

def rerated(row: dict, rated_at: str, **changes) -> dict:
    return dict(row, rated_at=at(rated_at), **changes)


def test_bundle_usage_counts_the_latest_rating_of_each_cdr(con, tmp_path):
    a = rated("a", "2026-11-02 10:00", 100, 0)
    b = rated("b", "2026-11-03 10:00", 40, 0)
    c = rated("c", "2026-11-04 10:00", 70, 0)
    d = rated("d", "2026-10-30 10:00", 25, 0)
    write_partition(tmp_path, "rated", "2026-11", table(
        rerated(a, "2026-12-01", bundle_id=7, bundle_units=100),
        rerated(b, "2026-12-01", bundle_id=7, bundle_units=40),
        rerated(c, "2026-12-01", bundle_id=8, bundle_units=70)))
    # re-rated later: a now covers 60 (counted once, latest); c is no longer covered
    write_partition(tmp_path, "rated", "2026-11", table(
        rerated(a, "2026-12-02", bundle_id=7, bundle_units=60),
        rerated(c, "2026-12-02", bundle_id=None, bundle_units=None)))
    write_partition(tmp_path, "rated", "2026-10", table(rerated(d, "2026-11-01", bundle_id=7, bundle_units=25)))
    usage = bundle_usage(con, tmp_path, ["2026-11"])
    assert usage.schema == BUNDLE_USED_SCHEMA
    assert usage.to_pylist() == [{"service_bundle_id": 7, "month": "2026-11", "units": 60 + 40}]
    both = bundle_usage(con, tmp_path, ["2026-10", "2026-11"]).to_pylist()
    assert both == [{"service_bundle_id": 7, "month": "2026-10", "units": 25},
                    {"service_bundle_id": 7, "month": "2026-11", "units": 100}]
    assert bundle_usage(con, tmp_path, ["2026-09"]).num_rows == 0
    assert bundle_usage(con, tmp_path / "empty", ["2026-11"]).num_rows == 0


def test_rating_in_two_batches_through_the_lake_equals_rating_at_once(con, tmp_path):
    grants = [grant(7, allowance=1_000), grant(9, call_type="sms", allowance=5)]
    rows = [rated(f"v{i}", f"2026-11-{1 + i:02d} 10:00", 130, 13_000) for i in range(10)] + \
           [rated(f"s{i}", f"2026-11-{1 + 2 * i:02d} 11:00", 2, 2_000, call_type="sms") for i in range(4)]
    once = by_id(apply(con, rows, grants))
    early = [r for r in rows if r["start_at"] < at("2026-11-05")]
    late = [r for r in rows if r["start_at"] >= at("2026-11-05")]
    write_partition(tmp_path, "rated", "2026-11", apply_bundles(con, table(*early), make_tariffs(grants), None))
    second = apply(con, late, grants, bundle_usage(con, tmp_path, ["2026-11"]))
    first = lake.read_table(tmp_path, "rated").to_pylist()
    assert by_id(first + second) == once
    # 1000 s = 7 calls of 130 (910) + 90 of the 8th; 5 SMS = 2 + 2 + 1 of the third message batch
    # (the first batch ends on the 4th: v0-v3 = 520 s and s0, s1 = 4 SMS come from the lake)
    assert [once[f"v{i}"]["bundle_units"] for i in range(10)] == [130] * 7 + [90, 0, 0]
    assert [once[f"s{i}"]["bundle_units"] for i in range(4)] == [2, 2, 1, 0]


# --- property: the set-based result equals a call-by-call reference --------------------------

_METHODS = {"up": ROUND_CEILING, "half_up": ROUND_HALF_UP, "down": ROUND_FLOOR}


def month_bounds(when: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def prorated(limit: int, g: dict, when: dt.datetime) -> int:
    start, end = month_bounds(when)
    lo, hi = max(g["valid_from"], start), min(g["valid_to"] or end, end)
    us = lambda delta: delta // dt.timedelta(microseconds=1)  # noqa: E731
    return limit * us(hi - lo) // us(end - start)


def reference(rows: list[dict], grants: list[dict], used: dict, decks: dict) -> list[dict]:
    """Call-by-call bundles, written from the spec (Decimal rounding, Python datetimes)."""
    out = [dict(r) for r in rows]
    remaining: dict = {}
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["start_at"], rows[i]["cdr_id"], i))
    for i in order:
        r = out[i]
        if r["rating_status"] != "rated" or not r["billable_units"]:
            continue
        matching = sorted((g for g in grants if g["service_id"] == r["service_id"]
                           and g["call_type"] == r["call_type"] and r["zone"] in g["zones"]
                           and g["valid_from"] <= r["start_at"] and (g["valid_to"] is None or r["start_at"] < g["valid_to"])),
                          key=lambda g: g["service_bundle_id"])
        if not matching:
            continue
        b, left, first, fair, taken = r["billable_units"], r["billable_units"], None, False, []
        month = r["start_at"].strftime("%Y-%m")
        for g in matching:
            key = (g["service_bundle_id"], month)
            limit = g["allowance"] if g["allowance"] is not None else g["fair_use_cap"]
            if key not in remaining:
                remaining[key] = None if limit is None else max(prorated(limit, g, r["start_at"]) - used.get(key, 0), 0)
            take = left if remaining[key] is None else min(left, remaining[key])
            if remaining[key] is not None:
                remaining[key] -= take
            fair |= g["allowance"] is None and g["fair_use_cap"] is not None and take < left
            if take > 0 and first is None:
                first = g["service_bundle_id"]
            if take > 0:
                taken.append(f"{g['service_bundle_id']}:{take}")
            left -= take
        c = b - left
        if 0 < c < b:
            method, decimals = decks[r["rate_deck_id"]]
            with localcontext() as ctx:
                ctx.prec = 80
                amount = Decimal(r["price_micro"]) * (b - c) / b / 1_000_000
                r["price_micro"] = int(amount.quantize(Decimal(1).scaleb(-decimals), rounding=_METHODS[method])
                                       * 1_000_000)
        elif c == b:
            r["price_micro"] = 0
        r["bundle_units"], r["bundle_id"] = c, first or matching[0]["service_bundle_id"]
        r["bundle_split"] = ",".join(taken) if len(taken) > 1 else None
        r["margin_micro"] = None if r["cost_micro"] is None else r["price_micro"] - r["cost_micro"]
        old = set(filter(None, r["flags"].split(","))) - {"bundle", "fair_use_exceeded"}
        new = old | ({"bundle"} if c > 0 else set()) | ({"fair_use_exceeded"} if fair and left > 0 else set())
        r["flags"] = ",".join(f for f in ("min_charge", "max_cost_capped", "max_cost_exceeded", "band_split",
                                          "bundle", "fair_use_exceeded", "negative_margin", "no_cost") if f in new)
    return out


def _day(n: int) -> dt.datetime:
    return dt.datetime(2026, 10, 20, tzinfo=UTC) + dt.timedelta(hours=n)


# small worlds so that calls often meet bundles: 2 services with bundles (3 has none), 3 zones,
# 30 days around the October/November boundary (hour 288 is 2026-11-01 00:00 UTC)
grants_st = st.lists(st.builds(
    lambda service_id, call_type, zones, allowance, cap, start_h, length_h: {
        "service_id": service_id, "call_type": call_type, "zones": sorted(zones), "allowance": allowance,
        "fair_use_cap": cap, "valid_from": _day(start_h), "valid_to": _day(start_h + length_h) if length_h else None},
    st.integers(1, 2), st.sampled_from(["voice", "voice", "sms"]),
    st.sets(st.sampled_from(["m", "f", "i"]), min_size=1), st.none() | st.integers(0, 500),
    st.none() | st.integers(0, 300), st.integers(0, 300), st.none() | st.integers(100, 700),
), min_size=1, max_size=4)



@st.composite
def calls_st(draw, grants: list[dict]) -> list[dict]:
    """Calls, most of them aimed at one of ``grants`` (its service, call type and a zone)."""
    calls = []
    for _ in range(draw(st.integers(1, 30))):
        target = draw(st.none() | st.sampled_from(grants))
        if target is None:
            service_id, call_type, zone = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from(["voice", "sms"])), \
                draw(st.sampled_from(["m", "f", "i"]))
        else:
            service_id, call_type, zone = target["service_id"], target["call_type"], draw(st.sampled_from(target["zones"]))
        calls.append(rated(
            "", _day(10 * draw(st.integers(0, 70))).strftime("%Y-%m-%d %H:%M"), draw(st.integers(1, 300)),
            draw(st.integers(0, 2_000_000)), service_id=service_id, call_type=call_type, zone=zone,
            cost=draw(st.none() | st.integers(0, 500_000)),
            flags=draw(st.sampled_from(["", "min_charge", "no_cost", "max_cost_capped,negative_margin"])),
            status=draw(st.sampled_from(["rated", "rated", "rated", "free", "unrated"])),
            deck_id=draw(st.sampled_from([100, 200]))))
    return calls


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), grants=grants_st, methods=st.tuples(*[st.sampled_from(sorted(_METHODS))] * 2),
       decimals=st.tuples(st.integers(0, 6), st.integers(0, 6)),
       used=st.dictionaries(st.tuples(st.integers(1, 4), st.sampled_from(["2026-10", "2026-11"])),
                            st.integers(0, 300), max_size=3),
       seed=st.integers(0, 1000))
def test_property_matches_a_call_by_call_reference(con, data, grants, methods, decimals, used, seed):
    grants = [dict(g, service_bundle_id=i, bundle_id=1000 + i, code=f"B{i}") for i, g in enumerate(grants, 1)]
    calls = data.draw(calls_st(grants))
    random.Random(seed).shuffle(grants)
    rng = random.Random(seed)
    calls = [dict(c, cdr_id=f"{rng.randint(0, 99):02d}-{i}", start_at=c["start_at"] + dt.timedelta(minutes=rng.choice([0, 0, 7])))
             for i, c in enumerate(calls)]
    decks = {100: (methods[0], decimals[0]), 200: (methods[1], decimals[1])}
    deck_rows = [deck(k, m, d) for k, (m, d) in decks.items()]
    used_rows = used_table(*[(s, m, u) for (s, m), u in used.items()])

    got = apply(con, calls, grants, used_rows, deck_rows)
    assert got == reference(calls, grants, used, decks)
    for before, after in zip(calls, got):
        if after["bundle_units"] == before["billable_units"]:
            event("a call fully covered")
        if after["bundle_units"] and after["bundle_units"] < before["billable_units"]:
            event("a call partly covered")
        if "fair_use_exceeded" in after["flags"]:
            event("fair use exceeded")

    # invariants, stated on their own: covered + charged = billable, and per service and month
    # the covered units never exceed the prorated allowances (minus what was used before)
    covered: dict = {}
    for before, after in zip(calls, got):
        units = after["bundle_units"] or 0
        assert 0 <= units <= before["billable_units"]
        if units == 0:
            assert after["price_micro"] == before["price_micro"]
        if units == before["billable_units"]:
            assert after["price_micro"] == 0
        key = (before["service_id"], before["start_at"].strftime("%Y-%m"))
        covered[key] = covered.get(key, 0) + units
    for (service, month), units in covered.items():
        mine = [g for g in grants if g["service_id"] == service]
        if any(g["allowance"] is None and g["fair_use_cap"] is None for g in mine):
            continue
        when = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        cap = 0
        for g in mine:
            limit = g["allowance"] if g["allowance"] is not None else g["fair_use_cap"]
            if g["valid_from"] < month_bounds(when)[1] and (g["valid_to"] is None or g["valid_to"] > when):
                cap += max(prorated(limit, g, when) - used.get((g["service_bundle_id"], month), 0), 0)
        assert units <= cap
