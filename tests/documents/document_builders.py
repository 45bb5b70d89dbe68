"""Invoices for the document tests, stored with the ORM.

``issue(session, ...)`` stores a brand, an account and an invoice with the given lines; the
totals are computed here by the same rule as billing (VAT per rate, half-up) so that each test
states only its lines and checks the exact amounts it expects.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from decimal import ROUND_HALF_UP, Decimal

import pypdf

from bluerocktel.db.models import Account, Brand, Invoice, InvoiceLine, SepaMandate
from bluerocktel.documents.parties import party_snapshot_buyer, party_snapshot_seller

_ids = itertools.count(1)


def line(description, quantity, unit_price, amount_minor, vat_rate="0.20", unit="month", kind="subscription"):
    return dict(kind=kind, description=description, quantity=Decimal(quantity), unit=unit,
                unit_price_precise=None if unit_price is None else Decimal(unit_price),
                amount_precise=Decimal(amount_minor) / 100, amount_minor=amount_minor, vat_rate=Decimal(vat_rate))


def issue(session, lines, *, language="fr", vat_regime="fr", kind="business", payment_method="transfer",
          country="FR", buyer_vat="FR44999999999", credits: Invoice | None = None, reason=None,
          period=(dt.date(2026, 3, 1), dt.date(2026, 4, 1)), snapshot=True) -> Invoice:
    """Store an issued invoice (or, with ``credits``, a credit note of that invoice) and return it."""
    n = next(_ids)
    brand = Brand(code=f"B{n}", name="BlueRock Télécom", legal_name="BlueRock Télécom SAS", siren="912345678",
                  siret="91234567800017", vat_number="FR40912345678", legal_form="SAS", share_capital="50 000 €",
                  rcs="RCS Lyon 912 345 678", address="12 quai Rambaud", postcode="69002", city="Lyon",
                  country="FR", iban="FR76 3000 6000 0112 3456 7890 189", bic="AGRIFRPP",
                  sepa_creditor_id="FR12ZZZ123456", late_penalty_rate=Decimal("0.12"),
                  primary_color="#0b3d91", accent_color="#f5a623")
    session.add(brand)
    session.flush()
    account = Account(number=f"C{n:04d}", brand_id=brand.id, name="Boulangerie Martin & Fils", kind=kind,
                      address="3 place du Marché", postcode="69001" if country == "FR" else "10115",
                      city="Lyon" if country == "FR" else "Berlin", country=country, language=language,
                      vat_regime=vat_regime, vat_number=buyer_vat, payment_method=payment_method,
                      siren="999999999" if country == "FR" else None, email="compta@martin.example")
    session.add(account)
    session.flush()
    if payment_method == "sepa_debit":
        session.add(SepaMandate(account_id=account.id, umr=f"BRT-MANDATE-{n:04d}", signed_on=dt.date(2026, 1, 15),
                                debtor_name=account.name, iban="FR7630004000031234567890143", bic="BNPAFRPP"))
        session.flush()
    rows = [InvoiceLine(position=i, **values) for i, values in enumerate(lines, start=1)]
    subtotal = sum(r.amount_minor for r in rows)
    bases: dict[Decimal, int] = {}
    for r in rows:
        bases[r.vat_rate] = bases.get(r.vat_rate, 0) + r.amount_minor
    vat = sum(int((Decimal(base) * rate).quantize(Decimal(1), ROUND_HALF_UP)) for rate, base in bases.items())
    seller, buyer = (party_snapshot_seller(brand), party_snapshot_buyer(account)) if snapshot else ({}, {})
    prefix = "AV" if credits else "FA"
    invoice = Invoice(number=f"{prefix}-2026-{n:06d}", kind="credit_note" if credits else "invoice",
                      account_id=account.id, brand_id=brand.id, credits_invoice_id=credits and credits.id,
                      period_start=period[0], period_end=period[1], issue_date=dt.date(2026, 4, 2),
                      due_date=dt.date(2026, 5, 2), subtotal_minor=subtotal, vat_minor=vat,
                      total_minor=subtotal + vat, language=language, vat_regime=vat_regime, reason=reason,
                      seller=seller, buyer=buyer)
    invoice.lines = rows
    session.add(invoice)
    session.flush()
    return invoice


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return " ".join(text.replace("\u00a0", " ").replace("\u202f", " ").split())
