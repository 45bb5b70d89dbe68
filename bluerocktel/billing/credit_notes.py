"""Credit notes: the only correction of an issued invoice.

A credit note is an :class:`~bluerocktel.db.models.Invoice` of kind ``credit_note`` numbered
from the brand's credit-note sequence (``AV-2026-000001``), pointing at the invoice it corrects
(``credits_invoice_id``), with **positive** amounts whose effect on the balance is negative.

- Its line ``N`` (kind ``credit``) credits line ``N`` of the invoice (same ``position``); a line
  is never credited beyond its ``amount_minor`` across all credit notes of the invoice. A full
  credit note takes what is left of every line; a partial one takes the net amounts asked, or
  a quantity of a line (:class:`CreditQuantity`: its amount × quantity / its quantity, rounded
  ROUND_HALF_UP to minor units).
- VAT per rate is computed on the credit note's own lines exactly as on an invoice
  (:func:`bluerocktel.billing.charges.compute_vat`: per rate, ROUND_HALF_UP), so each document
  adds up on its own.
- It settles the invoice's open amount first (an allocation with ``credit_note_id``); the rest
  is account credit. The invoice becomes ``credited`` once every line is fully credited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.charges import PRECISE_DIGITS, compute_vat
from bluerocktel.billing.numbering import allocate_invoice_number
from bluerocktel.billing.payments import (lock_account, open_invoices, operator_today, parse_amount_minor,
                                          refresh_invoice_status)
from bluerocktel.db.models import Allocation, Invoice, InvoiceLine
from bluerocktel.documents.parties import party_snapshot_buyer, party_snapshot_seller
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.money import D, MoneyError, div_half_up, from_minor, minor_digits, quantize
from bluerocktel.vocabulary import InvoiceKind, InvoiceLineKind, InvoiceStatus


def credited_by_position(session: Session, invoice_id: int) -> dict[int, int]:
    """Minor units already credited per line position of an invoice, over all its credit notes."""
    rows = session.execute(
        sa.select(InvoiceLine.position, sa.func.sum(InvoiceLine.amount_minor))
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(Invoice.credits_invoice_id == invoice_id, Invoice.kind == InvoiceKind.CREDIT_NOTE)
        .group_by(InvoiceLine.position))
    return {position: int(total) for position, total in rows}


@dataclass(frozen=True)
class CreditQuantity:
    """Credit ``quantity`` units of a line (its amount × quantity / its quantity, ROUND_HALF_UP)."""

    quantity: Decimal | str | int


def _credit_line(line: InvoiceLine, amount_minor: int, precise: Decimal,
                 quantity: Decimal | None = None) -> InvoiceLine:
    """Line ``line.position`` of the credit note: ``quantity`` units of the line, else one lump sum."""
    unit, unit_price = (line.unit, line.unit_price_precise) if quantity is not None else ("unit", precise)
    return InvoiceLine(position=line.position, kind=InvoiceLineKind.CREDIT, description=line.description,
                       product_id=line.product_id, service_id=line.service_id, zone=line.zone,
                       quantity=Decimal(1) if quantity is None else quantity, unit=unit, unit_price_precise=unit_price,
                       amount_precise=precise, amount_minor=amount_minor, vat_rate=line.vat_rate)


def _quantity_credit(invoice: Invoice, line: InvoiceLine, asked: CreditQuantity) -> InvoiceLine:
    what = f"credit of line {line.position} of {invoice.number}"
    try:
        quantity = D(asked.quantity)
    except MoneyError as exc:
        raise UserFacingError(f"{what}: {exc}") from None
    if not 0 < quantity <= line.quantity:
        raise UserFacingError(f"{what}: quantity {asked.quantity} must be above 0 and at most {line.quantity}")
    exact = Fraction(line.amount_precise) * Fraction(quantity) / Fraction(line.quantity)
    scaled = exact * 10 ** minor_digits(invoice.currency)
    precise = quantize(D(exact.numerator) / D(exact.denominator), PRECISE_DIGITS, ROUND_HALF_UP)
    return _credit_line(line, div_half_up(scaled.numerator, scaled.denominator), precise, quantity)


def _asked_line(invoice: Invoice, line: InvoiceLine, asked: Decimal | str | int | CreditQuantity) -> InvoiceLine:
    if isinstance(asked, CreditQuantity):
        return _quantity_credit(invoice, line, asked)
    minor = parse_amount_minor(asked, invoice.currency, f"credit of line {line.position} of {invoice.number}")
    if minor == line.amount_minor:
        return _credit_line(line, minor, line.amount_precise, line.quantity)
    return _credit_line(line, minor, from_minor(minor, invoice.currency))


def _build_lines(invoice: Invoice, credited: dict[int, int],
                 asked: Mapping[int, Decimal | str | int | CreditQuantity] | None) -> list[InvoiceLine]:
    by_position = {line.position: line for line in invoice.lines}
    if asked is None:
        return [_credit_line(line, line.amount_minor, line.amount_precise, line.quantity) if pos not in credited
                else _credit_line(line, line.amount_minor - credited[pos],
                                  from_minor(line.amount_minor - credited[pos], invoice.currency))
                for pos, line in sorted(by_position.items()) if line.amount_minor != credited.get(pos, 0)]
    lines = []
    for position, amount in sorted(asked.items()):
        line = by_position.get(int(position))
        if line is None:
            raise UserFacingError(f"invoice {invoice.number} has no line {position} "
                                  f"(lines {', '.join(str(p) for p in sorted(by_position))})")
        credit = _asked_line(invoice, line, amount)
        remaining = line.amount_minor - credited.get(line.position, 0)
        if credit.amount_minor > remaining:
            raise UserFacingError(
                f"line {line.position} of {invoice.number} ({line.description}): crediting "
                f"{from_minor(credit.amount_minor, invoice.currency)} {invoice.currency} refused, only "
                f"{from_minor(max(remaining, 0), invoice.currency)} {invoice.currency} is left to credit")
        lines.append(credit)
    return lines


def issue_credit_note(session: Session, invoice_id: int, *,
                      lines: Mapping[int, Decimal | str | int | CreditQuantity] | None = None,
                      reason: str, actor: str, issue_date: dt.date | None = None) -> Invoice:
    """Issue a credit note for ``invoice_id``: all that is left of it (``lines=None``), or
    ``{line position: net amount or CreditQuantity}``; audited; the invoice itself only changes status."""
    if not (reason or "").strip():
        raise UserFacingError("a credit note needs a reason")
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id}")
    if invoice.kind != InvoiceKind.INVOICE:
        raise UserFacingError(f"{invoice.number} is a credit note: only invoices can be credited")
    lock_account(session, invoice.account_id)
    session.refresh(invoice)
    credited = credited_by_position(session, invoice.id)
    note_lines = _build_lines(invoice, credited, lines)
    vat = compute_vat((line.vat_rate, line.amount_minor) for line in note_lines)
    subtotal = sum(line.amount_minor for line in note_lines)
    total = subtotal + sum(v.vat_minor for v in vat)
    if total <= 0:
        raise UserFacingError(f"invoice {invoice.number}: nothing left to credit (the credit note would total "
                              f"{from_minor(total, invoice.currency)} {invoice.currency})")
    issue_date = issue_date or operator_today()
    note = Invoice(
        number=allocate_invoice_number(session, invoice.brand, issue_date.year, kind=InvoiceKind.CREDIT_NOTE),
        kind=InvoiceKind.CREDIT_NOTE, status=InvoiceStatus.ISSUED, account_id=invoice.account_id,
        brand_id=invoice.brand_id, credits_invoice_id=invoice.id, currency=invoice.currency,
        period_start=invoice.period_start, period_end=invoice.period_end, issue_date=issue_date,
        due_date=issue_date, subtotal_minor=subtotal, vat_minor=total - subtotal, total_minor=total,
        language=invoice.language, vat_regime=invoice.vat_regime,
        # the identities of the corrected invoice; invoices issued before snapshots existed take today's
        seller=invoice.seller or party_snapshot_seller(invoice.brand),
        buyer=invoice.buyer or party_snapshot_buyer(invoice.account),
        reason=reason.strip(), lines=note_lines)
    session.add(note)
    session.flush()
    settled = min(total, sum(m for _, m in open_invoices(session, invoice.account_id, only=[invoice.id])))
    if settled > 0:
        session.add(Allocation(invoice_id=invoice.id, credit_note_id=note.id, amount_minor=settled))
        session.flush()
    credited = credited_by_position(session, invoice.id)
    if all(line.amount_minor == credited.get(line.position, 0) for line in invoice.lines):
        invoice.status = InvoiceStatus.CREDITED
        session.flush()
    else:
        refresh_invoice_status(session, invoice.id)
    record_audit(session, actor, "invoice.credit_note", "invoice", note.id, number=note.number,
                 invoice=invoice.number, reason=note.reason, total_minor=total, settled_minor=settled,
                 partial=lines is not None)
    return note
