"""Importing one CDR file (or pushed batch) into the lake, losslessly.

:func:`import_cdr_file` / :func:`import_cdr_bytes`:

1. **Identity.** The input's SHA-256 (of the bytes as received, compressed or not) is looked up
   in the ``cdr_files`` ledger; the same bytes imported before make a ``duplicate`` row and
   nothing else. A lock per SHA-256 makes a second import of the same bytes wait for the first.
2. **Unpacking.** Gzip and zip inputs are read through a first pass that checks their
   decompressed size against ``BLUEROCKTEL_MAX_DECOMPRESSED_MB`` and
   ``BLUEROCKTEL_MAX_COMPRESSION_RATIO`` before anything is imported (a decompression bomb is
   refused whole). Each member of a zip is imported as its own file ``archive.zip/member``.
3. **Ledger first.** A ``cdr_files`` row is committed ``importing``.
4. **Slices.** A ``line_based`` format is parsed in slices of ``BLUEROCKTEL_IMPORT_CHUNK_MB``
   cut at line ends (its header lines repeated at the head of each), so memory stays bounded
   whatever the file size; other formats are read whole (up to ``BLUEROCKTEL_MAX_CDR_FILE_MB``).
   While the lake lock is held (one importer at a time per data dir, across processes), each
   slice's records whose ``cdr_id`` is already in the lake, or earlier in the slice, are counted
   as duplicates, the others written one Parquet file per UTC month; its quarantined records go
   to the quarantine (once: by ``quarantine_id``).
5. **Finish.** The ledger row becomes ``imported`` with its counts and timings, with an audit
   entry.

Killed at any point, an import leaves only whole Parquet files (each written atomically) and a
ledger row ``importing``; running it again marks that row ``interrupted``, finds the records
already written and counts them as duplicates: the lake ends with exactly the records of one
clean import.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import gzip
import hashlib
import io
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel import lake
from bluerocktel.errors import FormatError, NotFoundError
from bluerocktel.mediation.formats import FormatSpec, builtin_formats
from bluerocktel.mediation.records import CdrIssue, cdr_id
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import CdrFileStatus, Collector

FORMATS: dict[str, FormatSpec] = dict(builtin_formats())
SUMMARY_ISSUES = 20          # issues kept in an ImportSummary (all of them go to the quarantine)
READ_BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
MAX_ZIP_MEMBERS = 10_000


def register_format(name: str, parse_fn, **spec) -> None:
    """Make ``parse_fn`` the parser of CDR format ``name`` (replacing any previous one)."""
    FORMATS[name] = FormatSpec(name, parse_fn, **spec)


def format_spec(format: str | FormatSpec) -> FormatSpec:
    if isinstance(format, FormatSpec):
        return format
    spec = FORMATS.get(format)
    if spec is None:
        raise FormatError(f"unknown CDR format {format!r}; known formats: {', '.join(sorted(FORMATS))}")
    return spec


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
    duration_ms: int = 0
    members: list["ImportSummary"] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {
            "file": self.file, "format": self.format, "source": self.source,
            "received": self.received, "imported": self.imported, "duplicates": self.duplicates,
            "quarantined": self.quarantined, "status": self.status, "sha256": self.sha256,
            "cdr_file_id": self.cdr_file_id, "months": list(self.months), "duration_ms": self.duration_ms,
            "issues": [i.as_dict() for i in self.issues],
        }
        if self.members:
            out["members"] = [m.as_dict() for m in self.members]
        return out

    def describe(self) -> str:
        if self.members:
            return "\n".join(m.describe() for m in self.members)
        name = Path(self.file).name
        if self.status == CdrFileStatus.DUPLICATE:
            return f"{name}: already imported (same SHA-256), nothing imported"
        lines = [f"{name} ({self.format}, source {self.source}): {self.received} received, "
                 f"{self.imported} imported, {self.duplicates} duplicates, {self.quarantined} quarantined"]
        lines += [f"  quarantined {issue}" for issue in self.issues]
        if self.quarantined > len(self.issues):
            lines.append(f"  … and {self.quarantined - len(self.issues)} more in the quarantine")
        return "\n".join(lines)

    def add(self, other: "ImportSummary") -> None:
        self.received += other.received
        self.imported += other.imported
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.issues = (self.issues + other.issues)[:SUMMARY_ISSUES]
        self.months = sorted(set(self.months) | set(other.months))


@dataclass(frozen=True)
class _Job:
    """What one import needs to know besides its bytes."""

    spec: FormatSpec
    source: str
    actor: str
    timezone: str
    country: str
    options: Mapping
    collector: str
    remote_path: str | None


# --- entry points -----------------------------------------------------------------------------

def import_cdr_file(wb, path: str | Path, format: str | FormatSpec, source: str = "default", actor: str = "cli",
                    *, timezone: str | None = None, country: str | None = None, options: Mapping | None = None,
                    collector: str = Collector.MANUAL.value, remote_path: str | None = None,
                    file_name: str | None = None) -> ImportSummary:
    """Import one CDR file into the lake (steps in the module doc); the summary of what happened."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"CDR file not found: {path}")
    job = _job(wb, format, source, actor, timezone, country, options, collector, remote_path)
    return _import(wb, job, file_name or path.name, str(path), lambda: open(path, "rb"))


def import_cdr_bytes(wb, data: bytes, file_name: str, format: str | FormatSpec, source: str = "default",
                     actor: str = "api", *, timezone: str | None = None, country: str | None = None,
                     options: Mapping | None = None, collector: str = Collector.API.value) -> ImportSummary:
    """Import CDRs received as bytes (an upload, a pushed batch): same steps as a file."""
    job = _job(wb, format, source, actor, timezone, country, options, collector, None)
    return _import(wb, job, file_name, file_name, lambda: io.BytesIO(data))


def _job(wb, format, source, actor, timezone, country, options, collector, remote_path) -> _Job:
    from sqlalchemy import select

    from bluerocktel.db.models import CdrSource

    spec = format_spec(format)
    with wb.db.session() as s:
        known = s.scalar(select(CdrSource).where(CdrSource.name == source))
    return _Job(spec=spec, source=source, actor=actor,
                timezone=timezone or (known.timezone if known else None) or get_setting("default_timezone"),
                country=country or (known.country if known else None) or get_setting("default_country"),
                options=dict(options if options is not None else (known.options if known else {}) or {}),
                collector=str(collector), remote_path=remote_path)


# --- one input --------------------------------------------------------------------------------

def _import(wb, job: _Job, file_name: str, shown: str, opener: Callable[[], BinaryIO]) -> ImportSummary:
    started = time.monotonic()
    sha, size, head = _fingerprint(opener)
    summary = ImportSummary(file=shown, format=job.spec.name, source=job.source, sha256=sha)
    with _lock(wb.lake_dir, f"file-{sha}"):
        seen = _find_imported(wb, sha)
        if seen is not None:
            summary.status = CdrFileStatus.DUPLICATE.value
            _ledger_duplicate(wb, job, summary, file_name, size, seen)
            return summary
        _mark_interrupted(wb, sha)
        if head.startswith(ZIP_MAGIC):
            return _import_zip(wb, job, file_name, summary, opener, size, started)
        compressed = head.startswith(GZIP_MAGIC)
        if compressed:
            _check_gzip(opener, size, file_name)

        def stream() -> BinaryIO:
            raw = opener()
            return gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw

        name = file_name[:-3] if compressed and file_name.endswith(".gz") else file_name
        return _import_stream(wb, job, name, summary, stream, size, started)


def _import_zip(wb, job, file_name, summary, opener, size, started) -> ImportSummary:
    with opener() as fh:
        try:
            archive = zipfile.ZipFile(fh)
            members = [m for m in archive.infolist() if not m.is_dir()]
        except zipfile.BadZipFile as exc:
            raise FormatError(f"{file_name}: not a readable zip archive ({exc})") from None
        _check_zip(members, size, file_name)
        for member in members:
            data = archive.read(member)
            member_name = f"{file_name}/{member.filename}"
            sub = import_cdr_bytes(wb, data, member_name, job.spec, job.source, job.actor,
                                   timezone=job.timezone, country=job.country, options=job.options,
                                   collector=job.collector)
            summary.members.append(sub)
            summary.add(sub)
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    return summary


def _import_stream(wb, job: _Job, file_name: str, summary: ImportSummary, stream: Callable[[], BinaryIO],
                   size: int, started: float) -> ImportSummary:
    summary.cdr_file_id = _ledger_start(wb, job, summary, file_name, size)
    try:
        with _lock(wb.lake_dir, "lake"), ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            for data, base, header in _slices(stream, job.spec, file_name):
                table, issues = job.spec.parse(data, file_name=file_name, source=job.source,
                                               timezone=job.timezone, country=job.country, options=job.options)
                if base:
                    table, issues = _shift(table, issues, base)
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_slice, wb.lake_dir, job, summary, table, issues, header)
            if pending is not None:
                pending.result()
    except Exception as exc:
        # A broken program or a refused file: ledger it as failed, then let it raise.
        summary.status = CdrFileStatus.FAILED.value
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        _ledger_finish(wb, job, summary, error=f"{type(exc).__name__}: {exc}")
        raise
    summary.status = CdrFileStatus.IMPORTED.value
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    _ledger_finish(wb, job, summary)
    return summary


def _write_slice(lake_dir: Path, job: _Job, summary: ImportSummary, table: pa.Table,
                 issues: list[CdrIssue], header: str | None) -> None:
    """Dedup and write one parsed slice (the lake lock is held by the caller)."""
    summary.received += table.num_rows + len(issues)
    summary.quarantined += len(issues)
    if len(summary.issues) < SUMMARY_ISSUES:
        summary.issues += issues[:SUMMARY_ISSUES - len(summary.issues)]
    fresh = drop_known_records(lake_dir, table)
    summary.imported += fresh.num_rows
    summary.duplicates += table.num_rows - fresh.num_rows
    summary.months = sorted(set(summary.months) | set(write_months(lake_dir, fresh)))
    if issues:
        write_quarantine(lake_dir, job.source, job.spec.name, issues, header)


# --- slicing and unpacking ----------------------------------------------------------------------

def _slices(stream: Callable[[], BinaryIO], spec: FormatSpec, file_name: str) -> Iterator[tuple[bytes, int, str | None]]:
    """(data, lines before it in the file, header text) for each slice of the input."""
    with stream() as fh:
        if not spec.line_based:
            limit = int(get_setting("max_cdr_file_mb")) << 20
            data = fh.read(limit + 1)
            if len(data) > limit:
                raise FormatError(f"{file_name}: larger than BLUEROCKTEL_MAX_CDR_FILE_MB "
                                  f"({limit >> 20} MiB) for format {spec.name}")
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            yield data, 0, None
            return
        chunk = max(1, int(get_setting("import_chunk_mb"))) << 20
        header = b""
        header_text = None
        carry = b""
        lines_before = 0
        first = True
        while True:
            block = fh.read(chunk)
            data = carry + block
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                carry, data = data[cut + 1:], data[:cut + 1]
            elif not data:
                return
            if first:
                if data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]
                if spec.header_lines:
                    header = _first_lines(data, spec.header_lines)
                    header_text = header.decode("utf-8", "replace").rstrip("\r\n") or None
                yield data, 0, header_text
            else:
                yield header + data, lines_before - header.count(b"\n"), header_text
            lines_before += data.count(b"\n")
            first = False
            if not block:
                return


def _first_lines(data: bytes, n: int) -> bytes:
    """The first ``n`` lines of ``data``, each with its line end."""
    pos = 0
    for _ in range(n):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return data + b"\n"
        pos = nl + 1
    return data[:pos]


def _shift(table: pa.Table, issues: list[CdrIssue], base: int) -> tuple[pa.Table, list[CdrIssue]]:
    idx = table.schema.get_field_index("source_line")
    table = table.set_column(idx, "source_line", pc.add(table.column("source_line"), pa.scalar(base, pa.int32())))
    return table, [replace(i, line=i.line + base) for i in issues]


def _fingerprint(opener) -> tuple[str, int, bytes]:
    """SHA-256, size and first bytes of the input."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with opener() as fh:
        while block := fh.read(READ_BLOCK):
            if not head:
                head = block[:8]
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size, head


def _limits() -> tuple[int, int]:
    return int(get_setting("max_decompressed_mb")) << 20, int(get_setting("max_compression_ratio"))


def _bomb(file_name: str, produced: int, compressed: int) -> str | None:
    limit, ratio = _limits()
    if produced > limit:
        return (f"{file_name}: refused, decompresses to more than {limit >> 20} MiB "
                "(BLUEROCKTEL_MAX_DECOMPRESSED_MB): a decompression bomb?")
    if produced > (1 << 20) and produced > ratio * max(compressed, 1):
        return (f"{file_name}: refused, decompresses more than {ratio}:1 "
                "(BLUEROCKTEL_MAX_COMPRESSION_RATIO): a decompression bomb?")
    return None


def _check_gzip(opener, size: int, file_name: str) -> None:
    """Read the whole gzip stream once, counting, before anything is imported."""
    produced = 0
    with opener() as raw, gzip.GzipFile(fileobj=raw, mode="rb") as fh:
        try:
            while block := fh.read(READ_BLOCK):
                produced += len(block)
                if (reason := _bomb(file_name, produced, size)) is not None:
                    raise FormatError(reason)
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise FormatError(f"{file_name}: damaged gzip stream ({exc}); nothing imported") from None


def _check_zip(members: list[zipfile.ZipInfo], size: int, file_name: str) -> None:
    if len(members) > MAX_ZIP_MEMBERS:
        raise FormatError(f"{file_name}: {len(members)} members, more than {MAX_ZIP_MEMBERS}")
    # The declared sizes first (cheap), the real ones as members are read (zipfile checks CRC).
    declared = sum(m.file_size for m in members)
    if (reason := _bomb(file_name, declared, size)) is not None:
        raise FormatError(reason)


# --- the lake -----------------------------------------------------------------------------------

@contextmanager
def _lock(lake_dir: Path, name: str):
    """An exclusive advisory lock shared by every process using this data dir."""
    folder = lake_dir / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


lake_lock = _lock


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


def drop_known_records(lake_dir: Path, table: pa.Table) -> pa.Table:
    """``table`` without records already in the lake or seen earlier in the same batch."""
    if table.num_rows == 0:
        return table
    con = lake.connect_duckdb()
    try:
        con.register("batch", table.select(["cdr_id", "source_line"]))
        distinct = con.sql("SELECT count(DISTINCT cdr_id) FROM batch").fetchall()[0][0]
        if distinct < table.num_rows:
            # Keep the first row of each id.
            rows = pa.table({"cdr_id": table.column("cdr_id"), "i": pa.array(range(table.num_rows), pa.int64())})
            con.register("numbered", rows)
            first = con.sql("SELECT min(i) AS i FROM numbered GROUP BY cdr_id ORDER BY i").to_arrow_table()
            table = table.take(first.column("i"))
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


def write_months(lake_dir: Path, table: pa.Table) -> list[str]:
    """One Parquet file per UTC month of ``start_at``; the months written."""
    if table.num_rows == 0:
        return []
    months, keys = _month_keys(table)
    for month in months:
        part = table if keys is None else table.filter(
            pc.equal(keys, int(month[:4]) * 100 + int(month[5:])))
        lake.write_partition(lake_dir, "cdrs", month, part)
    return months


def quarantine_id(source: str, file: str, line: int, raw: str) -> str:
    return cdr_id(source, file, str(line), raw)


def write_quarantine(lake_dir: Path, source: str, format: str, issues: list[CdrIssue],
                     header: str | None = None) -> int:
    """Append ``issues`` to the quarantine, skipping those already there; how many were new."""
    now = dt.datetime.now(dt.timezone.utc)
    ids = [quarantine_id(source, i.file, i.line, i.raw) for i in issues]
    known: set[str] = set()
    if lake.partition_files(lake_dir, "quarantine"):
        con = lake.connect_duckdb()
        try:
            con.register("ids", pa.table({"quarantine_id": ids}))
            known = set(con.sql(f"SELECT quarantine_id FROM {lake.scan_sql(lake_dir, 'quarantine')} "
                                "WHERE quarantine_id IN (SELECT quarantine_id FROM ids)").to_arrow_table()
                        .column(0).to_pylist())
        finally:
            con.close()
    keep = []
    for k, qid in enumerate(ids):
        if qid not in known:
            known.add(qid)
            keep.append(k)
    if not keep:
        return 0
    rows = [issues[k] for k in keep]
    table = pa.table({
        "quarantine_id": [ids[k] for k in keep],
        "source": [source] * len(rows),
        "format": [format] * len(rows),
        "source_file": [i.file for i in rows],
        "source_line": pa.array([i.line for i in rows], pa.int32()),
        "byte_offset": pa.array([i.offset for i in rows], pa.int64()),
        "reason": [i.reason for i in rows],
        "raw": [i.raw for i in rows],
        "header": pa.array([header] * len(rows), pa.string()),
        "quarantined_at": pa.array([now] * len(rows), lake.UTC_TS),
    })
    lake.write_partition(lake_dir, "quarantine", now.strftime("%Y-%m"), table)
    return len(rows)


def read_quarantine(wb, months: list[str] | None = None) -> pa.Table:
    """The quarantined records (all, or of the given import months), oldest first."""
    con = lake.connect_duckdb()
    try:
        table = con.sql(f"SELECT * FROM {lake.scan_sql(wb.lake_dir, 'quarantine', months)} "
                        "ORDER BY quarantined_at, source_file, source_line").to_arrow_table()
    finally:
        con.close()
    return table.select(lake.QUARANTINE_SCHEMA.names).cast(lake.QUARANTINE_SCHEMA)


# --- the ledger ---------------------------------------------------------------------------------

def _find_imported(wb, sha: str) -> int | None:
    from sqlalchemy import select

    from bluerocktel.db.models import CdrFile

    with wb.db.session() as s:
        return s.scalar(select(CdrFile.id).where(CdrFile.sha256 == sha,
                                                 CdrFile.status == CdrFileStatus.IMPORTED.value).limit(1))


def _mark_interrupted(wb, sha: str) -> None:
    """Rows left ``importing`` for these bytes belong to a killed import (we hold their lock)."""
    from sqlalchemy import update

    from bluerocktel.db.models import CdrFile

    with wb.db.transaction() as s:
        s.execute(update(CdrFile).where(CdrFile.sha256 == sha, CdrFile.status == CdrFileStatus.IMPORTING.value)
                  .values(status=CdrFileStatus.INTERRUPTED.value))


def _ledger_duplicate(wb, job: _Job, summary: ImportSummary, file_name: str, size: int, seen: int) -> None:
    from bluerocktel.audit import record_audit
    from bluerocktel.db.models import CdrFile

    now = dt.datetime.now(dt.timezone.utc)
    with wb.db.transaction() as s:
        row = CdrFile(source=job.source, collector=job.collector, file_name=file_name,
                      remote_path=job.remote_path, sha256=summary.sha256, size_bytes=size,
                      format=job.spec.name, status=summary.status, received=0, imported=0, duplicates=0,
                      quarantined=0, finished_at=now, duration_ms=0)
        s.add(row)
        s.flush()
        summary.cdr_file_id = row.id
        record_audit(s, job.actor, "cdr.import", "cdr_file", row.id, duplicate_of=seen,
                     **_audit_details(summary))


def _ledger_start(wb, job: _Job, summary: ImportSummary, file_name: str, size: int) -> int:
    from bluerocktel.db.models import CdrFile

    with wb.db.transaction() as s:
        row = CdrFile(source=job.source, collector=job.collector, file_name=file_name,
                      remote_path=job.remote_path, sha256=summary.sha256, size_bytes=size,
                      format=job.spec.name, status=CdrFileStatus.IMPORTING.value)
        s.add(row)
        s.flush()
        return row.id


def _ledger_finish(wb, job: _Job, summary: ImportSummary, error: str | None = None) -> None:
    from bluerocktel.audit import record_audit
    from bluerocktel.db.models import CdrFile

    with wb.db.transaction() as s:
        row = s.get(CdrFile, summary.cdr_file_id)
        row.status = summary.status
        row.received, row.imported = summary.received, summary.imported
        row.duplicates, row.quarantined = summary.duplicates, summary.quarantined
        row.finished_at = dt.datetime.now(dt.timezone.utc)
        row.duration_ms = summary.duration_ms
        row.error = error
        details = _audit_details(summary)
        if error:
            details["error"] = error
        record_audit(s, job.actor, "cdr.import", "cdr_file", row.id, **details)


def _audit_details(summary: ImportSummary) -> dict:
    return {k: v for k, v in summary.as_dict().items() if k not in ("issues", "cdr_file_id", "members")}
