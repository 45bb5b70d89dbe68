"""Draft invoices: pure functions from services, usage, charges, discounts and contracts to lines,
VAT and totals. This docstring is the one statement of the money rules.

Nothing here writes to a database; :mod:`bluerocktel.billing.cycle` reads the rows, calls
:func:`build_draft_invoice` and issues the drafts. Amounts follow DESIGN.md §3: exact fractions,
one ROUND_HALF_UP rounding per line into ``amount_minor`` (subscriptions: per period boundary,
below), ``amount_precise`` the unrounded amount (quantized to 10 decimals ROUND_HALF_UP when it
is a repeating fraction).

**The period.** The cycle of month ``P`` (``--period 2026-03``) runs once ``P`` is over (early
April) and its invoice (``period_start``/``period_end`` = March) bills: the usage of March, the
re-rating adjustments of months before March, one-off charges dated before 1 April, the
subscriptions of March for products billed in **arrears**, and those of April for products
billed in **advance** (:class:`~bluerocktel.vocabulary.BillingTiming`; the catalog default).
Every subscription line says in its description which dates it covers.

**Subscriptions** (``recurring`` products). A product's billing periods are calendar months
(``billing_period_months`` 1), or runs of N months from the first day of the service's
activation month (12: yearly, renewed in its anniversary month). What the cycles up to ``P``
have billed of a service is the day range ``F(P) = [activated_on, end)``, where ``end`` is

- ``terminated_on`` (exclusive) when it is on or before ``P``'s end: the cycle knows it;
- else, in advance, the end of the billing period containing ``P``'s end (the 1st of the next
  month): monthly, the end of ``P+1``; yearly, the end of the year that starts in ``P+1`` when
  ``P+1`` is the anniversary month (so the year is billed once, by the cycle before it starts);
- else, in arrears, the start of that billing period (monthly: ``P``'s end).

A service activated after ``P``'s end (later than the 1st of the next month) is unknown to the
cycle of ``P`` (``F(P)`` empty), as is a service ``ordered`` or ``terminated`` without a date. The cycle of ``P`` bills the days of
``F(P)`` not in ``F(P-1)`` and refunds (negative lines) the days of ``F(P-1)`` not in ``F(P)``:
a service activated on 17 March (advance, monthly) gets 17-31 March and April on the March
invoice; one terminated on 16 March, whose March was billed in advance by the February cycle,
gets 16-31 March refunded; a termination dated after ``P``'s end is ignored until the cycle of
its month refunds the unused days. Summed over cycles, each active day is billed exactly once.
Only dates count: a date entered after the cycle that would have billed it is not caught up
(correct with a credit note or a one-off charge).

Each billed range is cut at billing-period boundaries and priced per piece ``[a, b)`` of a
billing period ``[s, e)`` of ``n`` days: exactly ``price × quantity × (b - a) / n``
(``amount_precise``; ``price`` is ``service.unit_price`` or else ``product.price``, per billing
period), and in minor units ``R(b) - R(a)`` with ``R(d) = round(price × quantity × (d - s) / n)``
ROUND_HALF_UP: one rounding per boundary, so the pieces of a period, however it is split (an
activation, a termination and its refund, a plan change at the same price), sum exactly to the
price. A piece covering its whole period says so; a partial one says ``prorata days/n``. A
mid-period plan change (:func:`bluerocktel.billing.services.change_plan`) ends one service and
starts another on the same day, so both are prorated by these rules.

**Usage.** One line per call type and zone (voice, then SMS, then data; zones in name order):
the sum of ``price_micro`` of the account's ``rated`` CDRs of ``P`` (bundles are applied by
rating: covered units cost 0). Voice lines count calls and billed minutes, SMS lines messages,
data lines megabytes (10^6 bytes, 2 decimals, ROUND_HALF_UP); the part covered by bundles is
named ("of which … in bundle"). ``amount_precise`` is the exact micro sum.

**One-off charges and fees.** Each unbilled ``OneOffCharge`` dated before ``P``'s end is a
line ``quantity × unit_price`` of its kind (``one_off`` or ``fee``), at its ``vat_rate`` or the
account's rate; :attr:`DraftInvoice.charge_ids` lists them for the cycle to mark billed.

**Discounts**, in the order percent then amount, then id; each is one negative line per VAT
rate of the lines it discounts: ``subscription``, ``usage`` or ``all`` (subscription, usage and
one-off) lines, of the account or of one service.

- Percent: ``value × Σ amount_minor × d / n`` per rate, where ``n`` is the number of days a
  line covers and ``d`` those inside ``[valid_from, valid_to)``: "10 % on April" discounts the
  April subscription, whichever cycle bills it. One rounding per rate.
- Amount: ``value`` per month, granted once per cycle, prorated by the days of ``P`` inside
  the validity: ``value × d / days(P)``, rounded once, then split across the VAT rates in
  proportion to their bases by largest remainder.
- A discount never exceeds what is left of its lines after earlier discounts: per rate, the
  positive remainder of the lines it targets; an invoice never goes negative because of a
  discount.

**Minimum commitment.** For each contract with ``minimum_monthly`` overlapping ``P``, the
minimum prorated by the contract's days in ``P`` (``start_date`` inclusive, ``end_date``
exclusive) is rounded once; when the invoice's net subscription, usage, one-off and discount
lines (before VAT) fall short, a line ``minimum`` tops them up to it, at the account's rate.
Lines of services attached to another contract do not count.

**Adjustments.** One line per unbilled re-rating adjustment of an earlier month: its exact
micro delta (negative when the calls got cheaper), rounded half away from zero.

**VAT** (:mod:`bluerocktel.billing.vat`). Per rate, on the sum of the lines' ``amount_minor`` at
that rate, ROUND_HALF_UP. A line's rate is its product's or charge's rate, or the ``vat_rate``
setting; 0 for accounts in the reverse-charge or export regime.

**Totals** are integer sums: ``subtotal = Σ lines``, ``vat = Σ per-rate VAT``,
``total = subtotal + vat``, so the printed invoice always adds up.

Problems are values: a draft carries ``anomalies`` (text) and the cycle reports them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Iterable, Sequence

from bluerocktel.billing.periods import Period, add_months, overlap_days, parse_period, previous_period
from bluerocktel.billing.vat import vat_anomalies, vat_rate_for
from bluerocktel.db.models import Account, Contract, Discount, OneOffCharge, Service
from bluerocktel.money import D, allocate, div_half_up, from_micro, from_minor, minor_digits, quantize, to_minor
from bluerocktel.vocabulary import (BillingTiming, CallType, ChargeKind, ContractStatus, DiscountKind,
                                    InvoiceLineKind, ProductKind, ServiceStatus)

PRECISE_DIGITS = 10   # decimals kept in ``amount_precise`` when the exact amount is a repeating fraction
BYTES_PER_MB = 1_000_000


@dataclass(frozen=True)
class UsageTotal:
    """Rated usage of one account in one zone, call type and period, as read from the lake."""

    account_id: int
    zone: str
    calls: int
    billable_s: int
    price_micro: int
    call_type: str = CallType.VOICE
    billable_units: int = 0        # base units: seconds (voice), messages (sms), bytes (data)
    bundle_units: int = 0          # of which bundles covered


@dataclass(frozen=True)
class PendingAdjustment:
    """A re-rating delta not billed yet (a ``rating_adjustments`` row)."""

    adjustment_id: int
    account_id: int
    usage_month: str           # YYYY-MM of the re-rated calls
    delta_micro: int           # new price - billed price; may be negative
    calls: int                 # calls whose price changed


@dataclass(frozen=True)
class DraftLine:
    kind: str                      # InvoiceLineKind
    description: str
    quantity: Decimal
    unit: str
    unit_price_precise: Decimal | None
    amount_precise: Decimal
    amount_minor: int
    vat_rate: Decimal
    product_id: int | None = None
    service_id: int | None = None
    zone: str | None = None
    period_start: dt.date | None = None     # the days the line covers, [start, end); None: not dated
    period_end: dt.date | None = None
    call_type: str | None = None            # usage lines


@dataclass(frozen=True)
class VatAmount:
    rate: Decimal
    base_minor: int
    vat_minor: int


@dataclass
class DraftInvoice:
    """An invoice as it would be issued: lines, VAT per rate and integer totals."""

    account_id: int
    account_number: str
    account_name: str
    brand_id: int
    currency: str
    period_start: dt.date
    period_end: dt.date
    lines: list[DraftLine]
    vat: list[VatAmount]
    subtotal_minor: int
    vat_minor: int
    total_minor: int
    anomalies: list[str] = field(default_factory=list)
    adjustment_ids: list[int] = field(default_factory=list)   # billed by this invoice once issued
    charge_ids: tuple[int, ...] = ()                          # OneOffCharge rows billed by this invoice
    vat_regime: str = "fr"
    language: str = "fr"


_TEXT = {
    "fr": {
        "range": "{name}, du {first} au {last}",
        "prorata": "prorata {days}/{period_days} jours",
        "refund": "Remboursement {name}, du {first} au {last}",
        "voice": "Communications {zone} : {calls} appel{s}, {minutes}",
        "sms": "SMS {zone} : {count} SMS",
        "data": "Données {zone} : {mb}",
        "mb": "{mb} Mo",
        "other_usage": "Consommations {call_type} {zone} : {calls}",
        "bundle": ", dont {covered} dans le forfait",
        "other_zone": "autres",
        "adjustment": "Régularisation des appels de {month} ({calls} appel{s})",
        "charge": "{description} ({date})",
        "vat": "TVA {rate} %",
        "minimum": "Complément au minimum d'engagement ({reference} : {minimum} par mois)",
        "date": "%d/%m/%Y",
        "decimal": ",",
    },
    "en": {
        "range": "{name}, {first} to {last}",
        "prorata": "prorated {days}/{period_days} days",
        "refund": "Refund {name}, {first} to {last}",
        "voice": "Calls {zone}: {calls} call{s}, {minutes}",
        "sms": "SMS {zone}: {count} SMS",
        "data": "Data {zone}: {mb}",
        "mb": "{mb} MB",
        "other_usage": "Usage {call_type} {zone}: {calls}",
        "bundle": ", of which {covered} in bundle",
        "other_zone": "other",
        "adjustment": "Re-rating of calls of {month} ({calls} call{s})",
        "charge": "{description} ({date})",
        "vat": "VAT {rate} %",
        "minimum": "Minimum commitment top-up ({reference}: {minimum} per month)",
        "date": "%Y-%m-%d",
        "decimal": ".",
    },
}

_CALL_TYPE_ORDER = {CallType.VOICE: 0, CallType.SMS: 1, CallType.DATA: 2}
_DISCOUNTED = {
    "subscription": {InvoiceLineKind.SUBSCRIPTION},
    "usage": {InvoiceLineKind.USAGE},
    "all": {InvoiceLineKind.SUBSCRIPTION, InvoiceLineKind.USAGE, InvoiceLineKind.ONE_OFF},
}
_NET_KINDS = {InvoiceLineKind.SUBSCRIPTION, InvoiceLineKind.USAGE, InvoiceLineKind.ONE_OFF, InvoiceLineKind.DISCOUNT}


def _text(language: str) -> dict:
    return _TEXT.get(language, _TEXT["fr"])


def _number(value: Decimal, language: str) -> str:
    """``Decimal("5.50")`` → ``"5,5"`` (fr) / ``"5.5"`` (en): no exponent, no trailing zeros."""
    text = f"{value.normalize():f}"
    return text.replace(".", _text(language)["decimal"])


def format_minutes(seconds: int) -> str:
    """``3725`` → ``"62 min 05 s"``: billed time, exact to the second."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def format_megabytes(octets: int, language: str = "fr") -> str:
    """``12_345_678`` bytes → ``"12,35"`` (fr): megabytes of 10^6 bytes, 2 decimals ROUND_HALF_UP."""
    mb = quantize(Decimal(int(octets)) / BYTES_PER_MB, 2, ROUND_HALF_UP)
    return f"{mb:f}".replace(".", _text(language)["decimal"])


def _billable(service: Service) -> bool:
    """False for a service ordered but not active yet, or terminated without a date."""
    if service.status == ServiceStatus.TERMINATED:
        return service.terminated_on is not None
    return service.status != ServiceStatus.ORDERED


def active_days(service: Service, period: Period) -> int:
    """Days of ``period`` during which ``service`` is active (0 when it is not), whatever its timing."""
    if not _billable(service):
        return 0
    return overlap_days(period.period_start, period.period_end, service.activated_on, service.terminated_on)


def _minor_of_fraction(amount: Fraction, currency: str) -> int:
    """Integer minor units of an exact fraction, ROUND_HALF_UP (away from zero on a tie)."""
    scaled = amount * 10 ** minor_digits(currency)
    return div_half_up(scaled.numerator, scaled.denominator)


def _precise_of_fraction(amount: Fraction) -> Decimal:
    return quantize(D(amount.numerator) / D(amount.denominator), PRECISE_DIGITS, ROUND_HALF_UP)


class _NoAnchor(Exception):
    """Internal: a multi-month product needs the service's activation date to place its periods."""


def billing_period_containing(service: Service, day: dt.date) -> tuple[dt.date, dt.date]:
    """The billing period ``[start, end)`` of ``service``'s product that contains ``day``."""
    months = int(service.product.billing_period_months or 1)
    if months == 1:
        start = day.replace(day=1)
    else:
        if service.activated_on is None:
            raise _NoAnchor
        anchor = service.activated_on.replace(day=1)
        elapsed = (day.year - anchor.year) * 12 + day.month - anchor.month
        start = add_months(anchor, (elapsed // months) * months)
    return start, add_months(start, months)


def billed_range(service: Service, period: Period) -> tuple[dt.date, dt.date] | None:
    """``F(P)``: the days of ``service`` that the cycles up to ``period`` bill (module docstring)."""
    if not _billable(service) or (service.activated_on is not None and service.activated_on > period.period_end):
        return None
    if service.terminated_on is not None and service.terminated_on <= period.period_end:
        end = service.terminated_on
    else:
        start, stop = billing_period_containing(service, period.period_end)
        end = start if service.product.billing_timing == BillingTiming.ARREARS else stop   # None: the default
    start = service.activated_on or dt.date.min
    return (start, end) if end > start else None


def _minus(a: tuple[dt.date, dt.date] | None, b: tuple[dt.date, dt.date] | None) -> list[tuple[dt.date, dt.date]]:
    """The day ranges of ``a`` not in ``b`` (each ``[start, end)``)."""
    if a is None:
        return []
    if b is None or b[1] <= a[0] or a[1] <= b[0]:
        return [a]
    return [r for r in ((a[0], b[0]), (b[1], a[1])) if r[0] < r[1]]


def _day(day: dt.date, language: str) -> str:
    return day.strftime(_text(language)["date"])


def build_subscription_lines(account: Account, services: Iterable[Service], period: Period,
                             default_vat_rate: Decimal, language: str = "fr"
                             ) -> tuple[list[DraftLine], list[str]]:
    """The subscription lines (and refunds) the cycle of ``period`` bills, and the anomalies met."""
    lines: list[DraftLine] = []
    anomalies: list[str] = []
    before = previous_period(period)
    for service in sorted(services, key=lambda s: s.id or 0):
        product = service.product
        if product.kind != ProductKind.RECURRING:
            continue
        if int(product.billing_period_months or 1) < 1:
            anomalies.append(f"service {service.id} ({service.label}): billing every "
                             f"{product.billing_period_months} months is not supported; not billed")
            continue
        try:
            billed_now, billed_before = billed_range(service, period), billed_range(service, before)
        except _NoAnchor:
            anomalies.append(f"service {service.id} ({service.label}): a product billed every "
                             f"{product.billing_period_months} months needs an activation date; not billed")
            continue
        pieces = [(1, r) for r in _minus(billed_now, billed_before)] + \
                 [(-1, r) for r in _minus(billed_before, billed_now)]
        if not pieces:
            continue
        if product.currency != account.currency:
            anomalies.append(f"service {service.id} ({service.label}): product currency {product.currency} "
                             f"differs from account currency {account.currency}; not billed")
            continue
        for sign, (start, end) in sorted(pieces, key=lambda p: p[1]):
            lines.extend(_range_lines(account, service, sign, start, end, default_vat_rate, language))
    return lines, anomalies


def _range_lines(account: Account, service: Service, sign: int, start: dt.date, end: dt.date,
                 default_vat_rate: Decimal, language: str) -> list[DraftLine]:
    """Lines billing (``sign`` 1) or refunding (-1) ``service`` over ``[start, end)``, one per billing period."""
    text = _text(language)
    product = service.product
    unit_price = D(service.unit_price if service.unit_price is not None else product.price)
    quantity = int(service.quantity)
    name = f"{product.name} — {service.label}" if service.label and service.label != product.name else product.name
    rate = vat_rate_for(account, D(product.vat_rate) if product.vat_rate is not None else default_vat_rate)
    whole_unit = {1: "month", 12: "year"}.get(int(product.billing_period_months or 1), "period")
    lines = []
    while start < end:
        period_start, period_end = billing_period_containing(service, start)
        stop = min(end, period_end)
        days, period_days = (stop - start).days, (period_end - period_start).days
        whole = Fraction(unit_price) * quantity
        exact = sign * whole * days / period_days
        minor = sign * (_minor_of_fraction(whole * (stop - period_start).days / period_days, account.currency)
                        - _minor_of_fraction(whole * (start - period_start).days / period_days, account.currency))
        template = text["range"] if sign > 0 else text["refund"]
        description = template.format(name=name, first=_day(start, language),
                                      last=_day(stop - dt.timedelta(days=1), language))
        if days < period_days:
            description += f" ({text['prorata'].format(days=days, period_days=period_days)})"
        lines.append(DraftLine(
            kind=InvoiceLineKind.SUBSCRIPTION, description=description[:300], quantity=Decimal(quantity),
            unit=whole_unit if days == period_days else "day", unit_price_precise=unit_price,
            amount_precise=_precise_of_fraction(exact), amount_minor=minor, vat_rate=rate, product_id=product.id,
            service_id=service.id, period_start=start, period_end=stop))
        start = stop
    return lines


def _usage_description(total: UsageTotal, language: str) -> tuple[str, Decimal, str]:
    """Description, quantity and unit of a usage line."""
    text = _text(language)
    zone = total.zone or text["other_zone"]
    covered = ""
    if total.call_type == CallType.SMS:
        count = total.billable_units or total.calls
        if total.bundle_units:
            covered = text["bundle"].format(covered=f"{total.bundle_units} SMS")
        return text["sms"].format(zone=zone, count=count) + covered, Decimal(count), "sms"
    if total.call_type == CallType.DATA:
        if total.bundle_units:
            covered = text["bundle"].format(covered=text["mb"].format(mb=format_megabytes(total.bundle_units,
                                                                                           language)))
        mb = quantize(Decimal(int(total.billable_units)) / BYTES_PER_MB, 2, ROUND_HALF_UP)
        description = text["data"].format(zone=zone, mb=text["mb"].format(mb=format_megabytes(total.billable_units,
                                                                                               language)))
        return description + covered, mb, "MB"
    if total.call_type == CallType.VOICE:
        if total.bundle_units:
            covered = text["bundle"].format(covered=format_minutes(total.bundle_units))
        description = text["voice"].format(zone=zone, calls=total.calls, s="s" if total.calls > 1 else "",
                                           minutes=format_minutes(total.billable_s))
        return description + covered, Decimal(total.calls), "call"
    return (text["other_usage"].format(call_type=total.call_type, zone=zone, calls=total.calls),
            Decimal(total.calls), "unit")


def build_usage_lines(account: Account, usage: Iterable[UsageTotal], vat_rate: Decimal,
                      language: str = "fr", period: Period | None = None) -> list[DraftLine]:
    """One usage line per call type (voice, SMS, data) and zone (in name order)."""
    rate = vat_rate_for(account, vat_rate)
    lines = []
    for total in sorted(usage, key=lambda u: (_CALL_TYPE_ORDER.get(u.call_type, 9), u.call_type, u.zone or "")):
        amount = from_micro(total.price_micro)
        description, quantity, unit = _usage_description(total, language)
        lines.append(DraftLine(
            kind=InvoiceLineKind.USAGE, description=description[:300], quantity=quantity,
            unit=unit, unit_price_precise=None, amount_precise=amount,
            amount_minor=to_minor(amount, account.currency, ROUND_HALF_UP), vat_rate=rate,
            zone=total.zone or None, call_type=total.call_type,
            period_start=period.period_start if period else None, period_end=period.period_end if period else None))
    return lines


def build_adjustment_lines(account: Account, adjustments: Iterable[PendingAdjustment], vat_rate: Decimal,
                           language: str = "fr") -> list[DraftLine]:
    """One line per re-rating adjustment, oldest usage month first (then adjustment id)."""
    text = _text(language)
    rate = vat_rate_for(account, vat_rate)
    lines = []
    for adjustment in sorted(adjustments, key=lambda a: (a.usage_month, a.adjustment_id)):
        amount = from_micro(adjustment.delta_micro)
        month = parse_period(adjustment.usage_month)
        description = text["adjustment"].format(month=adjustment.usage_month, calls=adjustment.calls,
                                                s="s" if adjustment.calls > 1 else "")
        lines.append(DraftLine(
            kind=InvoiceLineKind.ADJUSTMENT, description=description[:300], quantity=Decimal(adjustment.calls),
            unit="call", unit_price_precise=None, amount_precise=amount,
            amount_minor=to_minor(amount, account.currency, ROUND_HALF_UP), vat_rate=rate,
            period_start=month.period_start, period_end=month.period_end))
    return lines


def build_charge_lines(account: Account, charges: Iterable[OneOffCharge], period: Period,
                       default_vat_rate: Decimal, language: str = "fr"
                       ) -> tuple[list[DraftLine], list[int], list[str]]:
    """Lines of the unbilled one-off charges and fees dated before the period's end, the ids of the
    charges they bill, and anomalies."""
    text = _text(language)
    lines, ids, anomalies = [], [], []
    for charge in sorted(charges, key=lambda c: (c.charge_date, c.id or 0)):
        if charge.invoice_id is not None or charge.charge_date >= period.period_end:
            continue
        if charge.kind not in (ChargeKind.ONE_OFF, ChargeKind.FEE):
            anomalies.append(f"one-off charge {charge.id} ({charge.description}): unknown kind {charge.kind!r}; "
                             f"not billed")
            continue
        quantity, unit_price = D(charge.quantity), D(charge.unit_price)
        exact = Fraction(quantity) * Fraction(unit_price)
        rate = vat_rate_for(account, D(charge.vat_rate) if charge.vat_rate is not None else default_vat_rate)
        description = text["charge"].format(description=charge.description, date=_day(charge.charge_date, language))
        lines.append(DraftLine(
            kind=InvoiceLineKind(charge.kind), description=description[:300], quantity=quantity, unit="unit",
            unit_price_precise=unit_price, amount_precise=_precise_of_fraction(exact),
            amount_minor=_minor_of_fraction(exact, account.currency), vat_rate=rate, product_id=charge.product_id,
            service_id=charge.service_id, period_start=charge.charge_date,
            period_end=charge.charge_date + dt.timedelta(days=1)))
        ids.append(charge.id)
    return lines, ids, anomalies


def _covered_share(line: DraftLine, valid_from: dt.date, valid_to: dt.date | None) -> Fraction:
    """The share of the days ``line`` covers that fall in ``[valid_from, valid_to)`` (1 for undated lines)."""
    if line.period_start is None or line.period_end is None:
        return Fraction(1)
    days = (line.period_end - line.period_start).days
    return Fraction(overlap_days(line.period_start, line.period_end, valid_from, valid_to), days)


def build_discount_lines(account: Account, discounts: Iterable[Discount], lines: Sequence[DraftLine],
                         period: Period, language: str = "fr") -> tuple[list[DraftLine], list[str]]:
    """The discount lines of ``discounts`` on ``lines`` (one per discount and VAT rate) and anomalies."""
    text = _text(language)
    left = [line.amount_minor for line in lines]      # what earlier discounts left of each line
    out: list[DraftLine] = []
    anomalies: list[str] = []
    for discount in sorted(discounts, key=lambda d: (d.kind != DiscountKind.PERCENT, d.id or 0)):
        value = D(discount.value)
        problem = discount_problem(discount.kind, discount.applies_to, value)
        if problem:
            anomalies.append(f"discount {discount.id} ({discount.description}): {problem}; not applied")
            continue
        targets: dict[Decimal, list[int]] = {}
        for i, line in enumerate(lines):
            if line.kind in _DISCOUNTED[discount.applies_to] and \
                    (discount.service_id is None or line.service_id == discount.service_id):
                targets.setdefault(line.vat_rate, []).append(i)
        bases = {rate: max(sum(left[i] for i in idx), 0) for rate, idx in targets.items()}
        amounts = _discount_amounts(discount, value, lines, targets, bases, period, account.currency)
        for rate in sorted(amounts):
            amount = amounts[rate]
            if amount <= 0:
                continue
            weights = [max(left[i], 0) for i in targets[rate]]
            for i, part in zip(targets[rate], allocate(amount, weights)):
                left[i] -= part
            description = discount.description
            if discount.kind == DiscountKind.PERCENT:
                description += f" ({_number(value * 100, language)} %)"
            if len(amounts) > 1:
                description += f" — {text['vat'].format(rate=_number(rate * 100, language))}"
            out.append(DraftLine(
                kind=InvoiceLineKind.DISCOUNT, description=description[:300], quantity=Decimal(1), unit="unit",
                unit_price_precise=None, amount_precise=-from_minor(amount, account.currency),
                amount_minor=-amount, vat_rate=rate, service_id=discount.service_id))
    return out, anomalies


def discount_problem(kind: str, applies_to: str, value: Decimal) -> str | None:
    """What makes a discount unusable, or None."""
    if kind not in (DiscountKind.PERCENT, DiscountKind.AMOUNT):
        return f"unknown kind {kind!r} (percent or amount)"
    if applies_to not in _DISCOUNTED:
        return f"applies to {applies_to!r}, not subscription, usage or all"
    if value <= 0 or (kind == DiscountKind.PERCENT and value > 1):
        return f"value {value} is out of range (a percentage is 0 < value <= 1, e.g. 0.10; an amount > 0)"
    return None


def _discount_amounts(discount: Discount, value: Decimal, lines: Sequence[DraftLine],
                      targets: dict[Decimal, list[int]], bases: dict[Decimal, int], period: Period,
                      currency: str) -> dict[Decimal, int]:
    """Minor amount of ``discount`` per VAT rate, each at most that rate's base."""
    if discount.kind == DiscountKind.PERCENT:
        amounts = {}
        for rate, idx in targets.items():
            exact = Fraction(value) * sum((lines[i].amount_minor * _covered_share(lines[i], discount.valid_from,
                                                                                   discount.valid_to)
                                           for i in idx), Fraction(0))
            amounts[rate] = min(max(div_half_up(exact.numerator, exact.denominator), 0), bases[rate])
        return amounts
    days = overlap_days(period.period_start, period.period_end, discount.valid_from, discount.valid_to)
    total = min(_minor_of_fraction(Fraction(value) * days / period.days, currency), sum(bases.values()))
    rates = [rate for rate in sorted(bases) if bases[rate] > 0]
    if total <= 0 or not rates:
        return {}
    return dict(zip(rates, allocate(total, [bases[rate] for rate in rates])))


def build_minimum_lines(account: Account, contracts: Iterable[Contract], services: Iterable[Service],
                        lines: Sequence[DraftLine], period: Period, default_vat_rate: Decimal,
                        language: str = "fr") -> list[DraftLine]:
    """A ``minimum`` line per contract whose prorated monthly minimum exceeds the net it covers."""
    text = _text(language)
    contract_of = {s.id: s.contract_id for s in services}
    rate = vat_rate_for(account, default_vat_rate)
    out = []
    for contract in sorted(contracts, key=lambda c: c.id or 0):
        if contract.minimum_monthly is None or contract.status == ContractStatus.DRAFT:
            continue
        days = overlap_days(period.period_start, period.period_end, contract.start_date, contract.end_date)
        minimum = _minor_of_fraction(Fraction(D(contract.minimum_monthly)) * days / period.days, account.currency)
        net = sum(line.amount_minor for line in lines if line.kind in _NET_KINDS
                  and contract_of.get(line.service_id) in (None, contract.id))
        if net >= minimum:
            continue
        description = text["minimum"].format(reference=contract.reference,
                                             minimum=f"{_number(D(contract.minimum_monthly), language)} "
                                                     f"{account.currency}")
        if days < period.days:
            description += f" ({text['prorata'].format(days=days, period_days=period.days)})"
        out.append(DraftLine(
            kind=InvoiceLineKind.MINIMUM, description=description[:300], quantity=Decimal(1), unit="unit",
            unit_price_precise=from_minor(minimum - net, account.currency),
            amount_precise=from_minor(minimum - net, account.currency), amount_minor=minimum - net, vat_rate=rate,
            period_start=period.period_start, period_end=period.period_end))
    return out


def compute_vat(amounts: Iterable[tuple[Decimal, int]]) -> list[VatAmount]:
    """VAT per rate from ``(vat_rate, amount_minor)`` pairs: ``Σ amount_minor × rate``, ROUND_HALF_UP.

    Rates come out in increasing order.
    """
    bases: dict[Decimal, int] = {}
    for rate, amount_minor in amounts:
        bases[rate] = bases.get(rate, 0) + amount_minor
    return [VatAmount(rate, base, int(quantize(Decimal(base) * rate, 0, ROUND_HALF_UP)))
            for rate, base in sorted(bases.items())]


def build_draft_invoice(account: Account, services: Iterable[Service], usage: Iterable[UsageTotal],
                        period: Period, default_vat_rate: Decimal,
                        anomalies: Iterable[str] = (), adjustments: Iterable[PendingAdjustment] = (), *,
                        charges: Iterable[OneOffCharge] = (), discounts: Iterable[Discount] = (),
                        contracts: Iterable[Contract] = ()) -> DraftInvoice:
    """The draft invoice of ``account`` for the cycle of ``period``: subscriptions, usage by call type
    and zone, one-off charges and fees, discounts, minimum top-ups, then re-rating adjustments."""
    language = account.language or "fr"
    services, adjustments = list(services), list(adjustments)
    lines, found = build_subscription_lines(account, services, period, default_vat_rate, language)
    lines += build_usage_lines(account, usage, default_vat_rate, language, period)
    charge_lines, charge_ids, charge_anomalies = build_charge_lines(account, charges, period, default_vat_rate,
                                                                    language)
    lines += charge_lines
    discount_lines, discount_anomalies = build_discount_lines(account, discounts, lines, period, language)
    lines += discount_lines
    lines += build_minimum_lines(account, contracts, services, lines, period, default_vat_rate, language)
    lines += build_adjustment_lines(account, adjustments, default_vat_rate, language)
    vat = compute_vat((line.vat_rate, line.amount_minor) for line in lines)
    subtotal = sum(line.amount_minor for line in lines)
    vat_minor = sum(v.vat_minor for v in vat)
    anomalies = list(anomalies) + found + charge_anomalies + discount_anomalies + vat_anomalies(account)
    if subtotal + vat_minor < 0:
        cause = "re-rating adjustments exceed the charges of the period"
        if any(line.amount_minor < 0 for line in lines if line.kind == InvoiceLineKind.SUBSCRIPTION):
            cause = "refunds and re-rating adjustments exceed the charges of the period"
        anomalies.append(f"total {from_minor(subtotal + vat_minor, account.currency)} {account.currency} is "
                         f"negative: {cause}")
    return DraftInvoice(
        account_id=account.id, account_number=account.number, account_name=account.name,
        brand_id=account.brand_id, currency=account.currency, period_start=period.period_start,
        period_end=period.period_end, lines=lines, vat=vat, subtotal_minor=subtotal, vat_minor=vat_minor,
        total_minor=subtotal + vat_minor, anomalies=anomalies, adjustment_ids=[a.adjustment_id for a in adjustments],
        charge_ids=tuple(charge_ids), vat_regime=account.vat_regime or "fr", language=language)
