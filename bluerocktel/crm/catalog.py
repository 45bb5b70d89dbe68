"""The catalog: products (per brand, or ``brand_id`` None for every brand) and brand price lists.

A price list belongs to one brand and is in force on ``[valid_from, valid_to)``; a brand's lists
never overlap, so on any day at most one is in force. :func:`price_for` answers the price of a
product for a brand on a day: the item of the list in force, else ``Product.price``. Prices are
Decimals built from strings, never floats, with at most 6 decimals (micro units).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Brand, PriceList, PriceListItem, Product
from bluerocktel.crm import fetch
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.money import D, finer_than_micro
from bluerocktel.vocabulary import BillingTiming, ProductKind

PRODUCT_FIELDS = ("name", "kind", "price", "currency", "billing_period_months", "billing_timing", "vat_rate",
                  "active")


def parse_price(value, field: str = "price") -> Decimal:
    """A non-negative Decimal of at most 6 decimals from a string or int (never a float)."""
    try:
        price = D(value)
    except (TypeError, ValueError, InvalidOperation):
        raise UserFacingError(f"{field} {value!r}: give a decimal string such as \"29.90\"") from None
    if price < 0:
        raise UserFacingError(f"{field} {value!r} is negative")
    if finer_than_micro(price):
        raise UserFacingError(f"{field} {value!r} has more than 6 decimals")
    return price


def _clean_product(product: Product, changes: dict) -> None:
    unknown = set(changes) - set(PRODUCT_FIELDS)
    if unknown:
        raise UserFacingError(f"product: unknown field(s) {', '.join(sorted(unknown))}")
    values = dict(changes)
    if "name" in values and not (values["name"] or "").strip():
        raise UserFacingError("name is required")
    checks = {"kind": (ProductKind, "recurring, one_off or usage"),
              "billing_timing": (BillingTiming, "advance or arrears")}
    for field, (enum, allowed) in checks.items():
        if field in values:
            try:
                values[field] = enum(values[field]).value
            except ValueError:
                raise UserFacingError(f"{field} {values[field]!r}: use {allowed}") from None
    for field in ("price", "vat_rate"):
        if field in values:
            values[field] = parse_price(values[field], field)
    if "vat_rate" in values and values["vat_rate"] >= 1:
        raise UserFacingError(f"vat_rate {values['vat_rate']}: a fraction such as 0.20 for 20 %")
    if "billing_period_months" in values and values["billing_period_months"] not in (1, 3, 6, 12):
        raise UserFacingError(f"billing_period_months {values['billing_period_months']!r}: use 1, 3, 6 or 12")
    for key, value in values.items():
        setattr(product, key, value)


def create_product(session: Session, *, code: str, name: str, kind: str, price, actor: str,
                   brand_id: int | None = None, **fields) -> Product:
    """A catalog product; ``brand_id`` None sells it under every brand."""
    code = (code or "").strip()
    if not code:
        raise UserFacingError("code is required")
    if brand_id is not None and session.get(Brand, brand_id) is None:
        raise UserFacingError(f"brand_id {brand_id}: no such brand")
    if session.scalar(select(Product.id).where(Product.code == code)) is not None:
        raise ConflictError(f"code {code!r}: a product has this code already")
    product = Product(code=code, brand_id=brand_id, name="", kind=ProductKind.RECURRING, price=Decimal(0),
                      currency="EUR", billing_period_months=1, billing_timing=BillingTiming.ADVANCE,
                      vat_rate=Decimal("0.20"), active=True)
    _clean_product(product, {"name": name, "kind": kind, "price": price, **fields})
    session.add(product)
    session.flush()
    record_audit(session, actor, "product.create", "product", product.id, code=code, brand_id=brand_id,
                 price=str(product.price), kind=product.kind)
    return product


def get_product(session: Session, product_id: int) -> Product:
    return fetch(session, Product, product_id, "product")


def update_product(session: Session, product_id: int, changes: dict, *, actor: str) -> Product:
    product = get_product(session, product_id)
    _clean_product(product, changes)
    session.flush()
    record_audit(session, actor, "product.update", "product", product.id,
                 **{k: str(v) for k, v in changes.items()})
    return product


def sold_by(product: Product, brand_id: int) -> bool:
    return product.brand_id is None or product.brand_id == brand_id


def create_price_list(session: Session, *, brand_id: int, code: str, name: str, valid_from: dt.date, actor: str,
                      valid_to: dt.date | None = None, currency: str = "EUR") -> PriceList:
    """A brand's price list in force on ``[valid_from, valid_to)``; refused when it overlaps another of the brand."""
    if session.get(Brand, brand_id) is None:
        raise UserFacingError(f"brand_id {brand_id}: no such brand")
    code = (code or "").strip()
    if not code or not (name or "").strip():
        raise UserFacingError("code and name are required")
    if valid_to is not None and valid_to <= valid_from:
        raise UserFacingError(f"valid_to {valid_to}: must be after valid_from {valid_from} (it is exclusive)")
    if session.scalar(select(PriceList.id).where(PriceList.code == code)) is not None:
        raise ConflictError(f"code {code!r}: a price list has this code already")
    overlapping = select(PriceList).where(PriceList.brand_id == brand_id,
                                          or_(PriceList.valid_to.is_(None), PriceList.valid_to > valid_from))
    if valid_to is not None:
        overlapping = overlapping.where(PriceList.valid_from < valid_to)
    overlap = session.scalars(overlapping.limit(1)).first()
    if overlap is not None:
        raise ConflictError(f"price list {code!r} [{valid_from}, {valid_to or '…'}) overlaps {overlap.code!r} "
                            f"[{overlap.valid_from}, {overlap.valid_to or '…'}) of the same brand")
    price_list = PriceList(brand_id=brand_id, code=code, name=name.strip(), currency=currency,
                           valid_from=valid_from, valid_to=valid_to)
    session.add(price_list)
    session.flush()
    record_audit(session, actor, "price_list.create", "price_list", price_list.id, code=code, brand_id=brand_id,
                 valid_from=valid_from.isoformat(), valid_to=valid_to.isoformat() if valid_to else None)
    return price_list


def get_price_list(session: Session, price_list_id: int) -> PriceList:
    price_list = session.get(PriceList, price_list_id)
    if price_list is None:
        raise NotFoundError(f"no price list {price_list_id}")
    return price_list


def set_price(session: Session, price_list_id: int, product_id: int, price, *, actor: str) -> PriceListItem:
    """Set (add or change) the price of a product in a price list."""
    price_list = get_price_list(session, price_list_id)
    product = session.get(Product, product_id)
    if product is None:
        raise UserFacingError(f"product_id {product_id}: no such product")
    if not sold_by(product, price_list.brand_id):
        raise UserFacingError(f"product_id {product_id}: product {product.code} is not sold by the price list's "
                              f"brand {price_list.brand_id}")
    value = parse_price(price)
    item = session.scalar(select(PriceListItem).where(PriceListItem.price_list_id == price_list.id,
                                                      PriceListItem.product_id == product.id))
    previous = None if item is None else str(item.price)
    if item is None:
        item = PriceListItem(price_list_id=price_list.id, product_id=product.id, price=value)
        session.add(item)
    item.price = value
    price_list.updated_at = dt.datetime.now(dt.timezone.utc)
    session.flush()
    record_audit(session, actor, "price_list.set_price", "price_list", price_list.id, product=product.code,
                 previous=previous, price=str(value))
    return item


def price_for(session: Session, product: Product, brand_id: int, on: dt.date) -> Decimal:
    """The brand's price of ``product`` on ``on``: the price list item in force, else ``product.price``."""
    if not sold_by(product, brand_id):
        raise UserFacingError(f"product {product.code} is not sold by brand {brand_id}")
    price = session.scalar(
        select(PriceListItem.price).join(PriceList, PriceList.id == PriceListItem.price_list_id).where(
            PriceListItem.product_id == product.id, PriceList.brand_id == brand_id, PriceList.valid_from <= on,
            or_(PriceList.valid_to.is_(None), PriceList.valid_to > on)))
    return D(price) if price is not None else D(product.price)
