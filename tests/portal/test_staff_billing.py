"""The staff app's "Billing runs" view in headless Chromium: a dry run executed by papermill, its
notebook shown, its control report downloaded, and its approval by a billing user (SQLite).

March 2026: one account with a trunk at 29.90 (arrears): 29.90 + VAT 5.98 = 35.88.
"""

from __future__ import annotations

import io
import os
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop

from bluerocktel.billing.report import billing_run_rows, notebook_html, report_file
from bluerocktel.db.models import Account, AuditEntry, BillingRun, Brand, Product, Service, User

SCREENSHOTS = Path(os.environ.get("BLUEROCKTEL_SCREENSHOTS", "/tmp/bluerocktel-screenshots"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from bluerocktel.billing.pipeline import run_billing_cycle
    from bluerocktel.security import hash_password
    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("staff-billing") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
        with wb.db.transaction() as s:
            brand = Brand(code="BRT", name="BlueRock Telecom", host_names=["portal.bluerock.localhost"],
                          legal_name="BlueRock Telecom SAS")
            trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"),
                            billing_timing="arrears")
            s.add_all([brand, trunk])
            s.flush()
            account = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
            s.add(account)
            s.flush()
            s.add(Service(account_id=account.id, product_id=trunk.id, label="Siège"))
            for role in ("billing", "support"):
                s.add(User(email=f"{role}@bluerock.example", name=role.title(), role=role,
                           password_hash=hash_password("correct horse")))
        run = run_billing_cycle(wb, "2026-03", dry_run=True, actor="billing@bluerock.example")
        assert run.status == "previewed", run.error
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    proc, port = start_serve(data_dir, sqlite_env(data_dir))
    yield {"port": port, "data_dir": data_dir, "run_id": run.id}
    stop(proc)


def workbench(server):
    from bluerocktel.workbench import Workbench

    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        return Workbench.open(server["data_dir"])
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved


def test_the_view_data_the_notebook_and_the_report(server):
    wb = workbench(server)
    try:
        [row] = billing_run_rows(wb)
        assert (row["id"], row["period"], row["brand"], row["dry_run"], row["status"], row["step"]) == (
            server["run_id"], "2026-03", "all", True, "previewed", "finished")
        assert (row["totals"], row["approvable"], row["approved_by"]) == ("35.88 EUR", True, "")
        page = notebook_html(wb, server["run_id"])
        assert page.startswith("<!DOCTYPE html>") and "<h1 id=\"Billing-cycle\">Billing cycle" in page
        assert "control_report" in page and "email_invoices" in page
        assert report_file(wb, server["run_id"]).name == "control_report.xlsx"
    finally:
        wb.close()


@needs_chromium[0]
@needs_chromium[1]
def test_support_sees_the_run_and_its_notebook_but_cannot_approve(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/login")
    sign_in(page, "support@bluerock.example", "correct horse")
    page.get_by_text("Billing runs", exact=True).wait_for(timeout=20_000)
    page.get_by_text("Billing runs", exact=True).click()
    page.locator(".brt-run-detail").wait_for(timeout=20_000)
    assert "not approved" in page.locator(".brt-run-detail").inner_text()
    assert page.locator(".tabulator-cell", has_text="previewed").count() == 1
    assert page.get_by_role("button", name="Approve").count() == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_role("button", name="Show notebook").click()
    notebook = page.frame_locator("iframe.brt-notebook")
    notebook.locator("h1#Billing-cycle").wait_for(timeout=20_000)
    assert "email_invoices" in notebook.locator("body").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "staff-billing-notebook.png"), full_page=False)
    context.close()


@needs_chromium[0]
@needs_chromium[1]
def test_a_billing_user_downloads_the_report_and_approves_the_dry_run(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/login")
    sign_in(page, "billing@bluerock.example", "correct horse")
    page.get_by_text("Billing runs", exact=True).wait_for(timeout=20_000)
    page.get_by_text("Billing runs", exact=True).click()
    page.locator(".brt-run-detail").wait_for(timeout=20_000)

    with page.expect_download(timeout=20_000) as download:
        page.get_by_role("button", name="Download control report").click()
    assert download.value.suggested_filename == f"control_report_run_{server['run_id']}.xlsx"
    book = openpyxl.load_workbook(io.BytesIO(Path(download.value.path()).read_bytes()))
    accounts = list(book["Accounts"].iter_rows(min_row=2, values_only=True))
    assert [(a[0], Decimal(str(a[6]))) for a in accounts] == [("C0001", Decimal("35.88"))]

    page.get_by_role("button", name="Approve").click()
    page.get_by_text("approved by billing@bluerock.example").first.wait_for(timeout=20_000)
    page.locator(".brt-run-approval", has_text="approved by billing@bluerock.example").wait_for(timeout=10_000)
    assert page.get_by_role("button", name="Approve").count() == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-billing-runs.png"), full_page=True)
    context.close()
    wb = workbench(server)
    try:
        with wb.db.session() as s:
            run = s.get(BillingRun, server["run_id"])
            assert run.approved_by == "billing@bluerock.example"
            assert s.scalar(sa.select(AuditEntry.actor).where(AuditEntry.action == "billing.approve")) == \
                "billing@bluerock.example"
    finally:
        wb.close()
