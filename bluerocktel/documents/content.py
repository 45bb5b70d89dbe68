"""What every rendering of an invoice says, computed once: the PDF, the CII and the UBL agree.

:func:`invoice_content` reads an issued :class:`~bluerocktel.db.models.Invoice` (lines, brand and
account loaded; attached to a session for credit notes and SEPA mandates) and returns an
:class:`InvoiceContent`: parties, lines in EN 16931 terms, the VAT breakdown per category and
rate, totals, payment instructions and the legal notes. The totals are the stored integer
totals, checked against the lines: an invoice whose lines do not add up is refused rather than
rendered wrong.

EN 16931 wants a non-negative net price (BR-27), so a negative line carries a negative
quantity. A line without a unit price (usage totals) is priced per its whole quantity (price =
line amount, base quantity BT-149 = quantity), so quantity × price / base is exactly the amount.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import object_session

from bluerocktel.billing.charges import VatAmount, compute_vat
from bluerocktel.billing.vat import vat_category, vat_mention
from bluerocktel.db.models import Invoice
from bluerocktel.documents.formatting import format_rate
from bluerocktel.documents.parties import buyer_of, seller_of
from bluerocktel.errors import UserFacingError
from bluerocktel.money import from_minor
from bluerocktel.vocabulary import AccountKind, InvoiceKind, PaymentMethod, VatRegime

DEFAULT_PENALTY_TEXT = {"fr": "trois fois le taux d'intérêt légal", "en": "three times the French statutory rate"}

# UN/ECE Recommendation 20 codes for our line units.
UNIT_CODES = {"month": "MON", "year": "ANN", "day": "DAY", "minute": "MIN", "second": "SEC", "hour": "HUR",
              "MB": "4L", "call": "C62", "unit": "C62", "sms": "C62", "period": "C62"}

MENTIONS = {
    "fr": {
        "penalty": "En cas de retard de paiement, des pénalités au taux annuel de {rate} sont exigibles dès le "
                   "lendemain de la date d'échéance (art. L441-10 du Code de commerce).",
        "indemnity": "Tout retard de paiement entraîne de plein droit une indemnité forfaitaire pour frais de "
                     "recouvrement de 40 € (art. D441-5 du Code de commerce).",
        "discount": "Pas d'escompte pour paiement anticipé.",
    },
    "en": {
        "penalty": "Late payment incurs penalties at the annual rate of {rate} from the day after the due date "
                   "(art. L441-10 French Commercial Code).",
        "indemnity": "Any late payment also incurs a fixed recovery indemnity of €40 (art. D441-5 French "
                     "Commercial Code).",
        "discount": "No discount for early payment.",
    },
}
EXEMPTION_CODES = {"AE": "VATEX-EU-AE", "G": "VATEX-EU-G"}


class DocumentError(UserFacingError):
    """An invoice cannot be rendered as it is stored (its amounts or references are inconsistent)."""


@dataclass(frozen=True)
class ContentLine:
    position: int
    description: str
    quantity: Decimal           # BT-129, negative for a negative line
    unit_code: str              # BT-130
    net_price: Decimal          # BT-146, never negative
    base_quantity: Decimal | None   # BT-149, None = 1
    amount_minor: int           # BT-131
    vat_rate: Decimal           # 0.20
    vat_category: str           # UNCL5305: S, Z, AE, G


@dataclass(frozen=True)
class VatBreakdown:
    category: str
    rate: Decimal
    base_minor: int
    vat_minor: int
    exemption_reason: str | None
    exemption_code: str | None


@dataclass(frozen=True)
class PaymentInstructions:
    means_code: str             # 58 SEPA credit transfer, 59 SEPA direct debit
    iban: str | None            # payee account (transfer)
    bic: str | None
    creditor_id: str | None     # SEPA creditor identifier (direct debit)
    mandate_umr: str | None
    debtor_iban: str | None


@dataclass(frozen=True)
class InvoiceContent:
    number: str
    credit_note: bool
    issue_date: dt.date
    due_date: dt.date
    period_start: dt.date
    period_last_day: dt.date
    currency: str
    language: str
    vat_regime: str
    seller: dict
    buyer: dict
    lines: list[ContentLine]
    vat: list[VatBreakdown]
    subtotal_minor: int
    vat_minor: int
    total_minor: int
    credited: tuple[str, dt.date] | None    # credit notes: the invoice's number and date (BT-25, BT-26)
    reason: str | None
    payment: PaymentInstructions | None
    mentions: list[tuple[str, str]]         # (UNTDID 4451 subject code, text): legal notes

    @property
    def type_code(self) -> str:
        return "381" if self.credit_note else "380"


def language_of(invoice: Invoice) -> str:
    """The invoice's language; invoices issued before snapshots existed follow their account."""
    language = invoice.language if invoice.buyer else (invoice.account.language or invoice.language)
    return "en" if language == "en" else "fr"


def vat_regime_of(invoice: Invoice) -> str:
    """The invoice's VAT regime; invoices issued before snapshots existed follow their account."""
    regime = invoice.vat_regime if invoice.buyer else (invoice.account.vat_regime or invoice.vat_regime)
    return regime or VatRegime.FR


def invoice_content(invoice: Invoice) -> InvoiceContent:
    """Everything the documents of ``invoice`` show, checked to add up to its stored totals."""
    language, regime = language_of(invoice), vat_regime_of(invoice)
    seller, buyer = seller_of(invoice), buyer_of(invoice)
    lines = [_content_line(line, regime, invoice.currency) for line in invoice.lines]
    vat = [_breakdown(v, regime, language)
           for v in compute_vat((line.vat_rate, line.amount_minor) for line in invoice.lines)]
    _check_totals(invoice, lines, vat)
    credit_note = invoice.kind == InvoiceKind.CREDIT_NOTE
    return InvoiceContent(
        number=invoice.number, credit_note=credit_note, issue_date=invoice.issue_date, due_date=invoice.due_date,
        period_start=invoice.period_start, period_last_day=invoice.period_end - dt.timedelta(days=1),
        currency=invoice.currency, language=language, vat_regime=regime, seller=seller, buyer=buyer,
        lines=lines, vat=vat, subtotal_minor=invoice.subtotal_minor, vat_minor=invoice.vat_minor,
        total_minor=invoice.total_minor, credited=_credited(invoice) if credit_note else None,
        reason=invoice.reason, payment=None if credit_note else _payment(seller, buyer),
        mentions=_mentions(seller, buyer, regime, language))


def _content_line(line, regime: str, currency: str) -> ContentLine:
    sign = -1 if line.amount_minor < 0 else 1
    quantity = abs(Decimal(line.quantity)) or Decimal(1)
    if line.unit_price_precise is None:
        price, base = abs(from_minor(line.amount_minor, currency)), quantity
    else:
        price, base = abs(Decimal(line.unit_price_precise)), None
    return ContentLine(line.position, line.description, sign * quantity, UNIT_CODES.get(line.unit, "C62"), price,
                       base, line.amount_minor, Decimal(line.vat_rate), vat_category(regime, Decimal(line.vat_rate)))


def _breakdown(vat: VatAmount, regime: str, language: str) -> VatBreakdown:
    """One rate's VAT; exempt categories carry the regime's legal mention and VATEX code (BR-AE-10, BR-G-10)."""
    category = vat_category(regime, vat.rate)
    code = EXEMPTION_CODES.get(category)
    return VatBreakdown(category, vat.rate, vat.base_minor, vat.vat_minor,
                        vat_mention(regime, language) if code else None, code)


def _check_totals(invoice: Invoice, lines: list[ContentLine], vat: list[VatBreakdown]) -> None:
    subtotal = sum(line.amount_minor for line in lines)
    vat_total = sum(v.vat_minor for v in vat)
    if (subtotal, vat_total, subtotal + vat_total) != (invoice.subtotal_minor, invoice.vat_minor, invoice.total_minor):
        raise DocumentError(
            f"invoice {invoice.number}: stored totals (net {invoice.subtotal_minor}, VAT {invoice.vat_minor}, "
            f"total {invoice.total_minor} minor units) differ from its lines (net {subtotal}, VAT per rate "
            f"{vat_total}, total {subtotal + vat_total})")


def _credited(invoice: Invoice) -> tuple[str, dt.date]:
    session = object_session(invoice)
    credited = session.get(Invoice, invoice.credits_invoice_id) if session and invoice.credits_invoice_id else None
    if credited is None:
        raise DocumentError(f"credit note {invoice.number}: the invoice it credits "
                            f"(id {invoice.credits_invoice_id}) cannot be found")
    return credited.number, credited.issue_date


def _payment(seller: dict, buyer: dict) -> PaymentInstructions | None:
    """How an invoice is paid: SEPA direct debit under the buyer's mandate, else transfer to the seller's IBAN."""
    if buyer.get("payment_method") == PaymentMethod.SEPA_DEBIT:
        mandate = buyer.get("sepa_mandate")
        return PaymentInstructions("59", None, None, seller.get("sepa_creditor_id"),
                                   mandate and mandate["umr"], mandate and mandate["iban"])
    if seller.get("iban"):
        return PaymentInstructions("58", seller["iban"].replace(" ", ""), seller.get("bic"), None, None, None)
    return None


def _mentions(seller: dict, buyer: dict, regime: str, language: str) -> list[tuple[str, str]]:
    """Legal notes: the buyer's VAT regime, late-payment penalties, the €40 indemnity (businesses), no discount."""
    texts = MENTIONS[language]
    regime_mention = vat_mention(regime, language)
    notes = [("TXD", regime_mention)] if regime_mention else []
    rate = seller.get("late_penalty_rate")
    notes.append(("PMD", texts["penalty"].format(
        rate=format_rate(Decimal(rate), language) if rate else DEFAULT_PENALTY_TEXT[language])))
    if buyer.get("kind") != AccountKind.CONSUMER:
        notes.append(("PMT", texts["indemnity"]))
    notes.append(("AAB", texts["discount"]))
    return notes
