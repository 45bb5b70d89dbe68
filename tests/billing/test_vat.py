"""VAT numbers, rates, mentions and EN 16931 categories (bluerocktel.billing.vat)."""

from decimal import Decimal

import pytest

from bluerocktel.billing.vat import (VAT_NUMBER_FORMATS, validate_vat_number, vat_anomalies, vat_category,
                                     vat_mention, vat_rate_for)
from bluerocktel.db.models import Account
from bluerocktel.errors import UserFacingError

# One well-formed number per prefix (format only: VIES is not consulted).
VALID = ["ATU12345678", "BE0123456789", "BG123456789", "BG1234567890", "CY12345678L", "CZ12345678",
         "CZ1234567890", "DE123456789", "DK12345678", "EE123456789", "EL123456789", "ESX1234567R", "ESA12345678",
         "FI12345678", "FR40303265045", "FRXY303265045", "HR12345678901", "HU12345678", "IE1234567T",
         "IE1234567WH", "IE8Z49289F", "IT12345678901", "LT123456789", "LT123456789012", "LU12345678",
         "LV12345678901", "MT12345678", "NL123456789B01", "PL1234567890", "PT123456789", "RO12", "RO1234567890",
         "SE123456789001", "SI12345678", "SK1234567890", "XI123456789", "XIGD123"]


def test_the_table_covers_the_27_member_states_and_northern_ireland():
    assert len(VAT_NUMBER_FORMATS) == 28 and "EL" in VAT_NUMBER_FORMATS and "XI" in VAT_NUMBER_FORMATS
    assert {number[:2] for number in VALID} == set(VAT_NUMBER_FORMATS)


@pytest.mark.parametrize("number", VALID)
def test_well_formed_numbers_pass(number):
    assert validate_vat_number(number) == number


def test_numbers_are_normalized():
    assert validate_vat_number(" fr 40-303.265.045 ") == "FR40303265045"


def test_the_french_key_is_checked():
    # SIREN 303 265 045: 303265045 mod 97 = 74; (12 + 3 x 74) mod 97 = 234 mod 97 = 40
    with pytest.raises(UserFacingError, match=r"key 41 does not match SIREN 303265045 \(expected 40\)"):
        validate_vat_number("FR41303265045")


@pytest.mark.parametrize("number, message", [
    ("", "empty"),
    ("GR123456789", "start with EL"),
    ("US123456789", "'US' is not the prefix of an EU member state"),
    ("DE12345678", "a DE VAT number is DE followed by"),
    ("NL123456789A01", "a NL VAT number"),
    ("ATX12345678", "a AT VAT number"),
    ("FRIO303265045", "a FR VAT number"),            # I and O are not used in French keys
    ("SE123456789012", "a SE VAT number"),            # must end with 01
])
def test_malformed_numbers_are_refused_naming_the_problem(number, message):
    with pytest.raises(UserFacingError, match=message) as info:
        validate_vat_number(number)
    assert repr(number) in str(info.value)


def account(**kw) -> Account:
    return Account(**({"vat_regime": "fr", "country": "FR"} | kw))


def test_rates_by_regime():
    assert vat_rate_for(account(), Decimal("0.055")) == Decimal("0.055")
    assert vat_rate_for(account(vat_regime="eu_reverse_charge"), Decimal("0.20")) == 0
    assert vat_rate_for(account(vat_regime="export"), Decimal("0.20")) == 0


def test_mentions_and_categories():
    assert vat_mention("fr", "fr") is None
    assert vat_mention("eu_reverse_charge", "fr") == ("Autoliquidation : TVA due par le preneur "
                                                      "(article 196 de la directive 2006/112/CE)")
    assert vat_mention("eu_reverse_charge", "en").startswith("Reverse charge: VAT to be accounted for by the customer")
    assert vat_mention("export", "en") == "VAT not applicable, article 259-1 of the French General Tax Code"
    assert vat_mention("export", "de") == "TVA non applicable, article 259-1 du CGI"     # unknown language: French
    with pytest.raises(UserFacingError, match="unknown VAT regime 'moon'"):
        vat_mention("moon", "fr")
    assert [vat_category("fr", Decimal("0.20")), vat_category("fr", Decimal(0)),
            vat_category("eu_reverse_charge", Decimal(0)), vat_category("export", Decimal(0))] == ["S", "Z", "AE", "G"]


def test_regime_anomalies():
    assert vat_anomalies(account()) == []
    assert vat_anomalies(account(vat_number="FR41303265045")) == [
        "VAT number 'FR41303265045': the key 41 does not match SIREN 303265045 (expected 40)"]
    assert vat_anomalies(account(vat_regime="eu_reverse_charge", vat_number="BE0123456789", country="BE")) == []
    assert vat_anomalies(account(vat_regime="eu_reverse_charge", vat_number="BE123")) == [
        "reverse charge needs a valid EU VAT number outside France: VAT number 'BE123': a BE VAT number is BE "
        "followed by [01]\\d{9} (regular expression); got '123'"]
    assert vat_anomalies(account(vat_regime="export", country="US")) == []
    assert vat_anomalies(account(vat_regime="export", country="DE")) == [
        "export (no VAT) needs a customer country outside the EU; the account's country is DE"]
