"""Anomaly alerts over the rated lake: IRSF spikes, very long calls, off-hours bursts, export, CLI.

The traffic (Wednesday 2026-10-14 unless said; Paris is UTC+2 then, New York UTC-4):

- C-IRSF (Paris): 12 calls of 3 min to Cuba (1.50/min: 4.50 each) at 03:00-03:55 Paris,
  rated twice (first at 3.00 each, then re-rated at 4.50).
- C-SPREAD (Paris): the same 12 Cuba calls, one per hour from 08:00 to 19:00 Paris.
- C-USUAL (Paris): 12 Cuba calls at 03:00-03:55 Paris on every day 10-07..10-14, 40 on 10-15.
- C-SAT (Paris): 12 calls of 1 min to a Thuraya number (zone satellite, 0.60/min) at 03:00.
- C-LONG (Paris): one call of 5 h, one of 3 h, to a French mobile (0.039/min).
- C-NIGHT (Paris): 25 calls of 1 min to a French mobile at 20:00-20:48 UTC (22:00 Paris),
  and 25 on Wednesday 2026-11-11 at 10:00 Paris (Armistice Day, a French public holiday).
- C-NY (America/New_York): the same 25 calls at 20:00-20:48 UTC (16:00 New York), and 25 on
  10-15 at 06:00-06:48 UTC (08:00 Paris, 02:00 New York).

Default thresholds (README settings table): windows of 60 min; high-cost from 1.00 per minute;
spike floors 10 calls, 30 min, 20.00; factor 3; long call over 14400 s; off-hours burst over 20
calls; business hours mon-fri 08:00-19:00.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from decimal import Decimal

import pyarrow as pa
import pytest
from openpyxl import load_workbook

from bluerocktel.db.models import Account, Brand, Rate, RateDeck
from bluerocktel.lake import RATED_SCHEMA, read_table, write_partition
from bluerocktel.rating.anomalies import (
    EXPORT_COLUMNS,
    Anomaly,
    AnomalyError,
    export_anomalies,
    find_anomalies,
    load_thresholds,
)

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def day(text: str) -> dict:
    """The find_anomalies range of one UTC day."""
    start = at(text)
    return {"since": start, "until": start + dt.timedelta(days=1)}


def cdr_id_of(account_id: int, start: dt.datetime, callee: str) -> str:
    return hashlib.sha256(f"{account_id}|{start.isoformat()}|{callee}".encode()).hexdigest()[:32]


def rated(account_id: int, start: dt.datetime, billsec_s: int, rate: dict, *,
          rated_at: str = "2026-10-16 04:00", price_micro: int | None = None) -> dict:
    """One rated answered outbound voice call (RATED_SCHEMA), priced per started minute."""
    billable_s = -(-billsec_s // 60) * 60
    if price_micro is None:
        price_micro = billable_s // 60 * rate["per_minute_micro"]
    callee = rate["callee"]
    return {
        "cdr_id": cdr_id_of(account_id, start, callee),
        "source": "test", "source_file": "test.csv", "source_line": 1, "start_at": start, "answer_at": start,
        "end_at": start + dt.timedelta(seconds=billsec_s), "duration_s": billsec_s, "billsec_s": billsec_s,
        "caller": f"+3310000{account_id:04d}", "callee": callee, "account_code": "", "channel": "SIP/pbx-1",
        "dst_channel": "SIP/carrier-1", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
        "units": 0, "unique_id": f"u{start.timestamp()}",
        "account_id": account_id, "service_id": account_id * 10, "rate_deck_id": rate["deck_id"],
        "rate_id": rate["rate_id"], "rate_valid_from": at("2026-01-01"), "prefix": rate["prefix"],
        "destination": rate["destination"], "zone": rate["zone"], "band": "", "segments": None,
        "first_increment": 60, "next_increment": 60, "billable_s": billable_s, "billable_units": billable_s,
        "unrounded_pico": price_micro * 1_000_000, "price_micro": price_micro, "bundle_id": None,
        "bundle_units": 0, "cost_deck_id": None, "cost_rate_id": None, "cost_micro": None, "margin_micro": None,
        "flags": "no_cost", "rating_status": "rated", "rating_reason": "", "tariff_version": "test",
        "rated_at": at(rated_at),
    }


def every(start: str, count: int, step_s: int) -> list[dt.datetime]:
    return [at(start) + dt.timedelta(seconds=i * step_s) for i in range(count)]


@pytest.fixture
def traffic(wb) -> dict:
    """The accounts and rates above in the system of record, the calls above in the lake."""
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        names = {"C-IRSF": ("Hôtel du Port", "Europe/Paris", "FR"),
                 "C-SPREAD": ("Cabinet Spread", "Europe/Paris", "FR"),
                 "C-USUAL": ("Import Havane", "Europe/Paris", "FR"), "C-SAT": ("Marine Sat", "Europe/Paris", "FR"),
                 "C-LONG": ("Long Talk", "Europe/Paris", "FR"), "C-NIGHT": ("Night Owl", "Europe/Paris", "FR"),
                 "C-NY": ("Big Apple Inc", "America/New_York", "US")}
        accounts = {n: Account(number=n, brand=brand, name=name, timezone=tz, country=country)
                    for n, (name, tz, country) in names.items()}
        deck = RateDeck(code="SELL", name="sell", kind="sell")
        s.add_all([brand, deck, *accounts.values()])
        s.flush()
        rates = {
            "cuba": Rate(deck_id=deck.id, prefix="53", destination="Cuba", zone="caribbean", price=Decimal("1.50"),
                         valid_from=at("2026-01-01")),
            "thuraya": Rate(deck_id=deck.id, prefix="88216", destination="Thuraya", zone="satellite",
                            price=Decimal("0.60"), valid_from=at("2026-01-01")),
            "mobile": Rate(deck_id=deck.id, prefix="336", destination="France mobile", zone="fr-mobile",
                           price=Decimal("0.039"), valid_from=at("2026-01-01")),
        }
        s.add_all(rates.values())
        s.flush()
        ids = {n: a.id for n, a in accounts.items()}
        callees = {"cuba": "+5372345678", "thuraya": "+882161234567", "mobile": "+33612345678"}
        per_minute = {"cuba": 1_500_000, "thuraya": 600_000, "mobile": 39_000}
        rate = {k: {"rate_id": r.id, "deck_id": deck.id, "prefix": r.prefix, "destination": r.destination,
                    "zone": r.zone, "callee": callees[k], "per_minute_micro": per_minute[k]} for k, r in rates.items()}

    a = ids
    first_rating = [rated(a["C-IRSF"], t, 180, rate["cuba"], rated_at="2026-10-14 06:00", price_micro=3_000_000)
                    for t in every("2026-10-14 01:00", 12, 300)]
    rows = [rated(a["C-IRSF"], t, 180, rate["cuba"], rated_at="2026-10-20 06:00")
            for t in every("2026-10-14 01:00", 12, 300)]
    rows += [rated(a["C-SPREAD"], t, 180, rate["cuba"]) for t in every("2026-10-14 06:00", 12, 3600)]
    for d in range(7, 15):
        rows += [rated(a["C-USUAL"], t, 180, rate["cuba"]) for t in every(f"2026-10-{d:02d} 01:00", 12, 300)]
    rows += [rated(a["C-USUAL"], t, 180, rate["cuba"]) for t in every("2026-10-15 01:00", 40, 90)]
    rows += [rated(a["C-SAT"], t, 60, rate["thuraya"]) for t in every("2026-10-14 01:00", 12, 300)]
    rows += [rated(a["C-LONG"], at("2026-10-14 09:00"), 18_000, rate["mobile"]),
             rated(a["C-LONG"], at("2026-10-14 14:00"), 10_800, rate["mobile"])]
    rows += [rated(a["C-NIGHT"], t, 60, rate["mobile"]) for t in every("2026-10-14 20:00", 25, 120)]
    rows += [rated(a["C-NY"], t, 60, rate["mobile"]) for t in every("2026-10-14 20:00", 25, 120)]
    rows += [rated(a["C-NY"], t, 60, rate["mobile"]) for t in every("2026-10-15 06:00", 25, 120)]
    november = [rated(a["C-NIGHT"], t, 60, rate["mobile"]) for t in every("2026-11-11 09:00", 25, 120)]
    write_partition(wb.lake_dir, "rated", "2026-10", pa.Table.from_pylist(first_rating, schema=RATED_SCHEMA))
    write_partition(wb.lake_dir, "rated", "2026-10", pa.Table.from_pylist(rows, schema=RATED_SCHEMA))
    write_partition(wb.lake_dir, "rated", "2026-11", pa.Table.from_pylist(november, schema=RATED_SCHEMA))
    return ids


def kinds(anomalies: list[Anomaly], account_id: int) -> list[tuple[str, str]]:
    """(kind, window start HH:MM UTC) of one account's anomalies."""
    return [(a.kind, f"{a.window_start:%H:%M}") for a in anomalies if a.account_id == account_id]


def test_irsf_burst_at_night_is_flagged_with_its_figures(wb, traffic):
    found = find_anomalies(wb, **day("2026-10-14"), account_id=traffic["C-IRSF"])
    # 12 calls x 180 s = 2160 s = 36.00 min; 12 x 3 min x 1.50 = 54.00. Baseline (no earlier
    # traffic) 0, so the thresholds are the floors: 10 calls, 30 min, 20.00; 54.00 >= 2 x 20.00: critical.
    assert found == [Anomaly(
        kind="high_cost_spike", severity="critical", account_id=traffic["C-IRSF"], account_number="C-IRSF",
        account_name="Hôtel du Port", window_start=at("2026-10-14 01:00"), window_end=at("2026-10-14 02:00"),
        calls=12, billsec_s=2160, minutes=Decimal("36.00"), amount_micro=54_000_000, currency="EUR",
        destinations=("Cuba",), zones=("caribbean",),
        detail="12 calls, 36.00 min, 54.00 EUR to high-cost destinations in 60 min; thresholds (more than) "
               "10 calls, 30.00 min, 20.00 EUR = the larger of the floor and 3 x the median of the same window "
               "over 7 days (0 calls, 0.00 min, 0.00 EUR)")]


def test_re_rated_calls_count_once_with_their_latest_price(wb, traffic):
    irsf = [r for r in read_table(wb.lake_dir, "rated").to_pylist() if r["account_id"] == traffic["C-IRSF"]]
    assert len(irsf) == 24                      # 12 calls, each rated twice
    [spike] = find_anomalies(wb, **day("2026-10-14"), account_id=traffic["C-IRSF"])
    assert (spike.calls, spike.amount_micro) == (12, 12 * 4_500_000)     # not 24 calls, not 3.00 each


def test_same_volume_spread_over_the_day_is_not_flagged(wb, traffic):
    # One 3-min Cuba call per hour: 1 call, 3 min, 4.50 per window, all under the floors; the
    # 19:00 Paris call is off-hours but alone.
    assert find_anomalies(wb, **day("2026-10-14"), account_id=traffic["C-SPREAD"]) == []


def test_an_account_that_always_calls_the_zone_is_held_to_its_baseline(wb, traffic):
    usual = traffic["C-USUAL"]
    # 10-14: 12 calls, like each of the 7 days before: threshold max(10, 3 x 12) = 36 calls.
    assert find_anomalies(wb, **day("2026-10-14"), account_id=usual) == []
    # 10-15: 40 calls (40 x 3 min = 120 min, 40 x 4.50 = 180.00) over 36 calls, 3 x 36 min = 108 min,
    # 3 x 54.00 = 162.00; none reaches twice its threshold: warning.
    spikes = [a for a in find_anomalies(wb, **day("2026-10-15"), account_id=usual) if a.kind == "high_cost_spike"]
    assert [(a.calls, a.minutes, a.amount_micro, a.severity) for a in spikes] == [
        (40, Decimal("120.00"), 180_000_000, "warning")]
    assert spikes[0].detail.endswith("thresholds (more than) 36 calls, 108.00 min, 162.00 EUR = the larger of the "
                                     "floor and 3 x the median of the same window over 7 days "
                                     "(12 calls, 36.00 min, 54.00 EUR)")


def test_high_risk_zones_setting_makes_a_cheap_zone_high_cost(wb, traffic, monkeypatch):
    sat = traffic["C-SAT"]
    # Thuraya at 0.60/min is under the 1.00/min threshold: not high-cost by price.
    assert find_anomalies(wb, **day("2026-10-14"), account_id=sat) == []
    monkeypatch.setenv("BLUEROCKTEL_ANOMALY_HIGH_RISK_ZONES", "premium, satellite")
    # 12 calls > 10 (12 min, 7.20 are under their floors); 12 < 2 x 10: warning.
    [spike] = find_anomalies(wb, **day("2026-10-14"), account_id=sat)
    assert (spike.kind, spike.severity, spike.calls, spike.minutes, spike.amount_micro, spike.zones) == (
        "high_cost_spike", "warning", 12, Decimal("12.00"), 7_200_000, ("satellite",))


def test_a_five_hour_call_is_flagged_a_three_hour_call_is_not(wb, traffic):
    [long_call] = find_anomalies(wb, **day("2026-10-14"), account_id=traffic["C-LONG"])
    # 18000 s > 14400 s; 300 min x 0.039 = 11.70; 18000 < 2 x 14400: warning.
    assert (long_call.kind, long_call.severity, long_call.window_start, long_call.window_end) == (
        "long_call", "warning", at("2026-10-14 09:00"), at("2026-10-14 14:00"))
    assert (long_call.calls, long_call.minutes, long_call.amount_micro, long_call.destinations) == (
        1, Decimal("300.00"), 11_700_000, ("France mobile",))
    assert long_call.detail == (f"call of 5 h 00 min 00 s to +33612345678 (France mobile), over the 14400 s limit; "
                                f"cdr {long_call.cdr_id}")
    assert long_call.cdr_id == cdr_id_of(traffic["C-LONG"], at("2026-10-14 09:00"), "+33612345678")


def test_off_hours_burst_is_judged_in_the_accounts_time_zone(wb, traffic):
    found = find_anomalies(wb, **day("2026-10-14"))
    # Same UTC times (20:00-20:48): 22:00 in Paris (off-hours), 16:00 in New York (business hours).
    assert kinds(found, traffic["C-NIGHT"]) == [("off_hours_burst", "20:00")]
    assert kinds(found, traffic["C-NY"]) == []
    [night] = [a for a in found if a.account_id == traffic["C-NIGHT"]]
    # 25 calls x 60 s = 25.00 min; 25 x 0.039 = 0.975; 25 < 2 x 20: warning.
    assert (night.calls, night.minutes, night.amount_micro, night.severity) == (
        25, Decimal("25.00"), 975_000, "warning")
    assert night.detail == ("25 answered outbound calls from Wed 2026-10-14 22:00 to 23:00 Europe/Paris, outside "
                            "business hours (mon,tue,wed,thu,fri 08:00-19:00 except public holidays); more than 20 "
                            "in 60 min")
    # 06:00 UTC on 10-15: 08:00 in Paris (business hours) but 02:00 in New York.
    assert kinds(find_anomalies(wb, **day("2026-10-15"), account_id=traffic["C-NY"]), traffic["C-NY"]) == [
        ("off_hours_burst", "06:00")]
    # Every account in one search: the spikes, the long call and the burst, ordered by window start.
    assert [(a.account_number, a.kind) for a in found] == [
        ("C-IRSF", "high_cost_spike"), ("C-LONG", "long_call"), ("C-NIGHT", "off_hours_burst")]


def test_a_public_holiday_is_off_hours(wb, traffic):
    # Wednesday 2026-11-11 10:00 Paris (09:00 UTC) is business hours on any other Wednesday.
    found = find_anomalies(wb, **day("2026-11-11"))
    assert kinds(found, traffic["C-NIGHT"]) == [("off_hours_burst", "09:00")]


def test_since_and_until_cut_the_window(wb, traffic):
    # [01:25, 01:58) holds the C-IRSF calls at 01:25, 01:30 .. 01:55: 7 calls (under 10), 21.00 min
    # (under 30), 7 x 4.50 = 31.50 (over 20.00, under 2 x 20.00: warning).
    [spike] = find_anomalies(wb, since=at("2026-10-14 01:25"), until=at("2026-10-14 01:58"),
                             account_id=traffic["C-IRSF"])
    assert (spike.window_start, spike.window_end, spike.calls, spike.minutes, spike.amount_micro, spike.severity) == (
        at("2026-10-14 01:25"), at("2026-10-14 01:58"), 7, Decimal("21.00"), 31_500_000, "warning")


def test_export_csv_and_xlsx_have_stable_columns_and_exact_values(wb, traffic, tmp_path):
    found = find_anomalies(wb, **day("2026-10-14"), account_id=traffic["C-LONG"])
    found += find_anomalies(wb, **day("2026-10-14"), account_id=traffic["C-IRSF"])
    export_anomalies(found, tmp_path / "a.csv")
    with open(tmp_path / "a.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    long_id, irsf_id = str(traffic["C-LONG"]), str(traffic["C-IRSF"])
    assert rows == [
        list(EXPORT_COLUMNS),
        ["long_call", "warning", "C-LONG", "Long Talk", long_id, "2026-10-14 09:00:00", "2026-10-14 14:00:00",
         "1", "300.00", "11.70", "EUR", "France mobile", "fr-mobile", found[0].cdr_id, found[0].detail],
        ["high_cost_spike", "critical", "C-IRSF", "Hôtel du Port", irsf_id, "2026-10-14 01:00:00",
         "2026-10-14 02:00:00", "12", "36.00", "54.00", "EUR", "Cuba", "caribbean", "", found[1].detail],
    ]
    export_anomalies(found, tmp_path / "a.xlsx")
    sheet = load_workbook(tmp_path / "a.xlsx").active
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0] == list(EXPORT_COLUMNS)
    assert values[2][:9] == ["high_cost_spike", "critical", "C-IRSF", "Hôtel du Port", traffic["C-IRSF"],
                             "2026-10-14 01:00:00", "2026-10-14 02:00:00", 12, 36]
    assert Decimal(str(values[2][9])) == Decimal("54.00") and Decimal(str(values[1][9])) == Decimal("11.70")
    assert values[1][13] == found[0].cdr_id and values[2][13] is None and values[2][14] == found[1].detail
    assert len(values) == 3


def test_cli_prints_json_and_exports(wb, traffic, tmp_path):
    out = tmp_path / "alerts.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "bluerocktel", "rating", "anomalies", "--data-dir", str(wb.data_dir),
         "--since", "2026-10-14T02:00:00+02:00", "--until", "2026-10-15", "--account", "C-IRSF", "--json",
         "--export", str(out)],
        capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["since"] == "2026-10-14T00:00:00+00:00"
    [alert] = payload["anomalies"]
    assert {k: alert[k] for k in ("kind", "severity", "account_number", "window_start", "calls", "minutes",
                                  "amount", "amount_micro", "zones")} == {
        "kind": "high_cost_spike", "severity": "critical", "account_number": "C-IRSF",
        "window_start": "2026-10-14T01:00:00+00:00", "calls": 12, "minutes": "36.00", "amount": "54.00",
        "amount_micro": 54_000_000, "zones": ["caribbean"]}
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith("high_cost_spike,critical,C-IRSF,")

    proc = subprocess.run(
        [sys.executable, "-m", "bluerocktel", "rating", "anomalies", "--data-dir", str(wb.data_dir),
         "--since", "2026-10-14", "--until", "2026-10-15", "--account", "NOPE"],
        capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 2 and "--account 'NOPE': no account has that number" in proc.stderr


def test_bad_ranges_and_settings_are_refused_with_their_names(monkeypatch):
    with pytest.raises(AnomalyError, match="since 2026-10-15T00:00:00\\+00:00 must be before until"):
        find_anomalies(None, since=at("2026-10-15"), until=at("2026-10-14"))
    with pytest.raises(AnomalyError, match="has no time zone"):
        find_anomalies(None, since=dt.datetime(2026, 10, 14), until=at("2026-10-15"))
    monkeypatch.setenv("BLUEROCKTEL_ANOMALY_BUSINESS_HOURS", "8h-19h")
    with pytest.raises(AnomalyError, match="BLUEROCKTEL_ANOMALY_BUSINESS_HOURS='8h-19h': expected HH:MM-HH:MM"):
        load_thresholds()
    monkeypatch.delenv("BLUEROCKTEL_ANOMALY_BUSINESS_HOURS")
    monkeypatch.setenv("BLUEROCKTEL_ANOMALY_WINDOW_MINUTES", "7")
    with pytest.raises(AnomalyError, match="BLUEROCKTEL_ANOMALY_WINDOW_MINUTES='7': expected a divisor of 1440"):
        load_thresholds()
    monkeypatch.setenv("BLUEROCKTEL_ANOMALY_WINDOW_MINUTES", "60")
    monkeypatch.setenv("BLUEROCKTEL_ANOMALY_BUSINESS_DAYS", "mon,tues")
    with pytest.raises(AnomalyError, match="BLUEROCKTEL_ANOMALY_BUSINESS_DAYS='mon,tues': unknown day 'tues'"):
        load_thresholds()
