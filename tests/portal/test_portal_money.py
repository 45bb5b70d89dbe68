"""The portal's money: balance, statement, payments, credit notes, invoice standing and contracts,
each customer seeing only their own account (PortalStore), and the page in headless Chromium.

The story (sample operator, tests/sample_operator.py): Boulangerie Martin's invoice FA-2026-000001
is 36.00 (25.00 + 5.00 net + 6.00 VAT), issued 2026-11-01, due 2026-12-01. Martin pays 10.00 on
2026-11-10; a credit note of 5.00 net on line 1 (+ 1.00 VAT = 6.00) is issued on 2026-11-15 and
settles 6.00 of the invoice, leaving 36.00 - 10.00 - 6.00 = 20.00 to pay.
Cabinet Durand (AZ-2026-000001, 36.00) pays nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop

from bluerocktel.billing.credit_notes import issue_credit_note
from bluerocktel.billing.payments import record_payment
from bluerocktel.db.models import Contract, Service
from bluerocktel.portal import PortalStore

UTC = dt.timezone.utc
SCREENSHOTS = Path(os.environ.get("BLUEROCKTEL_SCREENSHOTS", "/tmp/bluerocktel-screenshots"))


def add_money_story(wb, sample) -> dict:
    """The payment, the credit note and a contract of the module docstring; their ids."""
    with wb.db.transaction() as s:
        payment = record_payment(s, sample.account_ids["martin"], 1000, method="transfer", reference="VIR-MARTIN-1",
                                 received_at=dt.datetime(2026, 11, 10, 9, 0, tzinfo=UTC), actor="test")
        note = issue_credit_note(s, sample.invoice_ids["martin"], lines={1: "5.00"}, reason="Line down 3 days",
                                 actor="test", issue_date=dt.date(2026, 11, 15))
        contract = Contract(account_id=sample.account_ids["martin"], reference="CT-MARTIN-1",
                            start_date=dt.date(2026, 1, 1), term_months=24, commitment_end=dt.date(2028, 1, 1),
                            notice_days=90, auto_renew=True)
        s.add(contract)
        s.flush()
        s.query(Service).filter(Service.account_id == sample.account_ids["martin"]).update(
            {"contract_id": contract.id})
        return {"payment": payment.id, "note": note.id, "note_number": note.number}


def test_balance_statement_and_payments_are_the_customers_own(wb, sample):
    story = add_money_story(wb, sample)
    alice = PortalStore(wb, sample.user_ids["alice"])
    today = dt.date(2026, 12, 5)                    # after the due date 2026-12-01: overdue
    balance = alice.balance(today)
    assert (balance["due_minor"], balance["overdue_minor"], balance["credit_minor"], balance["balance_minor"]) == \
        (3600 - 1000 - 600, 2000, 0, 2000)

    lines = alice.statement(today)                  # this month and the 11 before: 2026-01-01 to 2026-12-05
    assert [(ln["date"], ln["kind"], ln["reference"], ln["debit_minor"], ln["credit_minor"], ln["balance_minor"])
            for ln in lines] == [
        (dt.date(2026, 1, 1), "opening", "", 0, 0, 0),
        (dt.date(2026, 11, 1), "invoice", "FA-2026-000001", 3600, 0, 3600),
        (dt.date(2026, 11, 10), "payment", "VIR-MARTIN-1", 0, 1000, 3600 - 1000),
        (dt.date(2026, 11, 15), "credit_note", story["note_number"], 0, 600, 3600 - 1000 - 600),
    ]
    # twelve months back from 2027-11-30 start on 2026-12-01: every movement is in the opening balance
    assert [(ln["kind"], ln["balance_minor"]) for ln in alice.statement(dt.date(2027, 11, 30))] == [("opening", 2000)]

    [payment] = alice.payments()
    assert (payment.received_on, payment.amount_minor, payment.reference, payment.status, payment.settled) == \
        (dt.date(2026, 11, 10), 1000, "VIR-MARTIN-1", "received", ("FA-2026-000001",))

    bob = PortalStore(wb, sample.user_ids["bob"])
    assert bob.payments() == []
    assert [(ln["kind"], ln["reference"], ln["balance_minor"]) for ln in bob.statement(today)] == [
        ("opening", "", 0), ("invoice", "AZ-2026-000001", 3600)]
    assert (bob.balance(today)["due_minor"], bob.balance(today)["overdue_minor"]) == (3600, 3600)


def test_invoice_standing_credit_notes_and_contracts(wb, sample):
    story = add_money_story(wb, sample)
    alice = PortalStore(wb, sample.user_ids["alice"])
    note, invoice = alice.invoices(today=dt.date(2026, 11, 20))     # newest first
    assert (note.number, note.kind, note.standing, note.credits_number, note.total_minor) == \
        (story["note_number"], "credit_note", "credit_note", "FA-2026-000001", 600)
    assert (invoice.status, invoice.open_minor, invoice.standing) == ("partially_paid", 2000, "partially_paid")
    assert alice.invoices(today=dt.date(2026, 12, 2))[1].standing == "overdue"
    assert alice.invoice(sample.invoice_ids["martin"], today=dt.date(2026, 12, 2)).open_minor == 2000
    with wb.db.transaction() as s:
        record_payment(s, sample.account_ids["martin"], 2000, method="card", actor="test")
    assert alice.invoices(today=dt.date(2026, 12, 2))[1].standing == "paid"
    [durand] = PortalStore(wb, sample.user_ids["bob"]).invoices(today=dt.date(2026, 11, 20))
    assert (durand.number, durand.open_minor, durand.standing) == ("AZ-2026-000001", 3600, "to_pay")

    # contracts beside the services
    [contract] = alice.contracts()
    # notice 90 days before 2028-01-01: 2027-10-03 (31 Dec + 30 Nov + 29 days of October = 90)
    assert (contract.reference, contract.start_date, contract.commitment_end, contract.notice_deadline,
            contract.auto_renew) == ("CT-MARTIN-1", dt.date(2026, 1, 1), dt.date(2028, 1, 1), dt.date(2027, 10, 3),
                                     True)
    assert [(s.label, s.contract) for s in alice.services()] == [("SIP trunk C0001", "CT-MARTIN-1")]
    bob = PortalStore(wb, sample.user_ids["bob"])
    assert bob.contracts() == [] and [s.contract for s in bob.services()] == [None]


# --- the page in headless Chromium (SQLite) ---------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from sample_operator import PASSWORD, build_sample_operator

    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("portal-money") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
        sample = build_sample_operator(wb, calls=(3, 1))
        story = add_money_story(wb, sample)
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    proc, port = start_serve(data_dir, sqlite_env(data_dir))
    yield {"port": port, "password": PASSWORD, "story": story}
    stop(proc)


@needs_chromium[0]
@needs_chromium[1]
def test_customer_sees_balance_statement_payments_and_the_credit_note(server, browser):
    """Martin's page (French account): amount due 20,00 €, the statement's running balance, the
    payment, the credit note titled "Avoir" naming the invoice; nothing of Cabinet Durand."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/login")
    sign_in(page, "alice@martin.example", server["password"])
    page.get_by_text("FA-2026-000001").first.wait_for(timeout=20_000)
    cards = page.locator(".brt-balance").filter(has_text="20,00").first    # rendered after the invoice table
    cards.wait_for(timeout=20_000)
    cards = cards.inner_text()
    assert "20,00\u00a0€" in cards                                  # 36,00 − 10,00 − 6,00
    notes = page.locator(".tabulator-row", has_text=server["story"]["note_number"])
    assert "Avoir" in notes.inner_text() and "FA-2026-000001" in notes.inner_text()
    page.locator(".bk-tab", has_text="Relevé et paiements").click()
    page.locator(".brt-statement").wait_for(timeout=10_000)
    statement = page.locator(".brt-statement").inner_text()
    assert "VIR-MARTIN-1" in statement and "26,00\u00a0€" in statement and "20,00\u00a0€" in statement
    payments = page.locator(".brt-payments").inner_text()
    assert "VIR-MARTIN-1" in payments and "10,00\u00a0€" in payments
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "portal-account.png"), full_page=True)
    assert page.get_by_text("AZ-2026-000001").count() == 0
    context.close()
