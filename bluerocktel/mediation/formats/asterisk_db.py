"""``asterisk-db``: rows read from an Asterisk CDR table (``cdr_mysql``, ``cdr_pgsql``,
``cdr_adaptive_odbc``), as fetched by :mod:`bluerocktel.collectors.database`.

The bytes are one of:

- an **Arrow IPC stream** (what the database collector sends): one row per table row, columns
  named like Asterisk's (after the source's ``column_map``). The collector sends every value as
  the server's text (``id`` as an integer); Arrow types are read too: naive timestamps are wall
  time, zoned ones exact, numbers as numbers;
- **JSON**: one object (one row: what a quarantined record's ``raw`` holds, ``raw_kind``
  ``document``), an array of objects, or JSON lines (one object per line). Numbers may be JSON
  numbers or integer text (``60.00``, a ``DECIMAL``'s text, is 60).

Time text: ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (or with a ``T``) is wall time in the source's time
zone (``DATETIME``, ``timestamp``); with a ``Z``, ``±HH``, ``±HHMM`` or ``±HH:MM`` offset it is
exact (PostgreSQL ``timestamptz``; MySQL ``TIMESTAMP``, which the collector reads in UTC and
sends with ``+00:00``). A column mixing both is read as exact (its wall times in the source's
zone). Blank text and MySQL's zero date ``0000-00-00 00:00:00`` are null (no time).

Columns read (others in the table are not fetched; in JSON, the other Asterisk columns clid,
dcontext, lastapp, lastdata, amaflags, userfield, peeraccount are accepted and ignored):

=============== =============================================================================
``calldate``    legacy schema (``cdr_mysql`` / classic ``cdr_pgsql``): the call's start time
``start``,      current schema (``cdr_adaptive_odbc``, Asterisk's ``ast-db-manage`` table);
``answer``,     ``answer`` is NULL (or MySQL's zero date) for an unanswered call
``end``
``duration``,   seconds; in the legacy schema the answer time is derived from them:
``billsec``     ``answer = calldate + duration − billsec`` when the call was answered
                (disposition ``ANSWERED`` or billsec > 0), to the second (Asterisk rounds both)
``src``, ``dst``  calling and called numbers (normalized to E.164 with the source's rules)
``accountcode``, ``channel``, ``dstchannel``, ``disposition``, ``uniqueid``, ``linkedid``,
``sequence``    as in ``Master.csv``; ``id``: the table's auto-increment key, kept only in the
                quarantine's ``raw`` (it says which row)
=============== =============================================================================

A document is legacy when it has a ``calldate`` column, else current (``start`` and ``end``).

Record id: exactly the one of ``asterisk-csv`` (:mod:`bluerocktel.mediation.formats.asterisk`):
source + uniqueid, + linkedid + sequence when the table has both columns (the 21-column
``Master.csv`` of ``newcdrcolumns``); without a uniqueid, source + start (UTC µs) + src + dst +
channel + dstchannel + duration + billsec. So a CDR that reaches us both in a ``Master.csv`` file
and through the database is recognized as one record *if both are imported under the same
source name* (the source is part of the id) and both carry the same columns (a table with
linkedid/sequence matches a 21-column ``Master.csv``, one without them an 18-column one).

Record numbers: the ``N``-th row of the stream (or of a JSON array) is record ``N`` (the CDR's
``source_line``); in JSON lines it is the line number. A row that cannot be normalized becomes a
:class:`~bluerocktel.mediation.records.CdrIssue` whose ``raw`` is the row as one compact JSON
object (values as received; Arrow timestamps as text, zoned ones in UTC with ``+00:00``), which
this parser reads again alone with the same record id. Rows without their time (``calldate``, or ``start``/``end``), or with a
time text that does not parse, are refused here with the column named; every other check is
:func:`~bluerocktel.mediation.normalize.normalize_batch`'s. A stream that is not Arrow IPC nor
UTF-8 JSON, or an IPC stream without the columns above, is refused whole (``FormatError``).

Speed: the Arrow path is vectorized (no Python per row; JSON text is only made for the rows
that fail; time text of the usual 19-character shape is one Arrow cast). The JSON path runs Python per record: it serves quarantined records and hand-made
batches, not collection.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA, UTC_TS
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import CdrIssue, assume_local
from bluerocktel.settings import get_setting

FORMAT_NAME = "asterisk-db"
TIME_COLUMNS = ("calldate", "start", "answer", "end")
TEXT_COLUMNS = ("src", "dst", "accountcode", "channel", "dstchannel", "disposition", "uniqueid", "linkedid")
NUMBER_COLUMNS = ("duration", "billsec", "sequence", "id")
COLUMNS = TIME_COLUMNS + NUMBER_COLUMNS + TEXT_COLUMNS          # what the collector fetches
IGNORED = ("clid", "dcontext", "lastapp", "lastdata", "amaflags", "userfield", "peeraccount")
IPC_MAGIC = b"\xff\xff\xff\xff"
_NULL_TS = pa.scalar(None, UTC_TS)
_OFFSET = r"^(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
ISO = "%Y-%m-%d %H:%M:%S"


def parse_asterisk_db(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
                      country: str | None = None, options: Mapping | None = None,
                      ) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize fetched rows (module doc): a ``CDR_SCHEMA`` table and the issues."""
    if data.startswith(IPC_MAGIC):
        rows, lines, issues = _read_ipc(data, file_name), None, []
    else:
        rows, lines, issues = _read_json(data, file_name)
    table, found = normalize_rows(rows, file_name=file_name, source=source, timezone=timezone,
                                  country=country, lines=lines)
    issues = sorted(issues + found, key=lambda i: i.line)
    return table, issues


def schema_of(columns) -> str:
    """``legacy`` (a ``calldate`` column) or ``current`` (``start`` and ``end``)."""
    names = set(columns)
    if "calldate" in names:
        return "legacy"
    if {"start", "end"} <= names:
        return "current"
    raise FormatError("Asterisk CDR rows need a 'calldate' column (legacy schema) or 'start' and 'end' "
                      f"(current schema); got {', '.join(sorted(names)) or 'none'}")


def normalize_rows(rows: pa.Table, *, file_name: str, source: str, timezone: str | None = None,
                   country: str | None = None, lines: np.ndarray | None = None,
                   ) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize a table of fetched rows (columns of :data:`COLUMNS`); ``lines`` are their record
    numbers (default 1..n)."""
    timezone = timezone or get_setting("default_timezone")
    country = country or get_setting("default_country")
    n = rows.num_rows
    if n == 0:
        return CDR_SCHEMA.empty_table(), []
    schema = schema_of(rows.column_names)
    names = set(rows.column_names)
    if schema == "legacy" and "duration" not in names:
        raise FormatError(f"{file_name}: legacy Asterisk CDR rows need a 'duration' column (and 'billsec')")
    lines = np.arange(1, n + 1, dtype=np.int32) if lines is None else np.asarray(lines, dtype=np.int32)

    def raw_text(wanted: list[int]) -> dict[int, str]:
        idx = np.searchsorted(lines, np.asarray(wanted, dtype=np.int32))
        return {line: row_json(row) for line, row in zip(wanted, rows.take(pa.array(idx)).to_pylist())}

    # Times: Arrow timestamps (naive = wall time, with a zone = exact), whatever the input.
    times: dict[str, pa.Array] = {}
    refusals: list[tuple[str, object]] = []              # (reason prefix, bad mask), first one wins
    for name in TIME_COLUMNS:
        if name not in names:
            continue
        ts, unparseable, text = read_times(rows.column(name), timezone)
        times[name] = ts
        required = name == "calldate" or (schema == "current" and name in ("start", "end"))
        if unparseable is not None:
            refusals.append((f"unparseable {name}", unparseable, text))
        if required:
            refusals.append((f"{name} is empty", pc.is_null(ts), None))
    bad = pa.repeat(pa.scalar(False), n)
    for _, mask, _ in refusals:
        bad = pc.or_(bad, pc.fill_null(mask, False))
    issues: list[CdrIssue] = []
    if pc.any(bad).as_py():
        bad_idx = pc.indices_nonzero(bad).to_numpy()
        flags = [pc.take(mask, pa.array(bad_idx)).to_pylist() for _, mask, _ in refusals]
        shown = [pc.take(text, pa.array(bad_idx)).to_pylist() if text is not None else None
                 for _, _, text in refusals]
        raws = raw_text(lines[bad_idx].tolist())
        for k, i in enumerate(bad_idx):
            j = next(j for j, fl in enumerate(flags) if fl[k])
            reason = refusals[j][0] + (f": {shown[j][k]!r}" if shown[j] is not None else "")
            issues.append(CdrIssue(file_name, int(lines[i]), reason, raws[int(lines[i])]))
        good = pc.invert(bad)
        rows = rows.filter(good)
        times = {k: pc.filter(v, good) for k, v in times.items()}
        lines = lines[np.asarray(good.to_numpy(zero_copy_only=False), dtype=bool)]
        if rows.num_rows == 0:
            return CDR_SCHEMA.empty_table(), issues

    def text(name: str):
        if name not in names:
            return None
        col = rows.column(name)
        return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())

    raw: dict[str, object] = {"_line": pa.array(lines, pa.int32())}
    for ours, theirs in (("duration", "duration"), ("billsec", "billsec"), ("caller", "src"), ("callee", "dst"),
                         ("account_code", "accountcode"), ("channel", "channel"), ("dst_channel", "dstchannel"),
                         ("disposition", "disposition"), ("unique_id", "uniqueid")):
        if theirs in names:
            col = rows.column(theirs)
            raw[ours] = _whole_numbers_as_text(col) if ours in ("duration", "billsec") else text(theirs)
    if schema == "legacy":
        start = _utc(times["calldate"], timezone)
        raw["start"] = start
        raw["answer"] = _legacy_answer(start, rows, names)
    else:
        raw["start"] = times["start"]
        raw["end"] = times["end"]
        if "answer" in times:
            raw["answer"] = times["answer"]
    key: tuple[str, ...] = ("unique_id",)
    if "linkedid" in names and "sequence" in names:
        # Empty when there is no uniqueid, so that the fallback key applies (as in asterisk-csv).
        uniqueid = text("uniqueid") if "uniqueid" in names else pa.nulls(rows.num_rows, pa.string())
        has_id = pc.not_equal(pc.fill_null(uniqueid, ""), "")
        raw["_key_linkedid"] = pc.if_else(has_id, pc.fill_null(text("linkedid"), ""), "")
        raw["_key_sequence"] = pc.if_else(has_id, pc.fill_null(text("sequence"), ""), "")
        key = ("unique_id", "_key_linkedid", "_key_sequence")
    table, found = normalize_batch(pa.table(raw), file_name=file_name, source=source, timezone=timezone,
                                   country=country, key=key, raw_text=raw_text)
    return table, issues + found


def row_json(row: dict) -> str:
    """One fetched row as compact JSON (the quarantine's ``raw``; module doc)."""
    return json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False, separators=(",", ":"))


def _json_value(value):
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.isoformat(sep=" ")
    if isinstance(value, (int, str)) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)                    # Decimal, date, …


# --- times ------------------------------------------------------------------------------------

def read_times(col, timezone: str) -> tuple:
    """(timestamps, unparseable mask or None, the text shown for it) of a time column: Arrow
    timestamps as they are; text (module doc) as naive wall times, or as UTC when every value
    has an offset (both kinds in one column: all UTC, the wall times read in ``timezone``).
    Blank text and MySQL's zero date ``0000-00-00 …`` are null; a date that does not exist
    (30 February) does not parse."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_timestamp(col.type):
        return col, None, None
    if pa.types.is_date(col.type):
        return pc.cast(col, pa.timestamp("us")), None, None
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), pa.timestamp("us")), None, None
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    low, high = pc.min_max(pc.binary_length(col)).values()
    if low.as_py() == high.as_py() == 19:
        # The usual shape, YYYY-MM-DD HH:MM:SS (wall time): one vectorized cast, which refuses
        # the whole column if one value is not a real date-time (then the general path below).
        try:
            return pc.cast(col, pa.timestamp("us")), pa.repeat(pa.scalar(False), len(col)), col
        except pa.ArrowInvalid:
            pass
    text = pc.utf8_trim_whitespace(col)
    blank = pc.fill_null(pc.or_(pc.equal(text, ""), pc.starts_with(text, "0000-00-00")), True)
    # "YYYY-MM-DD HH:MM:SS" + "" or an offset, the fraction apart.
    iso = pc.replace_substring_regex(
        text, r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?", r"\1 \2")
    head = pc.utf8_slice_codeunits(iso, 0, 19)
    rest = pc.utf8_slice_codeunits(iso, 19, 64)
    naive = pc.strptime(head, format=ISO, unit="s", error_is_null=True)
    real = pc.fill_null(pc.equal(pc.strftime(naive, format=ISO), head), False)   # no 30 February
    has_offset = pc.fill_null(pc.match_substring_regex(rest, _OFFSET), False)
    ok = pc.and_(real, pc.or_(pc.equal(rest, ""), has_offset))
    naive = pc.if_else(ok, pc.cast(naive, pa.timestamp("us")), pa.scalar(None, pa.timestamp("us")))
    digits = pc.replace_substring_regex(rest, r"[^0-9]", "")
    hours = pc.cast(pc.if_else(pc.greater_equal(pc.binary_length(digits), 2),
                               pc.utf8_slice_codeunits(digits, 0, 2), "0"), pa.int64())
    minutes = pc.cast(pc.if_else(pc.greater_equal(pc.binary_length(digits), 4),
                                 pc.utf8_slice_codeunits(digits, 2, 4), "0"), pa.int64())
    sign = pc.if_else(pc.starts_with(rest, "-"), -1_000_000, 1_000_000)
    offset_us = pc.multiply(pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)), sign)
    exact = pc.subtract(pc.cast(naive, UTC_TS), pc.cast(offset_us, pa.duration("us")))
    exact_any = pc.any(pc.and_(has_offset, pc.invert(blank))).as_py()
    wall_any = pc.any(pc.and_(pc.invert(has_offset), pc.invert(blank))).as_py()
    if exact_any and wall_any:                           # both kinds in one column: all exact
        out = pc.if_else(has_offset, exact, _utc(naive, timezone))
    elif exact_any:
        out = exact
    else:
        out = naive
    # Fractional seconds (PostgreSQL timestamps may have them): kept to the microsecond.
    fraction = pc.replace_substring_regex(text, r"^[0-9-]{10}[T ][0-9:]{8}\.([0-9]{1,6})[0-9]*(Z|[+-].*)?$", r"\1")
    has_fraction = pc.fill_null(pc.match_substring_regex(fraction, r"^[0-9]{1,6}$"), False)
    micros = pc.cast(pc.utf8_rpad(pc.if_else(has_fraction, fraction, "0"), width=6, padding="0"), pa.int64())
    out = pc.add(out, pc.cast(micros, pa.duration("us")))
    out = pc.if_else(blank, pa.scalar(None, out.type), out)
    unparseable = pc.and_(pc.invert(blank), pc.is_null(out))
    return out, unparseable, col


def _utc(ts, timezone: str):
    """Exact UTC timestamps: a zone-aware column as is, a naive one read as wall time in
    ``timezone`` (an ambiguous fall-back time is its first occurrence; records module doc)."""
    if ts.type.tz is not None:
        return pc.cast(ts, UTC_TS)
    first, _ = assume_local(pc.cast(ts, pa.timestamp("us")), timezone)
    return pc.cast(first, UTC_TS)


def _legacy_answer(start, rows: pa.Table, names: set):
    """The answer time of legacy rows: start + duration − billsec when answered, else null."""
    duration, dur_ok = _whole_seconds(rows.column("duration")) if "duration" in names else (None, None)
    if "billsec" not in names or duration is None:
        return pa.nulls(rows.num_rows, UTC_TS)
    billsec, bill_ok = _whole_seconds(rows.column("billsec"))
    answered = pc.greater(billsec, 0)
    if "disposition" in names:
        disposition = pc.utf8_upper(pc.utf8_trim_whitespace(pc.fill_null(
            pc.cast(rows.column("disposition"), pa.string()), "")))
        answered = pc.or_(answered, pc.equal(disposition, "ANSWERED"))
    ok = pc.and_(answered, pc.and_(dur_ok, bill_ok))
    wait_us = pc.multiply(pc.subtract(duration, billsec), pa.scalar(1_000_000, pa.int64()))
    answer = pc.add(start, pc.cast(wait_us, pa.duration("us")))
    return pc.if_else(ok, answer, _NULL_TS)


def _whole_seconds(col) -> tuple:
    """(int64 values, ok mask) of a seconds column given as integers, decimals or text."""
    if pa.types.is_integer(col.type):
        return pc.cast(pc.fill_null(col, 0), pa.int64()), pc.is_valid(col)
    text = pc.utf8_trim_whitespace(pc.fill_null(_whole_numbers_as_text(col), ""))
    ok = pc.match_substring_regex(text, r"^-?[0-9]{1,12}$")
    return pc.cast(pc.if_else(ok, text, "0"), pa.int64()), ok


def _whole_numbers_as_text(col):
    """A numeric column as text the normalizer reads (``60.000`` of a DECIMAL becomes ``60``)."""
    if pa.types.is_integer(col.type):
        return col
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())                                  # DECIMAL, double: their text
    return pc.replace_substring_regex(col, r"^\s*(-?[0-9]+)\.0*\s*$", r"\1")


# --- reading ----------------------------------------------------------------------------------

def _read_ipc(data: bytes, file_name: str) -> pa.Table:
    try:
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise FormatError(f"{file_name}: damaged Arrow IPC stream ({exc})") from None
    unknown = sorted(set(table.column_names) - set(COLUMNS) - set(IGNORED))
    if unknown:
        raise FormatError(f"{file_name}: unknown column(s) {', '.join(map(repr, unknown))} in an Asterisk CDR "
                          f"stream; known: {', '.join(COLUMNS)}")
    schema_of(table.column_names)
    return table.select([c for c in table.column_names if c in COLUMNS])


def _read_json(data: bytes, file_name: str) -> tuple[pa.Table, np.ndarray, list[CdrIssue]]:
    """Rows of a JSON object, array or JSON lines (module doc): table, record numbers, issues."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{file_name}: neither an Arrow IPC stream nor UTF-8 JSON (byte {exc.start})") from None
    records: list[tuple[int, object, str]] = []           # (record number, value, raw text)
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line), line.rstrip("\r")))
            except ValueError as exc:
                records.append((number, exc, line.rstrip("\r")))
        if not records:
            raise FormatError(f"{file_name}: empty document, no Asterisk CDR rows") from None
    if isinstance(whole, dict):
        records = [(1, whole, _dump(whole))]
    elif isinstance(whole, list):
        records = [(k, value, _dump(value)) for k, value in enumerate(whole, start=1)]
    elif whole is not None:
        raise FormatError(f"{file_name}: expected JSON rows (an object, an array or JSON lines), "
                          f"not {type(whole).__name__}")
    issues: list[CdrIssue] = []
    good: list[tuple[int, dict]] = []
    allowed = set(COLUMNS) | set(IGNORED)
    for number, value, raw in records:
        if isinstance(value, ValueError):
            issues.append(CdrIssue(file_name, number, f"not JSON: {value}", raw))
        elif not isinstance(value, dict):
            issues.append(CdrIssue(file_name, number, f"row is not a JSON object: {raw[:80]}", raw))
        elif unknown := sorted(set(value) - allowed):
            issues.append(CdrIssue(file_name, number, f"unknown column(s): {', '.join(map(repr, unknown))}", raw))
        elif wrong := [k for k, v in value.items() if isinstance(v, (dict, list, bool))]:
            issues.append(CdrIssue(file_name, number,
                                   f"column {wrong[0]!r} must be text, a number or null: {_dump(value[wrong[0]])}",
                                   raw))
        else:
            good.append((number, value))
    present = [c for c in COLUMNS if any(c in row for _, row in good)]
    columns = {c: pa.array([_json_text(row.get(c)) for _, row in good], pa.string()) for c in present}
    if good and not ({"calldate"} <= set(present) or {"start", "end"} <= set(present)):
        # Name the missing time column in each record's issue (schema_of would refuse the whole).
        missing = "calldate" if "start" not in present else "end"
        issues += [CdrIssue(file_name, number, f"{missing} is empty", _dump(row)) for number, row in good]
        good, columns = [], {}
    lines = np.array([number for number, _ in good], dtype=np.int32)
    return pa.table(columns) if columns else pa.table({}), lines, issues


def _json_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dump(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


FORMATS = [FormatSpec(
    FORMAT_NAME, parse_asterisk_db,
    description="rows of an Asterisk CDR table (legacy calldate or current start/answer/end schema), "
                "as an Arrow IPC stream from the database collector or JSON",
    fingerprint="same as asterisk-csv: source + uniqueid (+ linkedid + sequence when the table has both); "
                "without uniqueid: source + start + src + dst + channel + dstchannel + duration + billsec",
    line_based=False,
    extensions=(".arrows", ".jsonl"),
    raw_kind="document",
)]
