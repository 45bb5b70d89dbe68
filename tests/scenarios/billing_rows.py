"""In-memory rows for billing tests: accounts, services, charges, discounts and contracts, built
without a database (``build_draft_invoice`` is a pure function of them)."""

import datetime as dt
from decimal import Decimal

from bluerocktel.db.models import Account, Contract, Discount, OneOffCharge, Product, Service


def account(**kw) -> Account:
    values = dict(id=1, number="C001", name="Boulangerie Martin", brand_id=1, currency="EUR", language="fr",
                  vat_regime="fr", kind="business", country="FR")
    values.update(kw)
    return Account(**values)


def service(id=1, price="29.90", quantity=1, unit_price=None, activated_on=None, terminated_on=None,
            status="active", kind="recurring", vat_rate="0.20", name="Trunk SIP", label="Siège",
            timing="arrears", months=1, contract_id=None) -> Service:
    product = Product(id=10 + id, code=f"P{id}", name=name, kind=kind, price=Decimal(price), currency="EUR",
                      billing_period_months=months, billing_timing=timing, vat_rate=Decimal(vat_rate))
    return Service(id=id, account_id=1, product_id=product.id, product=product, label=label, status=status,
                   quantity=quantity, unit_price=None if unit_price is None else Decimal(unit_price),
                   activated_on=activated_on, terminated_on=terminated_on, contract_id=contract_id)


def charge(id, unit_price, kind="one_off", quantity="1", vat_rate=None, day=dt.date(2026, 4, 3), invoice_id=None,
           description="Installation") -> OneOffCharge:
    return OneOffCharge(id=id, account_id=1, kind=kind, description=description, quantity=Decimal(quantity),
                        unit_price=Decimal(unit_price), vat_rate=None if vat_rate is None else Decimal(vat_rate),
                        charge_date=day, invoice_id=invoice_id)


def discount(id, kind, value, applies_to="all", valid_from=dt.date(2026, 1, 1), valid_to=None, service_id=None,
             description="Remise") -> Discount:
    return Discount(id=id, account_id=1, kind=kind, value=Decimal(value), applies_to=applies_to,
                    valid_from=valid_from, valid_to=valid_to, service_id=service_id, description=description)


def contract(id, minimum, start=dt.date(2026, 1, 1), end=None, reference="CT-1") -> Contract:
    return Contract(id=id, account_id=1, reference=reference, status="active", start_date=start, end_date=end,
                    minimum_monthly=Decimal(minimum))
