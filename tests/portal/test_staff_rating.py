"""The staff app's Rating page: StaffStore's unrated queue, rated CDRs, traces and anomalies
(SQLite and PostgreSQL), and the page itself in headless Chromium (SQLite).

The lake's ``rated`` rows are written directly (RATED_SCHEMA), not by the kernel.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop

from bluerocktel import lake
from bluerocktel.db.models import Account, Brand, RateDeck, User
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.portal import StaffStore
from bluerocktel.security import AuthError, Principal
from bluerocktel.vocabulary import Role

SCREENSHOTS = Path(os.environ.get("BLUEROCKTEL_SCREENSHOTS", "/tmp/bluerocktel-screenshots"))
UTC = dt.timezone.utc
RATED_AT = dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
SUPPORT = Principal(1, "support@bluerock.example", Role.SUPPORT, None)
SALES = Principal(2, "sales@bluerock.example", Role.SALES, None)


def rated_row(cdr_id: str, start: dt.datetime, **fields) -> dict:
    """A rated CDR row: an answered outgoing voice call of 150 s, rated; ``fields`` override."""
    row = {"cdr_id": cdr_id, "source": "pbx-paris", "source_file": "Master.csv", "source_line": 3,
           "start_at": start, "answer_at": start + dt.timedelta(seconds=4),
           "end_at": start + dt.timedelta(seconds=154), "duration_s": 154, "billsec_s": 150,
           "caller": "+33472000001", "callee": "+33612345678", "account_code": "", "channel": "PJSIP/201",
           "dst_channel": "PJSIP/carrier-a", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
           "units": 0, "unique_id": f"u-{cdr_id}", "rating_status": "rated", "rating_reason": "", "flags": "",
           "tariff_version": "bbbbbbbbbbbbbbbb", "rated_at": RATED_AT}
    row.update(fields)
    return row


# A call answered at 19:59:04 Paris time for 150 s on FR-RETAIL (fee 0.05, peak 0.12/min until
# 20:00 then off-peak 0.06/min, 60/60): 0.05 + 1 × 0.12 + 2 × 0.06 = 0.29; cost 0.045, margin 0.245.
SEGMENTS = [{"band": "peak", "rate_id": 11, "group_start": 0, "increments": 1, "units": 60,
             "amount_pico": 120_000_000_000},
            {"band": "offpeak", "rate_id": 12, "group_start": 0, "increments": 2, "units": 120,
             "amount_pico": 120_000_000_000}]


def seed(wb, long_call_start: dt.datetime) -> dict:
    """An account and two decks; October 2026: the split call (rated twice), an unrated and an
    unassigned call; a 5-hour call starting ``long_call_start``."""
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock Telecom", host_names=["portal.bluerock.localhost"],
                      legal_name="BlueRock Telecom SAS")
        s.add(brand)
        s.flush()
        martin = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
        sell = RateDeck(code="FR-RETAIL", name="France retail", kind="sell", currency="EUR")
        buy = RateDeck(code="CARRIER-A", name="Carrier A", kind="buy", currency="EUR")
        s.add_all([martin, sell, buy])
        s.flush()
        ids = {"martin": martin.id, "sell": sell.id, "buy": buy.id}
    start = dt.datetime(2026, 10, 5, 17, 59, 0, tzinfo=UTC)
    priced = dict(account_id=ids["martin"], service_id=5, rate_deck_id=ids["sell"], rate_id=11,
                  rate_valid_from=dt.datetime(2026, 1, 1, tzinfo=UTC), prefix="336", destination="France Mobile",
                  zone="fr_mobile", first_increment=60, next_increment=60, billable_s=180, billable_units=180)
    rows = [
        rated_row("c-split", start, **priced, band="peak+offpeak", segments=json.dumps(SEGMENTS),
                  unrounded_pico=290_000_000_000, price_micro=290_000, cost_deck_id=ids["buy"], cost_rate_id=901,
                  cost_micro=45_000, margin_micro=245_000, flags="band_split"),
        rated_row("c-split", start, **priced, band="peak", price_micro=410_000, tariff_version="aaaaaaaaaaaaaaaa",
                  rated_at=RATED_AT - dt.timedelta(days=20)),
        rated_row("c-unrated", start + dt.timedelta(hours=1), account_id=ids["martin"], callee="+88216000001",
                  rating_status="unrated", rating_reason="no rate for +88216000001 (voice) in deck FR-RETAIL"),
        rated_row("c-unassigned", start + dt.timedelta(hours=2), caller="+33399999999", rating_status="unassigned",
                  rating_reason="no service identifier matches caller +33399999999"),
    ]
    lake.write_partition(wb.lake_dir, "rated", "2026-10", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))
    long_call = rated_row("c-long", long_call_start, **{**priced, "band": ""}, billsec_s=18_000, duration_s=18_004,
                          end_at=long_call_start + dt.timedelta(seconds=18_004), price_micro=2_160_000)
    lake.write_partition(wb.lake_dir, "rated", f"{long_call_start:%Y-%m}",
                         pa.Table.from_pylist([long_call], schema=lake.RATED_SCHEMA))
    return ids


@pytest.fixture
def store(wb):
    ids = seed(wb, dt.datetime(2026, 11, 20, 2, 0, tzinfo=UTC))
    return StaffStore(wb), ids


def test_unrated_queue_page_counts_by_reason(store):
    staff, ids = store
    page = staff.unrated(SUPPORT)
    assert page.total == 2 and (page.offset, page.limit) == (0, 50)
    assert [(c["status"], c["reason"], c["calls"]) for c in page.counts] == [
        ("unassigned", "no service identifier matches caller +33399999999", 1),
        ("unrated", "no rate for +88216000001 (voice) in deck FR-RETAIL", 1)]
    assert [(r["cdr_id"], r["status"], r["account_id"]) for r in page.rows] == [
        ("c-unrated", "unrated", ids["martin"]), ("c-unassigned", "unassigned", None)]
    second = staff.unrated(SUPPORT, offset=1, limit=1)
    assert [r["cdr_id"] for r in second.rows] == ["c-unassigned"] and second.total == 2
    with pytest.raises(UserFacingError, match=r"not a month: '10/2026' \(expected YYYY-MM\)"):
        staff.unrated(SUPPORT, months=["10/2026"])


def test_trace_has_deck_codes_amounts_segments_and_history(store):
    staff, ids = store
    t = staff.rated_cdr(SUPPORT, " c-split ")
    assert (t["rate_deck_code"], t["currency"], t["cost_deck_code"], t["cost_currency"]) == (
        "FR-RETAIL", "EUR", "CARRIER-A", "EUR")
    # 0.05 + 0.12 + 0.12 = 0.29; cost 0.045; margin 0.245
    assert (t["amount_precise"], t["price"], t["cost"], t["margin"]) == (
        "0.290000000000", "0.290000", "0.045000", "0.245000")
    assert [(s["band"], s["amount_precise"]) for s in t["segments"]] == [
        ("peak", "0.120000000000"), ("offpeak", "0.120000000000")]
    assert [(h["price"], h["tariff_version"]) for h in t["history"]] == [("0.410000", "aaaaaaaaaaaaaaaa")]
    with pytest.raises(NotFoundError, match="no rated CDR 'nope'"):
        staff.rated_cdr(SUPPORT, "nope")
    with pytest.raises(NotFoundError, match="no rated CDR ''"):
        staff.rated_cdr(SUPPORT, "   ")


def test_rated_months_and_pages(store):
    staff, _ = store
    assert staff.rated_months(SUPPORT) == ["2026-11", "2026-10"]
    page = staff.rated_cdrs(SUPPORT, "2026-10")
    assert [(r["cdr_id"], r["price"]) for r in page.rows] == [
        ("c-unassigned", None), ("c-unrated", None), ("c-split", "0.290000")] and not page.has_more
    assert [r["cdr_id"] for r in staff.rated_cdrs(SUPPORT, "2026-10", status="unrated").rows] == ["c-unrated"]
    assert len(staff.rated_cdrs(SUPPORT, "2026-10", status="").rows) == 3


def test_anomalies_of_the_last_7_days_and_their_csv(store):
    staff, _ = store
    found = staff.anomalies(SUPPORT, now=dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    assert [(a.kind, a.severity, a.account_number, a.cdr_id) for a in found] == [
        ("long_call", "warning", "C0001", "c-long")]
    # the call started 2026-11-20 02:00: 7 days after that it is out of the range
    assert staff.anomalies(SUPPORT, now=dt.datetime(2026, 11, 27, 3, 0, tzinfo=UTC)) == []
    rows = list(csv.reader(io.StringIO(staff.anomalies_csv(SUPPORT, found).decode("utf-8"))))
    assert rows[0][:6] == ["kind", "severity", "account_number", "account_name", "account_id", "window_start"]
    assert rows[1][:4] == ["long_call", "warning", "C0001", "Boulangerie Martin"]
    assert "2.16" in rows[1] and "c-long" in rows[1]


def test_roles_without_rating_read_are_refused(store):
    staff, _ = store
    for call in (lambda: staff.unrated(SALES), lambda: staff.rated_months(SALES),
                 lambda: staff.rated_cdrs(SALES, "2026-10"), lambda: staff.rated_cdr(SALES, "c-split"),
                 lambda: staff.anomalies(SALES), lambda: staff.anomalies_csv(SALES, [])):
        with pytest.raises(AuthError, match=r"role 'sales' may not .* \(rating:read\)"):
            call()


# --- the page in Chromium -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from bluerocktel.security import hash_password
    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("staff-rating") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
        # the long call two days ago, so that it is among the anomalies of the last 7 days
        seed(wb, dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=2))
        with wb.db.transaction() as s:
            s.add(User(email="support@bluerock.example", name="Support", role="support",
                       password_hash=hash_password("correct horse")))
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    proc, port = start_serve(data_dir, sqlite_env(data_dir))
    yield {"port": port, "data_dir": data_dir}
    stop(proc)


@needs_chromium[0]
@needs_chromium[1]
def test_staff_sees_the_unrated_queue_a_trace_with_segments_and_exports_anomalies(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/login")
    sign_in(page, "support@bluerock.example", "correct horse")
    page.get_by_text("Rating", exact=True).wait_for(timeout=20_000)
    page.get_by_text("Rating", exact=True).click()

    # (a) the unrated queue: its size, its reasons
    page.get_by_text("2 CDRs in the unrated queue", exact=False).wait_for(timeout=20_000)
    page.locator(".tabulator-cell", has_text="no rate for +88216000001 (voice) in deck FR-RETAIL").first.wait_for(
        timeout=10_000)

    # (b) a trace by id: deck, bands, segments, unrounded and rounded amounts, cost, margin
    page.get_by_placeholder("CDR id").fill("c-split")
    page.get_by_placeholder("CDR id").press("Tab")
    page.get_by_role("button", name="Show trace").click()
    page.get_by_text("Segments").wait_for(timeout=10_000)
    trace = page.locator(".brt-trace").inner_text()
    assert "FR-RETAIL" in trace and "peak + offpeak" in trace and "France Mobile" in trace
    assert page.locator(".brt-trace-price").inner_text() == "0.290000 EUR"
    assert page.locator(".brt-trace-unrounded").inner_text() == "0.290000000000 EUR"
    assert page.locator(".brt-trace-margin").inner_text() == "0.245000 EUR"
    segments = page.locator(".brt-segments").inner_text()
    assert "peak" in segments and "offpeak" in segments and "0.120000000000 EUR" in segments
    assert "aaaaaaaaaaaaaaaa" in page.locator(".brt-history").inner_text()

    # a click on a row of the unrated queue, or of the rated CDRs, opens that CDR's trace
    page.locator(".tabulator-cell", has_text=re.compile(r"^c-unassigned$")).click()
    page.locator(".brt-trace-status", has_text="unassigned: no service identifier matches caller +33399999999"
                 ).wait_for(timeout=10_000)
    page.locator(".tabulator-cell", has_text=re.compile(r"^c-long$")).click()
    page.locator(".brt-trace-call", has_text="18000 s answered").wait_for(timeout=10_000)
    assert page.locator(".brt-trace-price").inner_text() == "2.160000 EUR"

    # (c) anomalies of the last 7 days and their CSV
    page.get_by_text("1 anomaly in the last 7 days").wait_for(timeout=10_000)
    assert "long call" in page.locator(".tabulator-row", has_text="C0001").last.inner_text()
    with page.expect_download(timeout=10_000) as download:
        page.get_by_role("button", name="Export CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("kind,severity,account_number") and "long_call,warning,C0001" in text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-rating.png"), full_page=True)
    context.close()
