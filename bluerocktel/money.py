"""Exact money.

Rules (DESIGN.md §3):

- Amounts are :class:`decimal.Decimal` built from ``str`` or ``int`` by :func:`D`; a ``float``
  is refused, because ``0.1`` as a float is not 0.1.
- Every rounding names its mode; the workbench rounds ``ROUND_HALF_UP`` unless a tariff says
  otherwise.
- Invoiced amounts are stored as integer *minor units* (cents: ``*_minor``) with the unrounded
  Decimal beside them (``*_precise``). Totals are integer sums, so a printed invoice adds up.
- Per-call prices in the usage lake are integer *micro units* (``*_micro``, 1e-6 of the
  currency): exact in Parquet and DuckDB without DOUBLE.
- Splits (proration, credit notes, bundle allocation) use :func:`allocate`, the
  largest-remainder method, so that the parts always sum to the whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Iterable, Sequence

MINOR_DIGITS = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "JPY": 0}
MICRO = 1_000_000


class MoneyError(ValueError):
    """A money value or operation was refused (float input, mixed currencies, bad text)."""


def D(value: str | int | Decimal) -> Decimal:
    """A Decimal from text, an int or a Decimal; floats and bools are refused."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise MoneyError(f"refusing {type(value).__name__} {value!r}: build money from str or int")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        text = value.strip().replace("\u00a0", "").replace(" ", "")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise MoneyError(f"not a decimal number: {value!r}") from None
        if not result.is_finite():
            raise MoneyError(f"not a finite number: {value!r}")
        return result
    raise MoneyError(f"refusing {type(value).__name__} {value!r}: build money from str or int")


def minor_digits(currency: str) -> int:
    return MINOR_DIGITS.get(currency, 2)


def quantize(value: Decimal, digits: int, rounding: str) -> Decimal:
    """``value`` rounded to ``digits`` decimals with the named ``rounding`` mode."""
    with localcontext() as ctx:
        ctx.prec = 60
        return value.quantize(Decimal(1).scaleb(-digits), rounding=rounding)


def to_minor(value: Decimal, currency: str = "EUR", rounding: str = ROUND_HALF_UP) -> int:
    """Integer minor units (cents) of ``value``, rounded with ``rounding``."""
    digits = minor_digits(currency)
    return int(quantize(value, digits, rounding).scaleb(digits))


def from_minor(minor: int, currency: str = "EUR") -> Decimal:
    return Decimal(int(minor)).scaleb(-minor_digits(currency))


def to_micro(value: Decimal, rounding: str = ROUND_HALF_UP) -> int:
    """Integer micro units (1e-6) of ``value``."""
    return int(quantize(value, 6, rounding).scaleb(6))


def finer_than_micro(value: Decimal) -> bool:
    """True when ``value`` has a non-zero digit beyond the 6th decimal: :func:`to_micro` would round it."""
    return value != value.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


def from_micro(micro: int) -> Decimal:
    return Decimal(int(micro)).scaleb(-6)


def div_half_up(numerator: int, denominator: int) -> int:
    """Integer ``numerator / denominator`` rounded half away from zero (exact, no floats)."""
    if denominator == 0:
        raise ZeroDivisionError("div_half_up by zero")
    q, r = divmod(abs(numerator), abs(denominator))
    if 2 * r >= abs(denominator):
        q += 1
    return q if (numerator >= 0) == (denominator > 0) else -q


def allocate(total: int, weights: Sequence[int | Decimal | Fraction]) -> list[int]:
    """Split integer ``total`` in proportion to ``weights``; the parts sum to ``total`` exactly.

    Largest-remainder method: each part gets the floor of its exact share, then the units left
    go one each to the largest remainders (ties to the earlier weight).
    """
    fractions = [Fraction(w) if not isinstance(w, Decimal) else Fraction(w) for w in weights]
    if any(f < 0 for f in fractions):
        raise MoneyError("allocate: weights must not be negative")
    weight_sum = sum(fractions, Fraction(0))
    if not fractions:
        raise MoneyError("allocate: no weights")
    if weight_sum == 0:
        raise MoneyError("allocate: weights sum to zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    shares = [magnitude * f / weight_sum for f in fractions]
    parts = [s.numerator // s.denominator for s in shares]
    left = magnitude - sum(parts)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return [sign * p for p in parts]


@dataclass(frozen=True, order=False)
class Money:
    """An amount with its currency. Adding or comparing two currencies is refused."""

    amount: Decimal
    currency: str = "EUR"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", D(self.amount))

    def _check(self, other: "Money") -> None:
        if not isinstance(other, Money):
            raise MoneyError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise MoneyError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: "Money") -> "Money":
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: "Money") -> "Money":
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> "Money":
        return Money(-self.amount, self.currency)

    def __lt__(self, other: "Money") -> bool:
        self._check(other)
        return self.amount < other.amount

    def to_minor(self, rounding: str = ROUND_HALF_UP) -> int:
        return to_minor(self.amount, self.currency, rounding)

    @classmethod
    def from_minor(cls, minor: int, currency: str = "EUR") -> "Money":
        return cls(from_minor(minor, currency), currency)

    def __str__(self) -> str:
        return f"{quantize(self.amount, minor_digits(self.currency), ROUND_HALF_UP)} {self.currency}"


def sum_money(values: Iterable[Money], currency: str = "EUR") -> Money:
    total = Money(Decimal(0), currency)
    for value in values:
        total = total + value
    return total


def format_minor(minor: int, currency: str = "EUR", locale: str = "fr") -> str:
    """Human text of an integer minor amount: ``1 234,56 €`` (fr) or ``€1,234.56`` (en)."""
    digits = minor_digits(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    symbol = {"EUR": "€", "USD": "$", "GBP": "£"}.get(currency, currency)
    if locale == "fr":
        grouped = f"{whole:,}".replace(",", "\u202f")
        text = f"{grouped},{frac:0{digits}d}" if digits else grouped
        return f"{sign}{text}\u00a0{symbol}"
    grouped = f"{whole:,}"
    text = f"{grouped}.{frac:0{digits}d}" if digits else grouped
    return f"{sign}{symbol}{text}"
