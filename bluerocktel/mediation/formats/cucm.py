"""Cisco Unified Communications Manager (CUCM) CDR flat files to normalized CDRs.

CUCM's CDR Repository Manager writes ``cdr_<cluster>_<node>_<YYYYMMDDhhmm>_<seq>`` files:
comma-separated, strings quoted with ``"``, integers bare. The first line holds the field
names, the second their types (``INTEGER,INTEGER,…,VARCHAR(50),…,UNIQUEIDENTIFIER,…``), then
one record per line. The columns differ between CUCM versions, so they are found by name in
the first line (case-insensitively); only the columns used below are converted. The format
is declared with ``header_lines=2``: the importer repeats both header lines at the head of
every slice of a large file, so slices parse alone and keep the file's line numbers.

Records (``cdrRecordType``): ``1`` is a CDR, one call leg; ``0`` (start record) and ``2``
(CMR, call management record: voice quality diagnostics, not a call) are skipped without an
issue. A whole CMR file (``cmr_…``: a header without ``dateTimeOrigination`` but with
``numberPacketsSent``) yields no records. Any other record type is an issue.

A call has several rows when it was transferred, forwarded, conferenced or parked: each row is
one leg, sharing ``globalCallID_callManagerId`` + ``globalCallID_callId`` with the call's other
legs and told apart by ``pkid`` (the row's unique id in the CDR database). Each leg is one
normalized CDR; the record id is **source + globalCallID_callManagerId + globalCallID_callId +
pkid** (a row without ``pkid`` is an issue). ``unique_id`` is the ``pkid``.

Fields:

- times: ``dateTimeOrigination`` (start), ``dateTimeConnect`` (answer; ``0`` when the call was
  never connected), ``dateTimeDisconnect`` (end), all epoch seconds UTC: no time zone applies;
- ``duration`` (seconds connected, 0 when not connected) is the billsec; the duration is end −
  start;
- caller ``callingPartyNumber``; callee ``finalCalledPartyNumber``, else (blank)
  ``originalCalledPartyNumber``; numbers normalized to E.164 with the source's national rules,
  direction from the numbers (:mod:`bluerocktel.mediation.numbers`);
- channel ``origDeviceName`` (``SEP…`` phone, trunk or gateway name), dst_channel
  ``destDeviceName``;
- account code: ``callingPartyNumberPartition`` by default. In a shared (multi-tenant) cluster
  the partition of the calling number is the tenant, the one identifier every CDR of a customer
  carries. ``authCodeDescription`` (forced authorization code) or ``clientMatterCode`` are set
  only on the calls where a code was keyed in; a source can choose one of them (or any column)
  with the option ``account_code_column``.
- disposition: ``ANSWERED`` when ``dateTimeConnect`` is not 0; otherwise from the Q.850 cause
  of the side that cleared (``destCause_value``, else ``origCause_value`` when the first is 0):
  17 ``BUSY``; 34, 38, 41, 42, 44, 47 ``CONGESTION``; 0, 16 (normal clearing: the caller hung
  up first), 18, 19, 31 and CUCM's own codes (≥ 128, e.g. 393216 call split) ``NO ANSWER``;
  any other cause (1 unallocated number, 21 call rejected, 27, 28, 102, …) ``FAILED``.

How it is fast: the body (after the two header lines) is cut at line ends into chunks that
``pyarrow.csv`` parses on one thread per core, converting only the used columns; a line with
another field count reaches an ``invalid_row_handler`` that keeps its text and number, and becomes an
issue (CMR or start rows excepted). Every check and conversion then runs vectorized on the
whole slice (:func:`~bluerocktel.mediation.normalize.normalize_batch`). A line with an
unbalanced quote makes pyarrow run lines together; its chunk is then read line by line with
the ``csv`` module (exact, slower). A blank line is skipped (the following lines keep their
numbers).

Issues besides those of the normalizer: a row without ``pkid``, a cause value or time that is
not a bare number, ``dateTimeDisconnect`` before ``dateTimeOrigination``, a line with another
field count than the header, an unbalanced quote (a line cut short when the writer stopped).
A file whose first line is not a CUCM header, or whose second line is not the types row, or
that lacks a needed column, is refused whole (:class:`~bluerocktel.errors.FormatError`).
"""

from __future__ import annotations

import csv
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import CdrIssue, read_csv_slice
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import Disposition

# Columns read (CUCM spelling; matched case-insensitively).
RECORD_TYPE = "cdrRecordType"
NEEDED = ("cdrRecordType", "globalCallID_callManagerId", "globalCallID_callId", "dateTimeOrigination",
          "callingPartyNumber", "origCause_value", "originalCalledPartyNumber", "finalCalledPartyNumber",
          "destCause_value", "dateTimeConnect", "dateTimeDisconnect", "pkid", "duration",
          "origDeviceName", "destDeviceName")
DEFAULT_ACCOUNT_CODE_COLUMN = "callingPartyNumberPartition"
CMR_MARKERS = ("numberPacketsSent", "directoryNum")
RECORD_CDR, SKIPPED_RECORD_TYPES = "1", ("0", "2")

BUSY_CAUSES = (17,)
CONGESTION_CAUSES = (34, 38, 41, 42, 44, 47)
NO_ANSWER_CAUSES = (0, 16, 18, 19, 31)
VENDOR_CAUSES_FROM = 128           # CUCM's own cause codes (call split, conference drop, …)

CHUNK_BYTES = 16 << 20
_TYPE = re.compile(rb"^[A-Za-z]+(\([0-9]+\))?$")          # INTEGER, VARCHAR(50), UNIQUEIDENTIFIER


def parse_cucm(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
               country: str | None = None, options: Mapping | None = None) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize the bytes of a CUCM CDR flat file (module doc): a ``CDR_SCHEMA`` table and the issues."""
    country = country or get_setting("default_country")
    options = options or {}
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    first_end = data.find(b"\n")
    if not data or data.isspace():
        return CDR_SCHEMA.empty_table(), []
    names = _header_names(data[:first_end if first_end >= 0 else len(data)], file_name)
    by_lower = {n.lower(): n for n in names}
    if "datetimeorigination" not in by_lower and any(m.lower() in by_lower for m in CMR_MARKERS):
        return CDR_SCHEMA.empty_table(), []             # a CMR file: quality records, no calls
    account_column = str(options.get("account_code_column") or DEFAULT_ACCOUNT_CODE_COLUMN)
    missing = [c for c in NEEDED if c.lower() not in by_lower]
    if options.get("account_code_column") and account_column.lower() not in by_lower:
        missing.append(account_column)
    if missing:
        raise FormatError(f"{file_name}: line 1: the CUCM header lacks column(s) {', '.join(missing)}")
    if first_end < 0:
        return CDR_SCHEMA.empty_table(), []
    second_end = data.find(b"\n", first_end + 1)
    types_line = data[first_end + 1:second_end if second_end >= 0 else len(data)]
    if types_line.strip() and not _TYPE.match(types_line.split(b",")[0].strip(b'" \r')):
        raise FormatError(f"{file_name}: line 2 should be the CUCM types row (INTEGER,VARCHAR(50),…), "
                          f"found {types_line[:60].decode('utf-8', 'replace')!r}")
    if second_end < 0:
        return CDR_SCHEMA.empty_table(), []

    used = {c: by_lower[c.lower()] for c in NEEDED}
    if account_column.lower() in by_lower:
        used["account_code"] = by_lower[account_column.lower()]
    table, rejected = read_csv_body(data, second_end + 1, names, list(dict.fromkeys(used.values())),
                                    first_line=3)
    issues: list[CdrIssue] = []
    for line, text in rejected:
        fields = csv_fields(text)
        if isinstance(fields, list) and fields and fields[0].strip() in SKIPPED_RECORD_TYPES:
            continue                                    # a CMR or start record among the CDRs
        reason = fields if isinstance(fields, str) else (
            f"wrong column count: {len(fields)} (expected {len(names)} from the header)")
        issues.append(CdrIssue(file_name, line, reason, text))

    col = {c: pc.fill_null(table.column(name), "") for c, name in used.items()}
    record_type = col[RECORD_TYPE]
    skipped = pc.is_in(record_type, pa.array(SKIPPED_RECORD_TYPES))
    if pc.any(skipped).as_py():                          # start records and CMRs: not calls
        kept = pc.invert(skipped)
        table, record_type = table.filter(kept), pc.filter(record_type, kept)
        col = {c: pc.filter(a, kept) for c, a in col.items()}
    orig_ok, orig_cause = _number(col["origCause_value"])
    dest_ok, dest_cause = _number(col["destCause_value"])
    start_ok, start = _number(col["dateTimeOrigination"])
    end_ok, end = _number(col["dateTimeDisconnect"])
    # per-row problems normalize_batch does not know about: (reason, bad mask, column shown)
    checks = [
        ("unknown cdrRecordType", pc.not_equal(record_type, RECORD_CDR), RECORD_TYPE),
        ("missing pkid (the record id)", pc.equal(col["pkid"], ""), "pkid"),
        ("unparseable origCause_value", pc.invert(orig_ok), "origCause_value"),
        ("unparseable destCause_value", pc.invert(dest_ok), "destCause_value"),
        ("dateTimeDisconnect before dateTimeOrigination",
         pc.and_(pc.and_(start_ok, end_ok), pc.less(end, start)), "_span"),
    ]
    bad = None
    for _, mask, _ in checks:
        bad = mask if bad is None else pc.or_(bad, mask)
    if pc.any(bad).as_py():
        bad_idx = pc.indices_nonzero(bad)
        lines = pc.take(table.column("_line"), bad_idx).to_pylist()
        flags = [pc.take(mask, bad_idx).to_pylist() for _, mask, _ in checks]
        shown = {c: pc.take(col[c], bad_idx).to_pylist() for _, _, c in checks if c in col}
        shown["_span"] = [f"{e} < {s}" for e, s in zip(pc.take(col["dateTimeDisconnect"], bad_idx).to_pylist(),
                                                       pc.take(col["dateTimeOrigination"], bad_idx).to_pylist())]
        texts = line_texts(data, lines)
        for k, line in enumerate(lines):
            reason, column = next((r, c) for (r, _, c), fl in zip(checks, flags) if fl[k])
            value = shown[column][k] if column == "_span" else repr(shown[column][k])
            issues.append(CdrIssue(file_name, line, f"{reason}: {value}", texts[line]))
        keep = pc.invert(bad)
        table = table.filter(keep)
        col = {c: pc.filter(a, keep) for c, a in col.items()}
        orig_cause, dest_cause = pc.filter(orig_cause, keep), pc.filter(dest_cause, keep)
    line_col = table.column("_line")

    final = col["finalCalledPartyNumber"]
    callee = pc.if_else(pc.equal(pc.utf8_trim_whitespace(final), ""), col["originalCalledPartyNumber"], final)
    raw = pa.table({
        "_line": line_col,
        "start": col["dateTimeOrigination"],
        "answer": col["dateTimeConnect"],
        "end": col["dateTimeDisconnect"],
        "billsec": col["duration"],
        "caller": col["callingPartyNumber"],
        "callee": callee,
        "account_code": col["account_code"] if "account_code" in col else pa.repeat(pa.scalar(""), len(line_col)),
        "channel": col["origDeviceName"],
        "dst_channel": col["destDeviceName"],
        "disposition": _dispositions(col["dateTimeConnect"], orig_cause, dest_cause),
        "unique_id": col["pkid"],
        "_key_cmid": col["globalCallID_callManagerId"],
        "_key_callid": col["globalCallID_callId"],
        "_key_pkid": col["pkid"],
    })
    normalized, more = normalize_batch(
        raw, file_name=file_name, source=source, timezone="UTC", country=country, time_format="epoch",
        key=("_key_cmid", "_key_callid", "_key_pkid"), raw_text=lambda lines: line_texts(data, lines))
    issues += more
    issues.sort(key=lambda i: i.line)
    return normalized, issues


def _number(text) -> tuple:
    """(ok, value): the rows of ``text`` that are whole non-negative numbers (CUCM writes no
    blanks around them), and their int64 values (0 elsewhere)."""
    ok = pc.and_(pc.ascii_is_decimal(text), pc.less_equal(pc.binary_length(text), 12))
    return ok, pc.cast(pc.if_else(ok, text, "0"), pa.int64())


def _dispositions(connect, orig_cause, dest_cause):
    """ANSWERED when connected, else the disposition of the clearing cause (module doc)."""
    connected = pc.and_(pc.not_equal(connect, ""), pc.not_equal(connect, "0"))
    cause = pc.if_else(pc.equal(dest_cause, 0), orig_cause, dest_cause)
    no_answer = pc.or_(pc.is_in(cause, pa.array(NO_ANSWER_CAUSES, pa.int64())),
                       pc.greater_equal(cause, VENDOR_CAUSES_FROM))
    return pc.case_when(
        pc.make_struct(connected, pc.is_in(cause, pa.array(BUSY_CAUSES, pa.int64())),
                       pc.is_in(cause, pa.array(CONGESTION_CAUSES, pa.int64())), no_answer),
        Disposition.ANSWERED.value, Disposition.BUSY.value, Disposition.CONGESTION.value,
        Disposition.NO_ANSWER.value, Disposition.FAILED.value)


def _header_names(line: bytes, file_name: str) -> list[str]:
    names = csv_fields(line.decode("utf-8", "replace").rstrip("\r"))
    if isinstance(names, str) or RECORD_TYPE.lower() not in {n.strip().lower() for n in names}:
        raise FormatError(f"{file_name}: line 1 is not a CUCM CDR header (no {RECORD_TYPE} column): "
                          f"{line[:60].decode('utf-8', 'replace')!r}")
    return [n.strip() for n in names]


# --- reading a CSV body with a known header (shared with the Kamailio acc format) ---------------

def read_csv_body(data: bytes, offset: int, names: list[str], used: list[str], first_line: int,
                  ) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The ``used`` columns (text) of the CSV lines of ``data[offset:]``, whose fields are
    ``names``, plus ``_line`` (``first_line`` is the number of the line at ``offset``); and the
    (line, text) of the lines that are not rows of that shape (blank lines left out).

    Chunks of ``CHUNK_BYTES`` cut at line ends are parsed on worker threads (pyarrow releases
    the GIL). Every physical line is one row, accepted or rejected, so a chunk's first line is
    the sum of the rows of the chunks before it; a chunk where that does not hold (an open quote
    ran lines together, or a lone CR) is read line by line with the ``csv`` module instead.
    """
    bounds, start = [], offset
    while start < len(data):
        end = data.find(b"\n", min(start + CHUNK_BYTES, len(data)))
        end = len(data) if end < 0 else end + 1
        bounds.append((start, end))
        start = end
    workers = max(1, min(len(bounds), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda b: _read_chunk(data, b[0], b[1], names, used), bounds))
    tables, rejected = [], []
    base = first_line - 1
    for table, bad, rows in parts:
        if table.num_rows:
            tables.append(table.set_column(table.schema.get_field_index("_line"), "_line",
                                           pc.add(table.column("_line"), pa.scalar(base, pa.int32()))))
        rejected += [(base + rel, text) for rel, text in bad if text.strip()]
        base += rows
    if not tables:
        empty = {c: pa.array([], pa.string()) for c in used}
        return pa.table({**empty, "_line": pa.array([], pa.int32())}), rejected
    table = pa.concat_tables(tables)
    # pyarrow reads a blank line as a row of empty fields: drop those (and only those)
    empty = None
    for c in used:
        mask = pc.equal(pc.fill_null(table.column(c), ""), "")
        empty = mask if empty is None else pc.and_(empty, mask)
    if pc.any(empty).as_py():
        candidates = pc.filter(table.column("_line"), empty).to_pylist()
        texts = line_texts(data, candidates)
        blank = pa.array([line for line in candidates if not texts[line].strip()], pa.int32())
        table = table.filter(pc.invert(pc.is_in(table.column("_line"), blank)))
    return table, rejected


def _read_chunk(data: bytes, start: int, end: int, names: list[str], used: list[str]):
    """(table with relative ``_line``, rejected (relative line, text), physical lines) of a chunk."""
    table, rejected, lines = read_csv_slice(data, start, end, names, used)
    if table is None:
        return _read_chunk_exactly(bytes(memoryview(data)[start:end]).decode("utf-8", "replace"), names, used, lines)
    return table, rejected, lines


def _read_chunk_exactly(text: str, names: list[str], used: list[str], lines: int):
    """The slow exact path of :func:`_read_chunk`: one line at a time with the ``csv`` module."""
    index = [names.index(c) for c in used]
    rows: list[list[str]] = []
    numbers: list[int] = []
    rejected: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n")[:lines], start=1):
        line = line.rstrip("\r")
        fields = csv_fields(line)
        if isinstance(fields, list) and len(fields) == len(names):
            rows.append([fields[i] for i in index])
            numbers.append(number)
        else:
            rejected.append((number, line))
    columns = {c: pa.array([r[k] for r in rows], pa.string()) for k, c in enumerate(used)}
    columns["_line"] = pa.array(numbers, pa.int32())
    return pa.table(columns), rejected, lines


def csv_fields(text: str) -> list[str] | str:
    """The fields of one CSV line, or why it has none."""
    if text.count('"') % 2:
        return "unbalanced quotes (truncated line?)"
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:          # a CR or NUL inside a field
        return f"unreadable line: {exc}"


def line_texts(data: bytes, lines: list[int]) -> dict[int, str]:
    """The text of the given 1-based lines of ``data`` (without their line end)."""
    if not lines:
        return {}
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    out = {}
    for line in set(lines):
        start = 0 if line == 1 else int(ends[line - 2]) + 1
        end = int(ends[line - 1]) if line - 1 < len(ends) else len(data)
        out[line] = data[start:end].rstrip(b"\r").decode("utf-8", "replace")
    return out


FORMATS = [FormatSpec(
    "cucm", parse_cucm,
    description="Cisco CUCM CDR flat file (cdr_*): header row of names, row of types, one call leg "
                "per row, epoch UTC times; CMR rows and files skipped",
    fingerprint="source + globalCallID_callManagerId + globalCallID_callId + pkid (one record per call leg)",
    line_based=True, header_lines=2, raw_kind="line",
)]
