"""Draft invoices from hand-built services and usage; every expected amount is computed by hand."""

import datetime as dt
from decimal import Decimal

import pytest

from bluerocktel.billing.charges import (UsageTotal, active_days, build_draft_invoice, build_subscription_lines,
                                         build_usage_lines, compute_vat, format_minutes)
from bluerocktel.billing.periods import parse_period
from bluerocktel.db.models import Account, Product, Service
from bluerocktel.money import MoneyError

APRIL = parse_period("2026-04")      # 30 days
VAT = Decimal("0.20")


def account(**kw) -> Account:
    values = dict(id=1, number="C001", name="Boulangerie Martin", brand_id=1, currency="EUR", language="fr",
                  vat_regime="fr", kind="business")
    values.update(kw)
    return Account(**values)


def service(id=1, price="29.90", quantity=1, unit_price=None, activated_on=None, terminated_on=None,
            status="active", kind="recurring", vat_rate="0.20", name="Trunk SIP", label="Siège") -> Service:
    product = Product(id=10 + id, code=f"P{id}", name=name, kind=kind, price=Decimal(price), currency="EUR",
                      billing_period_months=1, vat_rate=Decimal(vat_rate))
    return Service(id=id, account_id=1, product_id=product.id, product=product, label=label, status=status,
                   quantity=quantity, unit_price=None if unit_price is None else Decimal(unit_price),
                   activated_on=activated_on, terminated_on=terminated_on)


def test_a_full_month_bills_price_times_quantity():
    [line], anomalies = build_subscription_lines(account(), [service(quantity=2)], APRIL, VAT)
    assert anomalies == []
    assert (line.quantity, line.unit_price_precise, line.amount_precise, line.amount_minor) == (
        Decimal(2), Decimal("29.90"), Decimal("59.8000000000"), 5980)
    assert line.description == "Trunk SIP — Siège"
    assert line.vat_rate == Decimal("0.20")


def test_the_service_price_overrides_the_catalog_price():
    [line], _ = build_subscription_lines(account(), [service(unit_price="15.50")], APRIL, VAT)
    assert line.amount_minor == 1550


def test_activation_inside_the_period_is_prorated_by_days():
    # activated 21 April: 21..30 = 10 of 30 days; 29.90 x 2 x 10/30 = 19.9333... -> 19.93
    [line], _ = build_subscription_lines(account(), [service(quantity=2, activated_on=dt.date(2026, 4, 21))],
                                         APRIL, VAT)
    assert line.amount_precise == Decimal("19.9333333333")
    assert line.amount_minor == 1993
    assert "prorata 10/30 jours" in line.description


def test_termination_day_is_not_billed_and_proration_rounds_half_up():
    # terminated 16 April: billed 1..15 = 15 days; 0.15 x 15/30 = 0.075 -> 0.08 (HALF_UP, not 0.07)
    svc = service(price="0.15", terminated_on=dt.date(2026, 4, 16), status="terminated")
    assert active_days(svc, APRIL) == 15
    [line], _ = build_subscription_lines(account(), [svc], APRIL, VAT)
    assert (line.amount_precise, line.amount_minor) == (Decimal("0.0750000000"), 8)


def test_services_not_active_in_the_period_or_not_recurring_bill_nothing():
    services = [
        service(id=1, status="ordered"),
        service(id=2, activated_on=dt.date(2026, 5, 1)),
        service(id=3, terminated_on=dt.date(2026, 4, 1), status="terminated"),
        service(id=4, status="terminated"),                 # terminated, no date: not billed
        service(id=5, kind="usage"),
        service(id=6, kind="one_off"),
    ]
    lines, anomalies = build_subscription_lines(account(), services, APRIL, VAT)
    assert lines == [] and anomalies == []


def test_a_product_in_another_currency_is_an_anomaly_not_a_line():
    svc = service()
    svc.product.currency = "USD"
    lines, anomalies = build_subscription_lines(account(), [svc], APRIL, VAT)
    assert lines == [] and "currency USD" in anomalies[0]


def test_usage_lines_sum_micro_units_per_zone_and_round_half_up():
    usage = [UsageTotal(1, "mobile", 1, 61, 5_000),               # 0.005 -> 0.01
             UsageTotal(1, "France fixe", 2, 3725, 133_456)]     # 0.133456 -> 0.13
    fixe, mobile = build_usage_lines(account(), usage, VAT)
    assert (fixe.zone, fixe.quantity, fixe.amount_precise, fixe.amount_minor) == (
        "France fixe", Decimal(2), Decimal("0.133456"), 13)
    assert fixe.description == "Communications France fixe : 2 appels, 62 min 05 s"
    assert (mobile.amount_precise, mobile.amount_minor) == (Decimal("0.005000"), 1)
    assert mobile.description == "Communications mobile : 1 appel, 1 min 01 s"
    [en] = build_usage_lines(account(language="en"), usage[:1], VAT, language="en")
    assert en.description == "Calls mobile: 1 call, 1 min 01 s"


def test_vat_is_computed_per_rate_on_the_sum_of_minor_amounts():
    # three lines of 0.03 at 20 %: per line 0.006 would round to 0.01 each (0.03); on the sum 0.09 -> 0.018 -> 0.02
    assert [(v.rate, v.base_minor, v.vat_minor) for v in compute_vat([(VAT, 3)] * 3)] == [(VAT, 9, 2)]
    # 5.5 % of 3.00 = 0.165 -> 0.17 (HALF_UP; half-even would give 0.16); rates sorted
    vat = compute_vat([(VAT, 1000), (Decimal("0.055"), 300)])
    assert [(v.rate, v.base_minor, v.vat_minor) for v in vat] == [(Decimal("0.055"), 300, 17), (VAT, 1000, 200)]


def test_draft_invoice_totals_are_integer_sums():
    services = [service(id=1, quantity=2),                                            # 59.80
                service(id=2, price="10.00", name="Ligne", label="Ligne",
                        activated_on=dt.date(2026, 4, 11))]                           # 10 x 20/30 = 6.666.. -> 6.67
    usage = [UsageTotal(1, "France fixe", 2, 120, 133_456)]                            # 0.13
    draft = build_draft_invoice(account(), services, usage, APRIL, VAT)
    assert [line.amount_minor for line in draft.lines] == [5980, 667, 13]
    assert [line.kind for line in draft.lines] == ["subscription", "subscription", "usage"]
    assert draft.lines[1].description == "Ligne (prorata 20/30 jours)"
    assert (draft.subtotal_minor, draft.vat_minor, draft.total_minor) == (6660, 1332, 7992)
    assert (draft.period_start, draft.period_end, draft.currency) == (dt.date(2026, 4, 1), dt.date(2026, 5, 1), "EUR")


def test_reverse_charge_accounts_are_invoiced_without_vat():
    draft = build_draft_invoice(account(vat_regime="eu_reverse_charge"), [service()], [], APRIL, VAT)
    assert (draft.subtotal_minor, draft.vat_minor, draft.total_minor) == (2990, 0, 2990)
    assert draft.lines[0].vat_rate == Decimal(0)


def test_product_vat_rate_applies_to_its_lines():
    draft = build_draft_invoice(account(), [service(price="3.00", vat_rate="0.055")], [], APRIL, VAT)
    assert (draft.vat[0].rate, draft.vat_minor) == (Decimal("0.055"), 17)


def test_format_minutes():
    assert format_minutes(0) == "0 min 00 s"
    assert format_minutes(3725) == "62 min 05 s"


def test_a_float_price_is_refused():
    svc = service()
    svc.product.price = 0.1  # type: ignore[assignment]
    with pytest.raises(MoneyError, match="float"):
        build_subscription_lines(account(), [svc], APRIL, VAT)
