"""Seller and buyer identities as printed on an invoice, frozen at issue.

An issued invoice must keep showing who sold and who bought *at the time*, even after the brand
moves or the customer renames itself: the issuing code stores :func:`party_snapshot_seller` and
:func:`party_snapshot_buyer` in ``Invoice.seller`` / ``Invoice.buyer``. Documents read them
through :func:`seller_of` / :func:`buyer_of`, which fall back to the live rows for invoices
issued before the snapshots existed.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import object_session

from bluerocktel.db.models import Account, Brand, Invoice, SepaMandate
from bluerocktel.vocabulary import MandateStatus, PaymentMethod

SELLER_FIELDS = ("legal_name", "name", "address", "postcode", "city", "country", "siren", "siret", "vat_number",
                 "legal_form", "share_capital", "rcs", "email", "phone", "iban", "bic", "sepa_creditor_id")
BUYER_FIELDS = ("number", "name", "kind", "address", "postcode", "city", "country", "siren", "siret", "vat_number",
                "email", "payment_method")


def party_snapshot_seller(brand: Brand) -> dict:
    """The brand's legal identity and bank details as plain JSON (rates as text)."""
    snapshot = {name: getattr(brand, name) for name in SELLER_FIELDS}
    rate = brand.late_penalty_rate
    snapshot["late_penalty_rate"] = None if rate is None else str(rate)
    return snapshot


def party_snapshot_buyer(account: Account) -> dict:
    """The account's legal identity as plain JSON, with its active SEPA mandate when it pays by direct debit."""
    snapshot = {name: getattr(account, name) for name in BUYER_FIELDS}
    mandate = active_mandate(account) if account.payment_method == PaymentMethod.SEPA_DEBIT else None
    snapshot["sepa_mandate"] = None if mandate is None else {
        "umr": mandate.umr, "iban": mandate.iban, "bic": mandate.bic, "signed_on": mandate.signed_on.isoformat()}
    return snapshot


def active_mandate(account: Account) -> SepaMandate | None:
    """The account's most recently signed active mandate (needs the account attached to a session)."""
    session = object_session(account)
    if session is None or account.id is None:
        return None
    return session.scalars(sa.select(SepaMandate)
                           .where(SepaMandate.account_id == account.id, SepaMandate.status == MandateStatus.ACTIVE)
                           .order_by(SepaMandate.signed_on.desc(), SepaMandate.id.desc()).limit(1)).first()


def seller_of(invoice: Invoice) -> dict:
    """The invoice's seller: its snapshot when filled, else the brand as it is now."""
    return dict(invoice.seller) if invoice.seller else party_snapshot_seller(invoice.brand)


def buyer_of(invoice: Invoice) -> dict:
    """The invoice's buyer: its snapshot when filled, else the account as it is now."""
    return dict(invoice.buyer) if invoice.buyer else party_snapshot_buyer(invoice.account)


def siren_of(party: dict) -> str | None:
    """The 9-digit SIREN, taken from the SIRET when only that is known."""
    return party.get("siren") or (party.get("siret") or "")[:9] or None


def address_lines(party: dict) -> list[str]:
    """Street lines of the free-text address (postcode and city are separate fields)."""
    return [line.strip() for line in (party.get("address") or "").splitlines() if line.strip()]
