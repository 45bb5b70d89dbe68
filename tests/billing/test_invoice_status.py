"""Issued invoices are immutable; staff move their status only along allowed transitions."""

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from money_builders import new_customer, sqlite_workbench

import bluerocktel.billing.invoices  # noqa: F401  (registers the guard until bluerocktel.billing imports it)
from bluerocktel.billing.invoices import ImmutableInvoiceError, set_invoice_status
from bluerocktel.billing.payments import record_payment
from bluerocktel.db.models import AuditEntry, Invoice, InvoiceLine


@pytest.fixture(scope="module")
def mwb(tmp_path_factory):
    workbench = sqlite_workbench(tmp_path_factory.mktemp("invoice_status"))
    yield workbench
    workbench.close()


def _refused(wb, change, message):
    with pytest.raises(ImmutableInvoiceError, match=message), wb.db.transaction() as s:
        change(s)


def _line(invoice_id, position=9):
    return InvoiceLine(invoice_id=invoice_id, position=position, kind="one_off", description="extra",
                       quantity=Decimal(1), unit="unit", amount_precise=Decimal(1), amount_minor=100,
                       vat_rate=Decimal("0.20"))


def test_an_issued_invoice_cannot_change(mwb):
    c = new_customer(mwb)
    jan = c.invoice_ids[0]

    def set_total(s):
        s.get(Invoice, jan).total_minor = 1

    def set_number_and_date(s):
        invoice = s.get(Invoice, jan)
        invoice.number, invoice.due_date = "X-1", dt.date(2027, 1, 1)

    def set_buyer(s):
        s.get(Invoice, jan).buyer = {"name": "someone else"}

    def change_line(s):
        s.get(Invoice, jan).lines[0].amount_minor = 1

    _refused(mwb, set_total, f"invoice {c.numbers[0]} is issued: total_minor cannot change")
    _refused(mwb, set_number_and_date, "due_date, number cannot change")
    _refused(mwb, set_buyer, "buyer cannot change")
    _refused(mwb, change_line, "line 1 of an issued invoice cannot change")
    _refused(mwb, lambda s: s.add(_line(jan)), "lines cannot be added")
    def append_line(s):
        invoice = s.get(Invoice, jan)
        invoice.lines.append(_line(None))
        s.flush()

    _refused(mwb, append_line, "lines cannot be added")
    _refused(mwb, lambda s: s.delete(s.get(Invoice, jan).lines[0]), "cannot be deleted")
    _refused(mwb, lambda s: s.delete(s.get(Invoice, jan)), "cannot change or be removed")
    _refused(mwb, lambda s: s.execute(sa.update(Invoice).where(Invoice.id == jan).values(total_minor=0)),
             "not total_minor")
    _refused(mwb, lambda s: s.execute(sa.delete(InvoiceLine).where(InvoiceLine.invoice_id == jan)),
             "InvoiceLine rows cannot be deleted")
    with mwb.db.session() as s:
        invoice = s.get(Invoice, jan)
        assert (invoice.number, invoice.total_minor, len(invoice.lines)) == (c.numbers[0], 12000, 1)


def test_status_and_documents_may_change(mwb):
    c = new_customer(mwb)
    jan = c.invoice_ids[0]
    with mwb.db.transaction() as s:
        invoice = s.get(Invoice, jan)
        invoice.pdf_path, invoice.annex_path = "documents/invoices/a.pdf", "documents/annexes/a.pdf"
        s.execute(sa.update(Invoice).where(Invoice.id == jan).values(status="sent"))
    with mwb.db.session() as s:
        assert (s.get(Invoice, jan).status, s.get(Invoice, jan).pdf_path) == ("sent", "documents/invoices/a.pdf")


def test_allowed_status_transitions(mwb):
    c = new_customer(mwb)
    jan, feb = c.invoice_ids

    def move(invoice_id, status):
        with mwb.db.transaction() as s:
            return str(set_invoice_status(s, invoice_id, status, "alice").status)

    assert move(jan, "sent") == "sent"
    assert move(jan, "disputed") == "disputed"
    with mwb.db.transaction() as s:                       # a payment while disputed: it stays disputed
        record_payment(s, c.account_id, 5000, method="transfer", actor="bank", invoice_id=jan)
    with mwb.db.session() as s:
        assert s.get(Invoice, jan).status == "disputed"
    with pytest.raises(Exception, match="leaves dispute as partially_paid, not sent"):
        move(jan, "sent")
    assert move(jan, "partially_paid") == "partially_paid"
    assert move(jan, "sent") == "partially_paid"          # sent_at kept; the money decides the status
    for status, message in (("paid", "it cannot be set to paid"), ("credited", "cannot be set to credited"),
                            ("lost", "unknown invoice status 'lost'")):
        with pytest.raises(Exception, match=message):
            move(feb, status)
    with mwb.db.session() as s:
        assert s.get(Invoice, jan).sent_at is not None and s.get(Invoice, feb).status == "issued"
        trail = s.execute(sa.select(AuditEntry.details).where(AuditEntry.action == "invoice.status",
                                                              AuditEntry.target_id == str(jan))
                          .order_by(AuditEntry.id)).scalars().all()
        assert [(d["before"], d["after"]) for d in trail] == [
            ("issued", "sent"), ("sent", "disputed"), ("disputed", "partially_paid"),
            ("partially_paid", "partially_paid")]
