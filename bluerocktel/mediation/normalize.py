"""The one vectorized normalizer every format parser ends with.

A parser extracts its records into a *raw batch*: an Arrow table with one row per record and
some of the standard columns below, then calls :func:`normalize_batch`, which checks and
converts the whole batch at once (Arrow compute, SHA-256 in DuckDB) and returns the
``CDR_SCHEMA`` rows plus one :class:`~bluerocktel.mediation.records.CdrIssue` per bad record.

Raw batch columns (only ``_line`` and ``start`` are required):

============== ===============================================================================
``_line``      int32, the record's 1-based line (or record number) in the file
``_raw``       string, the record's raw text for the quarantine (else ``raw_text`` is asked)
``_offset``    int64, byte offset of a binary record (else null)
``start``      string in ``time_format`` (local wall time in the source's time zone unless the
               format carries an offset), or an Arrow timestamp (with a time zone: exact;
               without: local wall time)
``answer``     same; null or ``""`` (or epoch 0) when the call was not answered; when the
               column is absent but ``billsec`` is given, end − billsec for billsec > 0
``end``        same; when absent, start + duration
``duration``   seconds, string or integer; when absent, end − start
``billsec``    seconds, string or integer; when absent, end − answer (0 when unanswered)
``caller``     calling number, raw (normalized to E.164 with the source's national rules)
``callee``     called number, raw
``account_code``, ``channel``, ``dst_channel``, ``unique_id``: text kept as is
``disposition`` ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION (aliases below); when absent,
               ANSWERED if the call has an answer time or billsec > 0, else NO ANSWER
``direction``  out, in, internal; when absent, from the numbers (see ``numbers``)
``call_type``  voice, sms, data (default voice)
``units``      messages for sms (default 1), bytes for data (default 0); 0 for voice
``_key_*``     extra text columns that only serve the record key
============== ===============================================================================

``time_format`` is a ``strptime`` format, or ``"epoch"`` / ``"epoch_ms"`` / ``"epoch_us"``
(numbers since 1970-01-01 UTC; 0 means "no time"), or ``"iso"`` (ISO-8601 with an optional
``Z``/``±HH:MM`` offset; without one, local wall time).

The record key (``cdr_id``) is the SHA-256 of the source and the values of ``key`` (column
names of the normalized row, ``_key_*`` columns, or ``start_at`` as µs since the epoch). When
every part of a record's key is empty, the fallback key is used: start (µs), caller, callee,
channel, dst_channel, duration and billsec.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.lake import CDR_SCHEMA, UTC_TS
from bluerocktel.mediation.numbers import classify_direction_array, normalize_number_array
from bluerocktel.mediation.records import (
    CdrIssue,
    assume_local,
    cdr_ids_sql,
    pick_utc_times,
    read_local_times,
)
from bluerocktel.vocabulary import CallType, Disposition

TEXT_FIELDS = ("caller", "callee", "account_code", "channel", "dst_channel", "unique_id")
DISPOSITION_ALIASES = {
    "NOANSWER": "NO ANSWER", "NO_ANSWER": "NO ANSWER", "NOT ANSWERED": "NO ANSWER",
    "UNANSWERED": "NO ANSWER", "ANSWER": "ANSWERED", "BUSY_HERE": "BUSY", "FAIL": "FAILED",
}
FALLBACK_KEY = ("start_at", "caller", "callee", "channel", "dst_channel", "duration_s", "billsec_s")
_INT = r"^\s*-?[0-9]{1,9}\s*$"
_NULL_TS = pa.scalar(None, UTC_TS)
MAX_SPAN_S = 2**31 - 1
# Times a CDR may carry: anything outside is a broken record, not a call (and not a month of the lake).
EARLIEST = pa.scalar(dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc), UTC_TS)
LATEST = pa.scalar(dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc), UTC_TS)


def normalize_batch(raw: pa.Table, *, file_name: str, source: str, timezone: str, country: str,
                    time_format: str = "%Y-%m-%d %H:%M:%S", key: Sequence[str] = ("unique_id",),
                    raw_text: Callable[[list[int]], dict[int, str]] | None = None,
                    ) -> tuple[pa.Table, list[CdrIssue]]:
    """Check and convert a raw batch (module doc): the ``CDR_SCHEMA`` table and the issues."""
    n = raw.num_rows
    if n == 0:
        return CDR_SCHEMA.empty_table(), []
    names = set(raw.column_names)

    def text(name: str) -> pa.ChunkedArray:
        if name not in names:
            return pa.chunked_array([pa.repeat(pa.scalar(""), n)])
        col = raw.column(name)
        if not pa.types.is_string(col.type):
            col = pc.cast(col, pa.string())
        return pc.fill_null(col, "")

    checks: list[tuple[str, object, str | None]] = []      # (reason, bad mask, raw column shown)

    start = _times(raw, "start", time_format, timezone)
    answer = _times(raw, "answer", time_format, timezone) if "answer" in names else (
        pa.nulls(n, UTC_TS), pa.nulls(n, UTC_TS))
    has_end = "end" in names
    end = _times(raw, "end", time_format, timezone) if has_end else None

    duration, dur_ok = _seconds(raw, "duration")
    billsec, bill_ok = _seconds(raw, "billsec")
    if duration is None and end is None:
        raise ValueError("a raw CDR batch needs an end time or a duration column")
    if duration is not None:
        checks.append(("unparseable duration", pc.invert(dur_ok), "duration"))
    if billsec is not None:
        checks.append(("unparseable billsec", pc.invert(bill_ok), "billsec"))

    if end is not None and duration is not None:
        start_at, answer_at, end_at = pick_utc_times(start, answer, end, duration)
    else:
        start_at, answer_at, _ = pick_utc_times(start, answer, start, pa.repeat(pa.scalar(0), n))
        if end is None:
            end_at = pc.add(start_at, pc.multiply(pc.cast(duration, pa.int64()),
                                                  pa.scalar(1_000_000, pa.int64())).cast(pa.duration("us")))
        else:
            end_at = end[0]
    if "answer" not in names and billsec is not None:
        # No answer time given: a call with billable seconds was answered billsec before its end.
        answer_at = pc.if_else(_f(pc.greater(billsec, 0)),
                               pc.subtract(end_at, pc.cast(pc.multiply(pc.cast(billsec, pa.int64()), 1_000_000),
                                                           pa.duration("us"))), _NULL_TS)
    answered = pc.is_valid(answer_at)
    if duration is None:
        duration = _span_s(start_at, end_at)
    if billsec is None:
        billsec = pc.if_else(answered, _span_s(answer_at, end_at), pa.scalar(0, pa.int32()))

    bill_col = "billsec" if "billsec" in names else "answer"       # the value a derived one came from
    # A derived duration or billsec is negative only when end < start or end < answer: those
    # checks below name it better.
    if "duration" in names:
        checks.append(("negative duration", _f(pc.less(duration, 0)), "duration"))
    if "billsec" in names:
        checks.append(("negative billsec", _f(pc.less(billsec, 0)), "billsec"))
    checks += [
        ("unparseable start time", pc.is_null(start_at), "start"),
        ("start time out of range (1990-2099)", _f(pc.or_(pc.less(start_at, EARLIEST),
                                                          pc.greater_equal(start_at, LATEST))), "start"),
        ("end time out of range (1990-2099)", _f(pc.greater_equal(end_at, LATEST)), "end" if has_end else "duration"),
        ("call longer than 68 years", pc.and_(pc.is_null(duration), pc.is_valid(end_at)), "end"),
        ("unparseable answer time", pc.and_(_present(raw, "answer"), pc.invert(answered))
         if "answer" in names else pa.repeat(pa.scalar(False), n), "answer"),
        ("unparseable end time", pc.is_null(end_at), "end" if has_end else "duration"),
        ("billsec > duration", _f(pc.greater(billsec, duration)), bill_col),
        ("end before start", _f(pc.less(end_at, start_at)), "end"),
        ("answer before start", _f(pc.less(answer_at, start_at)), "answer"),
        ("answer after end", _f(pc.greater(answer_at, end_at)), "answer"),
        ("billsec > 0 without answer time", _f(pc.and_(pc.invert(answered), pc.greater(billsec, 0))), bill_col),
    ]

    if "disposition" in names:
        disposition = pc.utf8_upper(pc.utf8_trim_whitespace(text("disposition")))
        for alias, name in DISPOSITION_ALIASES.items():
            disposition = pc.if_else(pc.equal(disposition, alias), name, disposition)
        checks.append(("unknown disposition",
                       pc.invert(pc.is_in(disposition, pa.array([d.value for d in Disposition]))), "disposition"))
    else:
        disposition = pc.if_else(pc.or_(answered, _f(pc.greater(billsec, 0))),
                                 Disposition.ANSWERED.value, Disposition.NO_ANSWER.value)

    call_type = pc.utf8_lower(pc.utf8_trim_whitespace(text("call_type"))) if "call_type" in names else None
    if call_type is not None:
        call_type = pc.if_else(pc.equal(call_type, ""), CallType.VOICE.value, call_type)
        checks.append(("unknown call type",
                       pc.invert(pc.is_in(call_type, pa.array([c.value for c in CallType]))), "call_type"))
    else:
        call_type = pa.chunked_array([pa.repeat(pa.scalar(CallType.VOICE.value), n)])
    units, units_ok = _integers(raw, "units", pa.int64())
    default_units = pc.if_else(pc.equal(call_type, CallType.SMS.value), pa.scalar(1, pa.int64()),
                               pa.scalar(0, pa.int64()))
    if units is None:
        units = default_units
    else:
        given = pc.not_equal(pc.utf8_trim_whitespace(text("units")), "")   # null or blank: the default
        units = pc.if_else(given, units, default_units)
        checks.append(("unparseable units", pc.and_(given, pc.invert(units_ok)), "units"))
        checks.append(("negative units", _f(pc.less(units, 0)), "units"))

    if "direction" in names:
        direction_raw = pc.utf8_lower(pc.utf8_trim_whitespace(text("direction")))
        checks.append(("unknown direction", pc.invert(pc.is_in(
            direction_raw, pa.array(["in", "out", "internal", ""]))), "direction"))
    else:
        direction_raw = None

    bad_any = None
    for _, mask, _ in checks:
        bad_any = mask if bad_any is None else pc.or_(bad_any, mask)
    issues: list[CdrIssue] = []
    if pc.any(bad_any).as_py():
        bad_idx = pc.indices_nonzero(bad_any)
        lines = pc.take(raw.column("_line"), bad_idx).to_pylist()
        offsets = (pc.take(raw.column("_offset"), bad_idx).to_pylist() if "_offset" in names
                   else [None] * len(lines))
        flags = [pc.take(mask, bad_idx).to_pylist() for _, mask, _ in checks]
        shown = {c: pc.take(text(c), bad_idx).to_pylist() for _, _, c in checks if c}
        if "_raw" in names:
            raws = pc.take(text("_raw"), bad_idx).to_pylist()
        elif raw_text is not None:
            found = raw_text(lines)
            raws = [found.get(line, "") for line in lines]
        else:
            raws = [""] * len(lines)
        for k, line in enumerate(lines):
            reason, column = next((r, c) for (r, _, c), fl in zip(checks, flags) if fl[k])
            value = shown[column][k] if column else ""
            issues.append(CdrIssue(file_name, line, f"{reason}: {value!r}", raws[k], offsets[k]))
        good = pc.invert(bad_any)
        keep = lambda a: pc.filter(a, good)  # noqa: E731
    else:
        keep = lambda a: a  # noqa: E731

    caller = normalize_number_array(keep(text("caller")), country)
    callee = normalize_number_array(keep(text("callee")), country)
    m = len(caller)
    direction = classify_direction_array(caller, callee)
    if direction_raw is not None:
        given = keep(direction_raw)
        direction = pc.if_else(pc.equal(given, ""), direction, given)
    unique_id = keep(text("unique_id"))
    columns = {
        "source": pa.repeat(pa.scalar(source), m),
        "source_file": pa.repeat(pa.scalar(file_name), m),
        "source_line": keep(pc.cast(raw.column("_line"), pa.int32())),
        "start_at": keep(start_at),
        "answer_at": keep(answer_at),
        "end_at": keep(end_at),
        "duration_s": keep(pc.cast(duration, pa.int32())),
        "billsec_s": keep(pc.cast(billsec, pa.int32())),
        "caller": caller,
        "callee": callee,
        "account_code": keep(text("account_code")),
        "channel": keep(text("channel")),
        "dst_channel": keep(text("dst_channel")),
        "disposition": keep(disposition),
        "direction": direction,
        "call_type": keep(call_type),
        "units": keep(units),
        "unique_id": pc.if_else(pc.not_equal(unique_id, ""), unique_id, pa.scalar(None, pa.string())),
    }
    for name in raw.column_names:
        if name.startswith("_key_"):
            columns[name] = keep(text(name))
    table = pa.table(columns)
    ids = cdr_ids_sql(key_sql(key), "batch", batch=table)
    table = table.add_column(0, "cdr_id", ids)
    return table.select(CDR_SCHEMA.names).cast(CDR_SCHEMA), issues


def key_sql(key: Sequence[str]) -> str:
    """The DuckDB expression of the record key (module doc) over a normalized batch."""
    def part(name: str) -> str:
        if name == "start_at":
            return "CAST(epoch_us(start_at) AS VARCHAR)"
        if name in ("duration_s", "billsec_s", "units", "source_line"):
            return f"CAST({name} AS VARCHAR)"
        return f"coalesce({name}, '')"

    fallback = "concat_ws(chr(31), source, " + ", ".join(part(k) for k in FALLBACK_KEY) + ")"
    if not key:
        return fallback
    given = "concat_ws(chr(31), source, " + ", ".join(part(k) for k in key) + ")"
    empty = " AND ".join(f"{part(k)} = ''" for k in key if k != "start_at") or "false"
    return f"CASE WHEN {empty} THEN {fallback} ELSE {given} END"


def _f(mask):
    return pc.fill_null(mask, False)


def _present(raw: pa.Table, name: str):
    """Rows where column ``name`` holds a value (not null, not blank, not epoch 0)."""
    col = raw.column(name)
    if pa.types.is_string(col.type):
        trimmed = pc.utf8_trim_whitespace(pc.fill_null(col, ""))
        return pc.and_(pc.not_equal(trimmed, ""), pc.not_equal(trimmed, "0"))
    if pa.types.is_timestamp(col.type):
        return pc.is_valid(col)
    return _f(pc.not_equal(col, 0))


def _times(raw: pa.Table, name: str, time_format: str, timezone: str) -> tuple:
    """(first, second) UTC readings of a time column (see records.read_local_times)."""
    col = raw.column(name)
    if pa.types.is_timestamp(col.type):
        if col.type.tz is not None:
            utc = pc.cast(col, UTC_TS)
            return utc, utc
        return _utc(assume_local(pc.cast(col, pa.timestamp("us")), timezone))
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    col = pc.utf8_trim_whitespace(pc.fill_null(col, ""))
    if time_format in ("epoch", "epoch_ms", "epoch_us"):
        scale = {"epoch": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}[time_format]
        digits = {"epoch": 11, "epoch_ms": 14, "epoch_us": 17}[time_format]     # up to year ~5138
        ok = pc.match_substring_regex(col, rf"^[0-9]{{1,{digits}}}$")
        number = pc.cast(pc.if_else(ok, col, "0"), pa.int64())
        valid = pc.and_(ok, pc.greater(number, 0))
        ts = pc.multiply_checked(number, pa.scalar(scale, pa.int64())).cast(UTC_TS)
        ts = pc.if_else(valid, ts, _NULL_TS)
        return ts, ts
    if time_format == "iso":
        return _iso_times(col, timezone)
    return _utc(read_local_times(col, time_format, timezone))


def _utc(readings: tuple) -> tuple:
    """Both readings as UTC µs timestamps (one array when they are the same)."""
    first, second = readings
    first_utc = pc.cast(first, UTC_TS)
    return (first_utc, first_utc) if second is first else (first_utc, pc.cast(second, UTC_TS))


def _iso_times(col, timezone: str) -> tuple:
    """ISO-8601 text: with an offset (``Z``, ``+HH:MM``, ``+HHMM``) exact, without it local."""
    iso = pc.replace_substring_regex(col, r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?", r"\1 \2")
    has_offset = pc.match_substring_regex(iso, r"(Z|[+-]\d{2}:?\d{2})$")
    wall = pc.utf8_slice_codeunits(iso, 0, 19)
    first, second = _utc(read_local_times(pc.if_else(has_offset, "", wall), "%Y-%m-%d %H:%M:%S", timezone))
    offset_text = pc.replace_substring_regex(
        pc.replace_substring_regex(iso, r"Z$", "+0000"), r"([+-]\d{2}):?(\d{2})$", r"\1\2")
    exact = pc.strptime(pc.if_else(has_offset, offset_text, ""), format="%Y-%m-%d %H:%M:%S%z", unit="s",
                        error_is_null=True)
    exact = pc.cast(exact, UTC_TS)
    return pc.if_else(has_offset, exact, first), pc.if_else(has_offset, exact, second)


def _integers(raw: pa.Table, name: str, typ) -> tuple:
    """(values, ok mask) of an integer column given as text or numbers; (None, None) if absent."""
    if name not in raw.column_names:
        return None, None
    col = raw.column(name)
    if pa.types.is_integer(col.type):
        filled = pc.fill_null(col, 0)
        return pc.cast(filled, typ), pc.is_valid(pc.fill_null(col, 0))
    if pa.types.is_floating(col.type):
        ok = _f(pc.equal(pc.floor(col), col))
        return pc.cast(pc.if_else(ok, col, 0), typ), ok
    col = pc.utf8_trim_whitespace(pc.fill_null(pc.cast(col, pa.string()), ""))
    pattern = _INT if typ == pa.int32() else r"^\s*-?[0-9]{1,18}\s*$"
    ok = pc.match_substring_regex(col, pattern)
    return pc.cast(pc.if_else(ok, col, "0"), typ), ok


def _seconds(raw: pa.Table, name: str) -> tuple:
    return _integers(raw, name, pa.int32())


def _span_s(a, b):
    """Whole seconds from ``a`` to ``b``, int32; null where either is null or the span does not fit
    (times decades apart: the range checks then name the record's problem)."""
    us = pc.subtract(pc.cast(pc.cast(b, UTC_TS), pa.int64()), pc.cast(pc.cast(a, UTC_TS), pa.int64()))
    seconds = pc.divide(us, pa.scalar(1_000_000, pa.int64()))
    fits = pc.fill_null(pc.less_equal(pc.abs(seconds), MAX_SPAN_S), False)
    return pc.cast(pc.if_else(fits, seconds, pa.scalar(None, pa.int64())), pa.int32())
