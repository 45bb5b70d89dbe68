r"""Carrier rate sheets (CSV, Excel) into effective-dated versions of a rate deck.

``bluerocktel rating import FILE --deck CODE --mapping M --effective ISO [--activate]`` reads a
rate sheet through a declarative column mapping, compares it with the deck's version in force at
``--effective`` and prints the difference (new, removed, up, down, changed, unchanged). Nothing
is written without ``--activate``; with it, the new version is written in one transaction.

Python API: :func:`load_rate_mapping`, :func:`read_rate_sheet`, :func:`diff_deck`,
:func:`activate` (and :func:`find_deck`). :func:`diff_deck` and :func:`write_version` are also how
:mod:`bluerocktel.rating.cgrates_import` writes the rates of a CGRateS tariff plan.

The mapping file
================

A TOML file with a ``[sheet]`` table (how to read the file), a ``[columns]`` table (where each
rate field is) and optional ``[[filters]]``; or a built-in preset by name (:data:`PRESETS`).
Every key is checked when the mapping is loaded; a wrong one is refused naming the mapping,
the table and the key (``acme.toml: [columns].price: missing: …``).

``[sheet]`` (all optional)
--------------------------
``kind``              ``csv`` or ``xlsx`` (default: ``xlsx`` for ``.xlsx``/``.xlsm`` files, else ``csv``).
``delimiter``         CSV: one character (default ``","``; ``"\t"`` for tabs).
``quote``             CSV: the quote character (default ``'"'``).
``encoding``          CSV: a Python codec (default ``utf-8``; a byte-order mark is skipped).
``decimal``           ``"."`` (default) or ``","`` (French sheets: ``0,0120``). Spaces in
                      numbers are ignored (``1 234,5``); no other thousands separator is read.
``header_row``        the 1-based line (CSV) or row (Excel) holding the column names (default 1;
                      the lines above are skipped); ``0``: no header, columns are given by number.
``sheet``             Excel: the worksheet's name (default: the first one).
``end_at_blank_row``  ``true``: stop reading at the first blank row (notes under the rates);
                      default ``false``: blank rows are skipped.
``currency``          the sheet's currency, e.g. ``"EUR"``: importing into a deck of another
                      currency is refused.

``[columns]``
-------------
Each key is a rate field; its value says where the field is read:

- ``"Rate"``: the column whose header is ``Rate`` (compared without surrounding blanks and
  ignoring case); ``3``: the 3rd column (1-based);
- ``{ column = "Rate", optional = true, default = "0", map = { "P" = "peak" } }``:
  ``optional`` — a header without the column gives every row the default instead of refusing
  the sheet; ``default`` — text used for a blank cell; ``map`` — replaces a cell's text (keys
  compared without blanks and ignoring case), e.g. band or call type codes;
  ``strip_leading`` (``prefix`` only) — removed from the front of every prefix, e.g. ``"00"``;
- ``{ value = "60/60" }``: a constant for every row.

==================  ========  ================================================================
field               required  meaning, default
==================  ========  ================================================================
``prefix``          yes       E.164 digits; ``+`` and spaces are removed, nothing else is allowed
``destination``     yes       destination name
``price``           yes       price per ``unit_size`` base units, a decimal number ``>= 0``
``zone``                      destination group (bundles match zones); default ``""``
``unit_size``                 base units the price is for: default 60 for voice (per minute),
                              1 for sms (per message), 1000000 for data (per MB)
``connection_fee``            charged once per call; default 0
``increments``                ``"30/6"`` (first/next increment in base units) or ``"60"``
                              (= 60/60); default 60/60 for voice, 1/1 for sms and data
``first_increment``,          the same in two columns (give both, and not ``increments``)
``next_increment``
``min_charge``                minimum price of a call; default 0
``max_cost``,                 maximum cost of a call, and ``cap`` (default) or ``disconnect``
``max_cost_action``
``band``                      time band name of the deck (``peak``…); default ``""`` (any time)
``group_start``               grouped intervals: base units into the call from which the row
                              applies; default 0 (each prefix and band needs a row from 0)
``call_type``                 ``voice`` (default), ``sms`` or ``data``
==================  ========  ================================================================

``[[filters]]`` (optional, repeatable)
--------------------------------------
``column`` plus ``in = ["…"]`` (keep only rows whose value is listed) or ``not_in = ["…"]``
(skip rows whose value is listed); values compared without blanks and ignoring case. Rows a
filter skips are counted (``skipped``), not checked.

Presets: ``generic`` (comma-separated, ``.`` decimals, headers ``prefix``, ``destination``,
``price`` and optionally ``zone``, ``unit_size``, ``connection_fee``, ``increments``,
``min_charge``, ``max_cost``, ``max_cost_action``, ``band``, ``group_start``, ``call_type``;
also reads an ``.xlsx`` whose first sheet has those headers) and ``generic-semicolon`` (the
same with ``;`` and ``,`` decimals, as a French Excel saves CSV).

Example, a latin-1 French sheet with two title lines and withdrawn rows::

    [sheet]
    delimiter = ";"
    encoding = "cp1252"
    decimal = ","
    header_row = 3
    currency = "EUR"

    [columns]
    prefix = "Préfixe"
    destination = "Destination"
    zone = "Zone"
    price = "Prix/min"
    connection_fee = { column = "Frais connexion", default = "0" }
    increments = "Paliers"

    [[filters]]
    column = "Statut"
    not_in = ["retiré"]

Reading a sheet
===============

Every row is checked and *all* problems are reported (up to :data:`MAX_ISSUES`), each as
``FILE:LINE: column 'Rate': '0,12x' is not a number`` (LINE: the physical line of a CSV file,
the row number of an Excel sheet): prefixes that are not digits, negative or unreadable
amounts, increments such as ``0/0`` or ``abc``, a unit size below 1, unknown call types, a
prefix (with its call type, band and group start) given twice, rows of one prefix with
different unit sizes, a prefix and band without a row from 0. A sheet with any problem is
refused whole (:class:`RateSheetError`): nothing is written. Excel cells holding numbers are
read as Excel shows them (15 significant digits), never as binary floats.

Versions
========

A version of a deck is the set of its rates in force at an instant. The rating kernel prices a
call with the rates where ``valid_from <= start < valid_to`` (no ``valid_to``: open), the
longest prefix, then the newest ``valid_from`` — and then *all* the rows of that prefix and
``valid_from`` (bands, grouped intervals). So a version is written per destination (call type
and prefix): when any row of a prefix is new, changed or removed, every open row of that prefix
gets ``valid_to = effective`` and every sheet row of that prefix is written with
``valid_from = effective`` (rows of it that did not change are counted ``reissued``); the rows
of untouched prefixes are not written at all. A sheet replaces the deck's rates of the call
types it holds; rates of other call types are left alone.

Versions are append-only: an effective instant earlier than the deck's latest ``valid_from``
or ``valid_to`` is refused. Importing again at the latest instant replaces that version while
it is still pending (effective in the future); once in force it is never edited (import with
a later ``--effective``). Importing the same sheet again writes nothing (empty diff).
"""

from __future__ import annotations

import argparse
import codecs
import csv
import datetime as dt
import hashlib
import io
import json
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from bluerocktel.db.models import Rate, RateDeck, TimeBand
from bluerocktel.errors import FormatError, NotFoundError, UserFacingError
from bluerocktel.money import finer_than_micro
from bluerocktel.timeutil import parse_instant
from bluerocktel.vocabulary import CallType, MaxCostAction, RateDeckKind

MAX_ISSUES = 50
UTC = dt.timezone.utc

# rate field -> how its text is read (see _parse_value)
FIELDS: dict[str, str] = {
    "prefix": "prefix", "destination": "text", "price": "amount", "zone": "text", "unit_size": "unit_size",
    "connection_fee": "amount", "increments": "increments", "first_increment": "first", "next_increment": "next",
    "min_charge": "amount", "max_cost": "amount", "max_cost_action": "max_cost_action", "band": "text",
    "group_start": "count", "call_type": "call_type",
}
REQUIRED = ("prefix", "destination", "price")
TEXT_LIMITS = {"destination": 200, "zone": 64, "band": 32, "prefix": 24}
SHEET_KEYS = ("kind", "delimiter", "quote", "encoding", "decimal", "header_row", "sheet", "end_at_blank_row",
              "currency")
RULE_KEYS = ("column", "value", "optional", "default", "map", "strip_leading")
TABLES = ("sheet", "columns", "filters")
DEFAULT_UNIT_SIZE = {"voice": 60, "sms": 1, "data": 1_000_000}
DEFAULT_INCREMENTS = {"voice": (60, 60), "sms": (1, 1), "data": (1, 1)}
COMPARED = ("destination", "zone", "price", "unit_size", "connection_fee", "first_increment", "next_increment",
            "min_charge", "max_cost", "max_cost_action")

_GENERIC_COLUMNS = """
[columns]
prefix = "prefix"
destination = "destination"
price = "price"
zone = { column = "zone", optional = true }
unit_size = { column = "unit_size", optional = true }
connection_fee = { column = "connection_fee", optional = true }
increments = { column = "increments", optional = true }
min_charge = { column = "min_charge", optional = true }
max_cost = { column = "max_cost", optional = true }
max_cost_action = { column = "max_cost_action", optional = true }
band = { column = "band", optional = true }
group_start = { column = "group_start", optional = true }
call_type = { column = "call_type", optional = true }
"""
PRESETS: dict[str, str] = {
    "generic": "[sheet]\ndelimiter = \",\"\ndecimal = \".\"\n" + _GENERIC_COLUMNS,
    "generic-semicolon": "[sheet]\ndelimiter = \";\"\ndecimal = \",\"\n" + _GENERIC_COLUMNS,
}


class RateSheetError(FormatError):
    """A rate sheet (or its mapping) was refused; ``issues`` lists the line-level problems."""

    def __init__(self, message: str, issues: Sequence["RateSheetIssue"] = ()):
        super().__init__(message)
        self.issues = list(issues)


class DeckImportError(UserFacingError):
    """A deck version was refused (an instant before the latest version, a deck mismatch…)."""


@dataclass(frozen=True)
class RateSheetIssue:
    """One problem of one sheet line."""

    file: str
    line: int
    column: str | None
    value: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: "
        return where + (f"column {self.column!r}: " if self.column is not None else "") + self.message


# --- the mapping ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnRule:
    """Where one rate field is read: a column (name or 0-based index) or a constant ``value``."""

    field: str
    column: str | int | None = None
    value: str | None = None
    optional: bool = False
    default: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)   # casefolded sheet value -> value used
    strip_leading: str = ""


@dataclass(frozen=True)
class Filter:
    column: str | int
    values: frozenset[str]
    keep: bool                  # True: ``in`` (keep listed values); False: ``not_in``


@dataclass(frozen=True)
class RateMapping:
    """A checked rate-sheet mapping (module doc)."""

    label: str
    kind: str | None            # csv | xlsx | None (from the file extension)
    delimiter: str
    quote: str
    encoding: str
    decimal: str
    header_row: int
    sheet: str | None
    end_at_blank_row: bool
    currency: str | None
    rules: dict[str, ColumnRule]
    filters: tuple[Filter, ...] = ()


def load_rate_mapping(source: str | Path) -> RateMapping:
    """A mapping from a preset name (:data:`PRESETS`) or a TOML file (a :class:`Path`, or a
    ``str`` that is not a preset name). Raises :class:`RateSheetError` naming the mapping, the
    table and the key when anything is wrong, :class:`NotFoundError` when there is no such file."""
    if isinstance(source, str) and source in PRESETS:
        return _check_mapping(tomllib.loads(PRESETS[source]), f"preset {source!r}")
    path = Path(source)
    if not path.is_file():
        raise NotFoundError(f"no rate-sheet mapping {str(source)!r}: not a file, nor a preset "
                            f"({', '.join(PRESETS)})")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise RateSheetError(f"{path.name}: not UTF-8 text (byte {exc.start}); a mapping file is UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise RateSheetError(f"{path.name}: not valid TOML: {exc}") from None
    return _check_mapping(document, path.name)


def _check_mapping(doc: dict, label: str) -> RateMapping:
    def error(where: str, message: str) -> RateSheetError:
        return RateSheetError(f"{label}: {where}: {message}")

    for table in doc:
        if table not in TABLES:
            raise RateSheetError(f"{label}: unknown table [{table}] (expected [sheet], [columns], [[filters]])")
    sheet = doc.get("sheet", {})
    if not isinstance(sheet, dict):
        raise error("sheet", "expected a table [sheet]")
    for key in sheet:
        if key not in SHEET_KEYS:
            raise error(f"[sheet].{key}", f"unknown key: expected among {', '.join(SHEET_KEYS)}")

    def opt(key: str, typ, expected: str, default):
        if key not in sheet:
            return default
        value = sheet[key]
        if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
            raise error(f"[sheet].{key}", f"expected {expected}, got {value!r}")
        return value

    kind = opt("kind", str, "\"csv\" or \"xlsx\"", None)
    if kind is not None and kind not in ("csv", "xlsx"):
        raise error("[sheet].kind", f"{kind!r}: expected \"csv\" or \"xlsx\"")
    delimiter = opt("delimiter", str, "one character", ",")
    if len(delimiter) != 1 or delimiter in "\r\n":
        raise error("[sheet].delimiter", f"{delimiter!r} is not one character (write a tab as \"\\t\")")
    quote = opt("quote", str, "one character", '"')
    if len(quote) != 1 or quote == delimiter or quote in "\r\n":
        raise error("[sheet].quote", f"{quote!r}: expected one character other than the delimiter")
    encoding = opt("encoding", str, "a Python codec name", "utf-8")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise error("[sheet].encoding", f"unknown encoding {encoding!r}: expected a Python codec such as "
                                        "\"utf-8\", \"cp1252\" or \"latin-1\"") from None
    decimal = opt("decimal", str, "\".\" or \",\"", ".")
    if decimal not in (".", ","):
        raise error("[sheet].decimal", f"{decimal!r}: expected \".\" or \",\"")
    header_row = opt("header_row", int, "a line number (0: no header)", 1)
    if header_row < 0:
        raise error("[sheet].header_row", f"{header_row}: expected a line number >= 1, or 0 for no header")
    sheet_name = opt("sheet", str, "a worksheet name", None)
    end_at_blank_row = opt("end_at_blank_row", bool, "true or false", False)
    currency = opt("currency", str, "a currency code such as \"EUR\"", None)
    if currency is not None and not re.fullmatch(r"[A-Z]{3}", currency):
        raise error("[sheet].currency", f"{currency!r}: expected a 3-letter ISO code such as \"EUR\"")

    columns = doc.get("columns")
    if not isinstance(columns, dict):
        raise RateSheetError(f"{label}: missing table [columns] (where prefix, destination and price are read)")
    rules: dict[str, ColumnRule] = {}
    for name, value in columns.items():
        if name not in FIELDS:
            raise error(f"[columns].{name}", f"unknown field: expected among {', '.join(FIELDS)}")
        rules[name] = _check_rule(error, name, value, header_row, decimal)
    for name in REQUIRED:
        if name not in rules:
            raise error(f"[columns].{name}", "missing: prefix, destination and price are required")
    if "increments" in rules and ({"first_increment", "next_increment"} & rules.keys()):
        raise error("[columns].increments", "give either increments (\"30/6\") or first_increment and "
                                            "next_increment, not both")
    for one, other in (("first_increment", "next_increment"), ("next_increment", "first_increment")):
        if one in rules and other not in rules:
            raise error(f"[columns].{other}", f"missing: {one} is mapped, so map {other} too "
                                              "(or one increments column such as \"30/6\")")
    if "max_cost_action" in rules and "max_cost" not in rules:
        raise error("[columns].max_cost", "missing: max_cost_action is mapped without max_cost")

    filters_doc = doc.get("filters", [])
    if not isinstance(filters_doc, list):
        raise error("filters", "expected [[filters]] tables with column and in or not_in")
    filters = []
    for i, item in enumerate(filters_doc, 1):
        where = f"[[filters]] #{i}"
        if not isinstance(item, dict):
            raise error(where, "expected a table with column and in or not_in")
        for key in item:
            if key not in ("column", "in", "not_in"):
                raise error(f"{where}.{key}", "unknown key: expected column, and in or not_in")
        column = _column_ref(error, where, item.get("column"), header_row)
        if ("in" in item) == ("not_in" in item):
            raise error(where, "give one of in = [...] (keep those rows) or not_in = [...] (skip them)")
        values = item.get("in", item.get("not_in"))
        if not isinstance(values, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                   for v in values):
            raise error(f"{where}.{'in' if 'in' in item else 'not_in'}", "expected a list of values (text)")
        filters.append(Filter(column, frozenset(str(v).strip().casefold() for v in values), "in" in item))
    return RateMapping(label, kind, delimiter, quote, encoding, decimal, header_row, sheet_name, end_at_blank_row,
                       currency, rules, tuple(filters))


def _column_ref(error, where: str, column, header_row: int) -> str | int:
    if isinstance(column, bool) or not isinstance(column, (str, int)):
        raise error(where, f"expected a column name or a 1-based column number, got {column!r}")
    if isinstance(column, int):
        if column < 1:
            raise error(where, f"column {column}: column numbers start at 1")
        return column - 1
    if not column.strip():
        raise error(where, "empty column name")
    if header_row == 0:
        raise error(where, f"column {column!r} is a name, but [sheet].header_row = 0 (no header): "
                           "give its 1-based column number")
    return column.strip()


def _check_rule(error, name: str, value, header_row: int, decimal: str) -> ColumnRule:
    where = f"[columns].{name}"
    if not isinstance(value, dict):
        value = {"column": value}
    for key in value:
        if key not in RULE_KEYS or (key == "strip_leading" and name != "prefix"):
            raise error(where, f"unknown key {key!r}: expected \"Column name\", a column number, "
                               "{ column = …, optional, default, map } or { value = … }")
    if "value" in value:
        if set(value) != {"value"}:
            raise error(where, "a constant { value = … } takes no other key")
        constant = value["value"]
        if isinstance(constant, bool) or not isinstance(constant, (str, int)):
            raise error(f"{where}.value", f"expected text or a whole number, got {constant!r}")
        text = str(constant)
        _check_constant(error, f"{where}.value", name, text, decimal)
        return ColumnRule(name, value=text)
    if "column" not in value:
        raise error(where, "says neither the column nor a constant { value = … }")
    column = _column_ref(error, where, value["column"], header_row)
    optional = value.get("optional", False)
    if not isinstance(optional, bool):
        raise error(f"{where}.optional", f"expected true or false, got {optional!r}")
    if optional and name in REQUIRED and "default" not in value:
        raise error(f"{where}.optional", f"{name} is required: an optional column needs a default")
    default = value.get("default")
    if default is not None:
        if isinstance(default, bool) or not isinstance(default, (str, int)):
            raise error(f"{where}.default", f"expected text, got {default!r}")
        default = str(default)
        _check_constant(error, f"{where}.default", name, default, decimal)
    table = value.get("map", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise error(f"{where}.map", "expected a table of \"value in the sheet\" = \"value to use\" (text)")
    strip = value.get("strip_leading", "")
    if not isinstance(strip, str) or (strip and not strip.isdigit()):
        raise error(f"{where}.strip_leading", f"expected digits such as \"00\", got {strip!r}")
    return ColumnRule(name, column=column, optional=optional, default=default,
                      mapping={k.strip().casefold(): v for k, v in table.items()}, strip_leading=strip)


def _check_constant(error, where: str, name: str, text: str, decimal: str) -> None:
    try:
        _parse_value(name, text, decimal)
    except _Bad as bad:
        raise error(where, bad.message) from None


# --- values ----------------------------------------------------------------------------------------

class _Bad(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


_BLANKS = str.maketrans("", "", " \u00a0\u202f\u2009\t")
_NUMBER = {".": re.compile(r"-?(\d+(\.\d*)?|\.\d+)"), ",": re.compile(r"-?(\d+(,\d*)?|,\d+)")}


def _parse_amount(text: str, decimal: str) -> Decimal:
    compact = text.translate(_BLANKS)
    if not _NUMBER[decimal].fullmatch(compact):
        other = "," if decimal == "." else "."
        hint = (f" (the decimal separator is {decimal!r}; set [sheet].decimal = \"{other}\")"
                if _NUMBER[other].fullmatch(compact) else "")
        raise _Bad(f"{text!r} is not a number{hint}")
    value = Decimal(compact.replace(",", "."))
    if value < 0:
        raise _Bad(f"{text!r} is negative")
    if finer_than_micro(value):
        raise _Bad(f"{text!r} has more than 6 decimals (rating is exact to 1e-6: price a larger unit_size, "
                   f"e.g. per minute rather than per second)")
    return value


def _parse_whole(text: str, what: str, minimum: int) -> int:
    compact = text.strip()
    if not re.fullmatch(r"\d+", compact) or int(compact) < minimum:
        raise _Bad(f"{text!r} is not {what} (a whole number >= {minimum})")
    return int(compact)


def _parse_increments(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d+)\s*)?", text)
    if not match:
        raise _Bad(f"{text!r} is not increments (expected FIRST/NEXT in base units, e.g. '30/6' or '60')")
    first = int(match.group(1))
    nxt = int(match.group(2)) if match.group(2) is not None else first
    if nxt < 1:
        raise _Bad(f"{text!r}: the next increment must be at least 1")
    return first, nxt


def _parse_value(name: str, text: str, decimal: str, strip_leading: str = ""):
    """The typed value of field ``name`` from its (non-blank) cell text, or :class:`_Bad`."""
    kind = FIELDS[name]
    if kind == "prefix":
        digits = text.translate(_BLANKS).removeprefix("+")
        if not digits.isdigit() or not digits.isascii():
            raise _Bad(f"{text!r} is not a prefix (digits only, after removing '+' and spaces)")
        if strip_leading and digits.startswith(strip_leading):
            digits = digits[len(strip_leading):]
            if not digits:
                raise _Bad(f"{text!r} is empty once {strip_leading!r} is removed")
        if len(digits) > TEXT_LIMITS["prefix"]:
            raise _Bad(f"{text!r} is longer than {TEXT_LIMITS['prefix']} digits")
        return digits
    if kind == "text":
        value = text.strip()
        if len(value) > TEXT_LIMITS[name]:
            raise _Bad(f"{text!r} is longer than {TEXT_LIMITS[name]} characters")
        return value
    if kind == "amount":
        return _parse_amount(text, decimal)
    if kind == "unit_size":
        return _parse_whole(text, "a unit size", 1)
    if kind == "first":
        return _parse_whole(text, "a first increment", 0)
    if kind == "next":
        return _parse_whole(text, "a next increment", 1)
    if kind == "count":
        return _parse_whole(text, "a group start", 0)
    if kind == "increments":
        return _parse_increments(text)
    if kind == "call_type":
        value = text.strip().casefold()
        if value not in {c.value for c in CallType}:
            raise _Bad(f"{text!r} is not a call type ({', '.join(c.value for c in CallType)})")
        return value
    if kind == "max_cost_action":
        value = text.strip().casefold()
        if value not in {a.value for a in MaxCostAction}:
            raise _Bad(f"{text!r} is not a max cost action ({', '.join(a.value for a in MaxCostAction)})")
        return value
    raise AssertionError(kind)


def _cell_text(value, decimal: str = ".") -> str:
    """The text of a CSV or Excel cell; Excel numbers as Excel shows them (15 significant digits),
    written with the mapping's ``decimal`` separator so that they read back as the same number."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(Decimal(format(value, ".15g")), "f").replace(".", decimal)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        raise _Bad(f"'{value.isoformat()}' is a date or time (Excel turns '30/6' into a date: "
                   "format the column as text)")
    return str(value)


# --- reading ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RateRow:
    """One rate of a version, checked; ``line`` is its line (CSV) or row (Excel) in the sheet
    (None for rates that come from elsewhere, e.g. a CGRateS tariff plan)."""

    line: int | None
    call_type: str
    prefix: str
    destination: str
    zone: str
    band: str
    group_start: int
    price: Decimal
    unit_size: int
    connection_fee: Decimal
    first_increment: int
    next_increment: int
    min_charge: Decimal
    max_cost: Decimal | None
    max_cost_action: str | None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.call_type, self.prefix, self.band, self.group_start)


@dataclass
class RateSheet:
    """A checked rate sheet: its rows in file order, and what identifies the file."""

    file_name: str
    sha256: str
    rows: list[RateRow]
    skipped: int = 0            # rows the filters left out
    mapping: str = ""
    currency: str | None = None  # the mapping's [sheet].currency

    def __iter__(self) -> Iterator[RateRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def read_rate_sheet(path: str | Path, mapping: RateMapping | str | Path) -> RateSheet:
    """Read and check every row of the sheet at ``path`` with ``mapping`` (or a preset/file name).

    Raises :class:`RateSheetError` listing every problem (``FILE:LINE: column 'X': …``, up to
    :data:`MAX_ISSUES`) when any row is bad, or naming what makes the whole file unusable
    (empty, unknown sheet, missing columns, bad encoding).
    """
    if not isinstance(mapping, RateMapping):
        mapping = load_rate_mapping(mapping)
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"rate sheet not found: {path}")
    data = path.read_bytes()
    name = path.name
    kind = mapping.kind or ("xlsx" if path.suffix.lower() in (".xlsx", ".xlsm") else "csv")
    if path.suffix.lower() == ".xls":
        raise RateSheetError(f"{name}: an Excel 97-2003 .xls workbook; save it as .xlsx or CSV")
    lines = _xlsx_rows(name, data, mapping) if kind == "xlsx" else _csv_rows(name, data, mapping)
    rows, skipped = _parse_rows(name, lines, mapping)
    return RateSheet(name, hashlib.sha256(data).hexdigest(), rows, skipped, mapping.label, mapping.currency)


def _csv_rows(name: str, data: bytes, m: RateMapping) -> Iterator[tuple[int, list]]:
    if codecs.lookup(m.encoding).name == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode(m.encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RateSheetError(f"{name}:{line}: not valid {m.encoding} text (byte 0x{data[exc.start]:02X}); "
                             "set [sheet].encoding, e.g. \"cp1252\"") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=m.delimiter, quotechar=m.quote)
    line = 1
    try:
        for record in reader:
            yield line, record
            line = reader.line_num + 1
    except csv.Error as exc:
        raise RateSheetError(f"{name}:{line}: not readable as CSV: {exc}") from None


def _xlsx_rows(name: str, data: bytes, m: RateMapping) -> Iterator[tuple[int, list]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise RateSheetError(f"{name}: not an Excel .xlsx workbook ({exc})") from None
    try:
        if m.sheet is None:
            sheet = book.worksheets[0]
        elif m.sheet in book.sheetnames:
            sheet = book[m.sheet]
        else:
            raise RateSheetError(f"{name}: no sheet {m.sheet!r} (sheets: "
                                 + ", ".join(repr(s) for s in book.sheetnames) + ")")
        sheet.reset_dimensions()           # some writers store a wrong size; read every cell there is
        for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
            yield number, list(values)
    finally:
        book.close()


def _blank(cells: list) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def _parse_rows(name: str, lines: Iterable[tuple[int, list]], m: RateMapping) -> tuple[list[RateRow], int]:
    lines = iter(lines)
    header_line, header, indexes = 0, [], {}
    if m.header_row:
        for number, cells in lines:
            if number >= m.header_row:
                header_line, header = number, cells
                break
        else:
            raise RateSheetError(f"{name}: empty file: no header at line {m.header_row}"
                                 if m.header_row == 1 else
                                 f"{name}: the file ends before its header line {m.header_row}")
        if _blank(header):
            raise RateSheetError(f"{name}:{header_line}: the header line is blank ([sheet].header_row = "
                                 f"{m.header_row})")
        indexes = _header_indexes(name, header_line, header, m)
    labels = _column_labels(m, header, indexes)
    plan = _read_plan(m, indexes)
    issues: list[RateSheetIssue] = []
    problems = 0
    rows: list[RateRow] = []
    skipped = 0
    seen: dict[tuple, int] = {}

    def add(issue: RateSheetIssue) -> None:
        nonlocal problems
        problems += 1
        if len(issues) < MAX_ISSUES:
            issues.append(issue)

    for number, cells in lines:
        if _blank(cells):
            if m.end_at_blank_row:
                break
            continue
        if not _kept(cells, m, indexes):
            skipped += 1
            continue
        row, row_issues = _parse_row(name, number, cells, m, plan, labels)
        for issue in row_issues:
            add(issue)
        if row is None:
            continue
        if row.key in seen:
            add(RateSheetIssue(name, number, labels["prefix"], row.prefix,
                               f"duplicate prefix {row.prefix!r}{_key_words(row.key)}: also on line {seen[row.key]}"))
            continue
        seen[row.key] = number
        rows.append(row)
    for issue in _check_destinations(name, rows, labels):
        add(issue)
    if problems:
        issues.sort(key=lambda i: i.line)
        shown = "\n".join(str(i) for i in issues)
        more = f"\n… and {problems - len(issues)} more" if problems > len(issues) else ""
        raise RateSheetError(f"{name}: refused, {problems} problem{'s' if problems > 1 else ''} "
                             f"(nothing imported):\n{shown}{more}", issues)
    if not rows:
        after = f" after the header (line {header_line})" if header_line else ""
        raise RateSheetError(f"{name}: no rate rows{after}"
                             + (f"; the filters skipped {skipped}" if skipped else ""))
    return rows, skipped


def _header_indexes(name: str, line: int, header: list, m: RateMapping) -> dict[str, int]:
    """0-based index of each column name the mapping reads; refuses missing or ambiguous ones."""
    found: dict[str, list[int]] = defaultdict(list)
    for i, cell in enumerate(header):
        text = "" if cell is None else str(cell).strip()
        if text:
            found[text.casefold()].append(i)
    wanted = [(r.column, f"[columns].{r.field}", r.optional) for r in m.rules.values() if isinstance(r.column, str)]
    wanted += [(f.column, "[[filters]]", False) for f in m.filters if isinstance(f.column, str)]
    out, missing = {}, []
    for column, where, optional in wanted:
        places = found.get(column.casefold(), [])
        if len(places) > 1:
            raise RateSheetError(f"{name}:{line}: column {column!r} ({where}) appears {len(places)} times in the "
                                 f"header (columns {', '.join(str(p + 1) for p in places)})")
        if places:
            out[column] = places[0]
        elif not optional:
            missing.append(f"{column!r} ({where})")
    if missing:
        names = ", ".join(repr("" if c is None else str(c).strip()) for c in header if c is not None
                          and str(c).strip())
        raise RateSheetError(f"{name}:{line}: missing column{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}; columns found: {names or '(none)'}")
    return out


def _column_labels(m: RateMapping, header: list, indexes: dict[str, int]) -> dict[str, str | None]:
    """How messages name each field's column: its header text as in the file, else ``#N``."""
    labels: dict[str, str | None] = {f: None for f in FIELDS}
    for rule in m.rules.values():
        if rule.column is None:
            continue
        index = rule.column if isinstance(rule.column, int) else indexes.get(rule.column)
        text = str(header[index]).strip() if index is not None and index < len(header) and header[index] else ""
        labels[rule.field] = text or (rule.column if isinstance(rule.column, str) else f"#{rule.column + 1}")
    return labels


def _cell(cells: list, column: str | int, indexes: dict[str, int]):
    index = column if isinstance(column, int) else indexes.get(column)
    if index is None or index >= len(cells):
        return None
    return cells[index]


def _kept(cells: list, m: RateMapping, indexes: dict[str, int]) -> bool:
    for f in m.filters:
        try:
            text = _cell_text(_cell(cells, f.column, indexes)).strip().casefold()
        except _Bad:
            text = ""
        if (text in f.values) != f.keep:
            return False
    return True


def _read_plan(m: RateMapping, indexes: dict[str, int]) -> tuple[dict, list[tuple[ColumnRule, int]]]:
    """The values every row shares (constants, defaults of optional columns the sheet lacks) and
    the (rule, 0-based column index) of the fields read from cells."""
    constants, cells = {}, []
    for field_name, rule in m.rules.items():
        index = rule.column if isinstance(rule.column, int) else indexes.get(rule.column)
        if rule.value is not None:
            constants[field_name] = _parse_value(field_name, rule.value, m.decimal)
        elif index is not None:
            cells.append((rule, index))
        elif rule.default is not None:                  # an optional column absent from the header
            constants[field_name] = _parse_value(field_name, rule.default, m.decimal)
    return constants, cells


def _parse_row(name: str, number: int, cells: list, m: RateMapping, plan: tuple[dict, list],
               labels: dict[str, str | None]) -> tuple[RateRow | None, list[RateSheetIssue]]:
    constants, read = plan
    values: dict = dict(constants)
    issues: list[RateSheetIssue] = []
    for rule, index in read:
        field_name = rule.field
        raw = cells[index] if index < len(cells) else None
        try:
            text = _cell_text(raw, m.decimal)
        except _Bad as bad:
            issues.append(RateSheetIssue(name, number, labels[field_name], None, bad.message))
            continue
        if rule.mapping:
            text = rule.mapping.get(text.strip().casefold(), text)
        if not text.strip():
            if rule.default is None:
                if field_name in REQUIRED:
                    issues.append(RateSheetIssue(name, number, labels[field_name], "",
                                                 f"empty (a {field_name.replace('_', ' ')} is required)"))
                continue
            text = rule.default
        try:
            values[field_name] = _parse_value(field_name, text, m.decimal, rule.strip_leading)
        except _Bad as bad:
            issues.append(RateSheetIssue(name, number, labels[field_name], text, bad.message))
    if issues:
        return None, issues
    call_type = values.get("call_type", CallType.VOICE.value)
    first, nxt = values.get("increments") or (values.get("first_increment"), values.get("next_increment"))
    first = DEFAULT_INCREMENTS[call_type][0] if first is None else first
    nxt = DEFAULT_INCREMENTS[call_type][1] if nxt is None else nxt
    max_cost = values.get("max_cost")
    return RateRow(
        line=number, call_type=call_type, prefix=values["prefix"], destination=values["destination"],
        zone=values.get("zone", ""), band=values.get("band", ""), group_start=values.get("group_start", 0),
        price=values["price"], unit_size=values.get("unit_size") or DEFAULT_UNIT_SIZE[call_type],
        connection_fee=values.get("connection_fee", Decimal(0)), first_increment=first, next_increment=nxt,
        min_charge=values.get("min_charge", Decimal(0)), max_cost=max_cost,
        max_cost_action=(values.get("max_cost_action") or MaxCostAction.CAP.value) if max_cost is not None else None,
    ), []


def _key_words(key: tuple[str, str, str, int]) -> str:
    call_type, _prefix, band, group_start = key
    parts = [] if call_type == CallType.VOICE.value else [call_type]
    if band:
        parts.append(f"band {band!r}")
    if group_start:
        parts.append(f"from {group_start}")
    return f" ({', '.join(parts)})" if parts else ""


def _check_destinations(name: str, rows: list[RateRow], labels: dict) -> list[RateSheetIssue]:
    """Rows of one prefix share a unit size; each prefix and band has a row from 0."""
    issues = []
    by_prefix: dict[tuple[str, str], list[RateRow]] = defaultdict(list)
    for row in rows:
        by_prefix[(row.call_type, row.prefix)].append(row)
    for (_call_type, prefix), group in by_prefix.items():
        first = group[0]
        for row in group[1:]:
            if row.unit_size != first.unit_size:
                issues.append(RateSheetIssue(
                    name, row.line, labels["unit_size"], str(row.unit_size),
                    f"unit size {row.unit_size} differs from line {first.line}'s ({first.unit_size}) for prefix "
                    f"{prefix!r}: the rows of a prefix share one unit size"))
        starts: dict[str, list[RateRow]] = defaultdict(list)
        for row in group:
            starts[row.band].append(row)
        for band, band_rows in starts.items():
            if all(r.group_start > 0 for r in band_rows):
                low = min(band_rows, key=lambda r: r.group_start)
                issues.append(RateSheetIssue(
                    name, low.line, labels["group_start"], str(low.group_start),
                    f"prefix {prefix!r}{_key_words((low.call_type, prefix, band, 0))} has no row from 0 "
                    f"(its rows start at {low.group_start})"))
    return issues


# --- decks and versions ----------------------------------------------------------------------------

def _iso(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def find_deck(session: Session, code: str, *, create: bool = False, name: str | None = None,
              kind: str | None = None, currency: str | None = None) -> tuple[RateDeck, bool]:
    """The deck ``code`` and whether it is new. With ``create`` a missing deck is made (not yet
    added to the session: :func:`activate` adds it); ``kind``/``currency`` given for an existing
    deck must match it."""
    deck = session.scalar(select(RateDeck).where(RateDeck.code == code))
    if kind is not None and kind not in {k.value for k in RateDeckKind}:
        raise DeckImportError(f"--kind {kind!r}: expected sell or buy")
    if deck is None:
        if not create:
            raise NotFoundError(f"no rate deck {code!r}; add --create-deck (with --name, --kind, --currency) "
                                "to create it")
        if len(code) > 32 or not code.strip():
            raise DeckImportError(f"deck code {code!r}: expected 1 to 32 characters")
        currency = currency or "EUR"
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise DeckImportError(f"--currency {currency!r}: expected a 3-letter ISO code such as EUR")
        return RateDeck(code=code, name=name or code, kind=kind or RateDeckKind.SELL.value, currency=currency,
                        rounding_method="half_up", rounding_decimals=6), True
    for what, wanted, actual in (("kind", kind, deck.kind), ("currency", currency, deck.currency)):
        if wanted is not None and wanted != actual:
            raise DeckImportError(f"deck {code!r} exists with {what} {actual}, not {wanted}")
    return deck, False


@dataclass(frozen=True)
class RowChange:
    """One row of a diff: ``kind`` new | removed | up | down | changed | unchanged."""

    kind: str
    call_type: str
    prefix: str
    band: str
    group_start: int
    destination: str
    old_price: Decimal | None
    new_price: Decimal | None
    line: int | None             # sheet line (None for removed rows)
    rate_id: int | None          # the rate in force (None for new rows)
    changes: tuple[tuple[str, object, object], ...] = ()   # (field, old, new) of the fields that differ

    def as_dict(self) -> dict:
        out = {"call_type": self.call_type, "prefix": self.prefix, "band": self.band,
               "group_start": self.group_start, "destination": self.destination,
               "old_price": None if self.old_price is None else str(self.old_price),
               "new_price": None if self.new_price is None else str(self.new_price),
               "line": self.line, "rate_id": self.rate_id}
        if self.changes:
            out["changes"] = {f: [_plain(a), _plain(b)] for f, a, b in self.changes}
        return out


def _plain(value):
    return str(value) if isinstance(value, Decimal) else value


CATEGORIES = ("new", "removed", "up", "down", "changed")


@dataclass
class DeckDiff:
    """A sheet compared with the deck's version in force at ``effective``, and the writes that
    would make the sheet that version (see the module doc, Versions)."""

    deck_code: str
    effective: dt.datetime
    call_types: tuple[str, ...]
    rows: list[RateRow]
    new: list[RowChange] = field(default_factory=list)
    removed: list[RowChange] = field(default_factory=list)
    up: list[RowChange] = field(default_factory=list)
    down: list[RowChange] = field(default_factory=list)
    changed: list[RowChange] = field(default_factory=list)
    unchanged: int = 0
    reissued: int = 0            # unchanged rows rewritten because a sibling row of their prefix changed
    warnings: list[str] = field(default_factory=list)
    file_name: str | None = None
    sha256: str | None = None
    skipped: int = 0
    to_insert: list[RateRow] = field(default_factory=list)
    to_close: list[int] = field(default_factory=list)     # rate ids getting valid_to = effective
    to_delete: list[int] = field(default_factory=list)    # rate ids of a pending version replaced

    @property
    def empty(self) -> bool:
        return not (self.new or self.removed or self.up or self.down or self.changed)

    def counts(self) -> dict[str, int]:
        return {**{c: len(getattr(self, c)) for c in CATEGORIES}, "unchanged": self.unchanged,
                "reissued": self.reissued}

    def as_dict(self) -> dict:
        return {"deck": self.deck_code, "effective": _iso(self.effective), "file": self.file_name,
                "sha256": self.sha256, "call_types": list(self.call_types), "rows_in_sheet": len(self.rows),
                "skipped": self.skipped, "counts": self.counts(),
                "rows": {c: [r.as_dict() for r in getattr(self, c)] for c in CATEGORIES},
                "warnings": list(self.warnings)}


def latest_version_at(session: Session, deck_id: int | None) -> dt.datetime | None:
    """The deck's latest version instant: the greatest ``valid_from`` or ``valid_to`` of its rates."""
    if deck_id is None:
        return None
    first, last = session.execute(select(func.max(Rate.valid_from), func.max(Rate.valid_to))
                                  .where(Rate.deck_id == deck_id)).one()
    instants = [_utc(v) for v in (first, last) if v is not None]
    return max(instants) if instants else None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def diff_deck(session: Session, deck: RateDeck, rows: RateSheet | Sequence[RateRow], effective: dt.datetime,
              *, now: dt.datetime | None = None, call_types: Sequence[str] | None = None) -> DeckDiff:
    """Compare ``rows`` with ``deck``'s version in force at ``effective`` and plan the writes of
    the new version. The version replaces the deck's rates of ``call_types`` (default: the call
    types the rows hold). Raises :class:`DeckImportError` when the version would not be appended
    (module doc, Versions). Reads only."""
    if effective.tzinfo is None:
        raise DeckImportError(f"effective {effective.isoformat()} has no time zone: give a UTC instant")
    effective = effective.astimezone(UTC)
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    sheet_rows = list(rows)
    call_types = tuple(sorted(set(call_types) if call_types is not None else {r.call_type for r in sheet_rows}))
    diff = DeckDiff(deck.code, effective, call_types, sheet_rows)
    if isinstance(rows, RateSheet):
        diff.file_name, diff.sha256, diff.skipped = rows.file_name, rows.sha256, rows.skipped
        if rows.currency and rows.currency != deck.currency:
            raise DeckImportError(f"{rows.file_name} is in {rows.currency} (its mapping says so), deck "
                                  f"{deck.code!r} is in {deck.currency}")

    latest = latest_version_at(session, deck.id)
    if latest is not None and effective < latest:
        raise DeckImportError(
            f"deck {deck.code!r} already has a version from {_iso(latest)}; versions are append-only, so "
            f"--effective {_iso(effective)} (earlier) is refused: import with --effective {_iso(latest)} or later")

    current = _rates_in_force(session, deck.id, call_types, effective)
    in_force: dict[tuple[str, str], dict[tuple[str, int], object]] = {}   # rows of _rates_in_force
    for (call_type, prefix), rates in current.items():
        newest = max(r.valid_from for r in rates)
        in_force[(call_type, prefix)] = {(r.band, r.group_start): r for r in rates if r.valid_from == newest}
    wanted: dict[tuple[str, str], dict[tuple[str, int], RateRow]] = defaultdict(dict)
    for row in sheet_rows:
        wanted[(row.call_type, row.prefix)][(row.band, row.group_start)] = row

    touched: set[tuple[str, str]] = set()
    for destination in sorted(set(in_force) | set(wanted)):
        old_rows, new_rows = in_force.get(destination, {}), wanted.get(destination, {})
        changes = []
        for key in sorted(set(old_rows) | set(new_rows)):
            change = _compare(destination, key, old_rows.get(key), new_rows.get(key))
            if change.kind == "unchanged":
                diff.unchanged += 1
            else:
                getattr(diff, change.kind).append(change)
            changes.append(change)
        if any(c.kind != "unchanged" for c in changes):
            touched.add(destination)
            diff.reissued += sum(1 for c in changes if c.kind == "unchanged")
    for kind in CATEGORIES:
        getattr(diff, kind).sort(key=lambda c: (c.line is None, c.line or 0, c.call_type, c.prefix, c.band,
                                                c.group_start))

    if touched and effective == latest and effective <= now:
        raise DeckImportError(
            f"deck {deck.code!r}'s version from {_iso(effective)} is already in force (now {_iso(now)}); a version "
            f"in force is never edited: import with a later --effective")
    diff.to_delete = sorted(r.id for d in touched for r in current.get(d, []) if _utc(r.valid_from) == effective)
    diff.to_close = sorted(r.id for d in touched for r in current.get(d, []) if _utc(r.valid_from) < effective)
    diff.to_insert = [row for row in sheet_rows if (row.call_type, row.prefix) in touched]
    diff.warnings = _warnings(session, deck, diff, now, had_versions=latest is not None)
    return diff


def _rates_in_force(session: Session, deck_id: int | None, call_types: Sequence[str],
                    at: dt.datetime) -> dict[tuple[str, str], list]:
    """Rates of the deck valid at ``at`` (rows with the columns of :class:`Rate`, not ORM objects:
    several times faster on large decks), by (call type, prefix)."""
    out: dict[tuple[str, str], list] = defaultdict(list)
    if deck_id is None or not call_types:
        return out
    columns = [Rate.id, Rate.call_type, Rate.prefix, Rate.band, Rate.group_start, Rate.valid_from,
               *(getattr(Rate, f) for f in COMPARED)]
    query = (select(*columns).where(Rate.deck_id == deck_id, Rate.call_type.in_(call_types), Rate.valid_from <= at,
                                    or_(Rate.valid_to.is_(None), Rate.valid_to > at)).order_by(Rate.id))
    for rate in session.execute(query):
        out[(rate.call_type, rate.prefix)].append(rate)
    return out


def _compare(destination: tuple[str, str], key: tuple[str, int], old, new: RateRow | None) -> RowChange:
    """The change of one (band, group start) row of a destination; ``old`` is the row in force."""
    call_type, prefix = destination
    band, group_start = key
    if old is None:
        return RowChange("new", call_type, prefix, band, group_start, new.destination, None, new.price, new.line, None)
    if new is None:
        return RowChange("removed", call_type, prefix, band, group_start, old.destination, old.price, None, None,
                         old.id)
    differs = tuple((f, getattr(old, f), getattr(new, f)) for f in COMPARED if getattr(old, f) != getattr(new, f))
    # prices compared per base unit, so that 0.60/min and 0.01/s are the same price
    old_per_unit, new_per_unit = old.price * new.unit_size, new.price * old.unit_size
    kind = ("up" if new_per_unit > old_per_unit else "down" if new_per_unit < old_per_unit
            else "changed" if differs else "unchanged")
    return RowChange(kind, call_type, prefix, band, group_start, new.destination, old.price, new.price, new.line,
                     old.id, differs)


def _warnings(session: Session, deck: RateDeck, diff: DeckDiff, now: dt.datetime, had_versions: bool) -> list[str]:
    out = []
    if had_versions and diff.effective < now and not diff.empty:
        out.append(f"effective {_iso(diff.effective)} is in the past: calls since then keep the price they were "
                   "rated with until they are re-rated")
    bands = {r.band for r in diff.rows if r.band}
    if bands:
        known = set() if deck.id is None else set(session.scalars(
            select(TimeBand.name).where(TimeBand.deck_id == deck.id)))
        for band in sorted(bands - known):
            out.append(f"band {band!r} is not a time band of deck {deck.code!r}: its rates apply only once the "
                       "band is defined")
    return out


@dataclass(frozen=True)
class ActivationSummary:
    deck_code: str
    deck_id: int
    effective: dt.datetime
    created_deck: bool
    inserted: int
    closed: int
    deleted: int
    counts: dict

    def as_dict(self) -> dict:
        return {"deck": self.deck_code, "deck_id": self.deck_id, "effective": _iso(self.effective),
                "created_deck": self.created_deck, "inserted": self.inserted, "closed": self.closed,
                "deleted": self.deleted, "counts": self.counts}


def activate(session: Session, deck: RateDeck, rows: DeckDiff | RateSheet | Sequence[RateRow],
             effective: dt.datetime, actor: str, *, now: dt.datetime | None = None) -> ActivationSummary:
    """Write the version of ``deck`` from ``effective`` that ``rows`` (a sheet, rows or a diff's
    rows) describe, in ``session`` (the caller commits; one transaction): the diff is computed
    again here, under a lock of the deck row, then rates are closed, inserted (and, for a pending
    version replaced, deleted) as :func:`diff_deck` planned, and an audit entry records the file,
    its sha256, the effective instant and the counts. An empty diff writes nothing at all. A deck
    not yet in the session (``find_deck(create=True)``) is added first."""
    from bluerocktel.audit import record_audit

    if isinstance(rows, DeckDiff):
        if rows.effective != effective.astimezone(UTC):
            raise DeckImportError(f"the diff is for {_iso(rows.effective)}, not {_iso(effective)}")
        source, file_name, sha256 = rows.rows, rows.file_name, rows.sha256
    elif isinstance(rows, RateSheet):
        source, file_name, sha256 = rows, rows.file_name, rows.sha256
    else:
        source, file_name, sha256 = list(rows), None, None
    created = deck.id is None
    if not created:
        session.execute(select(RateDeck.id).where(RateDeck.id == deck.id).with_for_update())
    diff = diff_deck(session, deck, source, effective, now=now)
    if diff.empty:
        return ActivationSummary(deck.code, deck.id or 0, diff.effective, False, 0, 0, 0, diff.counts())
    if created:
        session.add(deck)
        session.flush()
        record_audit(session, actor, "rate_deck.create", "rate_deck", deck.id, code=deck.code, name=deck.name,
                     kind=deck.kind, currency=deck.currency)
    write_version(session, deck.id, diff)
    summary = ActivationSummary(deck.code, deck.id, diff.effective, created, len(diff.to_insert),
                                len(diff.to_close), len(diff.to_delete), diff.counts())
    record_audit(session, actor, "rate_deck.import", "rate_deck", deck.id, file=file_name, sha256=sha256,
                 effective=_iso(diff.effective), call_types=list(diff.call_types), counts=diff.counts(),
                 inserted=summary.inserted, closed=summary.closed, deleted=summary.deleted)
    return summary


def write_version(session: Session, deck_id: int, diff: DeckDiff) -> None:
    """Write the version ``diff`` planned (:func:`diff_deck`) into deck ``deck_id``: delete the
    rows of the pending version it replaces, close the rows it supersedes at ``diff.effective``
    and insert its rows from then on. No audit entry: the caller records what it did."""
    for chunk in _chunks(diff.to_delete):
        session.execute(delete(Rate).where(Rate.id.in_(chunk)))
    for chunk in _chunks(diff.to_close):
        session.execute(update(Rate).where(Rate.id.in_(chunk)).values(valid_to=diff.effective))
    if diff.to_insert:
        session.execute(insert(Rate), [
            {"deck_id": deck_id, "call_type": r.call_type, "prefix": r.prefix, "destination": r.destination,
             "zone": r.zone, "band": r.band, "group_start": r.group_start, "price": r.price,
             "unit_size": r.unit_size, "connection_fee": r.connection_fee, "first_increment": r.first_increment,
             "next_increment": r.next_increment, "min_charge": r.min_charge, "max_cost": r.max_cost,
             "max_cost_action": r.max_cost_action, "valid_from": diff.effective, "valid_to": None}
            for r in diff.to_insert])


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


# --- text ------------------------------------------------------------------------------------------

TEXT_ROWS = 50          # rows printed per category (the JSON has them all)


def describe_diff(diff: DeckDiff, deck: RateDeck, created: bool) -> str:
    """The diff as a few aligned lines a person can check."""
    c = diff.counts()
    head = (f"{diff.file_name or 'rates'} -> deck {deck.code} ({deck.kind}, {deck.currency})"
            f"{' [new deck]' if created else ''}, version from {_iso(diff.effective)}"
            + (f"; {diff.skipped} rows skipped by the filters" if diff.skipped else ""))
    lines = [head, "  " + ", ".join(f"{c[k]} {k}" for k in (*CATEGORIES, "unchanged"))]
    for kind in CATEGORIES:
        changes = getattr(diff, kind)
        for ch in changes[:TEXT_ROWS]:
            lines.append(f"{kind:8} {_where(ch):24} {ch.destination[:28]:28} {_prices(ch)}")
        if len(changes) > TEXT_ROWS:
            lines.append(f"{kind:8} … {len(changes) - TEXT_ROWS} more (--json lists them all)")
    lines += [f"warning: {w}" for w in diff.warnings]
    return "\n".join(lines)


def _where(ch: RowChange) -> str:
    extra = [] if ch.call_type == CallType.VOICE.value else [ch.call_type]
    if ch.band:
        extra.append(ch.band)
    if ch.group_start:
        extra.append(f"from {ch.group_start}")
    return ch.prefix + (f" [{', '.join(extra)}]" if extra else "")


def _prices(ch: RowChange) -> str:
    if ch.kind == "new":
        return str(ch.new_price)
    if ch.kind == "removed":
        return str(ch.old_price)
    text = f"{ch.old_price} -> {ch.new_price}" if ch.old_price != ch.new_price else str(ch.new_price)
    others = [f"{f} {_plain(a)} -> {_plain(b)}" for f, a, b in ch.changes if f != "price"]
    return text + (f" ({'; '.join(others)})" if others else "")


# --- CLI -------------------------------------------------------------------------------------------

def add_rating_import_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``bluerocktel rating import``: wire with ``add_rating_import_parser(rating, common)``."""
    p = subparsers.add_parser(
        "import", parents=[common], help="import a carrier rate sheet (CSV, Excel) as a new deck version",
        description="Compare a rate sheet with the deck's version in force at --effective and print the "
                    "difference; with --activate, write it as the deck's version from --effective.")
    p.add_argument("file", help="the rate sheet (.csv or .xlsx)")
    p.add_argument("--deck", required=True, help="deck code")
    p.add_argument("--mapping", default="generic",
                   help=f"mapping file (TOML) or preset ({', '.join(PRESETS)}; default generic)")
    p.add_argument("--effective", required=True, help="UTC instant the version takes effect, ISO 8601")
    p.add_argument("--create-deck", action="store_true", help="create the deck if it does not exist")
    p.add_argument("--name", default=None, help="name of a created deck (default: its code)")
    p.add_argument("--kind", default=None, choices=[k.value for k in RateDeckKind], help="sell (default) or buy")
    p.add_argument("--currency", default=None, help="currency of a created deck (default EUR)")
    p.add_argument("--activate", action="store_true", help="write the version (default: only print the diff)")
    p.set_defaults(func=cmd_rating_import)
    return p


def cmd_rating_import(args) -> int:
    from bluerocktel.workbench import Workbench

    mapping = load_rate_mapping(args.mapping)
    sheet = read_rate_sheet(Path(args.file), mapping)
    effective = parse_instant(args.effective, what="--effective", default_tz="UTC")
    wb = Workbench.open(args.data_dir)
    try:
        with wb.db.session() as session:          # closed without commit (rolled back) unless --activate
            deck, created = find_deck(session, args.deck, create=args.create_deck, name=args.name, kind=args.kind,
                                      currency=args.currency)
            diff = diff_deck(session, deck, sheet, effective)
            text = describe_diff(diff, deck, created)
            summary = None
            if args.activate:
                summary = activate(session, deck, sheet, effective, "cli")
                session.commit()
    finally:
        wb.close()
    payload = {**diff.as_dict(), "created_deck": created, "activated": summary is not None and summary.inserted
               + summary.closed + summary.deleted > 0, "activation": summary.as_dict() if summary else None}
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2))
        return 0
    if summary is None:
        text += "\ndry run: nothing written (add --activate to write this version)"
    elif diff.empty:
        text += "\nnothing to activate: the deck already has these rates"
    else:
        text += (f"\nactivated: {summary.inserted} rates from {_iso(summary.effective)}, {summary.closed} closed"
                 + (f", {summary.deleted} of the pending version replaced" if summary.deleted else ""))
    print(text)
    return 0
