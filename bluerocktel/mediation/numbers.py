"""Telephone numbers: normalization to E.164 and call direction.

Rules of :func:`normalize_number` (national rules from :data:`NATIONAL_PLANS`, France by default):

1. Surrounding blanks are dropped; a ``sip:``/``sips:``/``tel:`` URI is reduced to its user part
   (``sip:0612345678@pbx.example.fr;user=phone`` → ``0612345678``).
2. The written-out national prefix ``(0)`` is dropped (``+33 (0)1 …``), then the visual
   separators: spaces, tabs, dots, dashes, slashes and parentheses.
3. Digits only, 2 to 6 of them: an internal extension (or a short service number such as
   ``3615``), returned as is.
4. ``+`` and digits: already E.164, kept.
5. ``00`` and digits: international prefix, becomes ``+``.
6. National trunk prefix and the national number (``0`` + 9 digits in France): ``+33`` + the 9 digits.
   The national number's length is a range for plans that are not closed (``0`` + 9 or 10
   digits in the United Kingdom); a plan without trunk prefix (Spain) takes the bare national
   number (9 digits) — never one starting with ``0``.
7. Country code and the national number without ``+`` (``33`` + 9 digits): ``+`` is added.
8. Anything else (``s``, ``anonymous``, ``*97``, a 9-digit number without prefix, …) is returned
   after steps 1–2, unchanged: it is not E.164 and rating treats it as such.

:func:`normalize_number` is the reference; :func:`normalize_number_array` applies the same rules
to an Arrow array in a few vectorized passes (tests check that both agree).

Direction (:func:`classify_direction`): callee E.164 and caller an extension → ``out``;
caller E.164 and callee an extension → ``in``; both extensions → ``internal``; both E.164 →
``out`` (a call from a customer's number to the outside, e.g. forwarded or presented with the
DID). Anything that is neither (empty, ``s``, ``anonymous``) counts as an extension on the
callee side and as external on the caller side: an anonymous caller reaching extension 201 is
``in``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.vocabulary import CallDirection


@dataclass(frozen=True)
class NationalPlan:
    """A national numbering plan: the length range of the national number after the trunk prefix."""

    country_code: str      # "33"
    trunk_prefix: str      # "0" ("" where there is none)
    national_digits: int   # 9: shortest national (significant) number after the trunk prefix
    max_digits: int = 0    # longest (0: same as national_digits, a closed plan)

    @property
    def digits(self) -> tuple[int, int]:
        return self.national_digits, max(self.national_digits, self.max_digits)


# Countries of our operators' customers (ITU-T E.164 national plans; Italy is missing on purpose:
# its fixed numbers keep their leading 0 after the country code, which these rules cannot tell).
NATIONAL_PLANS: dict[str, NationalPlan] = {
    "FR": NationalPlan("33", "0", 9),
    "BE": NationalPlan("32", "0", 8, 9),
    "CH": NationalPlan("41", "0", 9),
    "NL": NationalPlan("31", "0", 9),
    "DE": NationalPlan("49", "0", 7, 11),
    "GB": NationalPlan("44", "0", 9, 10),
    "ES": NationalPlan("34", "", 9),
}

EXTENSION_DIGITS = (2, 6)   # inclusive length range of an internal extension

_URI = re.compile(r"^(?:sips?|tel):([^@;]*)", re.IGNORECASE)
_SEPARATORS = re.compile(r"[ \t.\-/()]")
_E164 = re.compile(r"^\+[0-9]+$")


def national_plan(country: str) -> NationalPlan:
    try:
        return NATIONAL_PLANS[country.upper()]
    except KeyError:
        raise ValueError(f"no national numbering plan for country {country!r}; "
                         f"known: {', '.join(sorted(NATIONAL_PLANS))}") from None


def _strip(raw: str) -> str:
    """Steps 1–2: URI user part, ``(0)`` and separators removed."""
    text = raw.strip()
    uri = _URI.match(text)
    if uri:
        text = uri.group(1)
    return _SEPARATORS.sub("", text.replace("(0)", ""))


def normalize_number(raw: str, country: str = "FR") -> str:
    """``raw`` as E.164 (``+33612345678``), or the raw extension / non-number (see module doc)."""
    plan = national_plan(country)
    text = _strip(raw or "")
    if text.isascii() and text.isdigit():
        n = len(text)
        if EXTENSION_DIGITS[0] <= n <= EXTENSION_DIGITS[1]:
            return text
        if text.startswith("00") and n > 2:
            return "+" + text[2:]
        trunk, cc, (lo, hi) = plan.trunk_prefix, plan.country_code, plan.digits
        if lo <= n - len(trunk) <= hi and text.startswith(trunk) and text[len(trunk)] != "0":
            return "+" + cc + text[len(trunk):]
        if lo <= n - len(cc) <= hi and text.startswith(cc) and text[len(cc)] != "0":
            return "+" + text
        return text
    return text


def is_e164(number: str) -> bool:
    return bool(_E164.match(number))


def classify_direction(caller: str, callee: str) -> CallDirection:
    """out / in / internal from two *normalized* numbers (rules in the module doc)."""
    caller_ext = _looks_like_extension(caller)
    callee_ext = not is_e164(callee)
    if callee_ext and caller_ext:
        return CallDirection.INTERNAL
    if callee_ext:
        return CallDirection.IN
    return CallDirection.OUT


def _looks_like_extension(number: str) -> bool:
    return number.isascii() and number.isdigit() and EXTENSION_DIGITS[0] <= len(number) <= EXTENSION_DIGITS[1]


# --- vectorized versions (same rules, Arrow compute; RE2 syntax) ---------------------------

def normalize_number_array(raw: pa.Array | pa.ChunkedArray, country: str = "FR") -> pa.Array | pa.ChunkedArray:
    """:func:`normalize_number` applied to every string of ``raw`` (nulls become ``""``).

    Steps 1–2 run only on the values that are not plain (``+`` and ASCII digits, or empty);
    steps 3–7 are length and prefix tests plus slice replacements, which are mutually
    exclusive (an extension has at most 6 digits, a rewritten number starts with ``+``).
    """
    plan = national_plan(country)
    text = pc.fill_null(raw, "")
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    plain = pc.or_(pc.ascii_is_decimal(pc.utf8_ltrim(text, characters="+")), pc.equal(text, ""))
    if not pc.all(plain).as_py():
        rough = pc.invert(plain)
        cleaned = pc.utf8_trim_whitespace(pc.filter(text, rough))
        cleaned = pc.replace_substring_regex(cleaned, r"^(?i:sips?|tel):([^@;]*).*$", r"\1")
        cleaned = pc.replace_substring(cleaned, "(0)", "")
        cleaned = pc.replace_substring_regex(cleaned, r"[ \t.\-/()]", "")
        text = pc.replace_with_mask(text, rough, cleaned)
    digits = pc.ascii_is_decimal(text)
    length = pc.binary_length(text)

    def rewrite(text, prefix: str, size_test, new_prefix: str, cut: int):
        # digits only, the exact length, the prefix, then a non-zero digit
        mask = pc.and_(pc.and_(digits, size_test), pc.and_(pc.starts_with(text, prefix),
                                                            pc.invert(pc.starts_with(text, prefix + "0"))))
        if not pc.any(mask).as_py():
            return text
        return pc.if_else(mask, pc.binary_replace_slice(text, start=0, stop=cut, replacement=new_prefix), text)

    trunk, cc, (lo, top) = plan.trunk_prefix, plan.country_code, plan.digits
    hi = EXTENSION_DIGITS[1]

    def sized(extra: int):
        return pc.and_(pc.greater_equal(length, extra + lo), pc.less_equal(length, extra + top))

    # "00" + anything longer than an extension (the zero test does not apply: "000…" is kept)
    intl = pc.and_(pc.and_(digits, pc.greater(length, hi)), pc.starts_with(text, "00"))
    if pc.any(intl).as_py():
        text = pc.if_else(intl, pc.binary_replace_slice(text, start=0, stop=2, replacement="+"), text)
    text = rewrite(text, trunk, sized(len(trunk)), "+" + cc, len(trunk))
    text = rewrite(text, cc, sized(len(cc)), "+" + cc, len(cc))
    return text


def classify_direction_array(caller: pa.Array | pa.ChunkedArray, callee: pa.Array | pa.ChunkedArray):
    """:func:`classify_direction` applied to two arrays of normalized numbers."""
    lo, hi = EXTENSION_DIGITS
    length = pc.binary_length(caller)
    caller_ext = pc.and_(pc.ascii_is_decimal(caller),
                         pc.and_(pc.greater_equal(length, lo), pc.less_equal(length, hi)))
    callee_e164 = pc.and_(pc.starts_with(callee, "+"),
                          pc.ascii_is_decimal(pc.utf8_slice_codeunits(callee, 1)))
    callee_ext = pc.invert(callee_e164)
    return pc.case_when(
        pc.make_struct(pc.and_(callee_ext, caller_ext), callee_ext),
        pa.scalar(CallDirection.INTERNAL.value), pa.scalar(CallDirection.IN.value),
        pa.scalar(CallDirection.OUT.value),
    )
