"""Draft invoices from hand-built rows; every expected amount is computed by hand in the test.

March 2026 has 31 days, April 30. The cycle of a month bills its usage, its arrears
subscriptions and the next month's advance subscriptions (charges.py docstring).
"""

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluerocktel.billing.charges import (UsageTotal, active_days, build_draft_invoice, build_subscription_lines,
                                         build_usage_lines, compute_vat, format_megabytes, format_minutes)
from bluerocktel.billing.periods import add_months, month_of, parse_period
from bluerocktel.money import MoneyError
from scenarios.billing_rows import account, charge, contract, discount, service

MARCH = parse_period("2026-03")      # 31 days
APRIL = parse_period("2026-04")      # 30 days
VAT = Decimal("0.20")


def amounts(lines):
    return [(line.kind, line.amount_minor) for line in lines]


# --- subscriptions in arrears: the cycle of April bills April ---------------------------------------------

def test_a_full_month_bills_price_times_quantity():
    [line], anomalies = build_subscription_lines(account(), [service(quantity=2)], APRIL, VAT)
    assert anomalies == []
    assert (line.quantity, line.unit, line.unit_price_precise, line.amount_precise, line.amount_minor) == (
        Decimal(2), "month", Decimal("29.90"), Decimal("59.8000000000"), 5980)
    assert line.description == "Trunk SIP — Siège, du 01/04/2026 au 30/04/2026"
    assert (line.period_start, line.period_end) == (dt.date(2026, 4, 1), dt.date(2026, 5, 1))
    assert line.vat_rate == Decimal("0.20")
    [en], _ = build_subscription_lines(account(language="en"), [service()], APRIL, VAT, language="en")
    assert en.description == "Trunk SIP — Siège, 2026-04-01 to 2026-04-30"


def test_the_service_price_overrides_the_catalog_price():
    [line], _ = build_subscription_lines(account(), [service(unit_price="15.50")], APRIL, VAT)
    assert line.amount_minor == 1550


def test_activation_inside_the_period_is_prorated_by_days():
    # activated 21 April: 21..30 = 10 of 30 days; exact 59.80 x 10/30 = 19.9333...
    # minor: R(30) - R(20) = 5980 - round(5980 x 20/30 = 3986.67 -> 3987) = 1993
    [line], _ = build_subscription_lines(account(), [service(quantity=2, activated_on=dt.date(2026, 4, 21))],
                                         APRIL, VAT)
    assert (line.amount_precise, line.amount_minor, line.unit) == (Decimal("19.9333333333"), 1993, "day")
    assert line.description == "Trunk SIP — Siège, du 21/04/2026 au 30/04/2026 (prorata 10/30 jours)"


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
        service(id=7, activated_on=dt.date(2026, 5, 2), timing="advance"),   # after April: unknown to its cycle
    ]
    lines, anomalies = build_subscription_lines(account(), services, APRIL, VAT)
    assert lines == [] and anomalies == []


def test_a_product_in_another_currency_is_an_anomaly_not_a_line():
    svc = service()
    svc.product.currency = "USD"
    lines, anomalies = build_subscription_lines(account(), [svc], APRIL, VAT)
    assert lines == [] and "currency USD" in anomalies[0]


# --- subscriptions in advance: the cycle of March bills April -------------------------------------------

def test_advance_bills_the_next_month():
    [line], _ = build_subscription_lines(account(), [service(timing="advance")], MARCH, VAT)
    assert (line.amount_minor, line.period_start, line.period_end) == (2990, dt.date(2026, 4, 1), dt.date(2026, 5, 1))
    assert line.description == "Trunk SIP — Siège, du 01/04/2026 au 30/04/2026"


def test_advance_activation_bills_the_rest_of_the_month_and_the_next():
    # activated 17 March: 17..31 = 15 of 31 days, then April in advance
    # exact 29.90 x 15/31 = 14.4677...; minor R(31) - R(16) = 2990 - round(2990 x 16/31 = 1543.23 -> 1543) = 1447
    lines, _ = build_subscription_lines(account(), [service(timing="advance", activated_on=dt.date(2026, 3, 17))],
                                        MARCH, VAT)
    assert [(l.amount_precise, l.amount_minor, l.unit) for l in lines] == [
        (Decimal("14.4677419355"), 1447, "day"), (Decimal("29.9000000000"), 2990, "month")]
    assert lines[0].description == "Trunk SIP — Siège, du 17/03/2026 au 31/03/2026 (prorata 15/31 jours)"


def test_advance_termination_refunds_the_unused_days_billed_by_the_previous_cycle():
    # February's cycle billed March in full; terminated 16 March: 16..31 = 16 days refunded
    # exact -29.90 x 16/31 = -15.4322...; minor -(R(31) - R(15)) = -(2990 - round(1446.77 -> 1447)) = -1543,
    # so March keeps 2990 - 1543 = 1447 = what 1..15 March cost in arrears (round(2990 x 15/31) = 1447)
    svc = service(timing="advance", terminated_on=dt.date(2026, 3, 16), status="terminated")
    [line], _ = build_subscription_lines(account(), [svc], MARCH, VAT)
    assert (line.amount_precise, line.amount_minor) == (Decimal("-15.4322580645"), -1543)
    assert line.description == "Remboursement Trunk SIP — Siège, du 16/03/2026 au 31/03/2026 (prorata 16/31 jours)"
    [arrears], _ = build_subscription_lines(account(), [service(terminated_on=dt.date(2026, 3, 16))], MARCH, VAT)
    assert arrears.amount_minor == 2990 - 1543


def test_a_termination_after_the_period_is_refunded_by_the_cycle_of_its_month():
    svc = service(timing="advance", terminated_on=dt.date(2026, 4, 10))
    assert amounts(build_subscription_lines(account(), [svc], MARCH, VAT)[0]) == [("subscription", 2990)]
    # April: 10..30 = 21 days back: -(2990 - round(2990 x 9/30 = 897)) = -2093; April cost 897 = 9 days
    assert amounts(build_subscription_lines(account(), [svc], APRIL, VAT)[0]) == [("subscription", -2093)]
    assert build_subscription_lines(account(), [svc], parse_period("2026-05"), VAT)[0] == []


def test_a_yearly_product_is_billed_once_a_year_in_its_anniversary_month():
    # 120.00 a year, activated 17 March 2026: years run from 1 March; first year 17/03/2026..28/02/2027 =
    # 349 of 365 days: exact 120 x 349/365 = 114.7397...; minor 12000 - round(12000 x 16/365 = 526.03) = 11474
    svc = service(price="120.00", months=12, timing="advance", activated_on=dt.date(2026, 3, 17), name="Hébergement",
                  label="Hébergement")
    billed = {}
    for n in range(24):
        period = month_of(add_months(dt.date(2026, 3, 1), n))
        lines, anomalies = build_subscription_lines(account(), [svc], period, VAT)
        assert anomalies == []
        if lines:
            billed[period.label] = [(l.description, l.unit, l.amount_minor) for l in lines]
    assert billed == {
        "2026-03": [("Hébergement, du 17/03/2026 au 28/02/2027 (prorata 349/365 jours)", "day", 11474)],
        "2027-02": [("Hébergement, du 01/03/2027 au 29/02/2028", "year", 12000)],
        "2028-02": [("Hébergement, du 01/03/2028 au 28/02/2029", "year", 12000)],
    }
    arrears = service(price="120.00", months=12, activated_on=dt.date(2026, 3, 17))
    assert amounts(build_subscription_lines(account(), [arrears], parse_period("2027-02"), VAT)[0]) == [
        ("subscription", 11474)]
    assert build_subscription_lines(account(), [arrears], parse_period("2027-01"), VAT)[0] == []


def test_a_yearly_product_without_activation_date_is_an_anomaly():
    lines, anomalies = build_subscription_lines(account(), [service(months=12)], MARCH, VAT)
    assert lines == [] and anomalies == ["service 1 (Siège): a product billed every 12 months needs an activation "
                                         "date; not billed"]


@settings(max_examples=60, deadline=None)
@given(timing=st.sampled_from(["advance", "arrears"]), months=st.sampled_from([1, 12]),
       start=st.integers(0, 400), length=st.one_of(st.none(), st.integers(1, 500)),
       price=st.integers(1, 100_000), quantity=st.integers(1, 5))
def test_over_all_cycles_every_active_day_is_billed_once(timing, months, start, length, price, quantity):
    activated = dt.date(2026, 1, 1) + dt.timedelta(days=start)
    terminated = activated + dt.timedelta(days=length) if length else None
    svc = service(price=str(Decimal(price) / 100), quantity=quantity, timing=timing, months=months,
                  activated_on=activated, terminated_on=terminated)
    days: dict[dt.date, int] = {}
    for n in range(48):
        lines, _ = build_subscription_lines(account(), [svc], month_of(add_months(dt.date(2025, 12, 1), n)), VAT)
        for line in lines:
            for k in range((line.period_end - line.period_start).days):
                day = line.period_start + dt.timedelta(days=k)
                days[day] = days.get(day, 0) + (1 if line.amount_precise > 0 else -1)
    end = terminated or dt.date(2029, 1, 1)      # the cycles run to November 2029
    active = {activated + dt.timedelta(days=k) for k in range((end - activated).days)}
    billed = {d for d, n in days.items() if n}
    assert all(n in (0, 1) for n in days.values())
    assert billed == active if terminated else active <= billed and min(billed) == activated


@settings(max_examples=100, deadline=None)
@given(day=st.integers(2, 31), price=st.integers(1, 1_000_000), quantity=st.integers(1, 9),
       timing=st.sampled_from(["advance", "arrears"]))
def test_proration_parts_of_a_month_sum_to_the_whole_month_for_a_split_at_any_day(day, price, quantity, timing):
    split = dt.date(2026, 3, day)
    text = str(Decimal(price) / 100)
    old = service(id=1, price=text, quantity=quantity, timing=timing, terminated_on=split, status="terminated")
    new = service(id=2, price=text, quantity=quantity, timing=timing, activated_on=split)
    march = []
    for period in (parse_period("2026-02"), MARCH):     # advance: February's cycle billed March
        lines, _ = build_subscription_lines(account(), [old, new], period, VAT)
        march += [l.amount_minor for l in lines if l.period_start.month == 3]
    assert sum(march) == price * quantity


# --- usage ----------------------------------------------------------------------------------------------

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


def test_usage_lines_are_grouped_by_call_type_then_zone_and_name_the_bundle_part():
    usage = [UsageTotal(1, "Europe", 2, 0, 1_234_567, "data", 12_345_678, 10_000_000),
             UsageTotal(1, "France", 5, 0, 20_000, "sms", 6, 4),
             UsageTotal(1, "France fixe", 3, 600, 12_000, "voice", 600, 240)]
    voice, sms, data = build_usage_lines(account(), usage, VAT, period=APRIL)
    assert (voice.description, voice.quantity, voice.unit, voice.amount_minor) == (
        "Communications France fixe : 3 appels, 10 min 00 s, dont 4 min 00 s dans le forfait", 3, "call", 1)
    assert (sms.description, sms.quantity, sms.unit, sms.amount_minor, sms.call_type) == (
        "SMS France : 6 SMS, dont 4 SMS dans le forfait", 6, "sms", 2, "sms")
    # 12 345 678 bytes = 12.345678 MB -> 12.35; 1.234567 EUR -> 1.23
    assert (data.description, data.quantity, data.unit, data.amount_minor) == (
        "Données Europe : 12,35 Mo, dont 10,00 Mo dans le forfait", Decimal("12.35"), "MB", 123)
    assert (data.period_start, data.period_end) == (APRIL.period_start, APRIL.period_end)
    [en] = build_usage_lines(account(language="en"), usage[:1], VAT, language="en")
    assert en.description == "Data Europe: 12.35 MB, of which 10.00 MB in bundle"
    assert format_megabytes(5_000, "en") == "0.01"      # 0.005 MB rounds half up


# --- one-off charges, discounts, minimum commitments ------------------------------------------------------

def test_one_off_charges_and_fees_dated_before_the_period_end_are_billed_once():
    charges = [charge(1, "49.995", quantity="2"),                                     # 99.99
               charge(2, "10.00", kind="fee", description="Frais de rejet", day=dt.date(2026, 3, 20)),
               charge(3, "3.00", vat_rate="0.055", description="Annuaire"),            # 3.00 at 5.5 %
               charge(4, "99.00", day=dt.date(2026, 5, 1)),                            # next period
               charge(5, "99.00", invoice_id=7)]                                       # billed already
    draft = build_draft_invoice(account(), [], [], APRIL, VAT, charges=charges)
    assert [(l.kind, l.description, l.amount_minor, l.vat_rate) for l in draft.lines] == [
        ("fee", "Frais de rejet (20/03/2026)", 1000, VAT),
        ("one_off", "Installation (03/04/2026)", 9999, VAT),
        ("one_off", "Annuaire (03/04/2026)", 300, Decimal("0.055"))]
    assert draft.charge_ids == (2, 1, 3)
    # VAT: 20 % of 109.99 = 21.998 -> 22.00; 5.5 % of 3.00 = 0.165 -> 0.17
    assert (draft.subtotal_minor, draft.vat_minor, draft.total_minor) == (11299, 2217, 13516)


def test_a_percent_discount_is_prorated_by_the_days_each_line_covers():
    # 10 % from 16 April: the April subscription covers 15 of its 30 days: 2990 x 0.10 x 15/30 = 149.5 -> 150;
    # the usage line (April, 0.50) too: 50 x 0.10 x 15/30 = 2.5 -> 3, both at 20 %: one line 0.10 x (1495 + 25)
    # = 152 (one rounding per rate)
    draft = build_draft_invoice(account(), [service()], [UsageTotal(1, "mobile", 1, 60, 500_000)], APRIL, VAT,
                                discounts=[discount(1, "percent", "0.10", valid_from=dt.date(2026, 4, 16),
                                                    description="Bienvenue")])
    assert [(l.kind, l.description, l.amount_minor) for l in draft.lines][-1] == ("discount", "Bienvenue (10 %)", -152)
    assert draft.subtotal_minor == 2990 + 50 - 152


def test_an_amount_discount_is_prorated_by_days_and_split_across_vat_rates_by_largest_remainder():
    # 5.00 a month from 11 April: 20 of 30 days = 3.333.. -> 3.33; bases 29.90 (20 %) and 10.00 (5.5 %):
    # 333 x 2990/3990 = 249.53, 333 x 1000/3990 = 83.47 -> 249 + 83 = 332, the cent left to .53: 250 and 83
    services = [service(id=1), service(id=2, price="10.00", vat_rate="0.055", name="Presse", label="Presse")]
    draft = build_draft_invoice(account(), services, [], APRIL, VAT,
                                discounts=[discount(1, "amount", "5.00", valid_from=dt.date(2026, 4, 11))])
    assert [(l.description, l.amount_minor, l.vat_rate) for l in draft.lines if l.kind == "discount"] == [
        ("Remise — TVA 5,5 %", -83, Decimal("0.055")), ("Remise — TVA 20 %", -250, VAT)]
    assert draft.subtotal_minor == 2990 + 1000 - 333


def test_discounts_never_exceed_the_lines_they_discount():
    usage = [UsageTotal(1, "mobile", 1, 60, 130_000)]                      # 0.13
    stacked = [discount(1, "percent", "0.5", applies_to="subscription"),  # 50 % of 29.90 = 14.95
               discount(2, "amount", "100.00", applies_to="subscription"),  # capped at the 14.95 left
               discount(3, "amount", "100.00", applies_to="usage")]         # capped at 0.13
    draft = build_draft_invoice(account(), [service()], usage, APRIL, VAT, discounts=stacked)
    assert [l.amount_minor for l in draft.lines if l.kind == "discount"] == [-1495, -1495, -13]
    assert (draft.subtotal_minor, draft.total_minor) == (0, 0)


def test_a_discount_on_one_service_touches_only_its_lines_and_bad_discounts_are_anomalies():
    services = [service(id=1), service(id=2, price="10.00", name="Ligne", label="Ligne")]
    draft = build_draft_invoice(account(), services, [], APRIL, VAT,
                                discounts=[discount(1, "percent", "0.25", service_id=2),
                                           discount(2, "percent", "1.5"), discount(3, "gift", "1")])
    assert amounts(draft.lines) == [("subscription", 2990), ("subscription", 1000), ("discount", -250)]
    assert draft.anomalies == [
        "discount 2 (Remise): value 1.5 is out of range (a percentage is 0 < value <= 1, e.g. 0.10; an amount > 0); "
        "not applied", "discount 3 (Remise): unknown kind 'gift' (percent or amount); not applied"]


def test_a_minimum_commitment_tops_up_the_net_after_discounts():
    # net 29.90 - 10 % (2.99) = 26.91; minimum 50.00: top-up 23.09
    draft = build_draft_invoice(account(), [service()], [], APRIL, VAT, contracts=[contract(1, "50")],
                                discounts=[discount(1, "percent", "0.10")])
    assert amounts(draft.lines) == [("subscription", 2990), ("discount", -299), ("minimum", 2309)]
    assert draft.lines[-1].description == "Complément au minimum d'engagement (CT-1 : 50 EUR par mois)"
    assert draft.subtotal_minor == 5000


def test_a_minimum_is_prorated_when_the_contract_starts_mid_period_and_ignores_other_contracts():
    # contract from 16 April: 15/30 of 50.00 = 25.00; counted: the 10.00 line (not the 29.90 of contract 2)
    services = [service(id=1, contract_id=2), service(id=2, price="10.00", name="Ligne", label="Ligne",
                                                      contract_id=1)]
    draft = build_draft_invoice(account(language="en"), services, [], APRIL, VAT,
                                contracts=[contract(1, "50", start=dt.date(2026, 4, 16)),
                                           contract(2, "20", reference="CT-2")])
    assert amounts(draft.lines) == [("subscription", 2990), ("subscription", 1000), ("minimum", 1500)]
    assert draft.lines[-1].description == "Minimum commitment top-up (CT-1: 50 EUR per month) (prorated 15/30 days)"


# --- VAT and totals ---------------------------------------------------------------------------------------

def test_vat_is_computed_per_rate_on_the_sum_of_minor_amounts():
    # three lines of 0.03 at 20 %: per line 0.006 would round to 0.01 each (0.03); on the sum 0.09 -> 0.018 -> 0.02
    assert [(v.rate, v.base_minor, v.vat_minor) for v in compute_vat([(VAT, 3)] * 3)] == [(VAT, 9, 2)]
    # 5.5 % of 3.00 = 0.165 -> 0.17 (HALF_UP; half-even would give 0.16); rates sorted
    vat = compute_vat([(VAT, 1000), (Decimal("0.055"), 300)])
    assert [(v.rate, v.base_minor, v.vat_minor) for v in vat] == [(Decimal("0.055"), 300, 17), (VAT, 1000, 200)]


def test_draft_invoice_totals_are_integer_sums():
    services = [service(id=1, quantity=2),                                            # 59.80
                service(id=2, price="10.00", name="Ligne", label="Ligne",
                        activated_on=dt.date(2026, 4, 11))]                           # 1000 - round(333.3) = 6.67
    usage = [UsageTotal(1, "France fixe", 2, 120, 133_456)]                            # 0.13
    draft = build_draft_invoice(account(), services, usage, APRIL, VAT)
    assert [line.amount_minor for line in draft.lines] == [5980, 667, 13]
    assert [line.kind for line in draft.lines] == ["subscription", "subscription", "usage"]
    assert draft.lines[1].description == "Ligne, du 11/04/2026 au 30/04/2026 (prorata 20/30 jours)"
    assert (draft.subtotal_minor, draft.vat_minor, draft.total_minor) == (6660, 1332, 7992)
    assert (draft.period_start, draft.period_end, draft.currency) == (dt.date(2026, 4, 1), dt.date(2026, 5, 1), "EUR")
    assert (draft.vat_regime, draft.language, draft.charge_ids, draft.anomalies) == ("fr", "fr", (), [])


def test_reverse_charge_accounts_are_invoiced_without_vat_and_need_a_foreign_eu_vat_number():
    german = account(vat_regime="eu_reverse_charge", vat_number="DE 123 456 789", country="DE")
    draft = build_draft_invoice(german, [service()], [], APRIL, VAT, charges=[charge(1, "10.00", vat_rate="0.20")])
    assert (draft.subtotal_minor, draft.vat_minor, draft.total_minor) == (3990, 0, 3990)
    assert {line.vat_rate for line in draft.lines} == {Decimal(0)}
    assert (draft.vat_regime, draft.anomalies) == ("eu_reverse_charge", [])
    missing = build_draft_invoice(account(vat_regime="eu_reverse_charge"), [service()], [], APRIL, VAT)
    assert missing.anomalies[0].startswith("reverse charge needs a valid EU VAT number outside France: ")
    french = build_draft_invoice(account(vat_regime="eu_reverse_charge", vat_number="FR40303265045"), [service()],
                                 [], APRIL, VAT)
    assert french.anomalies == ["reverse charge needs a valid EU VAT number outside France: FR40303265045 is French"]


def test_product_vat_rate_applies_to_its_lines():
    draft = build_draft_invoice(account(), [service(price="3.00", vat_rate="0.055")], [], APRIL, VAT)
    assert (draft.vat[0].rate, draft.vat_minor) == (Decimal("0.055"), 17)


def test_a_negative_total_from_refunds_is_an_anomaly():
    svc = service(timing="advance", terminated_on=dt.date(2026, 3, 16), status="terminated")
    draft = build_draft_invoice(account(), [svc], [], MARCH, VAT)
    # -15.43, VAT -3.086 -> -3.09 (half away from zero)
    assert (draft.subtotal_minor, draft.vat_minor, draft.total_minor) == (-1543, -309, -1852)
    assert draft.anomalies == ["total -18.52 EUR is negative: refunds and re-rating adjustments exceed the charges "
                               "of the period"]


RATES = [Decimal("0.20"), Decimal("0.10"), Decimal("0.055"), Decimal("0.021")]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(RATES), st.integers(1, 10_000_000), st.integers(1, 5)), min_size=1,
                max_size=8),
       st.lists(st.tuples(st.sampled_from(RATES), st.integers(-5_000, 5_000)), max_size=4))
def test_invoice_total_is_the_sum_of_lines_plus_vat_rounded_per_rate(products, charges):
    services = [service(id=i + 1, price=str(Decimal(cents) / 100), quantity=q, vat_rate=str(rate),
                        activated_on=dt.date(2026, 4, 1 + i))
                for i, (rate, cents, q) in enumerate(products)]
    one_offs = [charge(i + 1, str(Decimal(cents) / 100), vat_rate=str(rate)) for i, (rate, cents) in enumerate(charges)]
    draft = build_draft_invoice(account(), services, [], APRIL, VAT, charges=one_offs)
    by_rate: dict[Decimal, int] = {}
    for line in draft.lines:
        by_rate[line.vat_rate] = by_rate.get(line.vat_rate, 0) + line.amount_minor
    vat = sum(int((Decimal(base) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))
              for rate, base in by_rate.items())
    assert draft.subtotal_minor == sum(line.amount_minor for line in draft.lines)
    assert (draft.vat_minor, draft.total_minor) == (vat, draft.subtotal_minor + vat)


def test_format_minutes():
    assert format_minutes(0) == "0 min 00 s"
    assert format_minutes(3725) == "62 min 05 s"


def test_a_float_price_is_refused():
    svc = service()
    svc.product.price = 0.1  # type: ignore[assignment]
    with pytest.raises(MoneyError, match="float"):
        build_subscription_lines(account(), [svc], APRIL, VAT)
