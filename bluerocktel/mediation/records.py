"""What every CDR format parser shares: the per-record issue value, local-time reading, ids.

Local times and daylight saving time (deterministic, same rule for every format):

- A wall time that occurs twice (the autumn fall-back hour, e.g. 02:30 on the last Sunday of
  October in Europe/Paris) is read as its *first* occurrence (summer time), unless the record
  says otherwise: :func:`pick_utc_times` takes, among the readings of start and end, the one
  whose end − start equals the record's duration; answer and end are never placed before start
  when their second occurrence avoids it.
- A wall time that does not exist (inside the spring-forward gap, e.g. 02:30 on the last
  Sunday of March, which a switch following the zone never writes) is read as the first
  instant after the gap (03:00 summer time = 01:00 UTC).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ID_SEPARATOR = "\x1f"   # ASCII unit separator between the parts of a record key
ID_HEX_CHARS = 32


@dataclass(frozen=True)
class CdrIssue:
    """One input record that could not be normalized: where it was, why, and its raw text.

    ``line`` is the 1-based line (text formats) or record number (XML documents, BER records);
    ``offset`` the record's byte offset in a binary file (``raw`` is then base64 of its bytes).
    """

    file: str
    line: int
    reason: str
    raw: str
    offset: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def cdr_id(*parts: str) -> str:
    """The stable record id: SHA-256 (hex, first 32 chars) of the key parts joined by US (0x1f)."""
    return hashlib.sha256(ID_SEPARATOR.join(parts).encode()).hexdigest()[:ID_HEX_CHARS]


def cdr_ids_sql(key_sql: str, table_name: str, **tables) -> pa.ChunkedArray:
    """:func:`cdr_id` of the key expression ``key_sql`` (parts joined with ``concat_ws(chr(31), ...)``)
    for every row of ``table_name``, computed by DuckDB (parallel SHA-256), in row order."""
    from bluerocktel.lake import connect_duckdb

    con = connect_duckdb()
    try:
        for name, table in tables.items():
            con.register(name, table)
        # A plain projection keeps the input order (DuckDB preserves insertion order).
        out = con.sql(f"SELECT substr(sha256({key_sql}), 1, {ID_HEX_CHARS}) AS id FROM {table_name}")
        return out.to_arrow_table().column("id")
    finally:
        con.close()


ISO_SECONDS = "%Y-%m-%d %H:%M:%S"


def parse_wall_times(text: pa.Array | pa.ChunkedArray, fmt: str):
    """Naive timestamps (seconds) from ``text`` in ``fmt``; null where a value does not parse.

    ``YYYY-MM-DD HH:MM:SS`` takes a faster road: values of that shape (19 characters, blank at
    offset 10) are cast (Arrow's ISO-8601 parser, 4× faster than strptime); strptime decides
    only when some such value is not a real date (month 13, 30 February, garbage).
    """
    if fmt != ISO_SECONDS:
        return _strptime(text, fmt)
    # the exact shape, cheaply: 19 characters with the blank at offset 10
    shape = pc.and_(pc.equal(pc.binary_length(text), 19), pc.equal(pc.find_substring(text, " "), 10))
    try:
        naive = pc.cast(pc.if_else(shape, text, "1970-01-01 00:00:00"), pa.timestamp("s"))
    except pa.ArrowInvalid:
        naive = _strptime(text, fmt)
    return pc.if_else(shape, naive, pa.scalar(None, pa.timestamp("s")))


# How each strptime directive is written, to find the day of month as written (_strptime).
_DIRECTIVES = {"d": r"(?P<day>[ 0-9]?[0-9])", "e": r"(?P<day>[ 0-9]?[0-9])", "Y": r"[0-9]{4}", "y": r"[0-9]{2}",
               "m": r"[0-9]{1,2}", "H": r"[0-9]{1,2}", "I": r"[0-9]{1,2}", "M": r"[0-9]{1,2}", "S": r"[0-9]{1,2}",
               "j": r"[0-9]{1,3}", "b": r"[A-Za-z]+", "B": r"[A-Za-z]+", "a": r"[A-Za-z]+", "A": r"[A-Za-z]+",
               "p": r"[AaPp][Mm]", "z": r"(?:Z|[+-][0-9:]+)", "%": "%"}


def _day_pattern(fmt: str) -> str | None:
    """A regex capturing the day of month as written in values of ``fmt`` (None: no single day)."""
    out, i = ["^"], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            out.append(_DIRECTIVES.get(fmt[i + 1], ".*?"))
            i += 2
        else:
            out.append(re.escape(fmt[i]))
            i += 1
    pattern = "".join(out)
    return pattern if pattern.count("(?P<day>") == 1 else None


def _strptime(text, fmt: str):
    """``strptime`` that refuses impossible dates. Arrow's rolls 31 April over to 1 May, so a
    value read as day 1 to 3 is kept only if that is the day written."""
    naive = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    pattern = _day_pattern(fmt)
    if pattern is None:
        return naive
    suspect = pc.fill_null(pc.less_equal(pc.day(naive), 3), False)
    if not pc.any(suspect).as_py():
        return naive
    idx = pc.indices_nonzero(suspect)
    written = pc.struct_field(pc.extract_regex(pc.utf8_trim_whitespace(pc.take(text, idx)), pattern), "day")
    rolled = pc.fill_null(pc.not_equal(pc.cast(pc.utf8_trim_whitespace(written), pa.int64()),
                                       pc.day(pc.take(naive, idx))), True)
    if not pc.any(rolled).as_py():
        return naive
    mask = np.zeros(len(naive), dtype=bool)
    mask[pc.filter(idx, rolled).to_numpy()] = True
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.timestamp("s")), naive)


def read_local_times(text: pa.Array | pa.ChunkedArray, fmt: str, timezone: str):
    """Parse wall-clock ``text`` in ``timezone``: (first, second) UTC readings; null when unparseable.

    The two readings differ only for wall times that occur twice (DST fall-back); when there
    is none (nearly always) both are the same array, computed once.
    """
    return assume_local(parse_wall_times(text, fmt), timezone)


def assume_local(naive, timezone: str):
    """(first, second) UTC readings of naive wall-clock timestamps in ``timezone`` (module doc)."""
    try:
        first = pc.assume_timezone(naive, timezone=timezone, ambiguous="raise", nonexistent="latest")
        return first, first
    except pa.ArrowInvalid:
        pass
    first = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="latest")
    second = pc.assume_timezone(naive, timezone=timezone, ambiguous="latest", nonexistent="latest")
    return first, second


def pick_utc_times(start: tuple, answer: tuple, end: tuple, duration_s):
    """Choose the readings of start, answer and end (see the module doc); returns three arrays."""
    s1, s2 = start
    a1, a2 = answer
    e1, e2 = end
    if s1 is s2 and e1 is e2:
        s, e = s1, e1
    else:
        dur = pc.cast(duration_s, pa.int64())

        def seconds(ts):
            return pc.cast(pc.cast(ts, pa.timestamp("s", tz="UTC")), pa.int64())

        def span_is_duration(s_, e_):
            return pc.fill_null(pc.equal(pc.subtract(seconds(e_), seconds(s_)), dur), False)

        combos = [(s1, e1), (s1, e2), (s2, e2), (s2, e1)]
        matches = [span_is_duration(s_, e_) for s_, e_ in combos]
        fallback_end = pc.if_else(pc.fill_null(pc.less(e1, s1), False), e2, e1)
        conds = pc.make_struct(*matches)
        s = pc.case_when(conds, s1, s1, s2, s2, s1)
        e = pc.case_when(conds, e1, e2, e2, e1, fallback_end)
    if e2 is not e:
        e = pc.if_else(pc.fill_null(pc.less(e, s), False), e2, e)
    a = a1 if a2 is a1 else pc.if_else(pc.fill_null(pc.less(a1, s), False), a2, a1)
    return s, a, e


def read_csv_slice(data: bytes, start: int, end: int, names: list[str], used: list[str],
                   quote_char: str | bool = '"') -> tuple[pa.Table | None, list[tuple[int, str]], int]:
    """pyarrow.csv over ``data[start:end]`` (no header; comma-separated, one record per line):
    ``(table, rejected, lines)`` where the table holds the ``used`` columns as text plus ``_line``
    (1-based within the slice), ``rejected`` the (line, text) of lines with another field count,
    and ``lines`` the physical lines. Bytes that are not UTF-8 are replaced first (line numbers do
    not move). ``table`` is None when pyarrow's row count disagrees with the lines (an open quote
    ran lines together, a lone CR): the caller then reads the slice its exact, slow way."""
    import codecs

    import numpy as np
    import pyarrow.csv as pcsv

    rejected: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        rejected.append((row.number, row.text))
        return "skip"

    buf = memoryview(data)[start:end]
    lines = data.count(b"\n", start, end) + (0 if data[end - 1:end] == b"\n" else 1)
    try:
        codecs.utf_8_decode(buf, "strict", True)
    except UnicodeDecodeError:
        buf = bytes(buf).decode("utf-8", "replace").encode()
    try:
        table = pcsv.read_csv(
            pa.py_buffer(buf),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 22),
            parse_options=pcsv.ParseOptions(quote_char=quote_char, invalid_row_handler=on_invalid,
                                            ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(include_columns=used, column_types={c: pa.string() for c in used},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid:
        return None, rejected, lines
    if table.num_rows + len(rejected) != lines:
        return None, rejected, lines
    number = np.arange(1, lines + 1, dtype=np.int32)
    if rejected:
        number = number[~np.isin(number, np.array([r for r, _ in rejected], dtype=np.int32))]
    return table.append_column("_line", pa.array(number, pa.int32())), rejected, lines
