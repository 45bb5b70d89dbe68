"""Asterisk ``cdr_csv`` files (``Master.csv``) to normalized CDRs.

``cdr_csv`` writes one call per line; strings are quoted with ``"`` (a ``"`` inside is doubled),
``duration``, ``billsec`` and ``sequence`` are bare integers, times are local wall-clock
``YYYY-MM-DD HH:MM:SS`` (``answer`` is ``""`` for an unanswered call). Three layouts exist,
told apart by their column count, line by line:

- 16 columns: accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata,
  start, answer, end, duration, billsec, disposition, amaflags;
- 18: + uniqueid, userfield (``loguniqueid`` and ``loguserfield``);
- 21: + peeraccount, linkedid, sequence (``newcdrcolumns``).

How it is fast (≥ 200k CDRs/s end to end on 2 cores): the file is cut at line boundaries into
chunks that ``pyarrow.csv`` parses in parallel threads; the layout of the first line is the
expected one and lines with another column count reach an ``invalid_row_handler`` that keeps
their text and line number. Those few lines are re-read with the ``csv`` module (the slow exact
path): a line in another valid layout joins the batch, anything else is a ``CdrIssue``. Every
check and conversion then runs vectorized (Arrow compute, SHA-256 in DuckDB) on the whole
batch; only the rows that fail are looked at one by one, to word their reason.

Record id (``cdr_id``, see :func:`bluerocktel.mediation.records.cdr_id`): source + uniqueid
(+ linkedid + sequence in the 21-column layout); without a uniqueid, source + start (UTC, µs
since the epoch) + caller + callee + channel + dstchannel + duration + billsec. In the
18-column layout two CDRs of one forked call share a uniqueid and are therefore one record;
enable ``newcdrcolumns`` to tell them apart.

Times: see :mod:`bluerocktel.mediation.records` for the daylight-saving rules.
A blank line is skipped and not counted.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.normalize import EARLIEST, LATEST
from bluerocktel.mediation.numbers import classify_direction_array, normalize_number_array
from bluerocktel.mediation.records import (
    CdrIssue,
    cdr_ids_sql,
    pick_utc_times,
    read_local_times,
)
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import CallType, Disposition

COLUMNS_16 = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
              "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags")
COLUMNS_18 = COLUMNS_16 + ("uniqueid", "userfield")
COLUMNS_21 = COLUMNS_18 + ("peeraccount", "linkedid", "sequence")
LAYOUTS: dict[int, tuple[str, ...]] = {16: COLUMNS_16, 18: COLUMNS_18, 21: COLUMNS_21}

# The columns the normalized CDR is made of; the others are never converted.
USED = ("accountcode", "src", "dst", "channel", "dstchannel", "start", "answer", "end",
        "duration", "billsec", "disposition", "uniqueid", "linkedid", "sequence")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
CHUNK_BYTES = 16 << 20
DISPOSITION_ALIASES = {"NOANSWER": "NO ANSWER", "NO_ANSWER": "NO ANSWER"}
_INT = r"^-?[0-9]{1,9}$"

# The record key (module doc) as DuckDB SQL over the normalized batch; the parts are those of
# records.cdr_id, joined by the unit separator chr(31).
KEY_SQL = """CASE
    WHEN coalesce(unique_id, '') <> '' AND _width = 21
        THEN concat_ws(chr(31), source, unique_id, _linkedid, _sequence)
    WHEN coalesce(unique_id, '') <> ''
        THEN concat_ws(chr(31), source, unique_id)
    ELSE concat_ws(chr(31), source, CAST(epoch_us(start_at) AS VARCHAR), caller, callee, channel,
                   dst_channel, CAST(duration_s AS VARCHAR), CAST(billsec_s AS VARCHAR))
END"""


@dataclass
class _Chunk:
    """One slice of the file, parsed and normalized on a worker thread; lines relative to it."""

    offset: int
    rows: int = 0                                           # physical lines incl. rejected ones
    rejected: list[tuple[int, str]] = field(default_factory=list)   # (line, text) for the exact path
    normalized: pa.Table | None = None
    bad: list[tuple[int, str]] = field(default_factory=list)             # (line, reason)


@dataclass(frozen=True)
class _Context:
    source: str
    file_name: str
    timezone: str
    country: str


def parse_asterisk_csv(data: bytes, *, file_name: str, source: str = "default",
                       timezone: str | None = None, country: str | None = None, options=None,
                       ) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize the bytes of a Master.csv: a ``CDR_SCHEMA`` table and the issues, by line."""
    ctx = _Context(source, file_name, timezone or get_setting("default_timezone"),
                   country or get_setting("default_country"))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    width = _detect_width(data)
    bounds = _chunk_bounds(data)
    with ThreadPoolExecutor(max_workers=max(1, min(len(bounds), os.cpu_count() or 1))) as pool:
        chunks = list(pool.map(lambda b: _process_chunk(data, b[0], b[1], width, ctx), bounds))

    # Every physical line is one row, accepted or rejected (no newline inside values), so a
    # chunk's first line is the sum of the rows of the chunks before it.
    issues: list[CdrIssue] = []
    bad: list[tuple[int, str]] = []
    parts: list[pa.Table] = []
    slow_rows: list[dict] = []
    base = 0
    for chunk in chunks:
        for rel, text in chunk.rejected:
            text = text.rstrip("\r")
            if not text.strip():
                continue                                    # a blank line
            row = _read_line_slow(text)
            if isinstance(row, str):
                issues.append(CdrIssue(file_name, base + rel, row, text))
            else:
                row["_line"] = base + rel
                slow_rows.append(row)
        bad.extend((base + rel, reason) for rel, reason in chunk.bad)
        if chunk.normalized is not None and chunk.normalized.num_rows:
            t = chunk.normalized
            parts.append(t.set_column(t.schema.get_field_index("source_line"), "source_line",
                                      pc.add(t.column("source_line"), pa.scalar(base, pa.int32()))))
        base += chunk.rows
    if slow_rows:
        table, slow_bad = _normalize(_slow_table(slow_rows), ctx)
        parts.append(table)
        bad.extend(slow_bad)
    if bad:
        texts = _line_texts(data, chunks, [line for line, _ in bad])
        # pyarrow reads a blank line as a row of empty fields: skipped, not an issue.
        issues.extend(CdrIssue(file_name, line, reason, texts[line]) for line, reason in bad
                      if texts[line].strip())
    issues.sort(key=lambda i: i.line)
    if not parts:
        return CDR_SCHEMA.empty_table(), issues
    table = pa.concat_tables(parts)
    if slow_rows:
        table = table.take(pc.sort_indices(table.column("source_line")))
    ids = cdr_ids_sql(KEY_SQL, "batch", batch=table)
    table = table.add_column(0, "cdr_id", ids)
    return table.select(CDR_SCHEMA.names).cast(CDR_SCHEMA), issues


def _process_chunk(data: bytes, start: int, end: int, width: int, ctx: _Context) -> _Chunk:
    """Parse and normalize ``data[start:end]`` (runs on a worker thread; Arrow releases the GIL)."""
    chunk, table = _read_chunk(data, start, end, width)
    lines = data.count(b"\n", start, end) + (0 if end == start or data[end - 1:end] == b"\n" else 1)
    if chunk.rows != lines:
        # A quote left open (a line truncated by a crash) makes pyarrow run lines together, and
        # a lone CR counts as a line end for it: read this chunk line by line, exactly.
        text = bytes(memoryview(data)[start:end]).decode("utf-8", "replace")
        chunk.rejected = list(enumerate(text.split("\n")[:lines], start=1))
        chunk.rows = lines
        return chunk
    if table.num_rows:
        lines = np.arange(1, chunk.rows + 1, dtype=np.int32)
        if chunk.rejected:
            lines = lines[~np.isin(lines, np.array([r[0] for r in chunk.rejected], dtype=np.int32))]
        raw = _with_layout(table, width, lines)
        chunk.normalized, chunk.bad = _normalize(raw, ctx)
    return chunk


# --- reading --------------------------------------------------------------------------------

def _detect_width(data: bytes) -> int:
    """The column count of the first line in a known layout (16 when none is found early)."""
    pos = 0
    for _ in range(100):
        end = data.find(b"\n", pos)
        line = data[pos:end if end >= 0 else len(data)].decode("utf-8", "replace")
        try:
            fields = next(csv.reader([line]), [])
        except csv.Error:      # a CR or NUL inside the line: not a layout line
            fields = []
        if len(fields) in LAYOUTS:
            return len(fields)
        if end < 0:
            break
        pos = end + 1
    return 16


def _chunk_bounds(data: bytes) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while start < len(data):
        end = data.find(b"\n", min(start + CHUNK_BYTES, len(data)))
        end = len(data) if end < 0 else end + 1
        bounds.append((start, end))
        start = end
    return bounds


def _read_chunk(data: bytes, start: int, end: int, width: int) -> tuple[_Chunk, pa.Table]:
    """pyarrow parses ``data[start:end]`` on this thread, so rejected rows keep their line number."""
    chunk = _Chunk(offset=start)
    names = LAYOUTS[width]
    used = [c for c in USED if c in names]

    def on_invalid(row) -> str:
        chunk.rejected.append((row.number, row.text))
        return "skip"

    def read(buf: bytes) -> pa.Table:
        chunk.rejected.clear()
        return pcsv.read_csv(
            pa.py_buffer(buf),
            read_options=pcsv.ReadOptions(column_names=list(names), use_threads=False, block_size=1 << 22),
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                include_columns=used, column_types={c: pa.string() for c in used},
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )

    buf = memoryview(data)[start:end]
    try:
        table = read(buf)
    except pa.ArrowInvalid:
        # Not UTF-8 (a latin-1 caller name, ...): replace the bad bytes; lines stay where they were.
        table = read(bytes(buf).decode("utf-8", "replace").encode())
    chunk.rows = table.num_rows + len(chunk.rejected)
    return chunk, table


def _with_layout(table: pa.Table, width: int, lines: np.ndarray) -> pa.Table:
    """``table`` with every USED column (null when the layout lacks it), the layout and the line."""
    n = table.num_rows
    cols = {c: table.column(c) if c in table.column_names else pa.nulls(n, pa.string()) for c in USED}
    cols["_width"] = pa.array(np.full(n, width, dtype=np.int8))
    cols["_line"] = pa.array(lines, pa.int32())
    return pa.table(cols)


def _read_line_slow(text: str) -> dict | str:
    """The exact path for one line pyarrow rejected: its USED fields when its layout is known,
    else the reason it is not a record."""
    text = text.rstrip("\r")
    if text.count('"') % 2:
        return "unbalanced quotes (truncated line?)"
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as exc:          # a CR or NUL inside a field
        return f"unreadable line: {exc}"
    if len(fields) not in LAYOUTS:
        return f"wrong column count: {len(fields)} (expected 16, 18 or 21)"
    row = dict(zip(LAYOUTS[len(fields)], fields))
    out: dict = {c: row.get(c) for c in USED}
    out["_width"] = len(fields)
    return out


def _slow_table(rows: list[dict]) -> pa.Table:
    cols = {c: pa.array([r[c] for r in rows], pa.string()) for c in USED}
    cols["_width"] = pa.array([r["_width"] for r in rows], pa.int8())
    cols["_line"] = pa.array([r["_line"] for r in rows], pa.int32())
    return pa.table(cols)


def _line_texts(data: bytes, chunks: list[_Chunk], lines: list[int]) -> dict[int, str]:
    """The raw text of the given (absolute) lines, walking only the chunks that hold them."""
    wanted = sorted(set(lines))
    out: dict[int, str] = {}
    base = 0
    i = 0
    for chunk in chunks:
        pos, line = chunk.offset, base + 1
        while i < len(wanted) and wanted[i] <= base + chunk.rows:
            while line < wanted[i]:
                pos = data.find(b"\n", pos) + 1
                line += 1
            end = data.find(b"\n", pos)
            out[wanted[i]] = data[pos:end if end >= 0 else len(data)].rstrip(b"\r").decode("utf-8", "replace")
            i += 1
        base += chunk.rows
    return out


# --- normalizing ----------------------------------------------------------------------------

def _normalize(raw: pa.Table, ctx: _Context) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Vectorized checks and conversions: the good rows (without ``cdr_id``, with the key's
    helper columns) and (line, reason) of the others."""
    timezone, country, source, file_name = ctx.timezone, ctx.country, ctx.source, ctx.file_name
    # cdr_csv writes no padding: only the layout's missing columns (nulls) need filling.
    col = {c: pc.fill_null(raw.column(c), "") for c in USED}
    start = read_local_times(col["start"], TIME_FORMAT, timezone)
    answer = read_local_times(col["answer"], TIME_FORMAT, timezone)
    end = read_local_times(col["end"], TIME_FORMAT, timezone)
    dur_ok = pc.match_substring_regex(col["duration"], _INT)
    bill_ok = pc.match_substring_regex(col["billsec"], _INT)
    duration = pc.cast(pc.if_else(dur_ok, col["duration"], "0"), pa.int32())
    billsec = pc.cast(pc.if_else(bill_ok, col["billsec"], "0"), pa.int32())
    disposition = pc.utf8_upper(pc.utf8_trim_whitespace(col["disposition"]))
    for alias, name in DISPOSITION_ALIASES.items():
        disposition = pc.if_else(pc.equal(disposition, alias), name, disposition)
    start_at, answer_at, end_at = pick_utc_times(start, answer, end, duration)
    no_answer = pc.equal(col["answer"], "")

    # Each check is a "this row is bad" mask; the first one that applies names the reason.
    def f(mask):
        return pc.fill_null(mask, False)

    checks: list[tuple[str, pa.ChunkedArray]] = [
        ("unparseable start time", pc.is_null(start_at)),
        ("start time out of range (1990-2099)", f(pc.or_(pc.less(start_at, EARLIEST.cast(start_at.type)),
                                                         pc.greater_equal(start_at, LATEST.cast(start_at.type))))),
        ("end time out of range (1990-2099)", f(pc.greater_equal(end_at, LATEST.cast(end_at.type)))),
        ("unparseable answer time", pc.and_(pc.invert(no_answer), pc.is_null(answer_at))),
        ("unparseable end time", pc.is_null(end_at)),
        ("unparseable duration", pc.invert(dur_ok)),
        ("unparseable billsec", pc.invert(bill_ok)),
        ("negative duration", pc.less(duration, 0)),
        ("negative billsec", pc.less(billsec, 0)),
        ("billsec > duration", pc.greater(billsec, duration)),
        ("end before start", f(pc.less(end_at, start_at))),
        ("answer before start", f(pc.less(answer_at, start_at))),
        ("answer after end", f(pc.greater(answer_at, end_at))),
        ("billsec > 0 without answer time", pc.and_(no_answer, pc.greater(billsec, 0))),
        ("unknown disposition", pc.invert(pc.is_in(disposition, pa.array([d.value for d in Disposition])))),
    ]
    bad_any = None
    for _, mask in checks:
        bad_any = mask if bad_any is None else pc.or_(bad_any, mask)
    bad: list[tuple[int, str]] = []
    if pc.any(bad_any).as_py():
        bad_idx = pc.indices_nonzero(bad_any)
        lines = pc.take(raw.column("_line"), bad_idx).to_pylist()
        flags = [pc.take(mask, bad_idx).to_pylist() for _, mask in checks]
        values = {c: pc.take(col[c], bad_idx).to_pylist() for c in ("start", "answer", "end", "duration",
                                                                      "billsec", "disposition")}
        for k, line in enumerate(lines):
            reason = next(name for (name, _), fl in zip(checks, flags) if fl[k])
            bad.append((line, _word(reason, {c: v[k] for c, v in values.items()})))
        good = pc.invert(bad_any)
        keep = lambda a: pc.filter(a, good)  # noqa: E731
    else:
        keep = lambda a: a  # noqa: E731

    n_width = keep(raw.column("_width"))
    caller = normalize_number_array(keep(col["src"]), country)
    callee = normalize_number_array(keep(col["dst"]), country)
    start_at, answer_at, end_at = keep(start_at), keep(answer_at), keep(end_at)
    duration, billsec = keep(duration), keep(billsec)
    uniqueid = keep(col["uniqueid"])
    channel, dst_channel = keep(col["channel"]), keep(col["dstchannel"])
    n = len(caller)

    table = pa.table({
        "source": pa.repeat(pa.scalar(source), n),
        "source_file": pa.repeat(pa.scalar(file_name), n),
        "source_line": keep(raw.column("_line")),
        "start_at": start_at,
        "answer_at": answer_at,
        "end_at": end_at,
        "duration_s": duration,
        "billsec_s": billsec,
        "caller": caller,
        "callee": callee,
        "account_code": keep(col["accountcode"]),
        "channel": channel,
        "dst_channel": dst_channel,
        "disposition": keep(disposition),
        "direction": classify_direction_array(caller, callee),
        "call_type": pa.repeat(pa.scalar(CallType.VOICE.value), n),
        "units": pa.repeat(pa.scalar(0, pa.int64()), n),
        "unique_id": pc.if_else(pc.not_equal(uniqueid, ""), uniqueid, pa.scalar(None, pa.string())),
        # for the record key, computed on the whole batch (KEY_SQL)
        "_width": n_width,
        "_linkedid": keep(col["linkedid"]),
        "_sequence": keep(col["sequence"]),
    })
    return table, bad


def _word(reason: str, v: dict) -> str:
    """The reason of a bad row, with the offending values."""
    details = {
        "unparseable start time": f"{v['start']!r}",
        "start time out of range (1990-2099)": f"{v['start']!r}",
        "end time out of range (1990-2099)": f"{v['end']!r}",
        "unparseable answer time": f"{v['answer']!r}",
        "unparseable end time": f"{v['end']!r}",
        "unparseable duration": f"{v['duration']!r}",
        "unparseable billsec": f"{v['billsec']!r}",
        "negative duration": v["duration"],
        "negative billsec": v["billsec"],
        "billsec > duration": f"{v['billsec']} > {v['duration']}",
        "end before start": f"{v['end']} < {v['start']}",
        "answer before start": f"{v['answer']} < {v['start']}",
        "answer after end": f"{v['answer']} > {v['end']}",
        "billsec > 0 without answer time": f"billsec {v['billsec']}",
        "unknown disposition": f"{v['disposition']!r}",
    }
    return f"{reason}: {details[reason]}"


FORMATS = [FormatSpec(
    "asterisk-csv", parse_asterisk_csv,
    description="Asterisk cdr_csv Master.csv (16, 18 or 21 columns), local times",
    fingerprint="source + uniqueid (+ linkedid + sequence with 21 columns); without uniqueid: "
                "source + start + src + dst + channel + dstchannel + duration + billsec",
    extensions=(".csv",),
    terminated_lines=True,
)]
