r"""Custom CDR formats without code: a declarative mapping file (TOML).

``bluerocktel cdr import FILE --mapping MAPPING.toml`` (or ``cdr source add NAME --mapping …``)
reads CDR files whose layout a mapping file describes. :func:`load_mapping` reads and checks the
mapping and returns a :class:`~bluerocktel.mediation.formats.FormatSpec` like any built-in
format: the import steps (ledger, slices, record dedup, quarantine) are the same.

The mapping file
================

A TOML file with up to five tables: ``[format]``, ``[input]``, ``[times]``, ``[fields]`` and
``[key]``. Every table and key is checked when the mapping is loaded; an unknown table or key,
a missing required one or a value of the wrong form is refused with a message naming the
mapping file, the table and the key, and what is expected, e.g.::

    acme.toml: [fields].start: column 'Start' is not in the header of cdr-0105.csv (columns: a, b, c)

``[format]``
------------
``name``         required; ``[a-z0-9][a-z0-9-]{1,31}``, not the name of a built-in format.
                 It becomes the ledger's ``format`` of the files imported with the mapping.
``kind``         required: ``delimited``, ``fixed-width``, ``xml`` or ``asn1``.
``description``  optional text.

``[input]`` (by kind; every key is optional unless said otherwise)
------------------------------------------------------------------
delimited:

``delimiter``    one character (default ``","``; ``"\t"`` for tabs).
``quote``        one character (default ``'"'``; a quote inside a quoted value is doubled), or
                 ``""``: no quoting at all.
``header``       ``true`` (default): after ``skip_lines``, the next line names the columns;
                 ``false``: none, fields are given by 1-based column number.
``skip_lines``   lines skipped at the top of the file, before the header (default 0).
``encoding``     any Python codec (default ``utf-8``; ``latin-1``, ``cp1252``, ``utf-16``…).
                 Bytes that are not valid in it become U+FFFD (�), never an error. Quarantined
                 lines keep their decoded text: read again (``cdr quarantine reprocess``, which
                 passes the option ``quarantine_reprocess``), they are UTF-8 whatever this says.
``comment``      optional prefix: record lines that start with it are skipped (the header line
                 is always line ``skip_lines + 1``, never skipped as a comment).

fixed-width:

``encoding``, ``skip_lines``   as above.
``trailer_lines``  the last N non-blank lines of the file are not records (default 0). Only the
                   whole file knows its end, so a mapping with ``trailer_lines`` is read whole
                   (not in slices, up to ``BLUEROCKTEL_MAX_CDR_FILE_MB``); prefer
                   ``record_type`` when the trailer has its own record type. Quarantined lines
                   read again (``cdr quarantine reprocess``, which passes the option
                   ``quarantine_reprocess``) have no trailer: it is not applied to them.
``record_type``    ``{start = 1, length = 2, value = "10"}``: only the lines whose characters
                   ``start`` … ``start + length - 1`` (trimmed) equal ``value`` are records;
                   the other lines (file header, trailer, other record types) are skipped and
                   counted nowhere (not received, not quarantined).

xml:

``record``       required: an XPath selecting each record element (``"//cdr"``,
                 ``"/a:export/a:call"``).
``namespaces``   prefixes used in the XPaths: ``{ a = "urn:example:cdr:2" }``. An XML default
                 namespace (``xmlns="…"``) needs a prefix here too (XPath 1.0 has no default).

asn1 (read by :func:`bluerocktel.mediation.ber.asn1_mapping_parser`, which documents them and
checks them against the compiled module):

``module`` (path of the ``.asn`` module, relative to the mapping file; a mapping given as text,
such as a CDR source's stored mapping, resolves it from the current directory: prefer an
absolute path or ``module_text`` there) or ``module_text``;
``record_type`` (the ASN.1 type of one record); ``codec = "ber"``; ``header_bytes`` or
``file_header = "ts32297"``; ``records = "concatenated"``.

``[times]``
-----------
``format``       how ``start``, ``answer`` and ``end`` are written: a ``strptime`` format holding
                 the date and the time (default ``"%Y-%m-%d %H:%M:%S"``; checked at load by
                 writing a sample time with it and reading it back with Arrow's ``strptime``),
                 or ``epoch`` / ``epoch_ms`` / ``epoch_us`` (numbers since 1970-01-01 UTC; 0
                 means "no time") or ``iso`` (ISO-8601, with an optional ``Z``/``±HH:MM``).
``timezone``     the IANA zone of wall-clock times (``"Europe/Paris"``). When given it wins
                 over the CDR source's zone and ``--timezone``; else those apply, then
                 ``BLUEROCKTEL_DEFAULT_TIMEZONE``. Daylight-saving rules: :mod:`~.records`.

``[fields]``
------------
Each key is a standard field (the raw columns of :mod:`~bluerocktel.mediation.normalize`):
``start``, ``answer``, ``end``, ``duration``, ``billsec``, ``caller``, ``callee``,
``account_code``, ``channel``, ``dst_channel``, ``disposition``, ``direction``, ``call_type``,
``units``, ``unique_id``. ``start`` is required, and ``end`` or ``duration``; what is not
mapped is derived by the normalizer (billsec from answer and end, disposition from the answer,
direction from the numbers…). Its value says where the field is read:

============= ========================================== =====================================
kind          short form                                 table form
============= ========================================== =====================================
delimited     ``"ColumnName"`` (needs ``header``) or     ``{ column = "Name" }`` or
              ``3`` (1-based column number)              ``{ column = 3 }``
fixed-width   (none)                                     ``{ start = 1, length = 14 }``
                                                         (1-based, in characters)
xml           ``"c:start"``, ``"@id"``,                  ``{ xpath = "…" }``
              ``"string(../@switch)"``: an XPath
              relative to the record element
asn1          ``"servedMSISDN"``, ``"a.0.b"``: dotted    ``{ path = "…" }``
              path in the decoded value
============= ========================================== =====================================

The table form also takes, for any kind:

``default``      text used when the value is missing or blank (a table with only ``default``
                 is a constant: ``call_type = { default = "voice" }``).
``convert``      ``"int"``: a decimal integer, written without leading zeros or ``+``
                 (``"000125"`` → ``"125"``); ``"hex"``: a hexadecimal number (optional ``0x``)
                 written in decimal (``"3C"`` → ``"60"``); ``"strip"``: blanks around removed.
                 A value a converter cannot read is passed on unchanged, so the normalizer
                 quarantines the record naming it. ``"tbcd"`` and ``"bcd_time"`` decode BER
                 octets and exist for ``asn1`` mappings only (with ``tbcd_digits``; there
                 ``int``/``hex``/``strip`` read OCTET STRINGs, see the ASN.1 support).
``map``          ``{ "0" = "ANSWERED", "1" = "NO ANSWER" }``: a value found among the keys
                 (compared without surrounding blanks) is replaced; any other passes unchanged.

They apply in that order: default, then convert, then map. Values are read as they are in the
file, except fixed-width fields, which are always trimmed of their padding blanks.

``[key]``
---------
``fields``       the parts of the record id besides the source (default ``["unique_id"]`` when
                 ``unique_id`` is mapped, else ``[]``). Allowed: ``start`` (= ``start_at``),
                 ``duration``, ``billsec``, ``units`` and the text fields (``caller``,
                 ``callee``, ``account_code``, ``channel``, ``dst_channel``, ``unique_id``,
                 ``disposition``, ``direction``, ``call_type``), which must be mapped. When
                 every text part of a record's key is empty, or ``fields = []``, the id is the
                 normalizer's fallback: start, caller, callee, channel, dst_channel, duration,
                 billsec.

How files are read
==================

Line numbers count every physical line of the file (skipped, header and blank lines too);
XML records are numbered by their position among the matched elements (1-based). A record
that cannot be read or normalized becomes a :class:`~.records.CdrIssue` (the quarantine) with
its line and raw text; the batch goes on. What makes a whole file unusable (not XML, a header
without a mapped column, a DOCTYPE) is refused with a :class:`~bluerocktel.errors.FormatError`.

- **Delimited.** The file is transcoded to UTF-8 once (Python's codec, C speed), its line ends
  found with numpy, the blank and comment lines taken out, then ``pyarrow.csv`` parses the
  records in 16 MiB pieces on worker threads. A line with another field count than the header
  (or, without header, than most of the first 100 lines) reaches an ``invalid_row_handler`` and
  becomes an issue ``wrong field count: N (expected M)``. A quote left open (which would make
  ``pyarrow`` run lines together) sends its piece through the exact line-by-line path (Python
  ``csv``). The header is checked at every file: a mapped column it lacks refuses the file.
  Line based (imported in slices, header lines repeated in each), unless the encoding is not
  ASCII-compatible (UTF-16/32): then the file is read whole.
- **Fixed-width.** Decoded the same way; the lines become one Arrow string array (zero copy)
  and each field one slice + trim over all of them: ``utf8_slice_codeunits`` (in characters),
  or ``binary_slice`` when the text is pure ASCII (same result, 4× faster). A record line
  shorter than the last character a field reads is an issue (``short line: …``).
- **XML.** Parsed with lxml, refusing any DOCTYPE (so no entity, internal or external, is ever
  declared or expanded), with ``resolve_entities=False``, ``no_network=True``,
  ``huge_tree=False`` (a DOCTYPE the byte scan missed is still refused after parsing, and
  libxml2 stops entity amplification). One Python step per record is forced by the tree:
  fields that are a child element (``c:setup``) or an attribute (``@id``) are read in one walk
  over the record's children, any other XPath is evaluated per record; the conversions after
  that are vectorized. Measured: about 50,000 records/s (100,000 records of 9 fields, 7 of them
  simple, parse to normalized rows, 2 cores) — XML is read whole, so mind
  ``BLUEROCKTEL_MAX_CDR_FILE_MB`` (about 330 bytes a record here). A quarantined record's raw text is a standalone
  document: the record element inside copies of its ancestors (tag and attributes, without
  their other children), so ``cdr quarantine reprocess`` selects it again with ``record``;
  fields reaching *other* parts of the document (``../../header/x``) read nothing there.
- **ASN.1 BER.** This module checks the tables and keys common to every kind, then hands the
  mapping to :func:`bluerocktel.mediation.ber.asn1_mapping_parser` (paths checked against the
  module, the converters ``tbcd``, ``tbcd_digits``, ``bcd_time``, ``int``, ``hex``, ``strip``
  of BER values; see there).

Every value then goes through :func:`~bluerocktel.mediation.normalize.normalize_batch` (the
same checks as every format: times, durations, dispositions, E.164 numbers, record ids).

Examples
========

A semicolon-separated latin-1 export with a header and French dates::

    [format]
    name = "acme-sbc"
    kind = "delimited"
    description = "ACME SBC daily export"

    [input]
    delimiter = ";"
    encoding = "latin-1"
    comment = "#"

    [times]
    format = "%d/%m/%Y %H:%M:%S"
    timezone = "Europe/Paris"

    [fields]
    unique_id = "IdAppel"
    start = "Début"
    answer = "Réponse"
    end = "Fin"
    caller = "Appelant"
    callee = "Appelé"
    account_code = "Compte"
    disposition = { column = "Statut", map = { "0" = "ANSWERED", "1" = "NO ANSWER", "2" = "BUSY" } }

A tab-separated file without header (epoch times)::

    [format]
    name = "fs-tab"
    kind = "delimited"
    [input]
    delimiter = "\t"
    quote = ""
    header = false
    [times]
    format = "epoch"
    [fields]
    unique_id = 1
    caller = 2
    callee = 3
    start = 4
    answer = 5
    end = 6
    disposition = { column = 9, map = { "NORMAL_CLEARING" = "ANSWERED", "USER_BUSY" = "BUSY" } }

A fixed-width file with a header record ``00``, call records ``10`` and a trailer ``99``::

    [format]
    name = "telco-fw"
    kind = "fixed-width"
    [input]
    record_type = { start = 1, length = 2, value = "10" }
    [times]
    format = "%Y%m%d%H%M%S"
    [fields]
    start = { start = 3, length = 14 }
    duration = { start = 17, length = 6, convert = "int" }
    caller = { start = 23, length = 15 }
    callee = { start = 38, length = 15 }
    disposition = { start = 53, length = 1, map = { "A" = "ANSWERED", "B" = "BUSY", "N" = "NO ANSWER" } }

An XML export with namespaces::

    [format]
    name = "voip-xml"
    kind = "xml"
    [input]
    record = "/c:export/c:call"
    namespaces = { c = "urn:example:voip:cdr:2" }
    [times]
    format = "iso"
    [fields]
    unique_id = "@id"
    start = "c:setup"
    end = "c:release"
    caller = "c:calling"
    callee = "c:called"
    channel = "string(../@switch)"
    disposition = { xpath = "c:result/@code", map = { "16" = "ANSWERED", "17" = "BUSY" } }

An ASN.1 BER file (an operator's own module)::

    [format]
    name = "acme-ber"
    kind = "asn1"
    [input]
    module = "acme.asn"
    record_type = "CallRecord"
    [fields]
    start = { path = "startTime", convert = "bcd_time" }
    duration = "duration"
    caller = { path = "callingNumber", convert = "tbcd" }
    callee = { path = "calledNumber", convert = "tbcd" }
    unique_id = { path = "recordId", convert = "hex" }
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import importlib
import inspect
import os
import re
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from bluerocktel.errors import FormatError, NotFoundError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.formats import FormatSpec, ParseFn
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import CdrIssue
from bluerocktel.settings import get_setting

KINDS = ("delimited", "fixed-width", "xml", "asn1")
FIELDS = ("start", "answer", "end", "duration", "billsec", "caller", "callee", "account_code", "channel",
          "dst_channel", "disposition", "direction", "call_type", "units", "unique_id")
TABLES = ("format", "input", "times", "fields", "key")
FORMAT_KEYS = ("name", "kind", "description")
INPUT_KEYS = {
    "delimited": ("delimiter", "quote", "header", "skip_lines", "encoding", "comment"),
    "fixed-width": ("encoding", "skip_lines", "trailer_lines", "record_type"),
    "xml": ("record", "namespaces"),
    "asn1": ("module", "module_text", "record_type", "codec", "header_bytes", "file_header", "records"),
}
WHERE_KEYS = {"delimited": ("column",), "fixed-width": ("start", "length"), "xml": ("xpath",),
              "asn1": ("path",)}
RULE_KEYS = ("default", "convert", "map")
CONVERTERS = ("int", "hex", "strip", "tbcd", "tbcd_digits", "bcd_time")
ASN1_CONVERTERS = ("tbcd", "tbcd_digits", "bcd_time")
TIME_KEYWORDS = ("epoch", "epoch_ms", "epoch_us", "iso")
DEFAULT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# [key].fields: accepted names → the normalized column the record key reads
KEY_NAMES = {"start": "start_at", "start_at": "start_at", "duration": "duration_s", "duration_s": "duration_s",
             "billsec": "billsec_s", "billsec_s": "billsec_s", "units": "units",
             **{f: f for f in ("caller", "callee", "account_code", "channel", "dst_channel", "unique_id",
                               "disposition", "direction", "call_type")}}
KEY_WORDS = {"start_at": "start", "duration_s": "duration", "billsec_s": "billsec"}
FALLBACK_WORDS = "start + caller + callee + channel + dst_channel + duration + billsec"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
EXTENSIONS = {"delimited": (".csv", ".txt", ".tsv"), "fixed-width": (".txt", ".dat"), "xml": (".xml",),
              "asn1": (".ber", ".asn1", ".dat")}
CHUNK_BYTES = 16 << 20
NORMALIZE_ROWS = 200_000          # smallest part of a batch normalized on its own thread
WIDTH_SAMPLE_LINES = 100
_SAMPLE_TIME = dt.datetime(2026, 10, 5, 9, 12)


@dataclass(frozen=True)
class FieldRule:
    """Where one standard field is read and how its text is finished."""

    name: str
    where: object              # column name or 0-based index, (start0, length), XPath text, or None
    default: str | None = None
    convert: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CustomMapping:
    """A checked mapping file."""

    label: str
    name: str
    kind: str
    description: str
    input: dict
    time_format: str
    timezone: str | None
    rules: tuple[FieldRule, ...]
    key: tuple[str, ...]


# --- loading and checking -----------------------------------------------------------------------

def load_mapping(source: Path | str) -> FormatSpec:
    """Read and check a mapping (module doc): a Path to a TOML file, or the TOML text itself.

    Returns the :class:`FormatSpec` of the files it describes; a :class:`FormatError` names
    the mapping, the table and key, and what is expected when anything is wrong.
    """
    if isinstance(source, Path):
        if not source.is_file():
            raise NotFoundError(f"mapping file not found: {source}")
        label, base_dir = source.name, source.resolve().parent
        try:
            text = source.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{label}: not UTF-8 text (byte {exc.start}); a mapping file is UTF-8 TOML") from None
    else:
        label, base_dir, text = "mapping", Path.cwd(), source
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = ("; a file name given as text? pass a Path" if isinstance(source, str) and "\n" not in source
                and source.strip().endswith(".toml") else "")
        raise FormatError(f"{label}: not valid TOML: {exc}{hint}") from None
    mapping = _check(document, label)
    if mapping.kind == "asn1":
        parse = _asn1_parser(document, base_dir, label)
    else:
        parse = _parser(mapping)
    extra = {}
    if "encoding" in getattr(FormatSpec, "__dataclass_fields__", {}) and "encoding" in mapping.input:
        extra["encoding"] = mapping.input["encoding"]     # the importer decodes header lines with it
    return FormatSpec(
        **extra,
        name=mapping.name, parse=parse,
        description=mapping.description or f"custom {mapping.kind} format (mapping {label})",
        fingerprint="source + " + (" + ".join(KEY_WORDS.get(k, k) for k in mapping.key) if mapping.key
                                   else FALLBACK_WORDS),
        line_based=_line_based(mapping),
        header_lines=_header_lines(mapping),
        extensions=EXTENSIONS[mapping.kind],
        raw_kind={"xml": "document", "asn1": "binary"}.get(mapping.kind, "line"),
    )


def _line_based(m: CustomMapping) -> bool:
    if m.kind not in ("delimited", "fixed-width"):
        return False
    if m.input.get("trailer_lines"):
        return False                     # only the whole file knows its last lines
    return _ascii_compatible(m.input["encoding"])


def _header_lines(m: CustomMapping) -> int:
    if not _line_based(m):
        return 0
    return m.input["skip_lines"] + (1 if m.kind == "delimited" and m.input["header"] else 0)


def _ascii_compatible(encoding: str) -> bool:
    """Whether line ends and ASCII are the same bytes in ``encoding`` (the importer cuts at b"\\n")."""
    probe = "a;\n"
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except UnicodeError:
        return False


class _Where:
    """Error messages naming the mapping, the table and the key."""

    def __init__(self, label: str):
        self.label = label

    def error(self, where: str, message: str) -> FormatError:
        return FormatError(f"{self.label}: {where}: {message}")


def _check(doc: dict, label: str) -> CustomMapping:
    w = _Where(label)
    for table in doc:
        if table not in TABLES:
            raise FormatError(f"{label}: unknown table [{table}] (expected: "
                              + ", ".join(f"[{t}]" for t in TABLES) + ")")
        if not isinstance(doc[table], dict):
            raise FormatError(f"{label}: {table} must be a table ([{table}]), not {_kind_of(doc[table])}")
    fmt = doc.get("format")
    if fmt is None:
        raise FormatError(f"{label}: missing table [format] (with name and kind)")
    _known_keys(w, "format", fmt, FORMAT_KEYS)
    name = _required(w, "format", fmt, "name", str, "a format name such as \"acme-sbc\"")
    if not NAME_PATTERN.match(name):
        raise w.error("[format].name", f"{name!r} is not a format name: expected 2 to 32 characters "
                                      "among a-z, 0-9 and '-', starting with a letter or digit")
    from bluerocktel.mediation.formats import builtin_formats

    if name in builtin_formats():
        raise w.error("[format].name", f"{name!r} is the name of a built-in format; choose another name")
    kind = _required(w, "format", fmt, "kind", str, "one of " + ", ".join(KINDS))
    if kind not in KINDS:
        raise w.error("[format].kind", f"{kind!r} is not a kind: expected one of {', '.join(KINDS)}")
    description = _optional(w, "format", fmt, "description", str, "text", "")

    inp = _check_input(w, kind, doc.get("input", {}))
    time_format, timezone = _check_times(w, doc.get("times", {}))
    rules = _check_fields(w, kind, inp, doc.get("fields"))
    key = _check_key(w, doc.get("key"), {r.name for r in rules})
    return CustomMapping(label, name, kind, description, inp, time_format, timezone, rules, key)


def _check_input(w: _Where, kind: str, inp: dict) -> dict:
    _known_keys(w, "input", inp, INPUT_KEYS[kind], f"for kind {kind!r}")
    if kind == "asn1":
        return dict(inp)                               # checked by the ASN.1 support
    out: dict = {}
    if kind in ("delimited", "fixed-width"):
        out["encoding"] = _optional(w, "input", inp, "encoding", str, "a Python codec name", "utf-8")
        try:
            codecs.lookup(out["encoding"])
        except LookupError:
            raise w.error("[input].encoding", f"unknown encoding {out['encoding']!r}: expected a Python codec "
                                              "such as \"utf-8\", \"latin-1\", \"cp1252\" or \"utf-16\"") from None
        out["skip_lines"] = _count(w, "input", inp, "skip_lines")
    if kind == "delimited":
        delimiter = _optional(w, "input", inp, "delimiter", str, "one character", ",")
        if len(delimiter) != 1 or delimiter in "\r\n":
            raise w.error("[input].delimiter", f"{delimiter!r} is not one character (other than a line end); "
                                               "write a tab as \"\\t\"")
        quote = _optional(w, "input", inp, "quote", str, "one character or \"\"", '"')
        if len(quote) > 1 or quote in ("\r", "\n") or (quote and quote == delimiter):
            raise w.error("[input].quote", f"{quote!r}: expected one character other than the delimiter, "
                                           "or \"\" for no quoting")
        comment = _optional(w, "input", inp, "comment", str, "a line prefix such as \"#\"", "")
        if "comment" in inp and (not comment or "\n" in comment or "\r" in comment):
            raise w.error("[input].comment", f"{comment!r}: expected a non-empty prefix on one line, such as \"#\"")
        out.update(delimiter=delimiter, quote=quote, comment=comment,
                   header=_optional(w, "input", inp, "header", bool, "true or false", True))
    elif kind == "fixed-width":
        out["trailer_lines"] = _count(w, "input", inp, "trailer_lines")
        rt = inp.get("record_type")
        if rt is not None:
            if not isinstance(rt, dict):
                raise w.error("[input].record_type", "expected a table {start = 1, length = 2, value = \"10\"}")
            _known_keys(w, "input.record_type", rt, ("start", "length", "value"))
            start = _positive(w, "[input].record_type.start", rt.get("start"))
            length = _positive(w, "[input].record_type.length", rt.get("length"))
            value = rt.get("value")
            if not isinstance(value, str) or not value.strip() or len(value) > length:
                raise w.error("[input].record_type.value", f"expected the record type text (1 to {length} "
                                                           f"characters), got {value!r}")
            out["record_type"] = (start - 1, length, value.strip())
    elif kind == "xml":
        namespaces = inp.get("namespaces", {})
        if not isinstance(namespaces, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                       for k, v in namespaces.items()):
            raise w.error("[input].namespaces", "expected a table of prefix = \"namespace URI\", "
                                                "e.g. { c = \"urn:example:cdr\" }")
        out["namespaces"] = dict(namespaces)
        record = _required(w, "input", inp, "record", str, "an XPath selecting each record element, e.g. \"//cdr\"")
        _compile_xpath(w, "[input].record", record, out["namespaces"])
        out["record"] = record
    return out


def _check_times(w: _Where, times: dict) -> tuple[str, str | None]:
    _known_keys(w, "times", times, ("format", "timezone"))
    fmt = _optional(w, "times", times, "format", str, "a strptime format or epoch/epoch_ms/epoch_us/iso",
                    DEFAULT_TIME_FORMAT)
    if fmt not in TIME_KEYWORDS and not _readable_time_format(fmt):
        raise w.error("[times].format", f"{fmt!r} is not a time format this importer can read: expected "
                                        f"{', '.join(TIME_KEYWORDS)} or a strptime format holding the date and "
                                        "the time, such as \"%d/%m/%Y %H:%M:%S\"")
    timezone = _optional(w, "times", times, "timezone", str, "an IANA time zone such as \"Europe/Paris\"", None)
    if timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise w.error("[times].timezone", f"unknown time zone {timezone!r}: expected an IANA name such as "
                                              "\"Europe/Paris\" or \"UTC\"") from None
    return fmt, timezone


def _readable_time_format(fmt: str) -> bool:
    """A sample time written with ``fmt`` reads back the same with Arrow's strptime."""
    if "%" not in fmt:
        return False
    try:
        text = _SAMPLE_TIME.strftime(fmt)
        back = pc.strptime(pa.array([text]), format=fmt, unit="s", error_is_null=True)[0].as_py()
    except (ValueError, pa.ArrowException):
        return False
    return back == _SAMPLE_TIME


def _check_fields(w: _Where, kind: str, inp: dict, fields) -> tuple[FieldRule, ...]:
    if fields is None:
        raise FormatError(f"{w.label}: missing table [fields] (where start, end or duration, caller, callee… "
                          "are read)")
    rules = []
    for name, value in fields.items():
        where = f"[fields].{name}"
        if name not in FIELDS:
            raise w.error(where, f"unknown field {name!r}: expected one of {', '.join(FIELDS)}")
        rules.append(_check_rule(w, kind, inp, name, value))
    if "start" not in fields:
        raise w.error("[fields].start", "missing: the start time is required")
    if "end" not in fields and "duration" not in fields:
        raise w.error("[fields].end", "missing: map end or duration (or both)")
    return tuple(rules)


def _check_rule(w: _Where, kind: str, inp: dict, name: str, value) -> FieldRule:
    where = f"[fields].{name}"
    forms = {
        "delimited": "a column name (\"Caller\"), a 1-based column number (3) or a table {column = …}",
        "fixed-width": "a table {start = 1, length = 14}",
        "xml": "an XPath relative to the record (\"c:start\", \"@id\") or a table {xpath = …}",
        "asn1": "a dotted path (\"callingNumber\") or a table {path = …}",
    }[kind]
    if not isinstance(value, dict):
        value = {WHERE_KEYS[kind][0]: value} if kind != "fixed-width" else value
        if not isinstance(value, dict):
            raise w.error(where, f"{_kind_of(value)} is not a field for kind {kind!r}: expected {forms}")
    for k in value:
        if k not in WHERE_KEYS[kind] + RULE_KEYS:
            other = next((knd for knd, keys in WHERE_KEYS.items() if k in keys), None)
            hint = f" ({k!r} is for {other} mappings)" if other else ""
            raise w.error(where, f"unknown key {k!r}{hint}: expected {forms}, "
                                 f"with optional {', '.join(RULE_KEYS)}")
    default = value.get("default")
    if default is not None and (not isinstance(default, (str, int)) or isinstance(default, bool)):
        raise w.error(f"{where}.default", f"expected text, got {_kind_of(default)}")
    default = None if default is None else str(default)
    convert = value.get("convert")
    if convert is not None and kind != "asn1":              # asn1 converters: checked by the ASN.1 support
        if convert not in CONVERTERS:
            raise w.error(f"{where}.convert", f"unknown converter {convert!r}: expected one of "
                                              f"{', '.join(c for c in CONVERTERS if c not in ASN1_CONVERTERS)}"
                                              f" (and {', '.join(ASN1_CONVERTERS)} for asn1 mappings)")
        if convert in ASN1_CONVERTERS and kind != "asn1":
            raise w.error(f"{where}.convert", f"{convert!r} decodes BER octets and is only for asn1 mappings; "
                                              f"for kind {kind!r} use int, hex or strip")
    table = value.get("map")
    if table is not None and (not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values())):
        raise w.error(f"{where}.map", "expected a table of \"value in the file\" = \"value to use\" (text), "
                                      "e.g. { \"0\" = \"ANSWERED\" }")
    pairs = tuple((k.strip(), v) for k, v in (table or {}).items())

    if not any(k in value for k in WHERE_KEYS[kind]):
        if default is None:
            raise w.error(where, f"says neither where to read the field nor a default: expected {forms}")
        return FieldRule(name, None, default, convert, pairs)
    if kind == "delimited":
        column = value["column"]
        if isinstance(column, bool) or not isinstance(column, (str, int)):
            raise w.error(where, f"{_kind_of(column)} is not a column: expected {forms}")
        if isinstance(column, int):
            if column < 1:
                raise w.error(where, f"column {column}: column numbers start at 1")
            column = column - 1
        elif not inp["header"]:
            raise w.error(where, f"column {column!r} is a name, but [input].header = false: give its 1-based "
                                 "column number")
        elif not column.strip():
            raise w.error(where, "empty column name")
        else:
            column = column.strip()
        return FieldRule(name, column, default, convert, pairs)
    if kind == "fixed-width":
        start = _positive(w, f"{where}.start", value.get("start"))
        length = _positive(w, f"{where}.length", value.get("length"))
        return FieldRule(name, (start - 1, length), default, convert, pairs)
    if kind == "xml":
        xpath = value["xpath"]
        if not isinstance(xpath, str) or not xpath.strip():
            raise w.error(where, f"{_kind_of(xpath)} is not an XPath: expected {forms}")
        _compile_xpath(w, where, xpath, inp["namespaces"])
        return FieldRule(name, xpath, default, convert, pairs)
    path = value["path"]
    if not isinstance(path, str) or not path.strip():
        raise w.error(where, f"{_kind_of(path)} is not a path: expected {forms}")
    return FieldRule(name, path, default, convert, pairs)


def _check_key(w: _Where, key: dict | None, mapped: set[str]) -> tuple[str, ...]:
    if key is None:
        return ("unique_id",) if "unique_id" in mapped else ()
    _known_keys(w, "key", key, ("fields",))
    fields = key.get("fields", ["unique_id"])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise w.error("[key].fields", "expected a list of field names, e.g. [\"unique_id\"]")
    out = []
    for f in fields:
        if f not in KEY_NAMES:
            raise w.error("[key].fields", f"{f!r} cannot be part of the record id: expected among "
                                          f"{', '.join(k for k in KEY_NAMES if not k.endswith('_s') and k != 'start_at')}")
        if KEY_NAMES[f] == f and f not in ("units",) and f not in mapped:
            raise w.error("[key].fields", f"{f!r} is not mapped in [fields], so it would always be empty")
        out.append(KEY_NAMES[f])
    return tuple(out)


def _compile_xpath(w: _Where, where: str, xpath: str, namespaces: dict):
    from lxml import etree

    try:
        compiled = etree.XPath(xpath, namespaces=namespaces or None)
        compiled(etree.Element("probe"))        # an undeclared prefix only shows when evaluated
    except etree.XPathError as exc:
        raise w.error(where, f"{xpath!r} is not a valid XPath ({exc}); namespace prefixes must be declared "
                             "in [input].namespaces") from None
    return compiled


def _known_keys(w: _Where, table: str, values: dict, allowed, context: str = "") -> None:
    for k in values:
        if k not in allowed:
            ctx = f" {context}" if context else ""
            raise w.error(f"[{table}].{k}", f"unknown key{ctx}: expected among {', '.join(allowed)}")


def _required(w: _Where, table: str, values: dict, key: str, typ, expected: str):
    if key not in values:
        raise w.error(f"[{table}].{key}", f"missing: expected {expected}")
    return _optional(w, table, values, key, typ, expected, None)


def _optional(w: _Where, table: str, values: dict, key: str, typ, expected: str, default):
    if key not in values:
        return default
    value = values[key]
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise w.error(f"[{table}].{key}", f"expected {expected}, got {_kind_of(value)} {value!r}")
    return value


def _count(w: _Where, table: str, values: dict, key: str) -> int:
    value = values.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise w.error(f"[{table}].{key}", f"expected a number of lines (0 or more), got {value!r}")
    return value


def _positive(w: _Where, where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise w.error(where, f"expected a whole number from 1 (characters are counted from 1), got {value!r}")
    return value


def _kind_of(value) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _asn1_parser(document: dict, base_dir: Path, label: str) -> ParseFn:
    """The parse function of an asn1 mapping, from the ASN.1 BER support (imported lazily)."""
    build = None
    for module_name in ("bluerocktel.mediation.ber", "bluerocktel.mediation.formats.ber"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        build = getattr(module, "asn1_mapping_parser", None)
        if build is not None:
            break
    if build is None:
        raise FormatError(f"{label}: [format].kind: 'asn1' needs the ASN.1 BER support "
                          "(bluerocktel.mediation.ber), which this installation lacks")
    takes_name = len(inspect.signature(build).parameters) >= 3
    try:
        return build(document, base_dir, label) if takes_name else build(document, base_dir)
    except FormatError as exc:
        message = str(exc)
        if message.startswith(f"{label}:"):
            raise
        raise FormatError(f"{label}: {message}") from None


# --- parsing ------------------------------------------------------------------------------------

def _parser(m: CustomMapping) -> ParseFn:
    read = {"delimited": _read_delimited, "fixed-width": _read_fixed_width, "xml": _read_xml}[m.kind]

    def parse(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
              country: str | None = None, options: Mapping | None = None) -> tuple[pa.Table, list[CdrIssue]]:
        """Normalize one file (or slice) of the mapping's layout: ``CDR_SCHEMA`` rows and issues."""
        raw, issues, raw_text = read(m, data, file_name, options or {})
        if raw is None or raw.num_rows == 0:
            return CDR_SCHEMA.empty_table(), sorted(issues, key=lambda i: i.line)

        def normalize(part: pa.Table) -> tuple[pa.Table, list[CdrIssue]]:
            return normalize_batch(part, file_name=file_name, source=source,
                                   timezone=m.timezone or timezone or get_setting("default_timezone"),
                                   country=country or get_setting("default_country"),
                                   time_format=m.time_format, key=m.key, raw_text=raw_text)

        # Large batches are normalized in parts on worker threads (Arrow and DuckDB release the GIL).
        workers = os.cpu_count() or 1
        step = max(NORMALIZE_ROWS, -(-raw.num_rows // workers))
        parts = [raw.slice(i, step) for i in range(0, raw.num_rows, step)]
        if len(parts) == 1:
            results = [normalize(raw)]
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(parts))) as pool:
                results = list(pool.map(normalize, parts))
        table = pa.concat_tables([t for t, _ in results]) if len(results) > 1 else results[0][0]
        issues = sorted(issues + [i for _, bad in results for i in bad], key=lambda i: i.line)
        return table, issues

    parse.__doc__ = f"Parse a file of custom format {m.name!r} ({m.kind}, mapping {m.label})."
    return parse


def _raw_batch(m: CustomMapping, n: int, lines, values: dict) -> pa.Table:
    """The normalizer's raw batch: each field's extracted text, finished by its rule."""
    columns = {"_line": pa.array(lines, pa.int32())}
    for rule in m.rules:
        col = values.get(rule.name)
        if col is None:
            col = pa.nulls(n, pa.string())
        columns[rule.name] = _finish(col, rule)
    return pa.table(columns)


def _finish(col, rule: FieldRule):
    """default, then convert, then map (module doc), vectorized."""
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    if rule.default is not None:
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)
        col = pc.if_else(blank, rule.default, col)
    col = pc.fill_null(col, "")
    if rule.convert == "strip":
        col = pc.utf8_trim_whitespace(col)
    elif rule.convert == "int":
        ok = pc.match_substring_regex(col, r"^\s*[+-]?[0-9]{1,18}\s*$")
        digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(pc.if_else(ok, col, "0")), r"^\+", "")
        col = pc.if_else(ok, pc.cast(pc.cast(digits, pa.int64()), pa.string()), col)
    elif rule.convert == "hex":
        col = _hex_to_decimal(col)
    if rule.mapping:
        keys = pa.array([k for k, _ in rule.mapping], pa.string())
        found = pc.index_in(pc.utf8_trim_whitespace(col), value_set=keys)
        mapped = pc.take(pa.array([v for _, v in rule.mapping], pa.string()), found)
        col = pc.coalesce(mapped, col)
    return col


def _hex_to_decimal(col):
    """Hexadecimal text to decimal text; other values unchanged. One Python step per *distinct* value."""
    distinct = pc.unique(col).to_pylist()
    converted = []
    for v in distinct:
        t = (v or "").strip()
        t = t[2:] if t[:2].lower() == "0x" else t
        converted.append(str(int(t, 16)) if t and re.fullmatch(r"[0-9A-Fa-f]{1,16}", t) else v)
    return pc.take(pa.array(converted, pa.string()), pc.index_in(col, value_set=pa.array(distinct, pa.string())))


class _Lines:
    """The lines of a UTF-8 buffer, found with numpy: starts and ends (without CR/LF), 0-based."""

    def __init__(self, buf: bytes):
        self.buf = buf
        arr = np.frombuffer(buf, np.uint8)
        nl = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], nl + 1)).astype(np.int64)
        ends = np.concatenate((nl, [len(buf)])).astype(np.int64)
        if starts[-1] == len(buf):                          # the file ends with a line end
            starts, ends = starts[:-1], ends[:-1]
        cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13) if len(arr) else np.zeros(0, bool)
        self.starts, self.ends = starts, ends - cr
        self.next_starts = np.concatenate((starts[1:], [len(buf)])).astype(np.int64)
        self.arr = arr

    def __len__(self) -> int:
        return len(self.starts)

    def text(self, i: int) -> str:
        """Line ``i`` (0-based)."""
        return self.buf[self.starts[i]:self.ends[i]].decode("utf-8", "replace")

    def texts(self, numbers: list[int]) -> dict[int, str]:
        """The text of the given 1-based line numbers."""
        return {n: self.text(n - 1) for n in numbers if 0 < n <= len(self)}

    def starting_with(self, prefix: bytes) -> np.ndarray:
        """Mask of the lines starting with ``prefix``."""
        mask = (self.ends - self.starts) >= len(prefix)
        for k, byte in enumerate(prefix):
            pos = np.minimum(self.starts + k, max(len(self.arr) - 1, 0))
            mask &= self.arr[pos] == byte
        return mask

    def blank(self) -> np.ndarray:
        """Mask of the lines that are empty or blanks only."""
        length = self.ends - self.starts
        blank = length == 0
        if len(self.arr):
            maybe = np.flatnonzero(~blank & np.isin(self.arr[np.minimum(self.starts, len(self.arr) - 1)],
                                                    np.array([9, 11, 12, 32], np.uint8)))
            if len(maybe):                # lines starting with a blank: are they blank throughout?
                trimmed = pc.utf8_trim_whitespace(self.array().take(pa.array(maybe)))
                blank[maybe[pc.equal(trimmed, "").to_numpy(zero_copy_only=False)]] = True
        return blank

    def array(self, with_line_ends: bool = False) -> pa.Array:
        """Every line as one Arrow string array (zero copy with their line ends; else a copy without)."""
        offsets = np.concatenate((self.starts, [len(self.buf)])).astype(np.int64)
        whole = pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(offsets), pa.py_buffer(self.buf))
        return whole if with_line_ends else pc.utf8_rtrim(whole, characters="\r\n")


def _encoding(m: CustomMapping, options: Mapping) -> str:
    """The file's encoding; quarantined lines read again are handed over as UTF-8 text."""
    return "utf-8" if options.get("quarantine_reprocess") else m.input["encoding"]


def _utf8(data: bytes, encoding: str, file_name: str) -> bytes:
    """``data`` as UTF-8 (invalid bytes become U+FFFD), without a byte-order mark."""
    if codecs.lookup(encoding).name == "utf-8":
        try:
            data.decode("utf-8")
            text = None
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
    else:
        text = data.decode(encoding, "replace")
    if text is not None:
        data = text.encode("utf-8")
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


# --- delimited --------------------------------------------------------------------------------

def _read_delimited(m: CustomMapping, data: bytes, file_name: str, options: Mapping):
    inp = m.input
    buf = _utf8(data, _encoding(m, options), file_name)
    lines = _Lines(buf)
    first = inp["skip_lines"] + (1 if inp["header"] else 0)
    if len(lines) <= first:
        if inp["header"] and len(lines) == first:
            _columns(m, lines.text(first - 1), file_name)          # a header alone is still checked
        return None, [], None
    dialect = {"delimiter": inp["delimiter"], "quotechar": inp["quote"] or None,
               "quoting": csv.QUOTE_MINIMAL if inp["quote"] else csv.QUOTE_NONE}
    if inp["header"]:
        index, width = _columns(m, lines.text(first - 1), file_name)
    else:
        index = None
        width = _usual_width(lines, first, dialect)

    # The record lines: blank and comment lines out; their 1-based numbers kept.
    body = np.arange(first, len(lines))
    skip = (lines.ends[body] == lines.starts[body])
    if inp["comment"]:
        skip |= lines.starting_with(inp["comment"].encode())[body]
    kept = body[~skip]
    if len(kept) == 0:
        return None, [], None
    seg = lines.next_starts[body] - lines.starts[body]            # bytes of each line, line end included
    region = memoryview(buf)[int(lines.starts[first]):]
    if skip.any():
        text = memoryview(lines.arr[int(lines.starts[first]):][np.repeat(~skip, seg)].tobytes())
        local_starts = np.concatenate(([0], np.cumsum(seg[~skip])[:-1])).astype(np.int64)
    else:
        text = region
        local_starts = lines.starts[kept] - lines.starts[first]

    col_of = {}
    for rule in m.rules:
        if rule.where is None:
            continue
        col_of[rule.name] = index[rule.where] if isinstance(rule.where, str) else rule.where
        if col_of[rule.name] >= width:
            raise FormatError(f"{m.label}: [fields].{rule.name}: column {col_of[rule.name] + 1}, but the records "
                              f"of {file_name} have {width} fields")
    used = sorted(set(col_of.values()))

    # Pieces of about CHUNK_BYTES, cut at line starts, parsed on worker threads.
    cuts = np.searchsorted(local_starts, np.arange(0, len(text), CHUNK_BYTES), side="left")
    cuts = sorted(set(int(c) for c in cuts) | {len(kept)})
    pieces = [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    ends_at = np.concatenate((local_starts, [len(text)]))

    def run(piece):
        a, b = piece
        return _parse_piece(text[int(ends_at[a]):int(ends_at[b])], b - a, width, used, dialect)

    workers = max(1, min(len(pieces), os.cpu_count() or 1))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, pieces))
    else:
        results = [run(p) for p in pieces]

    parts, line_parts, issues = [], [], []
    for (a, b), (table, rows, rejected) in zip(pieces, results):
        numbers = kept[a:b] + 1                                   # 1-based line numbers
        for rel, count in rejected:
            line = int(numbers[rel - 1])
            raw = lines.text(line - 1)
            if not raw.strip():
                continue                                          # blanks only: a blank line
            reason = (f"wrong field count: {count} (expected {width})" if isinstance(count, int) else count)
            issues.append(CdrIssue(file_name, line, reason, raw))
        parts.append(table)
        line_parts.append(numbers[rows - 1])
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    line_numbers = np.concatenate(line_parts)
    values = {name: table.column(f"c{col}") for name, col in col_of.items()}
    raw = _raw_batch(m, table.num_rows, line_numbers, values)
    return raw, issues, lines.texts


def _columns(m: CustomMapping, header: str, file_name: str) -> tuple[dict[str, int], int]:
    """Column name → 0-based index, and the column count, from the header line; refuses a mapped
    column it lacks (a name given twice is its first column)."""
    inp = m.input
    try:
        names = next(csv.reader([header], delimiter=inp["delimiter"], quotechar=inp["quote"] or None,
                                quoting=csv.QUOTE_MINIMAL if inp["quote"] else csv.QUOTE_NONE), [])
    except csv.Error as exc:
        raise FormatError(f"{file_name}: unreadable header line ({exc})") from None
    names = [n.strip().lstrip("\ufeff") for n in names]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
    for rule in m.rules:
        if isinstance(rule.where, str) and rule.where not in index:
            raise FormatError(f"{m.label}: [fields].{rule.name}: column {rule.where!r} is not in the header of "
                              f"{file_name} (columns: {', '.join(names)})")
    return index, len(names)


def _usual_width(lines: _Lines, first: int, dialect: dict) -> int:
    """The most common field count among the first record lines (files without header)."""
    counts: dict[int, int] = {}
    for i in range(first, min(len(lines), first + WIDTH_SAMPLE_LINES)):
        text = lines.text(i)
        if text.strip():
            try:
                n = len(next(csv.reader([text], **dialect), []))
            except csv.Error:
                continue
            counts[n] = counts.get(n, 0) + 1
    return max(counts, key=lambda n: (counts[n], n)) if counts else 1


def _parse_piece(text: memoryview, n_lines: int, width: int, used: list[int], dialect: dict):
    """One piece of record lines: (table of the used columns, 1-based rows kept, [(row, count or reason)])."""
    names = [f"c{i}" for i in range(width)]
    include = [f"c{i}" for i in used]
    rejected: list[tuple[int, object]] = []

    def on_invalid(row) -> str:
        rejected.append((row.number, row.actual_columns))
        return "skip"

    quote = dialect["quotechar"]
    table = pcsv.read_csv(
        pa.py_buffer(text),
        read_options=pcsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 22),
        parse_options=pcsv.ParseOptions(delimiter=dialect["delimiter"], quote_char=quote or False,
                                        invalid_row_handler=on_invalid, ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(include_columns=include, column_types={c: pa.string() for c in include},
                                            strings_can_be_null=False, quoted_strings_can_be_null=False))
    if table.num_rows + len(rejected) == n_lines:
        rows = np.arange(1, n_lines + 1)
        if rejected:
            rows = rows[~np.isin(rows, np.array([r for r, _ in rejected]))]
        return table, rows, rejected
    # A quote left open ran lines together: this piece goes line by line (the exact path).
    return _parse_piece_slowly(text, width, used, dialect)


def _parse_piece_slowly(text: memoryview, width: int, used: list[int], dialect: dict):
    rows, values, rejected = [], [[] for _ in used], []
    split = bytes(text).decode("utf-8").split("\n")
    if split[-1] == "":
        split.pop()
    for number, line in enumerate(split, start=1):
        line = line.rstrip("\r")
        if dialect["quotechar"] and line.count(dialect["quotechar"]) % 2:
            rejected.append((number, "unbalanced quotes (truncated line?)"))
            continue
        try:
            fields = next(csv.reader([line], **dialect), [])
        except csv.Error as exc:
            rejected.append((number, f"unreadable line: {exc}"))
            continue
        if len(fields) != width:
            rejected.append((number, len(fields)))
            continue
        rows.append(number)
        for k, col in enumerate(used):
            values[k].append(fields[col])
    table = pa.table({f"c{col}": pa.array(values[k], pa.string()) for k, col in enumerate(used)})
    return table, np.array(rows, dtype=np.int64), rejected


# --- fixed width ------------------------------------------------------------------------------

def _read_fixed_width(m: CustomMapping, data: bytes, file_name: str, options: Mapping):
    inp = m.input
    buf = _utf8(data, _encoding(m, options), file_name)
    lines = _Lines(buf)
    skip = inp["skip_lines"]
    if len(lines) <= skip:
        return None, [], None
    # Line-level choices in numpy: blank lines, the trailer; then the record type on the lines.
    keep = ~lines.blank()
    keep[:skip] = False
    if inp["trailer_lines"] and not options.get("quarantine_reprocess"):
        keep[np.flatnonzero(keep)[-inp["trailer_lines"]:]] = False
    whole = lines.array(with_line_ends=True)      # a field never reaches the line end of a long enough line
    fields = _FixedFields(lines)
    if "record_type" in inp:
        start, length, value = inp["record_type"]
        kind = fields.cut(whole, start, length)
        keep &= pc.fill_null(pc.equal(kind, value), False).to_numpy(zero_copy_only=False)
    chosen = np.flatnonzero(keep)
    need = max((r.where[0] + r.where[1] for r in m.rules if r.where is not None), default=0)
    length = fields.lengths(whole)[chosen]
    short = length < need
    issues = [CdrIssue(file_name, int(i) + 1, f"short line: {int(n)} characters, the mapping reads up to "
                                              f"character {need}", lines.text(int(i)))
              for i, n in zip(chosen[short], length[short])]
    chosen = chosen[~short]
    text = whole.take(pa.array(chosen)) if len(chosen) < len(whole) else whole
    values = {r.name: fields.cut(text, r.where[0], r.where[1]) for r in m.rules if r.where is not None}
    raw = _raw_batch(m, len(text), (chosen + 1).astype(np.int32), values)
    return raw, issues, lines.texts


class _FixedFields:
    """Character slices of lines, trimmed; by bytes when the text is ASCII (4x faster)."""

    def __init__(self, lines: _Lines):
        self.lines = lines
        self.ascii = len(lines.arr) == 0 or int(lines.arr.max()) < 128

    def cut(self, text: pa.Array, start: int, length: int) -> pa.Array:
        if self.ascii:
            piece = pc.binary_slice(text.view(pa.large_binary()), start, start + length).view(pa.large_string())
            return pc.ascii_trim_whitespace(piece)
        return pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, start, start + length))

    def lengths(self, whole: pa.Array) -> np.ndarray:
        """Characters of each line, line end excluded."""
        ends = self.lines.next_starts - self.lines.ends            # bytes of CR/LF: one character each
        if self.ascii:
            return self.lines.ends - self.lines.starts
        return pc.utf8_length(whole).to_numpy(zero_copy_only=False) - ends


# --- XML --------------------------------------------------------------------------------------

_DOCTYPE = tuple("<!DOCTYPE".encode(enc) for enc in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


def _read_xml(m: CustomMapping, data: bytes, file_name: str, options: Mapping):
    from lxml import etree

    refused = (f"{file_name}: refused, the XML document declares a DOCTYPE; DTDs and entities are not "
               "accepted in CDR files (entity expansion and external entities)")
    if any(pattern in data for pattern in _DOCTYPE):
        raise FormatError(refused)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                             dtd_validation=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise FormatError(f"{file_name}: not well-formed XML (line {exc.lineno}: {exc.msg})") from None
    if root is None:
        raise FormatError(f"{file_name}: an empty XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise FormatError(refused)
    ns = m.input["namespaces"] or None
    try:
        records = etree.XPath(m.input["record"], namespaces=ns)(root)
    except etree.XPathError as exc:
        raise FormatError(f"{m.label}: [input].record: {m.input['record']!r} fails on {file_name}: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(e, etree._Element) and isinstance(e.tag, str)
                                                for e in records):
        raise FormatError(f"{m.label}: [input].record: {m.input['record']!r} must select elements; on "
                          f"{file_name} it gives {type(records).__name__} values")
    # Simple child elements ("c:setup") and attributes ("@id") are read with one walk over the
    # record's children and ``get``; any other XPath is evaluated (slower, about 4x).
    namespaces = m.input["namespaces"]
    children: dict[str, str] = {}                 # field -> Clark name of the child read
    attributes: dict[str, str] = {}               # field -> Clark name of the attribute read
    xpaths: dict[str, object] = {}
    for r in m.rules:
        if r.where is None:
            continue
        simple = _simple_name(r.where, namespaces)
        if simple is not None and simple[0] == "child":
            children[r.name] = simple[1]
        elif simple is not None:
            attributes[r.name] = simple[1]
        else:
            xpaths[r.name] = etree.XPath(r.where, namespaces=ns)
    wanted_tags = set(children.values())
    values: dict[str, list] = {name: [] for name in (*children, *attributes, *xpaths)}
    good: list[int] = []
    issues: list[CdrIssue] = []
    for number, element in enumerate(records, start=1):
        row = {}
        try:
            for name, xpath in xpaths.items():
                row[name] = _xpath_text(xpath(element), etree)
        except etree.XPathError as exc:
            issues.append(CdrIssue(file_name, number, f"XPath of field {name!r} failed: {exc}", _standalone(element)))
            continue
        good.append(number)
        found: dict[str, str] = {}
        if wanted_tags:
            for child in element:
                tag = child.tag
                if tag in wanted_tags and tag not in found:
                    found[tag] = child.text if len(child) == 0 else "".join(child.itertext())
        for name, tag in children.items():
            values[name].append(found.get(tag))
        for name, attribute in attributes.items():
            values[name].append(element.get(attribute))
        for name, value in row.items():
            values[name].append(value)
    if not good:
        return None, issues, None
    raw = _raw_batch(m, len(good), good, {k: pa.array(v, pa.string()) for k, v in values.items()})

    def raw_text(numbers: list[int]) -> dict[int, str]:
        return {n: _standalone(records[n - 1]) for n in numbers}

    return raw, issues, raw_text


_NAME = r"[A-Za-z_][\w.-]*"
_SIMPLE_CHILD = re.compile(rf"^(?:\./)?(?:({_NAME}):)?({_NAME})$")
_SIMPLE_ATTRIBUTE = re.compile(rf"^(?:\./)?@(?:({_NAME}):)?({_NAME})$")


def _simple_name(xpath: str, namespaces: dict) -> tuple[str, str] | None:
    """("child" | "attribute", Clark name) when ``xpath`` is just a child element or an attribute."""
    for kind, pattern in (("child", _SIMPLE_CHILD), ("attribute", _SIMPLE_ATTRIBUTE)):
        match = pattern.match(xpath.strip())
        if match:
            prefix, local = match.groups()
            if prefix is None:
                return kind, local                # XPath 1.0: no prefix, no namespace
            uri = namespaces.get(prefix) or {"xml": "http://www.w3.org/XML/1998/namespace"}.get(prefix)
            return (kind, f"{{{uri}}}{local}") if uri else None
    return None


def _xpath_text(result, etree) -> str | None:
    """The text of an XPath result: first node's string value, an attribute, a string or a number."""
    if isinstance(result, list):
        if not result:
            return None
        result = result[0]
    if isinstance(result, etree._Element):
        return "".join(result.itertext()) if isinstance(result.tag, str) else (result.text or "")
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        if result != result:                                     # NaN: no number
            return None
        return str(int(result)) if result.is_integer() else repr(result)
    return str(result)


def _standalone(element) -> str:
    """The record as a standalone document: a copy inside copies of its ancestors (module doc)."""
    from copy import deepcopy

    from lxml import etree

    node = deepcopy(element)
    node.tail = None
    for ancestor in element.iterancestors():
        shell = etree.Element(ancestor.tag, attrib=dict(ancestor.attrib), nsmap=ancestor.nsmap)
        shell.append(node)
        node = shell
    return etree.tostring(node, encoding="unicode")
