"""Locale formatting of dates, quantities, prices and rates for invoice documents (fr, en)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from bluerocktel.money import minor_digits


def format_date(day: dt.date, locale: str) -> str:
    return day.strftime("%d/%m/%Y") if locale == "fr" else day.isoformat()


def format_decimal(value: Decimal, locale: str, min_digits: int = 0) -> str:
    """``value`` with all its significant decimals (at least ``min_digits``), locale separators."""
    value = Decimal(value)
    exponent = value.normalize().as_tuple().exponent
    digits = max(min_digits, -exponent if isinstance(exponent, int) and exponent < 0 else 0)
    text = f"{value:,.{digits}f}"
    if locale == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def format_price(value: Decimal, currency: str, locale: str, min_digits: int | None = None) -> str:
    """A unit price with all its decimals (at least the currency's, or ``min_digits``) and the currency sign."""
    text = format_decimal(value, locale, minor_digits(currency) if min_digits is None else min_digits)
    symbol = {"EUR": "€", "USD": "$", "GBP": "£"}.get(currency, currency)
    return f"{text}\u00a0{symbol}" if locale == "fr" else f"{symbol}{text}"


def format_rate(rate: Decimal, locale: str) -> str:
    text = format_decimal(Decimal(rate) * 100, locale)
    return f"{text}\u00a0%" if locale == "fr" else f"{text}%"
