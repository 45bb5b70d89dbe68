"""What is billed, told as customer stories with every cent written out.

The cycle of a month bills its usage, its arrears subscriptions and the next month's advance
subscriptions (bluerocktel/billing/charges.py). March 2026 has 31 days, April 30. VAT 20 %.
"""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import sqlalchemy as sa

from bluerocktel import lake
from bluerocktel.billing.charges import UsageTotal, build_draft_invoice
from bluerocktel.billing.periods import add_months, month_of, parse_period
from bluerocktel.billing.services import change_plan
from bluerocktel.billing.usage import read_period_usage
from bluerocktel.billing.vat import vat_category, vat_mention
from bluerocktel.db.models import Account, Brand, Product, Service
from scenarios.billing_rows import account, charge, contract, discount, service

UTC = dt.timezone.utc
VAT = Decimal("0.20")
MARCH, APRIL = parse_period("2026-03"), parse_period("2026-04")


def lines_of(draft):
    return [(line.description, line.amount_minor) for line in draft.lines]


def totals(draft):
    return draft.subtotal_minor, draft.vat_minor, draft.total_minor


def voice(cents_per_call: list[int], zone="France fixe"):
    return UsageTotal(1, zone, len(cents_per_call), 60 * len(cents_per_call), 10_000 * sum(cents_per_call))


def test_a_new_customer_activated_on_the_17th_pays_the_rest_of_march_and_april_in_advance():
    # Two trunks at 29.90 (59.80 a month), in advance, from 17 March; installation 49.00; three calls in March.
    trunks = service(quantity=2, timing="advance", activated_on=dt.date(2026, 3, 17))
    calls = [UsageTotal(1, "France fixe", 3, 300, 123_456 + 10_000 + 200_000)]          # 0.333456 -> 0.33
    install = charge(1, "49.00", day=dt.date(2026, 3, 17))
    draft = build_draft_invoice(account(), [trunks], calls, MARCH, VAT, charges=[install])
    # 17..31 March = 15 of 31 days: 5980 - round(5980 x 16/31 = 3086.45 -> 3086) = 2894
    assert lines_of(draft) == [
        ("Trunk SIP — Siège, du 17/03/2026 au 31/03/2026 (prorata 15/31 jours)", 2894),
        ("Trunk SIP — Siège, du 01/04/2026 au 30/04/2026", 5980),
        ("Communications France fixe : 3 appels, 5 min 00 s", 33),
        ("Installation (17/03/2026)", 4900)]
    # 2894 + 5980 + 33 + 4900 = 13807; VAT 2761.4 -> 2761
    assert totals(draft) == (13807, 2761, 16568)
    assert draft.charge_ids == (1,)
    # April's invoice: May in advance, nothing of March again
    assert lines_of(build_draft_invoice(account(), [trunks], [], APRIL, VAT)) == [
        ("Trunk SIP — Siège, du 01/05/2026 au 31/05/2026", 5980)]


def test_an_upgrade_on_the_10th_bills_nine_days_of_the_old_plan_and_the_rest_on_the_new(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        basic = Product(code="BASIC", name="Basic", kind="recurring", price=Decimal("20.00"), billing_timing="arrears")
        pro = Product(code="PRO", name="Pro", kind="recurring", price=Decimal("35.00"), billing_timing="arrears")
        customer = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin")
        s.add_all([basic, pro, customer])
        s.flush()
        svc = Service(account_id=customer.id, product_id=basic.id, label="Siège", activated_on=dt.date(2026, 1, 5))
        s.add(svc)
        s.flush()
        change_plan(s, svc.id, pro.id, dt.date(2026, 4, 10), actor="sales")
        customer_id = customer.id
    with wb.db.session() as s:
        customer = s.get(Account, customer_id)
        services = s.scalars(sa.select(Service).where(Service.account_id == customer_id)).all()
        draft = build_draft_invoice(customer, services, [], APRIL, VAT)
    # Basic 1..9 April: round(2000 x 9/30) = 600; Pro 10..30: 3500 - round(3500 x 9/30) = 3500 - 1050 = 2450
    assert lines_of(draft) == [("Basic — Siège, du 01/04/2026 au 09/04/2026 (prorata 9/30 jours)", 600),
                               ("Pro — Siège, du 10/04/2026 au 30/04/2026 (prorata 21/30 jours)", 2450)]
    assert totals(draft) == (3050, 610, 3660)


def test_a_termination_mid_month_refunds_the_days_paid_in_advance():
    # 29.90 in advance since 2025 (February's cycle billed March); terminated on 16 March; 20.00 of calls.
    trunk = service(timing="advance", terminated_on=dt.date(2026, 3, 16), status="terminated")
    draft = build_draft_invoice(account(), [trunk], [voice([2000])], MARCH, VAT)
    # 16..31 March = 16 days back: -(2990 - round(2990 x 15/31 = 1446.77 -> 1447)) = -1543
    assert lines_of(draft) == [
        ("Remboursement Trunk SIP — Siège, du 16/03/2026 au 31/03/2026 (prorata 16/31 jours)", -1543),
        ("Communications France fixe : 1 appel, 1 min 00 s", 2000)]
    # -1543 + 2000 = 457; VAT 91.4 -> 91
    assert totals(draft) == (457, 91, 548)
    assert build_draft_invoice(account(), [trunk], [], APRIL, VAT).lines == []


def rated(cdr_id, seconds, price_micro, bundle_s, zone="France fixe"):
    start = dt.datetime(2026, 4, 3, 9, 0, tzinfo=UTC)
    return {"cdr_id": cdr_id, "source": "pbx", "start_at": start, "call_type": "voice", "account_id": 1,
            "service_id": 1, "zone": zone, "billable_s": seconds, "billable_units": seconds,
            "price_micro": price_micro, "bundle_units": bundle_s, "rating_status": "rated", "rated_at": start}


def test_a_bundle_overflow_bills_only_the_minutes_beyond_the_bundle(tmp_path):
    # "Forfait 100 min" 15.00 in arrears covers 100 min to French fixed lines. Calls of 40, 50 and 40 min:
    # rating let the bundle cover 40 + 50 + 10 min and priced the 30 min left at 0.02/min = 0.60;
    # a 5-minute call to a mobile, outside the bundle, at 0.10/min = 0.50.
    lake.write_partition(tmp_path, "rated", "2026-04", pa.Table.from_pylist([
        rated("c1", 2400, 0, 2400), rated("c2", 3000, 0, 3000), rated("c3", 2400, 600_000, 600),
        rated("c4", 300, 500_000, 0, zone="mobile")], schema=lake.RATED_SCHEMA))
    usage = read_period_usage(tmp_path, APRIL).rated_by_account()[1]
    plan = service(price="15.00", name="Forfait 100 min", label="Forfait 100 min")
    draft = build_draft_invoice(account(), [plan], usage, APRIL, VAT)
    assert lines_of(draft) == [
        ("Forfait 100 min, du 01/04/2026 au 30/04/2026", 1500),
        ("Communications France fixe : 3 appels, 130 min 00 s, dont 100 min 00 s dans le forfait", 60),
        ("Communications mobile : 1 appel, 5 min 00 s", 50)]
    assert totals(draft) == (1610, 322, 1932)


def test_a_reverse_charge_customer_pays_no_vat_and_needs_its_vat_number():
    gmbh = account(name="Müller GmbH", language="en", country="DE", vat_regime="eu_reverse_charge",
                   vat_number="DE123456789")
    draft = build_draft_invoice(gmbh, [service()], [voice([100])], APRIL, VAT)
    assert lines_of(draft) == [("Trunk SIP — Siège, 2026-04-01 to 2026-04-30", 2990),
                               ("Calls France fixe: 1 call, 1 min 00 s", 100)]
    assert totals(draft) == (3090, 0, 3090) and draft.anomalies == []
    assert [(v.rate, v.base_minor, v.vat_minor) for v in draft.vat] == [(Decimal(0), 3090, 0)]
    assert (draft.vat_regime, vat_category(draft.vat_regime, Decimal(0))) == ("eu_reverse_charge", "AE")
    assert vat_mention(draft.vat_regime, draft.language).startswith("Reverse charge")
    gmbh.vat_number = None
    assert build_draft_invoice(gmbh, [service()], [], APRIL, VAT).anomalies == [
        "reverse charge needs a valid EU VAT number outside France: VAT number '' is empty; expected a country "
        "prefix and digits, e.g. FR40303265045"]


def test_a_yearly_product_is_billed_once_a_year_with_the_monthly_ones():
    # Trunk 29.90 a month in advance since 2025; hosting 120.00 a year in advance from 1 January 2026.
    trunk = service(id=1, timing="advance")
    hosting = service(id=2, price="120.00", months=12, timing="advance", activated_on=dt.date(2026, 1, 1),
                      name="Hébergement", label="Hébergement")
    subtotals = {}
    for n in range(13):
        period = month_of(add_months(dt.date(2025, 12, 1), n))
        subtotals[period.label] = build_draft_invoice(account(), [trunk, hosting], [], period, VAT).subtotal_minor
    # December's cycles bill the next year's hosting (2026, then 2027) with January's trunk
    assert subtotals == {"2025-12": 2990 + 12000, **{f"2026-{m:02d}": 2990 for m in range(1, 12)},
                         "2026-12": 2990 + 12000}
    december = build_draft_invoice(account(), [trunk, hosting], [], parse_period("2026-12"), VAT)
    assert lines_of(december)[1] == ("Hébergement, du 01/01/2027 au 31/12/2027", 12000)


def test_a_ten_percent_discount_for_three_months_covers_three_months_of_subscription_and_of_usage():
    # 10 % from 1 April to 1 July on everything; trunk 29.90 in advance; 1.00 of calls every month.
    offer = discount(1, "percent", "0.10", valid_from=dt.date(2026, 4, 1), valid_to=dt.date(2026, 7, 1),
                     description="Offre de bienvenue")
    found = {}
    for month in ("2026-03", "2026-04", "2026-05", "2026-06", "2026-07"):
        draft = build_draft_invoice(account(), [service(timing="advance")], [voice([100])], parse_period(month),
                                    VAT, discounts=[offer])
        found[month] = ([a for d, a in lines_of(draft) if d.startswith("Offre")], draft.subtotal_minor)
    # March bills April's trunk (10 % = 2.99) and March's calls (not discounted); April and May bill the next
    # month's trunk and their own calls: 10 % of 30.90 = 3.09; June bills July (not discounted) and June's calls
    # (0.10); July nothing. 2.99 + 3.09 + 3.09 + 0.10 = 9.27 = 3 x 2.99 + 3 x 0.10
    assert found == {"2026-03": ([-299], 2791), "2026-04": ([-309], 2781), "2026-05": ([-309], 2781),
                     "2026-06": ([-10], 3080), "2026-07": ([], 3090)}


def test_a_minimum_commitment_tops_up_a_quiet_month_only():
    line = service(price="10.00", name="Ligne", label="Ligne")
    commitment = [contract(1, "50.00")]
    quiet = build_draft_invoice(account(), [line], [voice([500])], APRIL, VAT, contracts=commitment)
    # 10.00 + 5.00 = 15.00 < 50.00: top-up 35.00
    assert lines_of(quiet)[-1] == ("Complément au minimum d'engagement (CT-1 : 50 EUR par mois)", 3500)
    assert totals(quiet) == (5000, 1000, 6000)
    busy = build_draft_invoice(account(), [line], [voice([4500])], APRIL, VAT, contracts=commitment)
    assert [l.kind for l in busy.lines] == ["subscription", "usage"] and totals(busy) == (5500, 1100, 6600)
