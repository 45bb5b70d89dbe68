"""VAT rules: intra-EU VAT number formats, the rate an account pays, legal mentions, EN 16931 categories.

Regimes (:class:`~bluerocktel.vocabulary.VatRegime`):

- ``fr``: French VAT. The rate is the product's own rate (10 %, 5.5 %, 2.1 %) or else the
  ``vat_rate`` setting (20 %).
- ``eu_reverse_charge``: a business in another member state; invoiced at 0 %, the buyer
  accounts for the VAT (article 196 of directive 2006/112/EC). It needs a valid VAT number of a
  member state other than France, else the draft carries an anomaly.
- ``export``: a customer outside the EU; invoiced at 0 % (article 259-1 of the French tax code).
  Its country must not be a member state.

VAT numbers are checked for format only (the VIES service is online; nothing here is): one
pattern per member state (Greece is ``EL``; ``XI`` is Northern Ireland) and, for France, the
numeric key ``(12 + 3 × (SIREN mod 97)) mod 97``.
"""

from __future__ import annotations

import re
from decimal import Decimal

from bluerocktel.db.models import Account
from bluerocktel.errors import UserFacingError
from bluerocktel.vocabulary import VatRegime

EU_COUNTRIES = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split())

# The part after the two-letter prefix, per prefix (EU VIES formats).
VAT_NUMBER_FORMATS = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "BG": r"\d{9,10}",
    "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "EE": r"\d{9}",
    "EL": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}",
    "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "HR": r"\d{11}",
    "HU": r"\d{8}",
    "IE": r"\d{7}[A-W][A-IW]?|\d[A-Z+*]\d{5}[A-W]",
    "IT": r"\d{11}",
    "LT": r"\d{9}|\d{12}",
    "LU": r"\d{8}",
    "LV": r"\d{11}",
    "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "PT": r"\d{9}",
    "RO": r"[1-9]\d{1,9}",
    "SE": r"\d{10}01",
    "SI": r"\d{8}",
    "SK": r"\d{10}",
    "XI": r"\d{9}|\d{12}|GD\d{3}|HA\d{3}",
}
_PATTERNS = {prefix: re.compile(f"(?:{body})") for prefix, body in VAT_NUMBER_FORMATS.items()}

_MENTIONS = {
    (VatRegime.EU_REVERSE_CHARGE, "fr"): "Autoliquidation : TVA due par le preneur "
                                         "(article 196 de la directive 2006/112/CE)",
    (VatRegime.EU_REVERSE_CHARGE, "en"): "Reverse charge: VAT to be accounted for by the customer "
                                         "(Article 196 of Council Directive 2006/112/EC)",
    (VatRegime.EXPORT, "fr"): "TVA non applicable, article 259-1 du CGI",
    (VatRegime.EXPORT, "en"): "VAT not applicable, article 259-1 of the French General Tax Code",
}

REVERSE_CHARGE_ANOMALY = "reverse charge needs a valid EU VAT number outside France"


def validate_vat_number(number: str) -> str:
    """``number`` without spaces, dots or dashes and in capitals, if it is a well-formed EU VAT number.

    Otherwise :class:`UserFacingError` saying what is wrong (unknown prefix, wrong format for
    the country, wrong French key).
    """
    if not isinstance(number, str) or not number.strip():
        raise UserFacingError(f"VAT number {number!r} is empty; expected a country prefix and digits, e.g. "
                              f"FR40303265045")
    text = re.sub(r"[\s.\-]", "", number).upper()
    prefix, body = text[:2], text[2:]
    if prefix == "GR":
        raise UserFacingError(f"VAT number {number!r}: Greek VAT numbers start with EL, not GR")
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        raise UserFacingError(f"VAT number {number!r}: {prefix!r} is not the prefix of an EU member state "
                              f"(or XI for Northern Ireland)")
    if not pattern.fullmatch(body):
        raise UserFacingError(f"VAT number {number!r}: a {prefix} VAT number is {prefix} followed by "
                              f"{VAT_NUMBER_FORMATS[prefix]!s} (regular expression); got {body!r}")
    if prefix == "FR" and body[:2].isdigit():
        siren, key = int(body[2:]), int(body[:2])
        expected = (12 + 3 * (siren % 97)) % 97
        if key != expected:
            raise UserFacingError(f"VAT number {number!r}: the key {body[:2]} does not match SIREN {body[2:]} "
                                  f"(expected {expected:02d})")
    return text


def vat_rate_for(account: Account, default_rate: Decimal) -> Decimal:
    """The VAT rate ``account`` pays on a line whose French rate is ``default_rate``: it, or 0 outside
    the French regime."""
    return default_rate if account.vat_regime == VatRegime.FR else Decimal(0)


def vat_mention(regime: str, language: str) -> str | None:
    """The legal mention an invoice of ``regime`` must carry (reverse charge, export), or None."""
    if regime == VatRegime.FR:
        return None
    mention = _MENTIONS.get((regime, language if language in ("fr", "en") else "fr"))
    if mention is None:
        raise UserFacingError(f"unknown VAT regime {regime!r} (fr, eu_reverse_charge or export)")
    return mention


def vat_category(regime: str, rate: Decimal) -> str:
    """EN 16931 VAT category code (UNCL5305) of a line: S standard, Z zero rate, AE reverse charge,
    G export outside the EU."""
    if regime == VatRegime.EU_REVERSE_CHARGE:
        return "AE"
    if regime == VatRegime.EXPORT:
        return "G"
    return "S" if rate > 0 else "Z"


def vat_anomalies(account: Account) -> list[str]:
    """What keeps ``account``'s VAT regime from being lawful, as anomaly texts (empty when fine)."""
    if account.vat_regime == VatRegime.EU_REVERSE_CHARGE:
        try:
            number = validate_vat_number(account.vat_number or "")
        except UserFacingError as exc:
            return [f"{REVERSE_CHARGE_ANOMALY}: {exc}"]
        if number.startswith("FR"):
            return [f"{REVERSE_CHARGE_ANOMALY}: {number} is French"]
        return []
    if account.vat_regime == VatRegime.EXPORT:
        country = (account.country or "").upper()
        if country in EU_COUNTRIES or not country:
            return [f"export (no VAT) needs a customer country outside the EU; the account's country is "
                    f"{country or 'not set'}"]
        return []
    if account.vat_regime != VatRegime.FR:
        return [f"unknown VAT regime {account.vat_regime!r} (fr, eu_reverse_charge or export)"]
    if account.vat_number:
        try:
            validate_vat_number(account.vat_number)
        except UserFacingError as exc:
            return [str(exc)]
    return []
