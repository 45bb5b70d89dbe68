"""Draft invoices: pure functions from services and usage totals to lines, VAT and totals.

Nothing here writes to a database; :mod:`bluerocktel.billing.cycle` reads the rows, calls these
functions and issues the drafts. Money rules (DESIGN.md §3):

- **Subscriptions.** Each service of a ``recurring`` product active during the period gets one
  line: ``price × quantity`` where ``price`` is ``service.unit_price`` or else
  ``product.price`` (per month). A service activated or terminated inside the period is
  prorated by days: ``price × quantity × active_days / days_in_period``, where the active days
  run from ``max(activated_on, period_start)`` to ``min(terminated_on, period_end)``
  (``terminated_on`` is exclusive: the last billed day is the day before). The exact amount is a
  fraction; ``amount_minor`` is that fraction rounded ROUND_HALF_UP in one step, and
  ``amount_precise`` is it quantized to 10 decimals ROUND_HALF_UP.
- **Usage.** One line per zone: the sum of ``price_micro`` of the account's ``rated`` CDRs in
  the period; ``quantity`` is the number of calls, the minutes are in the description;
  ``amount_precise`` is the exact micro sum and ``amount_minor`` it rounded ROUND_HALF_UP.
- **Adjustments.** One line per unbilled re-rating adjustment (:mod:`bluerocktel.rating.rerate`)
  of an earlier, already invoiced month: ``amount_precise`` is its exact micro delta (negative
  when the calls got cheaper), ``amount_minor`` it rounded ROUND_HALF_UP (half away from zero);
  VAT as usage.
- **VAT.** Per rate, on the sum of the lines' ``amount_minor`` at that rate, ROUND_HALF_UP.
  Accounts outside the French VAT regime (EU reverse charge, export) are invoiced at 0 %.
- **Totals** are integer sums: ``subtotal = Σ lines``, ``vat = Σ per-rate VAT``,
  ``total = subtotal + vat``, so the printed invoice always adds up.

Problems are values: a draft carries ``anomalies`` (text) and the cycle reports them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Iterable

from bluerocktel.billing.periods import Period
from bluerocktel.db.models import Account, Service
from bluerocktel.money import D, div_half_up, from_micro, from_minor, minor_digits, quantize, to_minor
from bluerocktel.vocabulary import InvoiceLineKind, ProductKind, ServiceStatus, VatRegime

PRECISE_DIGITS = 10   # decimals kept in ``amount_precise`` when the exact amount is a repeating fraction


@dataclass(frozen=True)
class UsageTotal:
    """Rated usage of one account in one zone and period, as read from the lake."""

    account_id: int
    zone: str
    calls: int
    billable_s: int
    price_micro: int


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


_TEXT = {
    "fr": {
        "prorata": "prorata {days}/{period_days} jours",
        "usage": "Communications {zone} : {calls} appel{s}, {minutes}",
        "other_zone": "autres",
        "adjustment": "Régularisation des appels de {month} ({calls} appel{s})",
    },
    "en": {
        "prorata": "prorated {days}/{period_days} days",
        "usage": "Calls {zone}: {calls} call{s}, {minutes}",
        "other_zone": "other",
        "adjustment": "Re-rating of calls of {month} ({calls} call{s})",
    },
}


def _text(language: str) -> dict:
    return _TEXT.get(language, _TEXT["fr"])


def format_minutes(seconds: int) -> str:
    """``3725`` → ``"62 min 05 s"``: billed time, exact to the second."""
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def active_days(service: Service, period: Period) -> int:
    """Days of ``period`` during which ``service`` is billable (0 when it is not)."""
    if service.status == ServiceStatus.ORDERED:
        return 0
    if service.status == ServiceStatus.TERMINATED and service.terminated_on is None:
        return 0
    start = max(service.activated_on or period.period_start, period.period_start)
    end = min(service.terminated_on or period.period_end, period.period_end)
    return max((end - start).days, 0)


def _minor_of_fraction(amount: Fraction, currency: str) -> int:
    """Integer minor units of an exact fraction, ROUND_HALF_UP (away from zero on a tie)."""
    scaled = amount * 10 ** minor_digits(currency)
    return div_half_up(scaled.numerator, scaled.denominator)


def _precise_of_fraction(amount: Fraction) -> Decimal:
    return quantize(D(amount.numerator) / D(amount.denominator), PRECISE_DIGITS, ROUND_HALF_UP)


def vat_rate_for(account: Account, rate: Decimal) -> Decimal:
    """The VAT rate applied to ``account``: ``rate`` in the French regime, else 0."""
    return rate if account.vat_regime == VatRegime.FR else Decimal(0)


def build_subscription_lines(account: Account, services: Iterable[Service], period: Period,
                             default_vat_rate: Decimal, language: str = "fr"
                             ) -> tuple[list[DraftLine], list[str]]:
    """The subscription lines of ``account`` for ``period`` and the anomalies met on the way."""
    text = _text(language)
    lines: list[DraftLine] = []
    anomalies: list[str] = []
    for service in sorted(services, key=lambda s: s.id or 0):
        product = service.product
        if product.kind != ProductKind.RECURRING:
            continue
        days = active_days(service, period)
        if days == 0:
            continue
        if product.currency != account.currency:
            anomalies.append(f"service {service.id} ({service.label}): product currency {product.currency} "
                             f"differs from account currency {account.currency}; not billed")
            continue
        if product.billing_period_months != 1:
            anomalies.append(f"service {service.id} ({service.label}): billing every "
                             f"{product.billing_period_months} months is not supported; not billed")
            continue
        unit_price = D(service.unit_price if service.unit_price is not None else product.price)
        quantity = int(service.quantity)
        exact = Fraction(unit_price) * quantity * days / period.days
        description = f"{product.name} — {service.label}" if service.label and service.label != product.name \
            else product.name
        if days < period.days:
            description += f" ({text['prorata'].format(days=days, period_days=period.days)})"
        rate = vat_rate_for(account, D(product.vat_rate) if product.vat_rate is not None else default_vat_rate)
        lines.append(DraftLine(
            kind=InvoiceLineKind.SUBSCRIPTION, description=description[:300], quantity=Decimal(quantity),
            unit="month" if days == period.days else "day", unit_price_precise=unit_price,
            amount_precise=_precise_of_fraction(exact), amount_minor=_minor_of_fraction(exact, account.currency),
            vat_rate=rate, product_id=product.id, service_id=service.id))
    return lines, anomalies


def build_usage_lines(account: Account, usage: Iterable[UsageTotal], vat_rate: Decimal,
                      language: str = "fr") -> list[DraftLine]:
    """One usage line per zone (zones in name order) from the account's rated usage totals."""
    text = _text(language)
    rate = vat_rate_for(account, vat_rate)
    lines = []
    for total in sorted(usage, key=lambda u: u.zone or ""):
        amount = from_micro(total.price_micro)
        zone = total.zone or text["other_zone"]
        description = text["usage"].format(zone=zone, calls=total.calls, s="s" if total.calls > 1 else "",
                                           minutes=format_minutes(total.billable_s))
        lines.append(DraftLine(
            kind=InvoiceLineKind.USAGE, description=description[:300], quantity=Decimal(total.calls),
            unit="call", unit_price_precise=None, amount_precise=amount,
            amount_minor=to_minor(amount, account.currency, ROUND_HALF_UP), vat_rate=rate,
            zone=total.zone or None))
    return lines


def build_adjustment_lines(account: Account, adjustments: Iterable[PendingAdjustment], vat_rate: Decimal,
                           language: str = "fr") -> list[DraftLine]:
    """One line per re-rating adjustment, oldest usage month first (then adjustment id)."""
    text = _text(language)
    rate = vat_rate_for(account, vat_rate)
    lines = []
    for adjustment in sorted(adjustments, key=lambda a: (a.usage_month, a.adjustment_id)):
        amount = from_micro(adjustment.delta_micro)
        description = text["adjustment"].format(month=adjustment.usage_month, calls=adjustment.calls,
                                                s="s" if adjustment.calls > 1 else "")
        lines.append(DraftLine(
            kind=InvoiceLineKind.ADJUSTMENT, description=description[:300], quantity=Decimal(adjustment.calls),
            unit="call", unit_price_precise=None, amount_precise=amount,
            amount_minor=to_minor(amount, account.currency, ROUND_HALF_UP), vat_rate=rate))
    return lines


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
                        anomalies: Iterable[str] = (), adjustments: Iterable[PendingAdjustment] = ()
                        ) -> DraftInvoice:
    """The draft invoice of ``account`` for ``period``: subscriptions first, then usage by zone,
    then re-rating adjustments of earlier months."""
    language = account.language or "fr"
    adjustments = list(adjustments)
    sub_lines, sub_anomalies = build_subscription_lines(account, services, period, default_vat_rate, language)
    lines = (sub_lines + build_usage_lines(account, usage, default_vat_rate, language)
             + build_adjustment_lines(account, adjustments, default_vat_rate, language))
    vat = compute_vat((line.vat_rate, line.amount_minor) for line in lines)
    subtotal = sum(line.amount_minor for line in lines)
    vat_minor = sum(v.vat_minor for v in vat)
    anomalies = list(anomalies) + sub_anomalies
    if subtotal + vat_minor < 0:
        anomalies.append(f"total {from_minor(subtotal + vat_minor, account.currency)} {account.currency} is negative: "
                         f"re-rating adjustments exceed the charges of the period")
    return DraftInvoice(
        account_id=account.id, account_number=account.number, account_name=account.name,
        brand_id=account.brand_id, currency=account.currency, period_start=period.period_start,
        period_end=period.period_end, lines=lines, vat=vat, subtotal_minor=subtotal, vat_minor=vat_minor,
        total_minor=subtotal + vat_minor, anomalies=anomalies, adjustment_ids=[a.adjustment_id for a in adjustments])
