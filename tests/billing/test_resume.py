"""A billing run killed mid-way is resumed to the end state of a run that was never interrupted.

The kill is real: ``BLUEROCKTEL_TEST_KILL_AFTER`` makes the process running the steps end with
``os._exit`` (no cleanup, as ``kill -9``) at a chosen point: the papermill kernel after its 3rd
invoice, or a plain process once the documents are rendered. The reference is the same world
built in another data dir and billed without interruption. SQLite only: each test copies a world.

World, March 2026 (products in arrears): five accounts D001..D005 with n trunks at 29.90, and
D002 a one-off installation at 50.00. D001: 29.90 + VAT 5.98 = 35.88; D002: 59.80 + 50.00 =
109.80 + VAT 21.96 = 131.76; D003: 89.70 + 17.94 = 107.64; D004: 119.60 + 23.92 = 143.52;
D005: 149.50 + 29.90 = 179.40.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.billing.cycle import (build_drafts, control_report, email_invoices, finish_run, hold_run_lock,
                                       issue_invoices, prepare_run, rate_usage, render_documents)
from bluerocktel.billing.pipeline import resume_run, run_billing_cycle
from bluerocktel.db.models import (Account, BillingRun, Brand, Contact, EmailMessage, Invoice, OneOffCharge, Product,
                                   Service)
from bluerocktel.errors import UserFacingError
from bluerocktel.workbench import Workbench

pytest.importorskip("aiosmtpd.controller")     # the smtp fixtures come from conftest (tests/smtp_support.py)
pytestmark = pytest.mark.slow

TOTALS = {"D001": 3588, "D002": 13176, "D003": 10764, "D004": 14352, "D005": 17940}


def build_world(data_dir) -> Workbench:
    wb = Workbench.open(data_dir)
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS", invoice_prefix="FA")
        trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"),
                        billing_timing="arrears")
        s.add_all([brand, trunk])
        s.flush()
        for n in range(1, 6):
            account = Account(number=f"D{n:03d}", brand_id=brand.id, name=f"Client {n}")
            s.add(account)
            s.flush()
            s.add(Service(account_id=account.id, product_id=trunk.id, label="Trunk", quantity=n))
            s.add(Contact(account_id=account.id, first_name="Compta", last_name=str(n), role="billing",
                          email=f"compta{n}@client.example"))
            if n == 2:
                s.add(OneOffCharge(account_id=account.id, description="Installation", unit_price=Decimal("50.00"),
                                   charge_date=dt.date(2026, 3, 5)))
    return wb


def end_state(wb) -> list[tuple]:
    """Every invoice: number, account, totals, its lines' amounts, its PDF and its e-mail."""
    with wb.db.session() as s:
        invoices = s.scalars(sa.select(Invoice).options(selectinload(Invoice.lines), selectinload(Invoice.account))
                             .order_by(Invoice.number)).all()
        mails = {m.related_id: m.status for m in s.scalars(sa.select(EmailMessage))}
        return [(i.number, i.account.number, i.subtotal_minor, i.vat_minor, i.total_minor,
                 [(line.description, line.amount_minor) for line in i.lines],
                 (wb.data_dir / i.pdf_path).read_bytes()[:5] if i.pdf_path else None, mails.get(str(i.id)), i.status)
                for i in invoices]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, smtp_server):
    """The end state of the run nobody interrupted."""
    saved = {k: os.environ.pop(k, None) for k in ("BLUEROCKTEL_DATABASE_URL",)}
    mp = pytest.MonkeyPatch()
    mp.setenv("BLUEROCKTEL_SMTP_HOST", "127.0.0.1")
    mp.setenv("BLUEROCKTEL_SMTP_PORT", str(smtp_server[0].port))
    try:
        wb = build_world(tmp_path_factory.mktemp("reference") / "data")
        ctx = prepare_run(wb.data_dir, "2026-03", False, issue_date="2026-04-01")
        rate_usage(ctx)
        drafts = build_drafts(ctx)
        control_report(ctx, drafts)
        issue_invoices(ctx, drafts)
        render_documents(ctx)
        email_invoices(ctx)
        summary = finish_run(ctx)
        ctx.wb.close()
        state = end_state(wb)
        wb.close()
    finally:
        mp.undo()
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value
    return state, summary


@pytest.fixture
def world(tmp_path, monkeypatch, smtp):
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    monkeypatch.delenv("BLUEROCKTEL_TEST_KILL_AFTER", raising=False)
    wb = build_world(tmp_path / "data")
    yield wb
    wb.close()


def comparable(summary: dict) -> dict:
    return {k: summary[k] for k in ("invoices_issued", "numbers", "issued_totals", "totals", "account_totals",
                                    "documents", "skipped", "issue_date")}


def test_the_reference_run_bills_the_hand_computed_totals(reference):
    state, summary = reference
    assert [(number, account, total) for number, account, _, _, total, *_ in state] == [
        (f"FA-2026-{n:06d}", f"D{n:03d}", TOTALS[f"D{n:03d}"]) for n in range(1, 6)]
    assert all(pdf == b"%PDF-" and mail == "sent" and status == "sent" for *_, pdf, mail, status in state)
    # 29.90 x (1 + 2 + 3 + 4 + 5) + 50.00 = 498.50; VAT 99.70; 598.20
    assert summary["issued_totals"] == {"EUR": {"subtotal_minor": 49850, "vat_minor": 9970, "total_minor": 59820}}


def test_a_kernel_killed_after_its_third_invoice_is_resumed_by_running_the_period_again(world, reference, smtp,
                                                                                        monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_TEST_KILL_AFTER", "issue:3")
    killed = run_billing_cycle(world, "2026-03", dry_run=False, actor="cli", issue_date=dt.date(2026, 4, 1))
    assert killed.status == "failed" and "DeadKernelError" in killed.error
    assert killed.step == "reported"
    assert [n for n, *_ in end_state(world)] == ["FA-2026-000001", "FA-2026-000002", "FA-2026-000003"]

    monkeypatch.delenv("BLUEROCKTEL_TEST_KILL_AFTER")
    resumed = run_billing_cycle(world, "2026-03", dry_run=False, actor="cli")    # `billing run --issue` again
    assert (resumed.id, resumed.status, resumed.step) == (killed.id, "completed", "finished"), resumed.error
    state, summary = reference
    assert end_state(world) == state
    assert comparable(resumed.summary) == comparable(summary)
    assert len(smtp.envelopes) == 5                      # one e-mail per invoice, none twice
    kept = sorted(p.name for p in (world.runs_dir / str(killed.id)).glob("*.ipynb"))
    assert kept == ["billing_cycle.attempt-1.ipynb", "billing_cycle.ipynb"]


KILLED_PROCESS = textwrap.dedent("""
    import sys
    from bluerocktel.billing.cycle import (build_drafts, control_report, email_invoices, finish_run,
                                           issue_invoices, prepare_run, rate_usage, render_documents)
    ctx = prepare_run(sys.argv[1], "2026-03", False, issue_date="2026-04-01", actor="cli")
    print(ctx.run_id, flush=True)
    rate_usage(ctx)
    drafts = build_drafts(ctx)
    control_report(ctx, drafts)
    issue_invoices(ctx, drafts)
    render_documents(ctx)
    email_invoices(ctx)
    finish_run(ctx)
""")


def test_a_process_killed_after_rendering_leaves_a_stale_running_run_that_resumes(world, reference, smtp):
    env = {**os.environ, "BLUEROCKTEL_TEST_KILL_AFTER": "step:rendered"}
    proc = subprocess.run([sys.executable, "-c", KILLED_PROCESS, str(world.data_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr
    run_id = int(proc.stdout.split()[0])
    with world.db.session() as s:
        run = s.get(BillingRun, run_id)
        assert (run.status, run.step) == ("running", "rendered")      # nobody will finish it
    assert smtp.envelopes == []

    holder = hold_run_lock(world, run_id)           # a live process on the run: no resume
    with pytest.raises(UserFacingError, match=f"billing run {run_id} is still running in another process"):
        resume_run(world, run_id)
    holder.close()

    resumed = resume_run(world, run_id)
    assert (resumed.status, resumed.step) == ("completed", "finished"), resumed.error
    state, summary = reference
    assert end_state(world) == state
    assert comparable(resumed.summary) == comparable(summary)
    assert len(smtp.envelopes) == 5
    with pytest.raises(UserFacingError, match=f"billing run {run_id} is completed: there is nothing to resume"):
        resume_run(world, run_id)
