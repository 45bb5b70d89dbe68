"""CDR mediation: switch files in, normalized CDRs in the usage lake out.

Formats register by name in :data:`FORMATS` (``register_format``); the built-ins go through the
same door a third party would. A parser takes the file's bytes and returns a ``CDR_SCHEMA``
Arrow table plus a list of :class:`CdrIssue` (one per line it could not normalize)::

    def parse(data: bytes, *, file_name: str, source: str, timezone: str | None,
              country: str | None) -> tuple[pyarrow.Table, list[CdrIssue]]

:func:`import_cdr_file` is the one way in:

1. the file's SHA-256 is looked up in the ``cdr_files`` ledger: the same bytes imported before
   make a ``duplicate`` row and nothing else;
2. the parser normalizes the records; records whose ``cdr_id`` is already in the lake (months
   the batch touches) or repeated in the file (the first line wins) are counted as duplicates;
3. the new records are written one Parquet file per UTC month of ``start_at``, the quarantined
   lines to the ``quarantine`` dataset (month = UTC month of the import, since their times may
   be unreadable);
4. only then the ledger row and an audit entry are committed. A crash between 3 and 4 leaves
   lake files without a ledger row; importing the file again then finds its records in the
   lake and counts them as duplicates, so nothing is counted twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel import lake
from bluerocktel.errors import FormatError, NotFoundError
from bluerocktel.mediation.asterisk import parse_asterisk_csv
from bluerocktel.mediation.records import CdrIssue
from bluerocktel.vocabulary import CdrFileStatus

__all__ = ["FORMATS", "CdrIssue", "ImportSummary", "ParseFn", "import_cdr_file", "read_quarantine",
           "register_format"]

ParseFn = Callable[..., tuple[pa.Table, list[CdrIssue]]]
FORMATS: dict[str, ParseFn] = {}
SUMMARY_ISSUES = 20          # issues kept in an ImportSummary (all of them go to the quarantine)


def register_format(name: str, parse_fn: ParseFn) -> None:
    """Make ``parse_fn`` the parser of CDR format ``name`` (replacing any previous one)."""
    FORMATS[name] = parse_fn


DEFAULT_FORMATS: tuple[tuple[str, ParseFn], ...] = (
    ("asterisk-csv", parse_asterisk_csv),
)
for _name, _fn in DEFAULT_FORMATS:
    register_format(_name, _fn)


@dataclass
class ImportSummary:
    file: str
    format: str
    source: str
    received: int = 0
    imported: int = 0
    duplicates: int = 0
    quarantined: int = 0
    status: str = CdrFileStatus.IMPORTED.value
    issues: list[CdrIssue] = field(default_factory=list)
    sha256: str = ""
    cdr_file_id: int | None = None
    months: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "file": self.file, "format": self.format, "source": self.source,
            "received": self.received, "imported": self.imported, "duplicates": self.duplicates,
            "quarantined": self.quarantined, "status": self.status, "sha256": self.sha256,
            "cdr_file_id": self.cdr_file_id, "months": list(self.months),
            "issues": [i.as_dict() for i in self.issues],
        }

    def describe(self) -> str:
        name = Path(self.file).name
        if self.status == CdrFileStatus.DUPLICATE:
            return f"{name}: already imported (same SHA-256), nothing imported"
        lines = [f"{name} ({self.format}, source {self.source}): {self.received} received, "
                 f"{self.imported} imported, {self.duplicates} duplicates, {self.quarantined} quarantined"]
        lines += [f"  quarantined {issue}" for issue in self.issues]
        if self.quarantined > len(self.issues):
            lines.append(f"  … and {self.quarantined - len(self.issues)} more in the quarantine")
        return "\n".join(lines)


def import_cdr_file(wb, path: str | Path, format: str, source: str = "default", actor: str = "cli",
                    *, timezone: str | None = None, country: str | None = None) -> ImportSummary:
    """Import one CDR file into the lake (steps in the module doc); the summary of what happened."""
    from sqlalchemy import select

    from bluerocktel.db.models import CdrFile, CdrSource

    parse = FORMATS.get(format)
    if parse is None:
        raise FormatError(f"unknown CDR format {format!r}; known formats: {', '.join(sorted(FORMATS))}")
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"CDR file not found: {path}")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    summary = ImportSummary(file=str(path), format=format, source=source, sha256=sha)

    with wb.db.session() as s:
        known = s.scalar(select(CdrSource).where(CdrSource.name == source))
        seen = s.scalar(select(CdrFile.id).where(CdrFile.sha256 == sha,
                                                 CdrFile.status == CdrFileStatus.IMPORTED.value).limit(1))
    timezone = timezone or (known.timezone if known else None)
    country = country or (known.country if known else None)

    if seen is not None:
        summary.status = CdrFileStatus.DUPLICATE.value
    else:
        try:
            table, issues = parse(data, file_name=path.name, source=source, timezone=timezone, country=country)
            summary.received = table.num_rows + len(issues)
            summary.quarantined = len(issues)
            summary.issues = issues[:SUMMARY_ISSUES]
            fresh = _drop_duplicates(wb.lake_dir, table)
            summary.imported = fresh.num_rows
            summary.duplicates = table.num_rows - fresh.num_rows
            summary.months = _write_months(wb.lake_dir, fresh)
            if issues:
                _write_quarantine(wb.lake_dir, source, issues)
        except Exception as exc:
            # A broken program or a refused whole file: ledger it as failed, then let it raise.
            summary.status = CdrFileStatus.FAILED.value
            _record(wb, summary, actor, path, len(data), seen, error=f"{type(exc).__name__}: {exc}")
            raise
    _record(wb, summary, actor, path, len(data), seen)
    return summary


def _record(wb, summary: ImportSummary, actor: str, path: Path, size: int, seen: int | None,
            error: str | None = None) -> None:
    """Commit the ledger row and its audit entry (after the lake files are written)."""
    from bluerocktel.audit import record_audit
    from bluerocktel.db.models import CdrFile

    with wb.db.transaction() as s:
        row = CdrFile(source=summary.source, file_name=path.name, sha256=summary.sha256, size_bytes=size,
                      format=summary.format, status=summary.status, received=summary.received,
                      imported=summary.imported, duplicates=summary.duplicates,
                      quarantined=summary.quarantined)
        s.add(row)
        s.flush()
        summary.cdr_file_id = row.id
        details = {k: v for k, v in summary.as_dict().items() if k not in ("issues", "cdr_file_id")}
        if seen is not None:
            details["duplicate_of"] = seen
        if error:
            details["error"] = error
        record_audit(s, actor, "cdr.import", "cdr_file", row.id, **details)


def _month_keys(table: pa.Table) -> tuple[list[str], pa.Array | None]:
    """The UTC months of ``start_at`` ("YYYY-MM", sorted) and, when several, each row's year*100+month."""
    start = table.column("start_at")
    low, high = pc.min_max(start).values()
    if low.as_py() is None:
        return [], None
    if (low.as_py().year, low.as_py().month) == (high.as_py().year, high.as_py().month):
        return [f"{low.as_py():%Y-%m}"], None
    keys = pc.add(pc.multiply(pc.year(start), 100), pc.month(start))
    months = [f"{k // 100:04d}-{k % 100:02d}" for k in sorted(pc.unique(keys).to_pylist())]
    return months, keys


def _drop_duplicates(lake_dir: Path, table: pa.Table) -> pa.Table:
    """``table`` without records already in the lake or seen earlier in the same batch."""
    if table.num_rows == 0:
        return table
    con = lake.connect_duckdb()
    try:
        con.register("batch", table.select(["cdr_id", "source_line"]))
        distinct = con.sql("SELECT count(DISTINCT cdr_id) FROM batch").fetchall()[0][0]
        if distinct < table.num_rows:
            # Keep the first line of each id: the minimum line per id, then the rows on those lines.
            first = con.sql("SELECT min(source_line) AS line FROM batch GROUP BY cdr_id").to_arrow_table()
            table = table.filter(pc.is_in(table.column("source_line"), first.column("line")))
            con.unregister("batch")
            con.register("batch", table.select(["cdr_id", "source_line"]))
        months, _ = _month_keys(table)
        if not lake.partition_files(lake_dir, "cdrs", months):
            return table
        existing = con.sql(
            f"SELECT DISTINCT cdr_id FROM {lake.scan_sql(lake_dir, 'cdrs', months)} "
            "WHERE cdr_id IN (SELECT cdr_id FROM batch)").to_arrow_table().column("cdr_id")
    finally:
        con.close()
    if len(existing) == 0:
        return table
    return table.filter(pc.invert(pc.is_in(table.column("cdr_id"), existing)))


def _write_months(lake_dir: Path, table: pa.Table) -> list[str]:
    """One Parquet file per UTC month of ``start_at``; the months written."""
    if table.num_rows == 0:
        return []
    months, keys = _month_keys(table)
    for month in months:
        part = table if keys is None else table.filter(
            pc.equal(keys, int(month[:4]) * 100 + int(month[5:])))
        lake.write_partition(lake_dir, "cdrs", month, part)
    return months


def _write_quarantine(lake_dir: Path, source: str, issues: list[CdrIssue]) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    table = pa.table({
        "source": [source] * len(issues),
        "source_file": [i.file for i in issues],
        "source_line": pa.array([i.line for i in issues], pa.int32()),
        "reason": [i.reason for i in issues],
        "raw": [i.raw for i in issues],
        "quarantined_at": pa.array([now] * len(issues), lake.UTC_TS),
    })
    lake.write_partition(lake_dir, "quarantine", now.strftime("%Y-%m"), table)


def read_quarantine(wb, months: list[str] | None = None) -> pa.Table:
    """The quarantined records (all, or of the given import months), oldest first, for reprocessing."""
    con = lake.connect_duckdb()
    try:
        table = con.sql(f"SELECT * FROM {lake.scan_sql(wb.lake_dir, 'quarantine', months)} "
                        "ORDER BY quarantined_at, source_file, source_line").to_arrow_table()
    finally:
        con.close()
    return table.select(lake.QUARANTINE_SCHEMA.names).cast(lake.QUARANTINE_SCHEMA)
