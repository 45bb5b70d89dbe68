"""Credit notes: full or partial, never beyond what was invoiced, VAT per rate, settling the invoice."""

import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa
from money_builders import make_account, make_brand, make_invoice, run_money_cli, sqlite_workbench

import bluerocktel.billing.invoices  # noqa: F401  (the immutability guard)
from bluerocktel.billing.credit_notes import CreditQuantity, issue_credit_note
from bluerocktel.billing.payments import account_balance, open_amount_minor, record_payment
from bluerocktel.db.models import Allocation, AuditEntry, Invoice
from bluerocktel.errors import UserFacingError

ISSUED = dt.date(2026, 4, 15)


@pytest.fixture(scope="module")
def mwb(tmp_path_factory):
    workbench = sqlite_workbench(tmp_path_factory.mktemp("credit_notes"))
    yield workbench
    workbench.close()


def _invoice(wb, code):
    """March invoice of brand ``code``: trunk 33.33 and calls 0.07 at 20 %, a book 10.01 at 5.5 %.

    VAT: 20 % × 33.40 = 6.68; 5.5 % × 10.01 = 0.55055 → 0.55; total 43.41 + 7.23 = 50.64.
    """
    with wb.db.transaction() as s:
        brand = make_brand(s, code)
        brand.credit_note_prefix = "AV" + code
        account = make_account(s, brand, number=f"{code}-C1")
        invoice = make_invoice(s, account, f"{code}-2026-000001", 3,
                               [("Trunk SIP", 3333, "0.20"), ("Calls", 7, "0.20"), ("Guide", 1001, "0.055")])
        assert (invoice.subtotal_minor, invoice.vat_minor, invoice.total_minor) == (4341, 723, 5064)
        return account.id, invoice.id


def _credit(wb, invoice_id, lines=None, reason="billing error"):
    with wb.db.transaction() as s:
        note = issue_credit_note(s, invoice_id, lines=lines, reason=reason, actor="alice", issue_date=ISSUED)
        return note.id


def _doc(wb, invoice_id):
    with wb.db.session() as s:
        doc = s.get(Invoice, invoice_id)
        return {"number": doc.number, "kind": doc.kind, "status": doc.status, "credits": doc.credits_invoice_id,
                "totals": (doc.subtotal_minor, doc.vat_minor, doc.total_minor), "reason": doc.reason,
                "lines": [(ln.position, ln.kind, ln.amount_minor, ln.vat_rate) for ln in doc.lines],
                "open": open_amount_minor(s, invoice_id)}


def test_a_full_credit_note_cancels_an_unpaid_invoice(mwb):
    account_id, invoice_id = _invoice(mwb, "F")
    note = _doc(mwb, _credit(mwb, invoice_id))
    assert note == {"number": "AVF-2026-000001", "kind": "credit_note", "status": "issued", "credits": invoice_id,
                    "totals": (4341, 723, 5064), "reason": "billing error", "open": 0,
                    "lines": [(1, "credit", 3333, Decimal("0.20")), (2, "credit", 7, Decimal("0.20")),
                              (3, "credit", 1001, Decimal("0.055"))]}
    assert _doc(mwb, invoice_id)["status"] == "credited" and _doc(mwb, invoice_id)["open"] == 0
    with mwb.db.session() as s:
        assert account_balance(s, account_id)["balance_minor"] == 0
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "invoice.credit_note",
                                                      AuditEntry.target_id == str(note_id(s, invoice_id)))).one()
        assert entry.details["invoice"] == "F-2026-000001" and entry.details["settled_minor"] == 5064
    with pytest.raises(UserFacingError, match="nothing left to credit"):
        _credit(mwb, invoice_id)


def note_id(s, invoice_id):
    return s.scalar(sa.select(Invoice.id).where(Invoice.credits_invoice_id == invoice_id))


def test_a_partial_credit_note_settles_the_open_amount_and_the_rest_is_credit(mwb):
    account_id, invoice_id = _invoice(mwb, "P")
    with mwb.db.transaction() as s:     # 40.00 paid: 10.64 open
        record_payment(s, account_id, 4000, method="transfer", actor="bank")
    note = _doc(mwb, _credit(mwb, invoice_id, lines={1: "13.33"}, reason="two days of outage"))
    # 13.33 at 20 %: VAT 2.666 → 2.67; total 16.00, of which 10.64 settles the invoice and 5.36 is credit.
    assert note["totals"] == (1333, 267, 1600)
    assert note["lines"] == [(1, "credit", 1333, Decimal("0.20"))]
    assert _doc(mwb, invoice_id)["status"] == "paid"
    with mwb.db.session() as s:
        settled = s.scalars(sa.select(Allocation.amount_minor).where(Allocation.credit_note_id != None,  # noqa: E711
                                                                     Allocation.invoice_id == invoice_id)).all()
        assert settled == [5064 - 4000]
        assert account_balance(s, account_id)["credit_minor"] == 1600 - 1064


def test_a_line_is_never_credited_beyond_its_amount(mwb):
    _, invoice_id = _invoice(mwb, "O")
    refusals = [
        ({1: "33.34"}, r"line 1 of O-2026-000001 \(Trunk SIP\): crediting 33.34 EUR refused, only 33.33 EUR is left"),
        ({4: "1.00"}, "invoice O-2026-000001 has no line 4 \\(lines 1, 2, 3\\)"),
        ({2: "0.001"}, "0.001 is not a positive amount with at most 2 decimals"),
        ({2: "-0.05"}, "-0.05 is not a positive amount"),
        ({2: "abc"}, "not a decimal number"),
    ]
    for lines, message in refusals:
        with pytest.raises(UserFacingError, match=message):
            _credit(mwb, invoice_id, lines=lines)
    assert _doc(mwb, invoice_id)["status"] == "issued"


ONE_INVOICE_PER_PERIOD = any(getattr(c, "name", None) == "uq_invoice_account_period" and "kind" in c.columns
                             and "credits_invoice_id" not in c.columns for c in Invoice.__table__.constraints)


@pytest.mark.skipif(ONE_INVOICE_PER_PERIOD, reason="unique (account, period_start, kind) allows one credit note "
                                                   "per invoice period: needs the partial unique index (report)")
def test_successive_credit_notes_never_credit_a_line_beyond_its_amount(mwb):
    _, invoice_id = _invoice(mwb, "S")
    _credit(mwb, invoice_id, lines={1: "30.00"})
    with pytest.raises(UserFacingError, match=r"line 1 of S-2026-000001 \(Trunk SIP\): crediting 3.34 EUR refused, "
                                              r"only 3.33 EUR is left"):
        _credit(mwb, invoice_id, lines={1: "3.34"})
    second = _doc(mwb, _credit(mwb, invoice_id, lines={1: "3.33", 2: "0.07"}))
    assert second["number"] == "AVS-2026-000002"
    # 30.00 + 6.00 VAT, then 3.40 + 0.68 VAT settle the invoice but the guide: 50.64 - 36.00 - 4.08 = 10.56 open.
    assert (_doc(mwb, invoice_id)["status"], _doc(mwb, invoice_id)["open"]) == ("partially_paid", 1056)
    last = _doc(mwb, _credit(mwb, invoice_id))              # the rest: the guide, whole
    assert last["lines"] == [(3, "credit", 1001, Decimal("0.055"))] and last["totals"] == (1001, 55, 1056)
    assert _doc(mwb, invoice_id)["status"] == "credited"
    with pytest.raises(UserFacingError, match="refused, only 0.00 EUR is left"):
        _credit(mwb, invoice_id, lines={3: "0.01"})


def test_credit_notes_are_refused_for_credit_notes_and_without_reason(mwb):
    _, invoice_id = _invoice(mwb, "R")
    with pytest.raises(UserFacingError, match="a credit note needs a reason"):
        _credit(mwb, invoice_id, reason="  ")
    note = _credit(mwb, invoice_id, lines={2: "0.07"})
    with pytest.raises(UserFacingError, match="AVR-2026-000001 is a credit note: only invoices can be credited"):
        _credit(mwb, note)


def test_a_credited_invoice_that_was_paid_leaves_all_as_credit(wb):
    """On both backends: paid in full, then fully credited — the whole credit note is account credit."""
    with wb.db.transaction() as s:
        account = make_account(s, make_brand(s))
        invoice_id = make_invoice(s, account, "FA-2026-000001", 1, [("Trunk SIP", 10000, "0.20")]).id
        account_id = account.id
    with wb.db.transaction() as s:
        record_payment(s, account_id, 12000, method="transfer", actor="bank")
    note = _doc(wb, _credit(wb, invoice_id))
    assert (note["number"], note["totals"]) == ("AV-2026-000001", (10000, 2000, 12000))
    assert _doc(wb, invoice_id)["status"] == "credited"
    with wb.db.session() as s:
        balance = account_balance(s, account_id)
        assert (balance["due_minor"], balance["credit_minor"]) == (0, 12000)


def test_cli_credit_note(mwb, capsys):
    _, invoice_id = _invoice(mwb, "K")
    assert run_money_cli(mwb.data_dir, "credit-note", "--invoice", "K-2026-000001", "--line", "2-0.07",
                         "--reason", "x") == 2
    assert "--line must be POSITION:AMOUNT or POSITION:qty=N (e.g. 2:10.50), got '2-0.07'" in capsys.readouterr().err
    assert run_money_cli(mwb.data_dir, "credit-note", "--invoice", "K-2026-000001", "--line", "1:10.00",
                         "--line", "3:10.01", "--reason", "geste commercial", "--json") == 0
    # 10.00 at 20 % → VAT 2.00; 10.01 at 5.5 % → 0.55055 → 0.55; total 20.01 + 2.55 = 22.56
    assert json.loads(capsys.readouterr().out) == {
        "number": "AVK-2026-000001", "invoice": "K-2026-000001", "subtotal_minor": 2001, "vat_minor": 255,
        "total_minor": 2256, "currency": "EUR", "invoice_status": "partially_paid",
        "pdf": "documents/invoices/AVK-2026-000001.pdf"}
    import io

    from pypdf import PdfReader

    pdf = PdfReader(io.BytesIO((mwb.data_dir / "documents/invoices/AVK-2026-000001.pdf").read_bytes()))
    [xml] = pdf.attachments["factur-x.xml"]                          # its Factur-X PDF, rendered at once
    assert b"<ram:TypeCode>381</ram:TypeCode>" in xml and b"AVK-2026-000001" in xml
    assert _doc(mwb, invoice_id)["open"] == 5064 - 2256


def test_a_quantity_of_a_line_is_credited_pro_rata(mwb, capsys):
    """3 SIP channels for 10.00: crediting 2 of them is 10.00 × 2 / 3 = 6.666… → 6.67, VAT 1.334 → 1.33."""
    with mwb.db.transaction() as s:
        account = make_account(s, make_brand(s, "Q"), number="Q-C1")
        invoice_id = make_invoice(s, account, "Q-2026-000001", 3, [("SIP channels", 1000, "0.20", 3)]).id
    with pytest.raises(UserFacingError, match="quantity 4 must be above 0 and at most 3"):
        _credit(mwb, invoice_id, lines={1: CreditQuantity("4")})
    assert run_money_cli(mwb.data_dir, "credit-note", "--invoice", "Q-2026-000001", "--line", "1:qty=2",
                         "--reason", "2 channels never delivered") == 0
    assert capsys.readouterr().out == ("credit note AV-2026-000001 for Q-2026-000001: 8,00\u00a0€ incl. VAT; "
                                       "invoice now partially_paid\n")    # make_brand keeps the AV prefix
    with mwb.db.session() as s:
        note = s.scalars(sa.select(Invoice).where(Invoice.credits_invoice_id == invoice_id)).one()
        line = note.lines[0]
        assert (note.number, note.subtotal_minor, note.vat_minor, note.total_minor) == ("AV-2026-000001", 667, 133, 800)
        assert (line.quantity, line.unit, line.amount_precise, line.amount_minor) == (
            Decimal(2), "month", Decimal("6.6666666667"), 667)
