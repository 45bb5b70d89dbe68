"""Number normalization to E.164 (French national rules) and call direction."""

from __future__ import annotations

import pyarrow as pa
import pytest

from bluerocktel.mediation.numbers import (
    classify_direction,
    classify_direction_array,
    normalize_number,
    normalize_number_array,
)

CASES = [
    # raw                                   normalized
    ("0612345678",                          "+33612345678"),     # national mobile
    ("0145678912",                          "+33145678912"),     # national landline (Paris)
    ("06 12 34 56 78",                      "+33612345678"),     # spaces
    ("01.45.67.89.12",                      "+33145678912"),     # dots
    ("06-12-34-56-78",                      "+33612345678"),     # dashes
    (" 0612345678 ",                        "+33612345678"),     # surrounding blanks
    ("+33612345678",                        "+33612345678"),     # already E.164
    ("+33 6 12 34 56 78",                   "+33612345678"),
    ("+33 (0)1 45 67 89 12",                "+33145678912"),     # written-out trunk prefix
    ("0033612345678",                       "+33612345678"),     # international prefix
    ("00442079460123",                      "+442079460123"),
    ("33612345678",                         "+33612345678"),     # country code without +
    ("sip:0612345678@sbc.example.net;user=phone", "+33612345678"),
    ("SIP:+33612345678@sbc.example.net",    "+33612345678"),
    ("tel:+33145678912;phone-context=example.fr", "+33145678912"),
    ("201",                                 "201"),              # extensions kept raw
    ("20",                                  "20"),
    ("123456",                              "123456"),
    ("3615",                                "3615"),             # short service number
    ("0012",                                "0012"),             # short: an extension, not 00…
    ("1",                                   "1"),                # too short for an extension
    ("612345678",                           "612345678"),        # 9 digits, no prefix: unknown
    ("0012345",                             "+12345"),           # 00 + more than 6 digits in all
    ("0061234567",                          "+61234567"),
    ("0012345678",                          "+12345678"),
    ("330612345678",                        "330612345678"),     # not a valid 33 + 9 digits
    ("0612345678901",                       "0612345678901"),    # too long for a national number
    ("s",                                   "s"),                # Asterisk's start extension
    ("anonymous",                           "anonymous"),
    ("*97",                                 "*97"),
    ("",                                    ""),
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_vectorized_normalization_agrees_with_the_reference():
    raws = [raw for raw, _ in CASES] + [None, "+", "++33", "000123456", "0033", "(0)6 12"]
    got = normalize_number_array(pa.array(raws, pa.string())).to_pylist()
    assert got == [normalize_number(r or "") for r in raws]
    chunked = pa.chunked_array([pa.array(raws[:5]), pa.array(raws[5:])])
    assert normalize_number_array(chunked).to_pylist() == got


NATIONAL_CASES = [
    # country, raw, normalized
    ("BE", "02 123 45 67", "+3221234567"),        # Brussels, 8 digits after the 0
    ("BE", "0470 12 34 56", "+32470123456"),      # mobile, 9 digits
    ("BE", "32470123456", "+32470123456"),
    ("CH", "044 123 45 67", "+41441234567"),
    ("NL", "020-1234567", "+31201234567"),
    ("GB", "020 7946 0123", "+442079460123"),     # London, 10 digits
    ("GB", "01632 96012", "+44163296012"),        # 9-digit national number
    ("DE", "030 1234567", "+49301234567"),
    ("DE", "0049 30 1234567", "+49301234567"),
    ("ES", "612 345 678", "+34612345678"),        # no trunk prefix: the bare 9 digits
    ("ES", "912345678", "+34912345678"),
    ("ES", "0612345678", "0612345678"),           # Spain has no 0 prefix: left as is
    ("FR", "612345678", "612345678"),             # ...while in France 9 bare digits are unknown
    ("ES", "201", "201"),                         # extensions first, whatever the country
]


@pytest.mark.parametrize("country,raw,expected", NATIONAL_CASES)
def test_national_plans(country, raw, expected):
    assert normalize_number(raw, country) == expected
    assert normalize_number_array(pa.array([raw]), country).to_pylist() == [expected]


def test_unknown_country_is_refused():
    with pytest.raises(ValueError, match="no national numbering plan for country 'ZZ'"):
        normalize_number("0612345678", country="ZZ")


@pytest.mark.parametrize("caller,callee,direction", [
    ("201", "+33612345678", "out"),            # extension calls the outside
    ("+33478123456", "202", "in"),             # outside calls an extension
    ("201", "202", "internal"),                # extension to extension
    ("+33145678912", "+33612345678", "out"),   # both E.164 (forwarded, or presented with the DID)
    ("anonymous", "203", "in"),                # withheld caller reaching an extension
    ("", "s", "in"),
    ("201", "s", "internal"),
])
def test_classify_direction(caller, callee, direction):
    assert classify_direction(caller, callee) == direction


def test_vectorized_direction_agrees_with_the_reference():
    numbers = ["201", "+33612345678", "anonymous", "", "s", "1", "1234567", "+", "+33a"]
    pairs = [(a, b) for a in numbers for b in numbers]
    got = classify_direction_array(pa.array([a for a, _ in pairs]), pa.array([b for _, b in pairs]))
    assert got.to_pylist() == [classify_direction(a, b).value for a, b in pairs]
