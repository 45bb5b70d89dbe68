"""Quotes: priced offers that become a contract and ordered services when accepted.

Status flow: ``draft → sent → accepted | rejected``; a quote not accepted by ``valid_until``
(inclusive) is ``expired`` (:func:`expire_quotes` marks them; accepting one is refused anyway).

Numbers are gapless per brand and year, formatted by
:func:`bluerocktel.billing.numbering.format_invoice_number` with the brand's number pattern and
the prefix ``DV-<brand code>`` (``DV-BRT-2026-000001``): ``quotes.number`` is unique across
brands, so the brand code keeps two brands' first quotes apart. There is no quote sequence table:
the next number is the brand's largest of the year + 1, computed while the brand row is locked
(``SELECT … FOR UPDATE`` on PostgreSQL and MariaDB; on SQLite a no-op ``UPDATE`` of the brand
takes the database's single write lock) until the transaction that inserts the quote commits.
Quotes are never deleted, so no number is reused or skipped.

Lines are priced when the quote is created (:func:`bluerocktel.crm.catalog.price_for` on that
day) and keep that price. Totals are computed like invoices: each line's amount is
quantity × unit price in minor units (ROUND_HALF_UP), VAT per rate on the sum of the lines of
that rate (:func:`bluerocktel.billing.charges.compute_vat`), at the account's rate
(:func:`bluerocktel.billing.vat.vat_rate_for`: 0 under reverse charge or export).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.charges import compute_vat
from bluerocktel.billing.numbering import DEFAULT_PATTERN, format_invoice_number
from bluerocktel.billing.payments import operator_today
from bluerocktel.billing.vat import vat_rate_for
from bluerocktel.crm.catalog import price_for
from bluerocktel.crm.contracts import create_contract
from bluerocktel.db.models import Account, Brand, Contact, Product, Quote, QuoteLine, Service, ServiceEvent, Site
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.money import D, to_minor
from bluerocktel.vocabulary import AccountStatus, ContactRole, QuoteStatus, ServiceEventKind, ServiceStatus


def _lock_brand(session: Session, brand_id: int) -> Brand:
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("UPDATE brands SET id = id WHERE id = :id"), {"id": brand_id})
        return session.get(Brand, brand_id, populate_existing=True)
    return session.get(Brand, brand_id, with_for_update=True, populate_existing=True)


def next_quote_number(session: Session, brand: Brand, year: int) -> str:
    """The brand's next quote number of ``year`` (call with the brand row locked: :func:`_lock_brand`)."""
    prefix, pattern = f"DV-{brand.code}", brand.invoice_number_pattern or DEFAULT_PATTERN
    numbers = set(session.scalars(select(Quote.number).where(Quote.brand_id == brand.id)))
    n = 1
    while format_invoice_number(prefix, year, n, pattern) in numbers:
        n += 1
    return format_invoice_number(prefix, year, n, pattern)


@dataclass(frozen=True)
class LineIn:
    product_id: int
    quantity: int = 1
    site_id: int | None = None
    description: str | None = None


def create_quote(session: Session, account_id: int, lines: list[LineIn], *, valid_until: dt.date, actor: str,
                 term_months: int = 12, on: dt.date | None = None) -> Quote:
    """A draft quote for the account, its lines priced by the brand's price list on ``on`` (default today)."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"no account {account_id}")
    if account.status == AccountStatus.CLOSED:
        raise ConflictError(f"account {account.number} is closed")
    on = on or operator_today()
    if valid_until < on:
        raise UserFacingError(f"valid_until {valid_until}: before the quote's date {on}")
    if not isinstance(term_months, int) or term_months < 1:
        raise UserFacingError(f"term_months {term_months!r}: a whole number of months, at least 1")
    if not lines:
        raise UserFacingError("lines: a quote needs at least one line")
    priced = []
    for i, line in enumerate(lines, start=1):
        product = session.get(Product, line.product_id)
        if product is None or not product.active:
            raise UserFacingError(f"lines[{i}].product_id {line.product_id}: no such active product")
        if not isinstance(line.quantity, int) or line.quantity < 1:
            raise UserFacingError(f"lines[{i}].quantity {line.quantity!r}: a whole number, at least 1")
        if line.site_id is not None:
            site = session.get(Site, line.site_id)
            if site is None or site.account_id != account.id:
                raise UserFacingError(f"lines[{i}].site_id {line.site_id}: not a site of account {account.number}")
        try:
            price = price_for(session, product, account.brand_id, on)
        except UserFacingError as exc:
            raise UserFacingError(f"lines[{i}]: {exc}") from None
        priced.append(QuoteLine(position=i, product_id=product.id, quantity=line.quantity, unit_price=price,
                                site_id=line.site_id, description=(line.description or product.name)[:300]))
    brand = _lock_brand(session, account.brand_id)
    quote = Quote(number=next_quote_number(session, brand, on.year), account_id=account.id, brand_id=brand.id,
                  status=QuoteStatus.DRAFT, currency=account.currency, valid_until=valid_until,
                  term_months=term_months, created_by=actor)
    quote.lines = priced
    session.add(quote)
    session.flush()
    record_audit(session, actor, "quote.create", "quote", quote.id, number=quote.number, account_id=account.id,
                 lines=len(priced), total_minor=quote_totals(session, quote).total_minor)
    return quote


@dataclass(frozen=True)
class QuoteTotals:
    line_amounts_minor: list[int]
    vat: list[dict] = field(default_factory=list)   # [{"rate", "base_minor", "vat_minor"}] by increasing rate
    subtotal_minor: int = 0
    vat_minor: int = 0
    total_minor: int = 0


def quote_totals(session: Session, quote: Quote) -> QuoteTotals:
    """Line amounts, VAT per rate and totals of a quote, in minor units of its currency."""
    account = session.get(Account, quote.account_id)
    amounts, rated = [], []
    for line in quote.lines:
        amount = to_minor(D(line.unit_price) * line.quantity, quote.currency, ROUND_HALF_UP)
        product = session.get(Product, line.product_id)
        amounts.append(amount)
        rated.append((vat_rate_for(account, product.vat_rate), amount))
    vat = compute_vat(rated)
    vat_minor = sum(v.vat_minor for v in vat)
    subtotal = sum(amounts)
    return QuoteTotals(amounts, [{"rate": str(v.rate), "base_minor": v.base_minor, "vat_minor": v.vat_minor}
                                 for v in vat], subtotal, vat_minor, subtotal + vat_minor)


def get_quote(session: Session, quote_id: int, *, lock: bool = False) -> Quote:
    quote = session.get(Quote, quote_id, with_for_update=lock or None)
    if quote is None:
        raise NotFoundError(f"no quote {quote_id}")
    return quote


def _move(session: Session, quote: Quote, allowed: set[str], status: str, actor: str, today: dt.date) -> None:
    if quote.status == QuoteStatus.SENT and quote.valid_until < today and status != QuoteStatus.EXPIRED:
        raise ConflictError(f"quote {quote.number} expired on {quote.valid_until}: send a new quote")
    if quote.status not in allowed:
        raise ConflictError(f"quote {quote.number} is {quote.status}: cannot make it {status} "
                            f"(allowed from {', '.join(sorted(allowed))})")
    previous, quote.status = quote.status, status
    session.flush()
    record_audit(session, actor, f"quote.{status}", "quote", quote.id, number=quote.number, previous=previous)


def send_quote(session: Session, quote_id: int, *, actor: str, today: dt.date | None = None) -> Quote:
    """draft → sent (what the customer may then accept or reject)."""
    quote = get_quote(session, quote_id, lock=True)
    today = today or operator_today()
    if quote.valid_until < today:
        raise ConflictError(f"quote {quote.number} was valid until {quote.valid_until}: it cannot be sent")
    _move(session, quote, {QuoteStatus.DRAFT}, QuoteStatus.SENT, actor, today)
    return quote


def reject_quote(session: Session, quote_id: int, *, actor: str, today: dt.date | None = None) -> Quote:
    quote = get_quote(session, quote_id, lock=True)
    _move(session, quote, {QuoteStatus.SENT}, QuoteStatus.REJECTED, actor, today or operator_today())
    return quote


def expire_quotes(session: Session, today: dt.date, *, actor: str = "system") -> list[str]:
    """Mark draft and sent quotes whose ``valid_until`` has passed as expired; their numbers."""
    stale = session.scalars(select(Quote).where(Quote.status.in_([QuoteStatus.DRAFT, QuoteStatus.SENT]),
                                                Quote.valid_until < today).order_by(Quote.id).with_for_update()).all()
    for quote in stale:
        _move(session, quote, {QuoteStatus.DRAFT, QuoteStatus.SENT}, QuoteStatus.EXPIRED, actor, today)
    return [q.number for q in stale]


@dataclass(frozen=True)
class Acceptance:
    quote: Quote
    contract_id: int
    service_ids: list[int]


def accept_quote(session: Session, quote_id: int, *, signatory_contact_id: int, actor: str,
                 at: dt.datetime | None = None, start_date: dt.date | None = None) -> Acceptance:
    """sent → accepted: the contract (signed now by the signatory) and one ordered service per line, at once.

    Accepting a quote twice is refused (ConflictError, 409): the second call finds it accepted.
    """
    quote = get_quote(session, quote_id, lock=True)
    at = at or dt.datetime.now(dt.timezone.utc)
    today = start_date or operator_today()
    if quote.status == QuoteStatus.ACCEPTED:
        raise ConflictError(f"quote {quote.number} was accepted already (contract {quote.contract_id})")
    contact = session.get(Contact, signatory_contact_id)
    if contact is None or contact.account_id != quote.account_id:
        raise UserFacingError(f"signatory_contact_id {signatory_contact_id}: not a contact of the quote's account")
    if contact.role != ContactRole.SIGNATORY:
        raise UserFacingError(f"signatory_contact_id {signatory_contact_id}: {contact.first_name} "
                              f"{contact.last_name} is a {contact.role} contact, not a signatory")
    _move(session, quote, {QuoteStatus.SENT}, QuoteStatus.ACCEPTED, actor, today)
    contract = create_contract(session, quote.account_id, start_date=today, term_months=quote.term_months,
                               signed_at=at, signatory_contact_id=contact.id, actor=actor)
    quote.accepted_at, quote.contract_id = at, contract.id
    service_ids = []
    for line in quote.lines:
        service = Service(account_id=quote.account_id, contract_id=contract.id, site_id=line.site_id,
                          product_id=line.product_id, label=line.description[:200], status=ServiceStatus.ORDERED,
                          quantity=line.quantity, unit_price=line.unit_price)
        session.add(service)
        session.flush()
        session.add(ServiceEvent(service_id=service.id, account_id=quote.account_id, kind=ServiceEventKind.ORDERED,
                                 at=at, reason=f"quote {quote.number} accepted", actor=actor,
                                 payload={"from": None, "to": ServiceStatus.ORDERED.value, "quote": quote.number,
                                          "contract": contract.reference, "effective_on": today.isoformat()}))
        service_ids.append(service.id)
    session.flush()
    record_audit(session, actor, "quote.accept_order", "quote", quote.id, number=quote.number,
                 contract=contract.reference, services=service_ids, signatory_contact_id=contact.id)
    return Acceptance(quote, contract.id, service_ids)
