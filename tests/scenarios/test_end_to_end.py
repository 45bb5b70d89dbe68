"""The whole slice through the real command line, server and browser:

demo data (small) → CDR import → rating → papermill billing run → invoices in the REST API and
in the customer portal, driven in headless Chromium; on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from playwright.sync_api import expect
import sqlalchemy as sa
from browser_support import REPO, needs_chromium, sign_in, start_serve, stop

from bluerocktel import lake
from bluerocktel.db.models import Account, Brand, Invoice, User
from bluerocktel.demo.build import DEMO_SOURCE
from bluerocktel.demo.data import DEMO_PASSWORD
from bluerocktel.money import format_minor
from bluerocktel.workbench import Workbench

pytestmark = needs_chromium
PERIOD = "2026-10"


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BLUEROCKTEL_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "bluerocktel", *args, "--data-dir", str(data_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"bluerocktel {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_demo_import_rate_bill_then_api_and_portal(database_url, tmp_path, browser):
    data_dir = tmp_path / "data"
    cli(data_dir, "demo", "--no-serve", "--accounts", "12", "--cdrs", "4000", "--period", PERIOD)

    # the same file again imports nothing; the same period again bills nothing
    again = json.loads(cli(data_dir, "cdr", "import", str(data_dir / "incoming" / "Master.csv"),
                           "--format", "asterisk-csv", "--source", DEMO_SOURCE, "--json").stdout)
    assert again["imported"] == 0 and again["status"] == "duplicate"
    rerun = json.loads(cli(data_dir, "billing", "run", "--period", PERIOD, "--issue", "--json").stdout)
    assert rerun["status"] == "completed" and rerun["summary"]["invoices_issued"] == 0
    assert (data_dir / rerun["notebook"]).exists()            # the executed notebook is kept

    wb = Workbench.open(data_dir, migrate=False)
    with wb.db.session() as s:
        invoices = s.scalars(sa.select(Invoice).order_by(Invoice.id)).all()
        assert len(invoices) >= 10
        assert len({i.account_id for i in invoices}) == len(invoices)
        for inv in invoices:
            assert (data_dir / inv.pdf_path).read_bytes().startswith(b"%PDF")
            assert inv.total_minor == inv.subtotal_minor + inv.vat_minor
        customer = s.scalars(sa.select(User).where(User.role == "customer").order_by(User.id)).first()
        account = s.get(Account, customer.account_id)
        brand = s.get(Brand, account.brand_id)
        other_brand = s.scalars(sa.select(Brand).where(Brand.id != brand.id)).first()
        own = next(i for i in invoices if i.account_id == account.id)
        foreign = next(i for i in invoices if i.account_id != account.id)
    con = lake.connect_duckdb()
    own_calls = con.execute(f"SELECT count(*) FROM {lake.scan_sql(wb.lake_dir, 'rated')} "
                            f"WHERE account_id = {account.id}").fetchone()[0]
    assert own_calls > 0
    wb.close()

    token = cli(data_dir, "token", "create", "demo-billing@bluerock.localhost", "--name", "e2e").stdout.strip()
    proc, port = start_serve(data_dir, {**os.environ, "BLUEROCKTEL_DATA_DIR": str(data_dir)})
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        listed = api.get("/api/v1/invoices", params={"account_id": account.id}).json()
        assert [row["number"] for row in listed["items"]] == [own.number]
        detail = api.get(f"/api/v1/invoices/{own.id}").json()
        assert detail["total_minor"] == own.total_minor and len(detail["lines"]) >= 2
        assert api.get(f"/api/v1/invoices/{own.id}/pdf").content.startswith(b"%PDF")
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/invoices").status_code == 401

        host = next(h for h in brand.host_names if h.endswith(".localhost"))
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        page.goto(f"http://{host}:{port}/portal")
        sign_in(page, customer.email, DEMO_PASSWORD)
        page.get_by_text(own.number).wait_for(timeout=30_000)
        expect(page.locator(".brt-header")).to_contain_text(brand.name)
        assert page.get_by_text(foreign.number).count() == 0
        with page.expect_download() as download:
            page.get_by_text("Download PDF").first.click()
        from pypdf import PdfReader

        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(Path(download.value.path()).read_bytes())).pages)
        assert own.number in text and account.name in text
        assert format_minor(own.total_minor, own.currency).replace("\u202f", " ").replace("\u00a0", " ") in \
            text.replace("\u202f", " ").replace("\u00a0", " ")
        assert page.evaluate("u => fetch(u).then(r => r.status)", f"/portal/invoices/{foreign.id}.pdf") == 404

        page.get_by_text("Call log", exact=True).click()
        expect(page.get_by_text(f"{own_calls} calls").first).to_be_visible(timeout=15_000)
        context.close()

        other_host = next(h for h in other_brand.host_names if h.endswith(".localhost"))
        page = browser.new_page()
        page.goto(f"http://{other_host}:{port}/login")
        assert page.locator("#brand-name").inner_text() == other_brand.name
        r, g, b = (int(other_brand.primary_color[i:i + 2], 16) for i in (1, 3, 5))
        assert page.locator("button[type=submit]").evaluate("e => getComputedStyle(e).backgroundColor") == \
            f"rgb({r}, {g}, {b})"
        page.close()
    finally:
        stop(proc)
