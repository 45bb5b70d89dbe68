"""The staff app's CDR page: StaffStore's upload, ledger, quarantine and sources (SQLite and
PostgreSQL), and the page itself in headless Chromium (SQLite)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pytest
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.db.models import AuditEntry, Brand, CdrSource, CdrSourceState, User
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.portal import StaffStore
from bluerocktel.security import AuthError, Principal
from bluerocktel.vocabulary import Role

GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"
SCREENSHOTS = Path(os.environ.get("BLUEROCKTEL_SCREENSHOTS", "/tmp/bluerocktel-screenshots"))
UTC = dt.timezone.utc


def staff(role: Role, user_id: int = 1) -> Principal:
    return Principal(user_id, f"{role.value}@bluerock.example", role, None)


ADMIN, BILLING, SALES = staff(Role.ADMIN), staff(Role.BILLING, 2), staff(Role.SALES, 3)


@pytest.fixture
def store(wb) -> StaffStore:
    with wb.db.transaction() as s:
        s.add(CdrSource(name="pbx-paris", format="asterisk-csv", timezone="Europe/Paris", country="FR"))
    return StaffStore(wb)


def test_upload_shows_the_summary_and_fills_the_ledger_and_the_quarantine(wb, store):
    summary = store.upload_cdr_file(BILLING, source="pbx-paris", file_name="Master.csv", data=GOLDEN.read_bytes())
    assert (summary.format, summary.received, summary.imported, summary.duplicates, summary.quarantined) == (
        "asterisk-csv", 20, 17, 1, 2)
    assert "Master.csv (asterisk-csv, source pbx-paris): 20 received, 17 imported, 1 duplicates, 2 quarantined" \
        in summary.describe()
    # the same bytes again: a duplicate file; another format asked explicitly: used
    again = store.upload_cdr_file(ADMIN, source="pbx-paris", file_name="copy.csv", data=GOLDEN.read_bytes())
    assert (again.status, again.imported) == ("duplicate", 0)

    files = store.cdr_files()
    assert [(f.file_name, f.source, f.collector, f.status, f.received, f.imported, f.duplicates, f.quarantined)
            for f in files] == [("copy.csv", "pbx-paris", "manual", "duplicate", 0, 0, 0, 0),
                                ("Master.csv", "pbx-paris", "manual", "imported", 20, 17, 1, 2)]
    assert files[1].duration_ms is not None and files[1].finished_at is not None

    page = store.cdr_quarantine()
    assert page.total == 2
    assert [(r["source_file"], r["source_line"], r["reason"]) for r in page.rows] == [
        ("Master.csv", 13, "wrong column count: 6 (expected 16, 18 or 21)"),
        ("Master.csv", 14, "unparseable start time: '2026-10-32 10:00:00'"),
    ]
    assert page.rows[0]["raw"] == GOLDEN.read_text().splitlines()[12]
    with wb.db.session() as s:
        actors = [a.actor for a in s.scalars(select(AuditEntry).where(AuditEntry.action == "cdr.import")
                                            .order_by(AuditEntry.id))]
        assert actors == ["billing@bluerock.example", "admin@bluerock.example"]


def test_upload_format_choice_and_refusals(wb, store):
    pushed = b'[{"start": "2026-10-05T09:00:00Z", "duration": 12, "caller": "201", "callee": "0612345678"}]'
    summary = store.upload_cdr_file(ADMIN, source="pbx-paris", file_name="push.json", data=pushed,
                                    format="json-records")
    assert (summary.format, summary.imported) == ("json-records", 1)
    with pytest.raises(NotFoundError, match="unknown CDR source 'pbx-lyon'"):
        store.upload_cdr_file(ADMIN, source="pbx-lyon", file_name="Master.csv", data=GOLDEN.read_bytes())
    with pytest.raises(UserFacingError, match="unknown CDR format 'cisco-cdr'"):
        store.upload_cdr_file(ADMIN, source="pbx-paris", file_name="x.csv", data=b"x\n", format="cisco-cdr")
    with pytest.raises(AuthError, match=r"role 'sales' may not import CDR files \(cdrs:import\)"):
        store.upload_cdr_file(SALES, source="pbx-paris", file_name="Master.csv", data=GOLDEN.read_bytes())
    with wb.db.transaction() as s:
        s.scalar(select(CdrSource).where(CdrSource.name == "pbx-paris")).enabled = False
    with pytest.raises(UserFacingError, match="CDR source 'pbx-paris' is disabled"):
        store.upload_cdr_file(ADMIN, source="pbx-paris", file_name="Master.csv", data=GOLDEN.read_bytes())
    assert [f.file_name for f in store.cdr_files()] == ["push.json"]


def test_upload_larger_than_the_setting_is_refused(wb, store, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_MAX_CDR_FILE_MB", "1")
    with pytest.raises(UserFacingError, match=r"big.csv: 1,048,577 bytes, larger than BLUEROCKTEL_MAX_CDR_FILE_MB"):
        store.upload_cdr_file(ADMIN, source="pbx-paris", file_name="big.csv", data=b"x" * ((1 << 20) + 1))
    assert store.cdr_files() == []


def test_sources_are_added_from_the_form_and_listed_with_the_last_collector_run(wb, store):
    row = store.add_cdr_source(ADMIN, name="pbx-lyon", format="asterisk-csv",
                               url="sftp://cdr@pbx-lyon.example/var/log/asterisk/cdr-csv", timezone="Europe/Paris",
                               country="FR", options='{"password_env": "BLUEROCKTEL_CDR_PBX_LYON_PASSWORD", "pattern": "*.csv"}')
    assert (row.name, row.format, row.options) == (
        "pbx-lyon", "asterisk-csv", {"password_env": "BLUEROCKTEL_CDR_PBX_LYON_PASSWORD", "pattern": "*.csv"})
    with wb.db.transaction() as s:
        s.add(CdrSourceState(source_id=row.id, cursor="Master-20261125.csv", last_status="ok",
                             last_run_at=dt.datetime(2026, 11, 26, 7, 30, tzinfo=UTC)))
    listed = store.cdr_sources()
    assert [(r.name, r.url, r.last_status, r.last_run_at) for r in listed] == [
        ("pbx-lyon", "sftp://cdr@pbx-lyon.example/var/log/asterisk/cdr-csv", "ok",
         dt.datetime(2026, 11, 26, 7, 30, tzinfo=UTC)),
        ("pbx-paris", None, None, None)]
    with wb.db.session() as s:
        [audit] = s.scalars(select(AuditEntry).where(AuditEntry.action == "cdr_source.create")).all()
        assert (audit.actor, audit.details["name"]) == ("admin@bluerock.example", "pbx-lyon")

    with pytest.raises(UserFacingError, match="options are not JSON"):
        store.add_cdr_source(ADMIN, name="pbx-nice", format="asterisk-csv", options="{password_env:")
    with pytest.raises(UserFacingError, match="CDR source 'pbx-lyon' exists already"):
        store.add_cdr_source(ADMIN, name="pbx-lyon", format="asterisk-csv")
    with pytest.raises(UserFacingError, match=r"holds a password"):
        store.add_cdr_source(ADMIN, name="pbx-nice", format="asterisk-csv", url="sftp://cdr:pw@pbx-nice.example/")
    with pytest.raises(AuthError, match=r"role 'billing' may not configure CDR sources \(cdrs:sources\)"):
        store.add_cdr_source(BILLING, name="pbx-nice", format="asterisk-csv")
    assert [r.name for r in store.cdr_sources()] == ["pbx-lyon", "pbx-paris"]


def test_quarantine_hides_records_resolved_by_a_reprocessing(wb, store):
    store.upload_cdr_file(ADMIN, source="pbx-paris", file_name="Master.csv", data=GOLDEN.read_bytes())
    first = store.cdr_quarantine().rows[0]
    lake.write_partition(wb.lake_dir, "quarantine_resolved", "2026-11", pa.table({
        "quarantine_id": [first["quarantine_id"]], "outcome": ["imported"], "cdr_id": ["abc"],
        "resolved_at": pa.array([dt.datetime(2026, 11, 26, tzinfo=UTC)], lake.UTC_TS)}))
    assert [r["source_line"] for r in store.cdr_quarantine().rows] == [14]
    assert store.cdr_quarantine(source="pbx-lyon").total == 0
    from bluerocktel.portal import latest_quarantine

    every = latest_quarantine(wb, include_resolved=True)
    assert [(r["source_line"], r["outcome"]) for r in every.rows] == [(13, "imported"), (14, None)]


# --- the page in Chromium -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from bluerocktel.security import hash_password
    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("staff-cdr") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
        with wb.db.transaction() as s:
            s.add(Brand(code="BRT", name="BlueRock Telecom", host_names=["portal.bluerock.localhost"],
                        legal_name="BlueRock Telecom SAS"))
            s.add(User(email="admin@bluerock.example", name="Admin", password_hash=hash_password("correct horse"),
                       role="admin"))
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    proc, port = start_serve(data_dir, sqlite_env(data_dir))
    yield {"port": port, "data_dir": data_dir}
    stop(proc)


@needs_chromium[0]
@needs_chromium[1]
def test_staff_adds_a_source_uploads_master_csv_and_sees_the_summary_and_the_ledger(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/login")
    sign_in(page, "admin@bluerock.example", "correct horse")
    page.get_by_text("CDR", exact=True).wait_for(timeout=20_000)
    page.get_by_text("CDR", exact=True).click()
    page.get_by_text("File ledger (latest 50)").wait_for(timeout=10_000)

    # add the source through the form
    page.get_by_label("Its format").select_option("asterisk-csv")
    page.get_by_placeholder("pbx-paris").fill("pbx-paris")
    page.get_by_placeholder("pbx-paris").press("Tab")
    page.get_by_role("button", name="Add source").click()
    page.get_by_text("CDR source pbx-paris added (asterisk-csv).").wait_for(timeout=10_000)

    # upload Master.csv with the source's format
    page.locator("input[type=file]").set_input_files(str(GOLDEN))
    page.get_by_text(f"Master.csv: {GOLDEN.stat().st_size:,} bytes received, ready to import.").wait_for(
        timeout=10_000)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("20 received, 17 imported, 1 duplicates, 2 quarantined").wait_for(timeout=20_000)
    assert page.get_by_text("Master.csv:14: unparseable start time: '2026-10-32 10:00:00'").count() >= 1

    # the ledger row and the quarantine rows
    page.locator(".tabulator-cell", has_text="Master.csv").first.wait_for(timeout=10_000)
    ledger_row = page.locator(".tabulator-row", has_text="Master.csv").first
    assert "manual" in ledger_row.inner_text() and "imported" in ledger_row.inner_text()
    quarantined = page.locator(".tabulator-row", has_text="Master.csv:13").first
    quarantined.wait_for(timeout=10_000)
    assert "wrong column count: 6 (expected 16, 18 or 21)" in quarantined.inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-cdr.png"), full_page=True)
    context.close()

    from bluerocktel.workbench import Workbench

    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(server["data_dir"])
        files = StaffStore(wb).cdr_files()
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    assert [(f.file_name, f.collector, f.imported) for f in files] == [("Master.csv", "manual", 17)]
