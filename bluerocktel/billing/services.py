"""What staff change on an account that billing reads: plan changes, one-off charges, discounts.

:func:`add_charge` and :func:`add_discount` check and record a ``OneOffCharge`` or a ``Discount``
(billed by the next cycle, charges.py); plan changes are below.

A plan change moves a service to another product from a given day.

:func:`change_plan` ends the service on that day and starts a new one with the new product,
so that billing prorates both by its ordinary rules (charges.py): the old plan is billed up to
the day before, the new one from the day. The service's identifiers and bundles move to the new
service at midnight of that day in the account's time zone (effective-dated rows are split, so
calls before the change stay with the old service), and the change is recorded in the audit log
and as two service events (terminated, activated) in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.charges import discount_problem
from bluerocktel.db.models import (Account, Discount, OneOffCharge, Product, Service, ServiceBundle, ServiceEvent,
                                   ServiceIdentifier)
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.money import D, MoneyError
from bluerocktel.vocabulary import ChargeKind, ProductKind, ServiceEventKind, ServiceStatus

PLAN_CHANGE = "plan change"


def _midnight_utc(day: dt.date, timezone: str) -> dt.datetime:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserFacingError(f"unknown time zone {timezone!r} (an IANA name such as Europe/Paris)") from None
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.timezone.utc)


def _split(rows, moved: dt.datetime, new_service_id: int, copy) -> list:
    """Move the effective-dated ``rows`` of a service to ``new_service_id`` from ``moved`` on.

    A row in force at ``moved`` ends there and a copy (``copy(row)``, returned) continues it; a
    row starting later moves whole; a row ended by then stays.
    """
    continued_rows = []
    for row in rows:
        if row.valid_to is not None and row.valid_to <= moved:
            continue
        if row.valid_from >= moved:
            row.service_id = new_service_id
            continue
        continued = copy(row)
        continued.service_id, continued.valid_from, continued.valid_to = new_service_id, moved, row.valid_to
        row.valid_to = moved
        continued_rows.append(continued)
    return continued_rows


def change_plan(session: Session, service_id: int, new_product_id: int, on: dt.date, actor: str) -> Service:
    """Move service ``service_id`` to product ``new_product_id`` from day ``on``; the new service is returned.

    The old service ends on ``on`` (``terminated_on``, exclusive); the new one, with the same
    account, contract, label, quantity and rate deck but the new product's price, starts that day.
    Statuses change at once (old terminated, new active); billing goes by the dates.
    Nothing is committed: the caller's transaction holds the change, its audit entry and events.
    """
    old = session.get(Service, service_id)
    if old is None:
        raise NotFoundError(f"no service {service_id}")
    product = session.get(Product, new_product_id)
    if product is None:
        raise NotFoundError(f"no product {new_product_id}")
    if product.kind != ProductKind.RECURRING:
        raise UserFacingError(f"product {product.code} is {product.kind}, not a recurring plan a service can move to")
    if product.id == old.product_id:
        raise UserFacingError(f"service {service_id} is on product {product.code} already")
    if old.status in (ServiceStatus.ORDERED, ServiceStatus.TERMINATED):
        raise UserFacingError(f"service {service_id} is {old.status}: only an active or suspended service changes plan")
    if old.terminated_on is not None and old.terminated_on <= on:
        raise UserFacingError(f"service {service_id} ends on {old.terminated_on}, not after {on}")
    if old.activated_on is not None and on <= old.activated_on:
        raise UserFacingError(f"plan change on {on} must be after the service's activation on {old.activated_on}")
    account = session.get(Account, old.account_id)
    moved = _midnight_utc(on, account.timezone)

    new = Service(account_id=old.account_id, contract_id=old.contract_id, product_id=product.id,
                  rate_deck_id=old.rate_deck_id, label=old.label, status=ServiceStatus.ACTIVE,
                  quantity=old.quantity, activated_on=on, terminated_on=old.terminated_on)
    session.add(new)
    session.flush()
    identifiers = session.scalars(sa.select(ServiceIdentifier).where(ServiceIdentifier.service_id == old.id)
                                  .order_by(ServiceIdentifier.id)).all()
    bundles = session.scalars(sa.select(ServiceBundle).where(ServiceBundle.service_id == old.id)
                              .order_by(ServiceBundle.id)).all()
    session.add_all(_split(identifiers, moved, new.id, lambda r: ServiceIdentifier(kind=r.kind, value=r.value)))
    session.add_all(_split(bundles, moved, new.id, lambda r: ServiceBundle(bundle_id=r.bundle_id)))
    old.terminated_on = on
    old.status = ServiceStatus.TERMINATED
    payload = {"old_service_id": old.id, "new_service_id": new.id, "old_product_id": old.product_id,
               "new_product_id": product.id, "on": on.isoformat()}
    session.add_all([
        ServiceEvent(service_id=old.id, account_id=old.account_id, kind=ServiceEventKind.TERMINATED, at=moved,
                     reason=PLAN_CHANGE, actor=actor, payload=payload),
        ServiceEvent(service_id=new.id, account_id=new.account_id, kind=ServiceEventKind.ACTIVATED, at=moved,
                     reason=PLAN_CHANGE, actor=actor, payload=payload)])
    record_audit(session, actor, "service.change_plan", "service", old.id, **payload)
    session.flush()
    return new


def _decimal(value: str | int | Decimal, what: str) -> Decimal:
    try:
        return D(value)
    except MoneyError as exc:
        raise UserFacingError(f"{what}: {exc}") from None


def _account_and_service(session: Session, account_id: int, service_id: int | None) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"no account {account_id}")
    if service_id is not None:
        service = session.get(Service, service_id)
        if service is None or service.account_id != account.id:
            raise NotFoundError(f"account {account.number} has no service {service_id}")
    return account


def add_charge(session: Session, account_id: int, description: str, unit_price: str | Decimal, *,
               charge_date: dt.date, quantity: str | Decimal = "1", kind: str = ChargeKind.ONE_OFF,
               vat_rate: str | Decimal | None = None, service_id: int | None = None, product_id: int | None = None,
               actor: str) -> OneOffCharge:
    """Record a one-off charge or fee billed by the first cycle whose period ends after ``charge_date``."""
    account = _account_and_service(session, account_id, service_id)
    if kind not in (ChargeKind.ONE_OFF, ChargeKind.FEE):
        raise UserFacingError(f"charge kind {kind!r} is not one_off or fee")
    if not description or not description.strip():
        raise UserFacingError("a charge needs a description (it is printed on the invoice)")
    price, qty = _decimal(unit_price, "unit price"), _decimal(quantity, "quantity")
    if qty <= 0:
        raise UserFacingError(f"quantity {qty} must be positive")
    rate = None if vat_rate is None else _decimal(vat_rate, "VAT rate")
    if rate is not None and not 0 <= rate < 1:
        raise UserFacingError(f"VAT rate {rate} must be a fraction such as 0.20")
    charge = OneOffCharge(account_id=account.id, service_id=service_id, product_id=product_id, kind=kind,
                          description=description.strip(), quantity=qty, unit_price=price, vat_rate=rate,
                          charge_date=charge_date, created_by=actor)
    session.add(charge)
    session.flush()
    record_audit(session, actor, "charge.add", "one_off_charge", charge.id, account=account.number, kind=kind,
                 unit_price=str(price), quantity=str(qty), charge_date=charge_date.isoformat())
    return charge


def add_discount(session: Session, account_id: int, kind: str, value: str | Decimal, description: str, *,
                 valid_from: dt.date, valid_to: dt.date | None = None, applies_to: str = "all",
                 service_id: int | None = None, actor: str) -> Discount:
    """Record a percent (``0.10``) or monthly amount discount over ``[valid_from, valid_to)``."""
    account = _account_and_service(session, account_id, service_id)
    amount = _decimal(value, "discount value")
    problem = discount_problem(kind, applies_to, amount)
    if problem:
        raise UserFacingError(f"discount: {problem}")
    if valid_to is not None and valid_to <= valid_from:
        raise UserFacingError(f"discount ends on {valid_to}, not after it starts on {valid_from}")
    if not description or not description.strip():
        raise UserFacingError("a discount needs a description (it is printed on the invoice)")
    discount = Discount(account_id=account.id, service_id=service_id, kind=kind, value=amount,
                        applies_to=applies_to, description=description.strip(), valid_from=valid_from,
                        valid_to=valid_to)
    session.add(discount)
    session.flush()
    record_audit(session, actor, "discount.add", "discount", discount.id, account=account.number, kind=kind,
                 value=str(amount), applies_to=applies_to, valid_from=valid_from.isoformat(),
                 valid_to=valid_to.isoformat() if valid_to else None)
    return discount
