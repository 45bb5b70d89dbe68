"""3CX CDR output (``3cx``): the call records 3CX (v16, v18, v20) writes to a file or a socket.

3CX's CDR service (Management Console, CDR settings: "Configure CDR output fields") writes
one comma-separated line per call leg, with the fields the operator chose, in the order chosen,
and no header. The known fields (:data:`FIELDS`) are ``historyid``, ``callid``, ``duration``,
``time-start``, ``time-answered``, ``time-end``, ``reason-terminated``, ``from-no``, ``to-no``,
``from-dn``, ``to-dn``, ``dial-no``, ``reason-changed``, ``final-number``, ``final-dn``,
``bill-code``, ``bill-rate``, ``bill-cost``, ``bill-name``, ``chain``, ``from-type``,
``to-type``, ``final-type``, ``from-dispname``, ``to-dispname``, ``final-dispname``,
``missed-queue-calls``. Example (v18, the order above)::

    Call 612504,00000C21DE5C2470_6531,00:05:36,2026/10/05 13:33:54,2026/10/05 13:33:55,
    2026/10/05 13:39:31,TerminatedBySrc,+33478123456,Ext.960,10021,960,960,…

Column order: the first non-blank line is a header when at least two of its fields are known
field names (``_`` and ``-`` alike, any case); it then gives the order (and wins over the
option). Otherwise the source option ``columns`` gives it (a list of field names, or one
comma-separated string); with neither, the file is refused
(:class:`~bluerocktel.errors.FormatError`) with the fix: set the source option ``columns``.
The order must hold ``time-start``, ``time-answered``, ``time-end`` or ``duration``,
``from-no``, and ``to-no`` or ``dial-no``. Unknown field names are columns that are ignored.

Lines: fields are CSV (a field may be ``"quoted"``, a ``"`` doubled inside); a line with another
field count than the order is an issue. 3CX's CDR service puts ``Call `` before each record
(``Call 612504,…``): a leading ``Call `` is dropped from the first field unless that field is free
text (a display name, ``bill-name``, ``chain``, ``reason-*``). A blank line is skipped and not
counted.

Times: ``YYYY/MM/DD HH:MM:SS`` (or with ``-``), **UTC** by default (3CX v18 and later write UTC);
the source option ``local_times: true`` reads them in the source's time zone instead (3CX v16 or
a server set up so), and ``time_format`` (a strptime format) reads another layout.
``time-answered`` empty means unanswered. Duration = time-end − time-start; billsec =
time-end − time-answered (0 when unanswered). 3CX's own ``duration`` field (the talk time,
``HH:MM:SS`` or plain seconds) is only used when the order has no ``time-end``: end =
time-answered (else time-start) + duration; it is then an issue when unreadable.

Numbers: ``from-no`` is the caller, ``to-no`` (else ``dial-no``) the callee; a 3CX DN designation
(``Ext.960``, ``VMail.800``: letters, a dot, digits) becomes the extension number (``960``);
numbers are normalized to E.164 with the source's national rules. ``bill-code`` (a billing code
keyed after the number) is the account code; ``from-dn`` / ``to-dn`` (the 3CX DNs, e.g. the
trunk's ``10021``) are the channel and dst_channel.

Direction from ``from-type`` / ``to-type`` when both are given (any case): a type naming a line
(``Line``, ``external_line``), a ``provider`` or ``external`` is the outside world; outside →
inside ``in``, inside → outside ``out``, outside → outside ``out`` (a call forwarded to the
outside), inside → inside ``internal``. Without both types, from the numbers
(:mod:`bluerocktel.mediation.numbers`).

Disposition: ``ANSWERED`` when time-answered is given; otherwise from ``reason-terminated``
(any case; v16/v18 names and v20 names): ``TargetBusy``, ``busy`` → BUSY; ``RouteBusy`` (no trunk
channel free) → CONGESTION; ``Failed``, ``Failed_*`` (but ``Failed_Cancelled``),
``NoRouteExists``, ``RouteNotFound``, ``TargetNotFound``, ``no_route``, ``not_found``,
``declined``, ``rejected`` → FAILED (a rejected call is FAILED, as in the ``cucm`` and
FreeSWITCH formats); anything else (``TerminatedBySrc``, ``TerminatedByDst``,
``src_participant_terminated``, ``Failed_Cancelled``, ``cancelled``, ``NoAnswerTimeout``,
``timeout``, ``Redirected``, ``continued_in``, ``polling``, empty, unknown) → NO ANSWER.

Record id: each line is one call leg. 3CX repeats ``historyid`` and ``callid`` on the legs of a
call (transfers, queue polling), so the id is **source + historyid + callid + start + caller +
callee** (the same line sent twice is one record; two legs are two). ``unique_id`` is the
``callid`` (else the ``historyid``).

Large files: :func:`header_line_count` tells the importer whether a file has its header line,
which is then repeated at the head of every slice of a file larger than
``BLUEROCKTEL_IMPORT_CHUNK_MB`` (a file without one is cut as it is).

How it is fast: chunks cut at line ends are parsed by ``pyarrow.csv`` on worker threads and
normalized there (:func:`~bluerocktel.mediation.normalize.normalize_batch`); lines of another
field count are re-read with the ``csv`` module (exact path). ``import_cdr_file`` of 1M lines
(27 fields, 244 MB, ``benchmarks/cdrgen/threecx.py``): 10.2 s wall, 5.6 CPU-s on 2 cores shared
with other jobs (load about 6, median of 3; ``asterisk-csv`` in the same conditions: 8.6 s,
4.3 CPU-s).
"""

from __future__ import annotations

from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.formats.freeswitch import (
    chunk_bounds,
    chunk_line_texts,
    csv_fields,
    merge_chunks,
    read_chunk,
    run_chunks,
)
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import ISO_SECONDS, CdrIssue
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import Disposition

FIELDS = ("historyid", "callid", "duration", "time-start", "time-answered", "time-end", "reason-terminated",
          "from-no", "to-no", "from-dn", "to-dn", "dial-no", "reason-changed", "final-number", "final-dn",
          "bill-code", "bill-rate", "bill-cost", "bill-name", "chain", "from-type", "to-type", "final-type",
          "from-dispname", "to-dispname", "final-dispname", "missed-queue-calls")
USED = ("historyid", "callid", "duration", "time-start", "time-answered", "time-end", "reason-terminated",
        "from-no", "to-no", "dial-no", "from-dn", "to-dn", "bill-code", "from-type", "to-type")
FREE_TEXT = ("from-dispname", "to-dispname", "final-dispname", "bill-name", "chain", "reason-terminated",
             "reason-changed", "missed-queue-calls")
KEY = ("_key_historyid", "_key_callid", "start_at", "caller", "callee")

REASON_BUSY = ("targetbusy", "busy", "userbusy")
REASON_CONGESTION = ("routebusy",)
REASON_FAILED = ("failed", "norouteexists", "routenotfound", "targetnotfound", "no_route", "not_found",
                 "declined", "rejected")
OUTSIDE_TYPE = r"line|provider|external"
_DN = r"^[A-Za-z][A-Za-z_]*\.([0-9*#]+)$"
_HMS = r"^(?P<h>[0-9]{1,6}):(?P<m>[0-5][0-9]):(?P<s>[0-5][0-9])$"


def parse_3cx(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
              country: str | None = None, options: Mapping | None = None) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize 3CX CDR output lines (module doc): a ``CDR_SCHEMA`` table and the issues."""
    options = options or {}
    country = country or get_setting("default_country")
    zone = (timezone or get_setting("default_timezone")) if options.get("local_times") else "UTC"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    pos, line = 0, 1
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        if data[pos:end].strip():
            break
        pos, line = end + 1, line + 1
    else:
        return CDR_SCHEMA.empty_table(), []
    header = header_columns(data[pos:end].decode("utf-8", "replace"))
    if header is not None:
        columns, offset, first_line = header, end + 1, line + 1
    else:
        columns, offset, first_line = option_columns(options, file_name), 0, 1
    check_columns(columns, file_name, "the header line" if header is not None else "the source option columns")
    where = {name: columns.index(name) for name in USED if name in columns}
    strip_call = columns[0] not in FREE_TEXT
    time_format = options.get("time_format")

    def one_chunk(start: int, end: int, first: int):
        table, rejected = read_chunk(data, start, end, first, len(columns), sorted(set(where.values())),
                                     quote_char='"')
        issues: list[CdrIssue] = []
        slow = []
        for number, text in rejected:
            if not text.strip():
                continue
            fields = csv_fields(text)
            if isinstance(fields, str):
                issues.append(CdrIssue(file_name, number, fields, text))
            elif len(fields) != len(columns):
                issues.append(CdrIssue(file_name, number, f"wrong field count: {len(fields)} (expected {len(columns)} "
                                                          f"from {'the header' if header else 'the column order'})",
                                       text))
            else:
                slow.append((number, fields))
        if slow:
            table = pa.concat_tables([table, pa.table({
                **{f"c{k}": pa.array([f[k] for _, f in slow], pa.string()) for k in sorted(set(where.values()))},
                "_line": pa.array([n for n, _ in slow], pa.int32())})])
            table = table.take(pc.sort_indices(table.column("_line")))
        if table.num_rows == 0:
            return CDR_SCHEMA.empty_table(), issues
        fields = {name: pc.utf8_trim_whitespace(table.column(f"c{k}")) for name, k in where.items()}
        if strip_call and columns[0] in fields:
            fields[columns[0]] = pc.replace_substring_regex(fields[columns[0]], r"^Call ", "")
        raw_text = lambda wanted: chunk_line_texts(data, start, first, wanted)  # noqa: E731
        normalized, more = _normalize(fields, table.column("_line"), file_name=file_name, source=source,
                                      timezone=zone, country=country, time_format=time_format, raw_text=raw_text)
        return normalized, issues + more

    return merge_chunks(run_chunks(data, chunk_bounds(data, offset, first_line), one_chunk))


def header_line_count(data: bytes, options: Mapping | None = None) -> int:
    """1 when the first line of ``data`` is a header line (module doc), else 0: the header lines
    an importer should repeat at the head of each slice of this file."""
    first = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    end = first.find(b"\n")
    return 1 if header_columns(first[:end if end >= 0 else len(first)].decode("utf-8", "replace")) else 0


def header_columns(text: str) -> list[str] | None:
    """The field names of a header line, or None when ``text`` is not one (module doc)."""
    names = [_field_name(f) for f in text.rstrip("\r").split(",")]
    return names if sum(n in FIELDS for n in names) >= 2 else None


def option_columns(options: Mapping, file_name: str) -> list[str]:
    given = options.get("columns")
    if given is None:
        raise FormatError(f"{file_name}: 3CX CDR lines carry no field names and the file has no header line: set "
                          "the source option columns to the CDR output fields of the 3CX, in order (e.g. "
                          '["historyid", "callid", "duration", "time-start", "time-answered", "time-end", …])')
    if isinstance(given, str):
        given = given.split(",")
    if not isinstance(given, (list, tuple)) or not all(isinstance(c, str) and c.strip() for c in given):
        raise FormatError(f"{file_name}: source option columns must be a list of 3CX field names, not {given!r}")
    return [_field_name(c) for c in given]


def check_columns(columns: list[str], file_name: str, origin: str) -> None:
    needs = {"time-start": ("time-start",), "time-answered": ("time-answered",),
             "time-end or duration": ("time-end", "duration"), "from-no": ("from-no",),
             "to-no or dial-no": ("to-no", "dial-no")}
    missing = [role for role, choices in needs.items() if not any(c in columns for c in choices)]
    if missing:
        raise FormatError(f"{file_name}: {origin} lacks the 3CX field(s) {', '.join(missing)} "
                          f"(columns: {', '.join(columns)})")


def _field_name(text: str) -> str:
    return text.strip().strip('"').strip().lower().replace("_", "-")


def _normalize(fields: dict, lines, *, file_name: str, source: str, timezone: str, country: str,
               time_format: str | None, raw_text) -> tuple[pa.Table, list[CdrIssue]]:
    """The fields of a chunk (trimmed text by 3CX name) to ``CDR_SCHEMA`` rows and issues."""
    n = len(lines)

    def given(name: str):
        return fields[name] if name in fields else pa.chunked_array([pa.repeat(pa.scalar(""), n)])

    def times(name: str):
        value = given(name)
        return value if time_format else pc.replace_substring(value, "/", "-")

    fmt = time_format or ISO_SECONDS
    answered = pc.not_equal(given("time-answered"), "")
    raw = {"_line": lines, "start": times("time-start"), "answer": times("time-answered")}
    issues: list[CdrIssue] = []
    if "time-end" in fields:
        raw["end"] = times("time-end")
    else:
        seconds, ok = _duration_seconds(given("duration"))
        if not pc.all(ok).as_py():
            bad = pc.indices_nonzero(pc.invert(ok))
            bad_lines = pc.take(lines, bad).to_pylist()
            shown = pc.take(given("duration"), bad).to_pylist()
            texts = raw_text(bad_lines)
            issues = [CdrIssue(file_name, line, f"unparseable duration: {value!r}", texts[line])
                      for line, value in zip(bad_lines, shown)]
            keep = ok
            raw = {k: pc.filter(v, keep) for k, v in raw.items()}
            fields = {k: pc.filter(v, keep) for k, v in fields.items()}
            seconds, answered, lines = pc.filter(seconds, keep), pc.filter(answered, keep), pc.filter(lines, keep)
            n = len(lines)
            if n == 0:
                return CDR_SCHEMA.empty_table(), issues
        start = pc.strptime(raw["start"], format=fmt, unit="s", error_is_null=True)
        answer = pc.strptime(raw["answer"], format=fmt, unit="s", error_is_null=True)
        end = pc.add(pc.if_else(answered, answer, start), pc.cast(seconds, pa.duration("s")))
        raw["end"] = pc.fill_null(pc.strftime(end, format=fmt), "")

    callee = _extension(given("to-no"))
    if "dial-no" in fields:
        callee = pc.if_else(pc.equal(callee, ""), _extension(given("dial-no")), callee)
    historyid, callid = given("historyid"), given("callid")
    raw.update({
        "caller": _extension(given("from-no")),
        "callee": callee,
        "account_code": given("bill-code"),
        "channel": given("from-dn"),
        "dst_channel": given("to-dn"),
        "unique_id": pc.if_else(pc.not_equal(callid, ""), callid, historyid),
        "_key_historyid": historyid,
        "_key_callid": callid,
    })
    if "from-type" in fields and "to-type" in fields:
        raw["direction"] = _direction(fields["from-type"], fields["to-type"])
    if "reason-terminated" in fields:
        raw["disposition"] = pc.if_else(answered, Disposition.ANSWERED.value,
                                        _unanswered_disposition(fields["reason-terminated"]))
    table, more = normalize_batch(pa.table(raw), file_name=file_name, source=source, timezone=timezone,
                                  country=country, time_format=fmt, key=KEY, raw_text=raw_text)
    return table, sorted(issues + more, key=lambda i: i.line)


def _duration_seconds(text) -> tuple:
    """(seconds as int64, readable mask) of ``HH:MM:SS`` or plain-seconds text; empty is 0."""
    hms = pc.extract_regex(text, _HMS)
    plain = pc.match_substring_regex(text, r"^[0-9]{1,9}$")
    empty = pc.equal(text, "")

    def part(name: str):
        return pc.cast(pc.if_else(pc.is_valid(hms), pc.struct_field(hms, name), "0"), pa.int64())

    clock = pc.add(pc.add(pc.multiply(part("h"), 3600), pc.multiply(part("m"), 60)), part("s"))
    seconds = pc.if_else(plain, pc.cast(pc.if_else(plain, text, "0"), pa.int64()),
                         pc.if_else(pc.is_valid(hms), clock, pa.scalar(0, pa.int64())))
    return seconds, pc.or_(pc.or_(pc.is_valid(hms), plain), empty)


def _extension(numbers):
    """3CX DN designations (``Ext.960``) reduced to the DN number; other values unchanged."""
    return pc.replace_substring_regex(numbers, _DN, r"\1")


def _direction(from_type, to_type):
    outside_from = pc.match_substring_regex(pc.utf8_lower(from_type), OUTSIDE_TYPE)
    outside_to = pc.match_substring_regex(pc.utf8_lower(to_type), OUTSIDE_TYPE)
    known = pc.and_(pc.not_equal(from_type, ""), pc.not_equal(to_type, ""))
    direction = pc.case_when(pc.make_struct(outside_to, outside_from), "out", "in", "internal")
    return pc.if_else(known, direction, "")


def _unanswered_disposition(reason):
    reason = pc.utf8_lower(reason)
    failed = pc.or_(pc.is_in(reason, pa.array(REASON_FAILED)),
                    pc.and_(pc.starts_with(reason, "failed_"), pc.not_equal(reason, "failed_cancelled")))
    return pc.case_when(
        pc.make_struct(pc.is_in(reason, pa.array(REASON_BUSY)), pc.is_in(reason, pa.array(REASON_CONGESTION)), failed),
        Disposition.BUSY.value, Disposition.CONGESTION.value, Disposition.FAILED.value, Disposition.NO_ANSWER.value)


FORMATS = [FormatSpec(
    "3cx", parse_3cx,
    description="3CX CDR output (v16/v18/v20): operator-chosen fields from a header line or the source option "
                "columns, UTC times (option local_times), one call leg per line",
    fingerprint="source + historyid + callid + start + caller + callee (3CX repeats historyid/callid on the legs "
                "of a call)",
    header_lines=1,
    header_lines_of=header_line_count,
    extensions=(".log", ".csv"),
    raw_kind="line",
)]
