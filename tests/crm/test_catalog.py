"""Catalog: products per brand, effective-dated brand price lists that never overlap, price_for."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.crm.catalog import create_price_list, create_product, price_for, set_price, update_product
from bluerocktel.db.models import AuditEntry, Brand
from bluerocktel.errors import ConflictError, UserFacingError


@pytest.fixture
def brands(wb):
    with wb.db.transaction() as s:
        brt, azu = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS"), Brand(
            code="AZU", name="Azur", legal_name="Azur SARL")
        s.add_all([brt, azu])
        s.flush()
        return brt.id, azu.id


def test_price_for_follows_the_list_in_force(wb, brands):
    brt, azu = brands
    with wb.db.transaction() as s:
        sip = create_product(s, code="SIP", name="SIP trunk", kind="recurring", price="30.00", actor="admin@x")
        only_azu = create_product(s, code="AZ-FIBRE", name="Fibre", kind="recurring", price="45", brand_id=azu,
                                  actor="admin@x")
        y2026 = create_price_list(s, brand_id=brt, code="BRT-2026", name="2026", valid_from=dt.date(2026, 1, 1),
                                  valid_to=dt.date(2027, 1, 1), actor="admin@x")
        y2027 = create_price_list(s, brand_id=brt, code="BRT-2027", name="2027", valid_from=dt.date(2027, 1, 1),
                                  actor="admin@x")
        set_price(s, y2026.id, sip.id, "27.50", actor="admin@x")
        set_price(s, y2026.id, sip.id, "28.00", actor="admin@x")      # changed: one item, new price
        set_price(s, y2027.id, sip.id, "29.90", actor="admin@x")
        assert price_for(s, sip, brt, dt.date(2025, 12, 31)) == Decimal("30.00")   # no list yet: product price
        assert price_for(s, sip, brt, dt.date(2026, 12, 31)) == Decimal("28.00")
        assert price_for(s, sip, brt, dt.date(2027, 1, 1)) == Decimal("29.90")      # valid_to is exclusive
        assert price_for(s, sip, azu, dt.date(2026, 6, 1)) == Decimal("30.00")      # Azur has no list
        assert price_for(s, only_azu, azu, dt.date(2026, 6, 1)) == Decimal("45")
        with pytest.raises(UserFacingError, match="product AZ-FIBRE is not sold by brand"):
            price_for(s, only_azu, brt, dt.date(2026, 6, 1))
        with pytest.raises(UserFacingError, match="product AZ-FIBRE is not sold by the price list's brand"):
            set_price(s, y2026.id, only_azu.id, "40", actor="admin@x")
        previous = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "price_list.set_price")
                             .order_by(AuditEntry.id)).all()
        assert [(a.details["previous"], a.details["price"]) for a in previous] == [
            (None, "27.50"), ("27.50", "28.00"), (None, "29.90")]


def test_price_lists_of_a_brand_never_overlap(wb, brands):
    brt, azu = brands
    with wb.db.transaction() as s:
        create_price_list(s, brand_id=brt, code="BRT-H1", name="H1", valid_from=dt.date(2026, 1, 1),
                          valid_to=dt.date(2026, 7, 1), actor="t")
        create_price_list(s, brand_id=azu, code="AZU-ALL", name="Azur", valid_from=dt.date(2026, 1, 1), actor="t")
    with pytest.raises(ConflictError, match=r"overlaps 'BRT-H1' \[2026-01-01, 2026-07-01\)"):
        with wb.db.transaction() as s:
            create_price_list(s, brand_id=brt, code="BRT-X", name="X", valid_from=dt.date(2026, 6, 30), actor="t")
    with pytest.raises(UserFacingError, match="valid_to 2026-01-01: must be after valid_from 2026-07-01"):
        with wb.db.transaction() as s:
            create_price_list(s, brand_id=brt, code="BRT-Y", name="Y", valid_from=dt.date(2026, 7, 1),
                              valid_to=dt.date(2026, 1, 1), actor="t")
    with wb.db.transaction() as s:   # starting on the exclusive end is fine
        create_price_list(s, brand_id=brt, code="BRT-H2", name="H2", valid_from=dt.date(2026, 7, 1), actor="t")


def test_product_checks_and_updates(wb, brands):
    with wb.db.transaction() as s:
        product = create_product(s, code="BOX", name="Router", kind="recurring", price="120",
                                 billing_period_months=12, actor="t")
        assert (product.price, product.vat_rate, product.billing_timing) == (Decimal(120), Decimal("0.20"), "advance")
        update_product(s, product.id, {"price": "118.80", "active": False}, actor="t")
        assert (product.price, product.active) == (Decimal("118.80"), False)
    bad = [({"price": 12.5}, "price 12.5: give a decimal string"),
           ({"price": "-1"}, "price '-1' is negative"),
           ({"price": "0.0000001"}, "price '0.0000001' has more than 6 decimals"),
           ({"kind": "bundle"}, "kind 'bundle': use recurring, one_off or usage"),
           ({"billing_period_months": 5}, "billing_period_months 5: use 1, 3, 6 or 12"),
           ({"vat_rate": "20"}, "vat_rate 20: a fraction such as 0.20"),
           ({"code": "BOX"}, "code 'BOX': a product has this code already")]
    for fields, message in bad:
        with pytest.raises(UserFacingError, match=message):
            with wb.db.transaction() as s:
                create_product(s, **{"code": "NEW", "name": "New", "kind": "recurring", "price": "1", "actor": "t",
                                     **fields})
