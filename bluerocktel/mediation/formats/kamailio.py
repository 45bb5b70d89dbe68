"""Kamailio / OpenSIPS ``acc`` rows (one per SIP transaction) paired into calls.

The ``acc`` module writes one row per accounted transaction: the INVITE when its final reply
goes out (``sip_code`` 200, or ≥ 300 for a failed call when ``failed_transaction_flag`` is
set), the BYE when it is answered. This format reads a CSV export of the ``acc`` table with a
header row (``mysql -B``/``psql COPY … CSV HEADER``): the core columns ``id, method, from_tag,
to_tag, callid, sip_code, sip_reason, time`` (found by name, any order) and, when present, the
usual extra columns ``src_user, src_domain, src_ip, dst_ouser, dst_user, dst_domain`` and
OpenSIPS's CDR-mode columns ``duration, ms_duration, setuptime, created``. Values may be
quoted. ``time`` (and ``created``) is ``YYYY-MM-DD HH:MM:SS`` local wall time in the source's
time zone (a ``T`` separator and a fraction of a second are accepted, the fraction dropped)
or whole epoch seconds (UTC).

Pairing (one call per dialog; vectorized in DuckDB over the whole file, hence
``line_based=False``):

- Only INVITE and BYE rows count. Other methods (ACK, CANCEL, MESSAGE, REGISTER, …), INVITEs
  answered 401/407 (an authentication challenge: the caller sends the INVITE again with
  credentials, same Call-ID and From tag) and provisional codes (1xx, ``early_media``) are
  skipped, not counted.
- A dialog is the Call-ID and the caller's tag. The acc row of an INVITE carries the To tag of
  its *reply*, so a re-INVITE cannot be told by its To tag: it is an INVITE of a dialog that
  already had one. A re-INVITE sent by the callee has the tags swapped, so the caller's tag is
  the From tag of the first INVITE (by time, then line) holding the same two tags in either
  order.
- An answered call is the dialog's first 2xx INVITE: start = answer = its ``time`` (Kamailio
  logs the INVITE on its 200 OK, so the ringing time is not known); end = the time of the
  dialog's first BYE, by caller (its From tag is the caller's) or by callee (its To tag is
  the caller's); billsec = end − answer. With OpenSIPS CDR-mode columns filled in, the INVITE
  row is the whole call: start = ``created`` (else ``time`` − ``setuptime``), answer = ``time``,
  end = answer + ``duration`` (whole seconds; ``ms_duration`` is not used), and any BYE of
  the dialog is consumed without being needed.
- A dialog without a 2xx INVITE is one unanswered call: the last failed INVITE (an earlier
  one was a retry) gives start = end = its ``time`` (start = ``created`` when present) and
  the disposition: 486 and 600 ``BUSY``; 408, 480 and 487 ``NO ANSWER``; 503 ``CONGESTION``;
  any other code ``FAILED``.
- Later INVITEs of an answered dialog (re-INVITEs, 2xx or failed) and failed INVITEs before
  its 2xx are part of that call, not new calls.
- An answered INVITE without a BYE in the file is an issue ``call not ended in this file (no
  BYE for callid …)``; a BYE matching no answered INVITE is an issue ``BYE without INVITE in
  this file``. Their ``raw`` is the row's line (``raw_kind="line"``), so when a call's INVITE
  and BYE fall in two files, reprocessing the quarantined lines of the source together (after
  the header line) pairs them.

Caller ``src_user``; callee ``dst_ouser`` (the To user: the number dialed), else
``dst_user`` (the Request-URI user); both from the INVITE, normalized to E.164 with the
source's national rules, direction from the numbers. channel = ``src_ip`` (the trunk or PBX
the call came from), dst_channel = ``dst_domain``, account_code = ``src_domain`` (the tenant
of a multi-domain proxy), unique_id = the Call-ID; columns absent from the export are empty.

Record id: **source + callid + the caller's From tag** (one record per dialog; a Call-ID alone
is not unique across forked or spiralled dialogs). The call's ``source_line`` is the line of
its INVITE row.

Times: wall times that occur twice (autumn fall-back hour) are read as their first occurrence,
except the BYE of a call, read as the second when the first would put it before the INVITE.
A call whose BYE (or OpenSIPS ``duration``) puts its end before its start is an issue; so are
rows with no callid, or an unreadable sip_code, time, created, duration or setuptime; a file whose
first line is not a header naming the core columns is refused whole (``FormatError``).
"""

from __future__ import annotations

from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA, UTC_TS, connect_duckdb
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.formats.cucm import csv_fields, line_texts, read_csv_body
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import ISO_SECONDS, CdrIssue, read_local_times
from bluerocktel.settings import get_setting

CORE = ("method", "from_tag", "to_tag", "callid", "sip_code", "time")
EXTRA = ("src_user", "src_domain", "src_ip", "dst_ouser", "dst_user", "dst_domain",
         "duration", "setuptime", "created")
AUTH_CHALLENGES = (401, 407)

_CODE = r"^\s*[1-6][0-9]{2}\s*$"
_SECONDS = r"^\s*[0-9]{1,9}\s*$"
_EPOCH = r"^[0-9]{1,11}$"

# One call per dialog (module doc). Input ``acc``: the INVITE and BYE rows worth pairing, only the
# columns pairing needs (``i`` is the row's index: the other columns are taken back from Arrow).
PAIR_SQL = """
WITH inv AS (SELECT * FROM acc WHERE invite),
bye AS (SELECT * FROM acc WHERE NOT invite),
tagged AS (              -- the caller's tag: the From tag of the first INVITE with these two tags
    SELECT *, first_value(from_tag) OVER (PARTITION BY callid, least(from_tag, to_tag), greatest(from_tag, to_tag)
                                          ORDER BY t1, i) AS caller_tag,
           code BETWEEN 200 AND 299 AS ok
    FROM inv),
ranked AS (
    SELECT *,
        bool_or(ok) OVER d AS answered,
        row_number() OVER (PARTITION BY callid, caller_tag ORDER BY ok DESC, t1, i) AS first_ok,
        row_number() OVER (PARTITION BY callid, caller_tag ORDER BY t1 DESC, i DESC) AS last
    FROM tagged WINDOW d AS (PARTITION BY callid, caller_tag)),
calls AS (
    SELECT i, callid, caller_tag, answered, t1, created, duration, setuptime
    FROM ranked WHERE (answered AND first_ok = 1) OR (NOT answered AND last = 1)),
matched AS (              -- each BYE with the answered call it ends (by caller or by callee)
    SELECT b.i AS bye_i, b.t1 AS bye_t1, b.t2 AS bye_t2, c.i AS call_i, c.t1 AS answer,
           row_number() OVER (PARTITION BY c.i ORDER BY b.t1, b.i) AS nth
    FROM bye b JOIN calls c ON c.callid = b.callid
    WHERE c.answered AND (b.from_tag = c.caller_tag OR b.to_tag = c.caller_tag)),
ends AS (
    SELECT call_i, CASE WHEN bye_t1 < answer AND bye_t2 >= answer THEN bye_t2 ELSE bye_t1 END AS end_at
    FROM matched WHERE nth = 1)
SELECT c.i, c.caller_tag, c.answered, false AS orphan_bye,
       CASE WHEN c.answered AND c.duration IS NOT NULL
                THEN coalesce(c.created, c.t1 - to_seconds(coalesce(c.setuptime, 0)))
            ELSE coalesce(c.created, c.t1) END AS start_at,
       CASE WHEN c.answered THEN c.t1 END AS answer_at,
       CASE WHEN NOT c.answered THEN c.t1
            WHEN c.duration IS NOT NULL THEN c.t1 + to_seconds(c.duration)
            ELSE e.end_at END AS end_at
FROM calls c LEFT JOIN ends e ON e.call_i = c.i
UNION ALL
SELECT i, NULL, false, true, NULL, NULL, NULL FROM bye WHERE i NOT IN (SELECT bye_i FROM matched)
ORDER BY 1
"""


def parse_kamailio_acc(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
                       country: str | None = None, options: Mapping | None = None,
                       ) -> tuple[pa.Table, list[CdrIssue]]:
    """Pair the INVITE and BYE rows of an ``acc`` CSV export into calls (module doc)."""
    timezone = timezone or get_setting("default_timezone")
    country = country or get_setting("default_country")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data or data.isspace():
        return CDR_SCHEMA.empty_table(), []
    first_end = data.find(b"\n")
    header = data[:first_end if first_end >= 0 else len(data)].decode("utf-8", "replace").rstrip("\r")
    names = csv_fields(header)
    lowered = [n.strip().lower() for n in names] if isinstance(names, list) else []
    missing = [c for c in CORE if c not in lowered]
    if missing:
        raise FormatError(f"{file_name}: line 1 is not an acc table header: it lacks column(s) "
                          f"{', '.join(missing)} ({header[:80]!r})")
    if first_end < 0:
        return CDR_SCHEMA.empty_table(), []
    used = [c for c in CORE + EXTRA if c in lowered]
    table, rejected = read_csv_body(data, first_end + 1, lowered, used, first_line=2)
    issues = []
    for line, text in rejected:
        fields = csv_fields(text)
        reason = fields if isinstance(fields, str) else (
            f"wrong column count: {len(fields)} (expected {len(lowered)} from the header)")
        issues.append(CdrIssue(file_name, line, reason, text))

    rows, row_issues = _rows(table, timezone)
    if row_issues:
        texts = line_texts(data, [line for line, _ in row_issues])
        issues += [CdrIssue(file_name, line, reason, texts[line]) for line, reason in row_issues]

    con = connect_duckdb()
    try:
        con.register("acc", rows.select(["i", "invite", "callid", "from_tag", "to_tag", "code", "t1", "t2",
                                         "created", "duration", "setuptime"]))
        paired = con.sql(PAIR_SQL).to_arrow_table()
    finally:
        con.close()
    rows = rows.take(paired.column("i"))          # the paired rows' own columns, in line order

    # BYEs of no call, calls answered but never ended, calls ending before they start: issues
    orphan = paired.column("orphan_bye")
    open_call = pc.and_(paired.column("answered"), pc.is_null(paired.column("end_at")))
    backwards = pc.fill_null(pc.less(paired.column("end_at"), paired.column("start_at")), False)
    lost = pc.or_(pc.or_(orphan, open_call), backwards)
    if pc.any(lost).as_py():
        lines = pc.filter(rows.column("line"), lost).to_pylist()
        texts = line_texts(data, lines)
        for line, callid, is_bye, start, end in zip(
                lines, *(pc.filter(c, lost).to_pylist() for c in (
                    rows.column("callid"), orphan, paired.column("start_at"), paired.column("end_at")))):
            if is_bye:
                reason = f"BYE without INVITE in this file (callid {callid!r})"
            elif end is None:
                reason = f"call not ended in this file (no BYE for callid {callid!r})"
            else:
                reason = f"call ends before it starts: {end:%Y-%m-%d %H:%M:%S} < {start:%Y-%m-%d %H:%M:%S} UTC"
            issues.append(CdrIssue(file_name, line, reason, texts[line]))
        keep = pc.invert(lost)
        rows, paired = rows.filter(keep), paired.filter(keep)

    code = rows.column("code")
    raw = pa.table({
        "_line": rows.column("line"),
        "start": pc.cast(paired.column("start_at"), UTC_TS),
        "answer": pc.cast(paired.column("answer_at"), UTC_TS),
        "end": pc.cast(paired.column("end_at"), UTC_TS),
        "caller": rows.column("caller"),
        "callee": rows.column("callee"),
        "channel": rows.column("src_ip"),
        "dst_channel": rows.column("dst_domain"),
        "account_code": rows.column("src_domain"),
        "disposition": pc.case_when(
            pc.make_struct(paired.column("answered"), pc.is_in(code, pa.array([486, 600], pa.int32())),
                           pc.is_in(code, pa.array([408, 480, 487], pa.int32())), pc.equal(code, 503)),
            "ANSWERED", "BUSY", "NO ANSWER", "CONGESTION", "FAILED"),
        "unique_id": rows.column("callid"),
        "_key_callid": rows.column("callid"),
        "_key_from_tag": paired.column("caller_tag"),
    })
    normalized, more = normalize_batch(raw, file_name=file_name, source=source, timezone=timezone,
                                       country=country, key=("_key_callid", "_key_from_tag"),
                                       raw_text=lambda lines: line_texts(data, lines))
    issues += more
    issues.sort(key=lambda i: i.line)
    return normalized, issues


def _rows(table: pa.Table, timezone: str) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The INVITE and BYE rows worth pairing, typed, and (line, reason) of the unreadable ones."""
    n = table.num_rows

    def text(name: str):
        if name not in table.column_names:
            return pa.repeat(pa.scalar(""), n)
        return _trimmed(table.column(name))

    method = pc.utf8_upper(text("method"))
    code_text = text("sip_code")
    code_ok = pc.match_substring_regex(code_text, _CODE)
    code = pc.cast(pc.if_else(code_ok, code_text, "0"), pa.int32())
    t1, t2 = _utc_readings(text("time"), timezone)
    callid = text("callid")
    has_created = "created" in table.column_names
    created = _utc_readings(text("created"), timezone)[0] if has_created else pa.nulls(n, UTC_TS)
    seconds = {}
    checks = [
        ("missing callid", pc.equal(callid, ""), "callid"),
        ("unparseable sip_code", pc.invert(code_ok), "sip_code"),
        ("unparseable time", pc.is_null(t1), "time"),
    ]
    if has_created:
        checks.append(("unparseable created", pc.and_(pc.not_equal(text("created"), ""), pc.is_null(created)),
                       "created"))
    for name in ("duration", "setuptime"):
        if name in table.column_names:
            value = text(name)
            ok = pc.match_substring_regex(value, _SECONDS)
            seconds[name] = pc.if_else(ok, pc.cast(pc.if_else(ok, value, "0"), pa.int32()),
                                       pa.scalar(None, pa.int32()))
            checks.append((f"unparseable {name}", pc.and_(pc.not_equal(value, ""), pc.invert(ok)), name))

    wanted = pc.and_(pc.is_in(method, pa.array(["INVITE", "BYE"])),
                     pc.invert(pc.and_(pc.equal(method, "INVITE"),
                                       pc.or_(pc.is_in(code, pa.array(AUTH_CHALLENGES, pa.int32())),
                                              pc.and_(code_ok, pc.less(code, 200))))))
    bad = None
    for _, mask, _ in checks:
        bad = mask if bad is None else pc.or_(bad, mask)
    bad = pc.and_(wanted, pc.fill_null(bad, True))
    issues = []
    if pc.any(bad).as_py():
        idx = pc.indices_nonzero(bad)
        lines = pc.take(table.column("_line"), idx).to_pylist()
        flags = [pc.take(pc.fill_null(mask, True), idx).to_pylist() for _, mask, _ in checks]
        shown = {c: pc.take(text(c), idx).to_pylist() for _, _, c in checks}
        for k, line in enumerate(lines):
            reason, column = next((r, c) for (r, _, c), fl in zip(checks, flags) if fl[k])
            issues.append((line, f"{reason}: {shown[column][k]!r}"))
    keep = pc.and_(wanted, pc.invert(bad))
    callee = text("dst_ouser")
    callee = pc.if_else(pc.equal(callee, ""), text("dst_user"), callee)
    rows = pa.table({
        "line": table.column("_line"),
        "invite": pc.equal(method, "INVITE"),
        "callid": callid,
        "from_tag": text("from_tag"),
        "to_tag": text("to_tag"),
        "code": code,
        "t1": t1,
        "t2": t2,
        "created": created,
        "duration": seconds.get("duration", pa.nulls(n, pa.int32())),
        "setuptime": seconds.get("setuptime", pa.nulls(n, pa.int32())),
        "caller": text("src_user"),
        "callee": callee,
        "src_ip": text("src_ip"),
        "src_domain": text("src_domain"),
        "dst_domain": text("dst_domain"),
    })
    rows = rows.filter(keep)
    return rows.append_column("i", pa.array(range(rows.num_rows), pa.int64())), issues


def _utc_readings(col, timezone: str):
    """(first, second) UTC readings of acc times: local ``YYYY-MM-DD HH:MM:SS``, or epoch seconds."""
    first, second = (pc.cast(t, UTC_TS) for t in read_local_times(col, ISO_SECONDS, timezone))
    odd = pc.and_(pc.is_null(first), pc.not_equal(col, ""))
    if not pc.any(odd).as_py():
        return first, second                        # the usual case: every time in one shape
    # the others, looked at alone: epoch seconds, a "T" separator, a fraction of a second
    text = pc.filter(col, odd)
    epoch = pc.match_substring_regex(text, _EPOCH)
    exact = pc.cast(pc.multiply(pc.cast(pc.if_else(epoch, text, "0"), pa.int64()),
                                pa.scalar(1_000_000, pa.int64())), UTC_TS)
    wall = pc.utf8_slice_codeunits(pc.replace_substring_regex(text, r"^(\d{4}-\d{2}-\d{2})T", r"\1 "), 0, 19)
    fraction_ok = pc.or_(pc.less_equal(pc.utf8_length(text), 19),
                         pc.match_substring_regex(pc.utf8_slice_codeunits(text, 19), r"^\.[0-9]+$"))
    wall = pc.if_else(pc.or_(epoch, pc.invert(fraction_ok)), "", wall)
    local = [pc.cast(t, UTC_TS) for t in read_local_times(wall, ISO_SECONDS, timezone)]
    odd = _combined(odd)
    return tuple(pc.replace_with_mask(_combined(full), odd, _combined(pc.if_else(epoch, exact, part)))
                 for full, part in zip((first, second), local))


def _combined(col):
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _trimmed(col):
    """``col`` without nulls and surrounding blanks (trimmed only when some value has them)."""
    col = pc.fill_null(col, "")
    padded = pc.or_(pc.or_(pc.starts_with(col, " "), pc.ends_with(col, " ")),
                    pc.or_(pc.starts_with(col, "\t"), pc.ends_with(col, "\t")))
    return pc.utf8_trim_whitespace(col) if pc.any(padded).as_py() else col


FORMATS = [FormatSpec(
    "kamailio-acc", parse_kamailio_acc,
    description="Kamailio/OpenSIPS acc table, CSV export with a header row: INVITE and BYE "
                "transactions paired into calls (OpenSIPS CDR-mode rows taken whole)",
    fingerprint="source + callid + the caller's From tag (one record per dialog)",
    line_based=False, header_lines=1, raw_kind="line", extensions=(".csv",),
)]
