"""Importing one CDR file (or pushed batch) into the lake, losslessly.

:func:`import_cdr_file` / :func:`import_cdr_bytes`:

1. **Identity.** The input's SHA-256 (of the bytes as received, compressed or not) is looked up
   in the ``cdr_files`` ledger; the same bytes imported before make a ``duplicate`` row and
   nothing else. A lock (one of 256, chosen by the SHA-256's first byte) makes a second import
   of the same bytes wait for the first, across processes.
2. **Unpacking.** A gzip input (magic ``1f 8b``) is read once, decompressing and counting,
   before anything is imported; a zip input (``PK\\x03\\x04``) has its declared sizes checked,
   then every member decompressed and counted (and its CRC checked by :mod:`zipfile`). Past
   ``BLUEROCKTEL_MAX_DECOMPRESSED_MB`` in all, or past ``BLUEROCKTEL_MAX_COMPRESSION_RATIO``
   times the compressed size once past 1 MiB, the input is refused whole as a decompression
   bomb; a truncated or damaged stream is refused whole too. ``zipfile`` itself never yields
   more than a member's declared size (it cuts the output there, and the CRC then fails), so a
   member lying about its size is refused as damaged; the counting is kept anyway, also while
   the records are read. A gzip input's records keep the inner name (``Master.csv.gz`` →
   ``Master.csv``); each member of a zip is imported as its own file ``archive.zip/member``
   (its own ledger row, identified by the member's bytes); archives inside archives are refused.
   A member its format refuses is ledgered ``failed``, the other members are imported, then the
   import raises a :class:`FormatError` naming the refused members.
3. **Ledger first.** A ``cdr_files`` row is committed ``importing``. A refused input (bomb,
   damaged archive, a parser's :class:`FormatError`) ends as a ``failed`` row with the error and
   zero counts, and nothing of it in the lake: a zip refused whole gets one ``failed`` row for
   the archive.
4. **Slices.** A ``line_based`` format is parsed in slices of ``BLUEROCKTEL_IMPORT_CHUNK_MB``
   cut at line ends (its header lines repeated at the head of each), so memory stays bounded
   whatever the file size; other formats are read whole (up to ``BLUEROCKTEL_MAX_CDR_FILE_MB``).
   While the lake lock is held (one importer at a time per data dir, across processes, for the
   whole file), each slice's records whose ``cdr_id`` is already in the lake, or earlier in the
   file, are counted as duplicates, the others written one Parquet file per UTC month; its
   quarantined records go to the quarantine (once: by ``quarantine_id``, the SHA-256 of source,
   file, line and raw text). Only the bytes fingerprinted in step 1 are read (a file still being
   appended to is imported up to the size it had), and their SHA-256 is checked again at the
   end: a file rewritten meanwhile is refused.
5. **Finish.** The ledger row becomes ``imported`` with its counts and timings, with an audit
   entry. If the import fails instead (an exception), the Parquet files it wrote are removed
   before the lake lock is released and the row becomes ``failed``.

Killed at any point (SIGKILL, power loss), an import leaves only whole Parquet files (each
written to a temporary name, fsynced and renamed) and a ledger row ``importing``; running it
again marks that row ``interrupted``, finds the records already written and counts them as
duplicates, and the quarantine skips the records it already holds: the lake ends with exactly
the records of one clean import (``tests/mediation/test_lossless.py`` kills real imports).

Test hook (not a setting): when the environment variable ``BLUEROCKTEL_TEST_KILL_AT`` names a
point, the importing process sends itself SIGKILL there. Points: ``ledger-start`` (row
committed, nothing written), ``slice-N-records`` (slice N's record files written, not its
quarantine), ``slice-N`` (slice N written whole), ``ledger-finish`` (every slice written, the
row not finished); and ``reprocess-records`` in :mod:`bluerocktel.mediation.quarantine` (records
read again written, their resolutions not). Slices are numbered from 1.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import gzip
import hashlib
import io
import os
import signal
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
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
KILL_HOOK = "BLUEROCKTEL_TEST_KILL_AT"


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
    held_back_bytes: int = 0        # an unterminated last line left for the next import
    members: list["ImportSummary"] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {
            "file": self.file, "format": self.format, "source": self.source,
            "received": self.received, "imported": self.imported, "duplicates": self.duplicates,
            "quarantined": self.quarantined, "status": self.status, "sha256": self.sha256,
            "cdr_file_id": self.cdr_file_id, "months": list(self.months), "duration_ms": self.duration_ms,
            "held_back_bytes": self.held_back_bytes,
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
        if self.held_back_bytes:
            lines.append(f"  last line unterminated ({self.held_back_bytes} bytes, still being written?): "
                         "left for the next import")
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


@dataclass(frozen=True)
class _Input:
    """One input to import: its names, how to open it, and what step 1 found about it."""

    file_name: str                   # ledger name (as received)
    shown: str                       # the summary's ``file``
    opener: Callable[[], BinaryIO]
    sha: str
    size: int
    head: bytes
    unchanged: Callable[[], bool] | None = None   # a file input: still the size and mtime it had


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

    def stat() -> tuple[int, int]:
        info = os.stat(path)
        return info.st_size, info.st_mtime_ns

    return _import(wb, job, file_name or path.name, str(path), lambda: open(path, "rb"), stat)


def import_cdr_bytes(wb, data: bytes, file_name: str, format: str | FormatSpec, source: str = "default",
                     actor: str = "api", *, timezone: str | None = None, country: str | None = None,
                     options: Mapping | None = None, collector: str = Collector.API.value) -> ImportSummary:
    """Import CDRs received as bytes (an upload, a pushed batch): same steps as a file."""
    job = _job(wb, format, source, actor, timezone, country, options, collector, None)
    return _import(wb, job, file_name, file_name, lambda: io.BytesIO(data))


def _job(wb, format, source, actor, timezone=None, country=None, options=None,
         collector=Collector.MANUAL.value, remote_path=None) -> _Job:
    """The job of an import: the format, and the source's time zone, country and options (the
    arguments win, then the ``cdr_sources`` row, then the settings)."""
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

def _import(wb, job: _Job, file_name: str, shown: str, opener: Callable[[], BinaryIO],
            stat: Callable[[], tuple[int, int]] | None = None) -> ImportSummary:
    started = time.monotonic()
    before = stat() if stat else None
    sha, size, head = _fingerprint(opener)
    if stat and stat() != before:
        before = None            # written to while hashed: verify() hashes the bytes read again
    given = _Input(file_name, shown, opener, sha, size, head,
                   (lambda: before is not None and stat() == before) if stat else None)
    if head.startswith(ZIP_MAGIC):
        return _import_zip(wb, job, given, started)
    return _import_one(wb, job, given, started)


def _import_one(wb, job: _Job, given: _Input, started: float) -> ImportSummary:
    """Steps 1 and 3 to 5 for one plain or gzip input (a whole file, or one member of a zip)."""
    summary = ImportSummary(file=given.shown, format=job.spec.name, source=job.source, sha256=given.sha)
    with _lock(wb.lake_dir, f"file-{given.sha[:2]}"):
        seen = _find_imported(wb, given.sha, job.source, job.spec.name)
        if seen is not None:
            summary.status = CdrFileStatus.DUPLICATE.value
            _ledger_duplicate(wb, job, summary, given.file_name, given.size, seen)
            return summary
        _mark_interrupted(wb, given.sha)
        summary.cdr_file_id = _ledger_start(wb, job, summary, given.file_name, given.size)
        _kill_point("ledger-start")
        try:
            compressed = given.head.startswith(GZIP_MAGIC)
            records_name = given.file_name
            if compressed:
                _check_gzip(given)
                if records_name.lower().endswith(".gz"):
                    records_name = records_name[:-3]
            _import_stream(wb, job, records_name, summary, given, compressed)
        except Exception as exc:
            # A broken program or a refused file: nothing of it is left in the lake (the
            # stream rolled its files back); ledger it as failed, then let it raise.
            summary.received = summary.imported = summary.duplicates = summary.quarantined = 0
            summary.months = []
            summary.status = CdrFileStatus.FAILED.value
            summary.duration_ms = int((time.monotonic() - started) * 1000)
            _ledger_finish(wb, job, summary, error=f"{type(exc).__name__}: {exc}")
            raise
        _kill_point("ledger-finish")
        summary.status = CdrFileStatus.IMPORTED.value
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        _ledger_finish(wb, job, summary)
        return summary


def _import_zip(wb, job: _Job, given: _Input, started: float) -> ImportSummary:
    """Check every member (sizes, CRC, bomb limits), then import each as its own file."""
    summary = ImportSummary(file=given.shown, format=job.spec.name, source=job.source, sha256=given.sha)
    with given.opener() as fh:
        try:
            try:
                archive = zipfile.ZipFile(fh)
                members = [m for m in archive.infolist() if not m.is_dir()]
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise FormatError(f"{given.file_name}: not a readable zip archive ({exc}); nothing imported") from None
            checked = _check_zip(archive, members, given)
        except FormatError as exc:
            summary.status = CdrFileStatus.FAILED.value
            summary.duration_ms = int((time.monotonic() - started) * 1000)
            _ledger_failed(wb, job, summary, given.file_name, given.size, f"FormatError: {exc}")
            raise
        refused: list[str] = []
        for member, (sha, size, head) in zip(members, checked):
            member_name = f"{given.file_name}/{member.filename}"
            try:
                sub = _import_one(wb, job, _Input(member_name, member_name, lambda m=member: archive.open(m),
                                                  sha, size, head), time.monotonic())
            except FormatError as exc:
                # Ledgered failed by _import_one; the other members are still imported.
                refused.append(str(exc))
                continue
            summary.members.append(sub)
            summary.add(sub)
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    if refused:
        raise FormatError(f"{given.file_name}: {len(refused)} of {len(members)} members refused "
                          f"({'; '.join(refused)}); the others were imported")
    if all(m.status == CdrFileStatus.DUPLICATE for m in summary.members):
        summary.status = CdrFileStatus.DUPLICATE.value
    return summary


def _import_stream(wb, job: _Job, file_name: str, summary: ImportSummary, given: _Input,
                   compressed: bool) -> None:
    """Parse, dedup and write every slice while holding the lake lock; on any failure remove
    the Parquet files written so far before the lock is released."""
    written: list[Path] = []
    # A file (not bytes received whole, not a gzip) may be being appended to: its unterminated
    # last line is held back when the format always ends its lines, or when the file changed.
    unchanged = given.unchanged
    still_written = None
    if unchanged is not None and not compressed:
        still_written = (lambda: True) if job.spec.terminated_lines else (lambda: not unchanged())

    def held_back(size: int) -> None:
        summary.held_back_bytes = size

    with _lock(wb.lake_dir, "lake"):
        pending = None
        writer = ThreadPoolExecutor(max_workers=1)
        try:
            with _ReadOnce(given, compressed) as fh:
                for number, (data, base, header) in enumerate(_slices(
                        fh, job.spec, file_name, job.options, still_written, held_back),
                                                               start=1):
                    table, issues = job.spec.parse(data, file_name=file_name, source=job.source,
                                                   timezone=job.timezone, country=job.country,
                                                   options=job.options)
                    if base:
                        table, issues = _shift(table, issues, base)
                    if pending is not None:
                        pending.result()
                    pending = writer.submit(_write_slice, wb.lake_dir, job, summary, table, issues, header,
                                            written, number)
                if pending is not None:
                    pending.result()
                fh.verify()
        except BaseException:
            if pending is not None:
                wait_futures([pending])
            for path in written:
                path.unlink(missing_ok=True)
            raise
        finally:
            writer.shutdown(wait=True)


def _write_slice(lake_dir: Path, job: _Job, summary: ImportSummary, table: pa.Table,
                 issues: list[CdrIssue], header: str | None, written: list[Path], number: int) -> None:
    """Dedup and write one parsed slice (the lake lock is held by the caller)."""
    summary.received += table.num_rows + len(issues)
    summary.quarantined += len(issues)
    if len(summary.issues) < SUMMARY_ISSUES:
        summary.issues += issues[:SUMMARY_ISSUES - len(summary.issues)]
    fresh = drop_known_records(lake_dir, table)
    summary.imported += fresh.num_rows
    summary.duplicates += table.num_rows - fresh.num_rows
    months = _write_months(lake_dir, fresh, written)
    summary.months = sorted(set(summary.months) | set(months))
    _kill_point(f"slice-{number}-records")
    if issues:
        _write_quarantine(lake_dir, job.source, job.spec.name, issues, header, written)
    _kill_point(f"slice-{number}")


def _kill_point(name: str) -> None:
    """The test hook of the module doc: SIGKILL this process at point ``name`` if asked to."""
    if os.environ.get(KILL_HOOK) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- reading, slicing and unpacking -------------------------------------------------------------

class _ReadOnce:
    """The input as the parser reads it: at most the ``size`` bytes fingerprinted in step 1,
    decompressed (and counted against the bomb limits) when gzip. :meth:`verify` refuses it if
    those bytes changed meanwhile: a file whose size and modification time did not change is
    taken as is, another one's first ``size`` bytes are hashed again; other inputs (members of a
    zip) are hashed again as they go by, on a thread of their own."""

    def __init__(self, given: _Input, compressed: bool):
        self._given = given
        self._raw = given.opener()
        self._left = given.size
        self._digest = None if given.unchanged else hashlib.sha256()
        self._hasher = None if given.unchanged else ThreadPoolExecutor(max_workers=1)   # blocks in order
        self._gzip = gzip.GzipFile(fileobj=_Adapter(self._read_raw), mode="rb") if compressed else None
        self._produced = 0

    def _read_raw(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 or n > self._left else n
        data = self._raw.read(n) if n else b""
        self._left -= len(data)
        if data and self._hasher is not None:
            self._hasher.submit(self._digest.update, data)
        return data

    def read(self, n: int = -1) -> bytes:
        if self._gzip is None:
            return self._read_raw(n)
        try:
            data = self._gzip.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise FormatError(f"{self._given.file_name}: damaged gzip stream ({exc}); nothing imported") from None
        self._produced += len(data)
        if (reason := _bomb(self._given.file_name, self._produced, self._given.size)) is not None:
            raise FormatError(reason)
        return data

    def verify(self) -> None:
        """Refuse the input if its bytes were not those fingerprinted (a file rewritten meanwhile)."""
        if self._given.unchanged is not None:
            if self._given.unchanged():
                return
            # Written to meanwhile (a Master.csv being appended to): the bytes read must still be
            # those fingerprinted.
            digest = hashlib.sha256()
            with self._given.opener() as fh:
                left = self._given.size
                while left and (block := fh.read(min(left, READ_BLOCK))):
                    digest.update(block)
                    left -= len(block)
            if left or digest.hexdigest() != self._given.sha:
                raise FormatError(f"{self._given.file_name}: changed while being imported "
                                  "(SHA-256 differs from the first read); nothing imported")
            return
        while self._left and self._read_raw(READ_BLOCK):
            pass
        self._hasher.shutdown(wait=True)
        if self._left or self._digest.hexdigest() != self._given.sha:
            raise FormatError(f"{self._given.file_name}: changed while being imported "
                              "(SHA-256 differs from the first read); nothing imported")

    def __enter__(self) -> "_ReadOnce":
        return self

    def __exit__(self, *exc) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
        if self._gzip is not None:
            self._gzip.close()
        self._raw.close()


class _Adapter(io.RawIOBase):
    """A file-like ``read`` for GzipFile over a read function."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._read(n)

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _read_exactly(fh, n: int) -> bytes:
    """Up to ``n`` bytes of ``fh``, fewer only at its end."""
    first = fh.read(n)                  # a file gives them all at once
    if len(first) == n or not first:
        return first
    parts, got = [first], len(first)
    while got < n:
        block = fh.read(min(n - got, 16 << 20))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _slices(fh, spec: FormatSpec, file_name: str, options: Mapping | None = None,
            still_written: Callable[[], bool] | None = None,
            held_back: Callable[[int], None] = lambda n: None) -> Iterator[tuple[bytes, int, str | None]]:
    """(data, lines before it in the file, header text) for each slice of the input. A last line
    without its line end is held back (``held_back(bytes)``) when ``still_written()`` says the
    file may be being written: the next import of the file takes it whole."""
    limit = int(get_setting("max_cdr_file_mb")) << 20
    if not spec.line_based:
        data = _read_exactly(fh, limit + 1)
        if len(data) > limit:
            raise FormatError(f"{file_name}: larger than BLUEROCKTEL_MAX_CDR_FILE_MB "
                              f"({limit >> 20} MiB) for format {spec.name}")
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        yield data, 0, _header_text(data, spec, _header_count(data, spec, options))
        return
    chunk = max(1, int(get_setting("import_chunk_mb"))) << 20
    header = b""
    header_text = None
    carry = b""
    lines_before = 0
    first = True
    while True:
        block = _read_exactly(fh, chunk)
        if block:
            cut = block.rfind(b"\n")
            if cut < 0:
                carry += block
                if len(carry) > limit:
                    raise FormatError(f"{file_name}: a line longer than BLUEROCKTEL_MAX_CDR_FILE_MB "
                                      f"({limit >> 20} MiB) after line {lines_before}: not a {spec.name} file")
                continue
            # one copy: the carried start of a line, then the block up to its last line end
            data = b"".join((carry, memoryview(block)[:cut + 1])) if carry or cut + 1 < len(block) else block
            carry = block[cut + 1:]
        elif carry:
            if still_written is not None and still_written():
                held_back(len(carry))   # an unterminated last line being written: the next import's
                return
            data, carry = carry, b""
        else:
            return
        if first:
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            count = _header_count(data, spec, options)
            if count:
                header = _first_lines(data, count)
                header_text = _header_text(data, spec, count)
            yield data, 0, header_text
        else:
            yield header + data, lines_before - header.count(b"\n"), header_text
        lines_before += data.count(b"\n")
        first = False
        if not block:
            return


def _header_count(data: bytes, spec: FormatSpec, options: Mapping | None) -> int:
    """How many header lines this file has: the format's own count, or what it reads in the file."""
    if spec.header_lines_of is not None:
        return spec.header_lines_of(data, options or {})
    return spec.header_lines


def _header_text(data: bytes, spec: FormatSpec, count: int) -> str | None:
    """The format's header lines as kept with quarantined records (``None`` when it has none).

    Decoded like the records' raw text, so that header and lines read again together (as UTF-8,
    ``cdr quarantine reprocess``) name the same columns: in the format's ``encoding`` when its
    spec has one, else UTF-8, else (not UTF-8: a latin-1 or cp1252 export) latin-1, which maps
    every byte to the character it is in both but for cp1252's 0x80-0x9F.
    """
    if not count:
        return None
    head = _first_lines(data, count)
    encoding = getattr(spec, "encoding", None)
    if encoding:
        text = head.decode(encoding, "replace")
    else:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = head.decode("latin-1")
    return text.rstrip("\r\n") or None


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


def _fingerprint(opener, count: Callable[[int], None] | None = None) -> tuple[str, int, bytes]:
    """SHA-256, size and first bytes of the input (``count`` sees the size grow)."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with opener() as fh:
        while block := fh.read(READ_BLOCK):
            if len(head) < 8:
                head = (head + block)[:8]
            digest.update(block)
            size += len(block)
            if count is not None:
                count(len(block))
    return digest.hexdigest(), size, head


def _limits() -> tuple[int, int]:
    return int(get_setting("max_decompressed_mb")) << 20, int(get_setting("max_compression_ratio"))


def _bomb(file_name: str, produced: int, compressed: int) -> str | None:
    limit, ratio = _limits()
    if produced > limit:
        return (f"{file_name}: refused, decompresses to more than {limit >> 20} MiB "
                "(BLUEROCKTEL_MAX_DECOMPRESSED_MB): a decompression bomb? nothing imported")
    if produced > (1 << 20) and produced > ratio * max(compressed, 1):
        return (f"{file_name}: refused, decompresses more than {ratio}:1 "
                "(BLUEROCKTEL_MAX_COMPRESSION_RATIO): a decompression bomb? nothing imported")
    return None


def _check_gzip(given: _Input) -> None:
    """Read the whole gzip stream once, counting, before anything is imported."""
    produced = 0
    with given.opener() as raw, gzip.GzipFile(fileobj=raw, mode="rb") as fh:
        try:
            while block := fh.read(READ_BLOCK):
                produced += len(block)
                if (reason := _bomb(given.file_name, produced, given.size)) is not None:
                    raise FormatError(reason)
        except (OSError, EOFError, zlib.error) as exc:
            raise FormatError(f"{given.file_name}: damaged gzip stream ({exc}); nothing imported") from None


def _check_zip(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo],
               given: _Input) -> list[tuple[str, int, bytes]]:
    """Declared sizes, then every member decompressed and counted: (sha, size, head) of each."""
    name = given.file_name
    if len(members) > MAX_ZIP_MEMBERS:
        raise FormatError(f"{name}: {len(members)} members, more than {MAX_ZIP_MEMBERS}; nothing imported")
    if not members:
        raise FormatError(f"{name}: an empty zip archive; nothing imported")
    declared = sum(m.file_size for m in members)
    if (reason := _bomb(name, declared, given.size)) is not None:
        raise FormatError(reason + f" (declared sizes: {declared} bytes)")
    produced = 0

    def count(n: int) -> None:
        nonlocal produced
        produced += n
        if (reason := _bomb(name, produced, given.size)) is not None:
            raise FormatError(reason)

    out = []
    for member in members:
        try:
            sha, size, head = _fingerprint(lambda: archive.open(member), count)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError,
                ValueError) as exc:
            raise FormatError(f"{name}: damaged or unreadable zip member {member.filename!r} ({exc}); "
                              "nothing imported") from None
        if head.startswith(ZIP_MAGIC) or head.startswith(GZIP_MAGIC):
            raise FormatError(f"{name}: member {member.filename!r} is itself an archive; archives inside "
                              "archives are not unpacked, nothing imported")
        out.append((sha, size, head))
    return out


# --- the lake -----------------------------------------------------------------------------------

@contextmanager
def _lock(lake_dir: Path, name: str):
    """An exclusive advisory lock (``fcntl.flock``) shared by every process using this data dir.

    Not re-entrant: a process must not take a lock it holds (flock locks belong to open files).
    """
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
    if table.num_rows == 0 or start.null_count == table.num_rows:
        return [], None
    # integer keys, never Python datetimes (which end at year 9999)
    keys = pc.add(pc.multiply(pc.year(start), 100), pc.month(start))
    low, high = pc.min_max(keys).values()
    if low.as_py() == high.as_py():
        return [f"{low.as_py() // 100:04d}-{low.as_py() % 100:02d}"], None
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
    return _write_months(lake_dir, table, [])


def _write_months(lake_dir: Path, table: pa.Table, written: list[Path]) -> list[str]:
    """:func:`write_months`, appending each file written to ``written``."""
    if table.num_rows == 0:
        return []
    months, keys = _month_keys(table)
    for month in months:
        part = table if keys is None else table.filter(
            pc.equal(keys, int(month[:4]) * 100 + int(month[5:])))
        written.append(lake.write_partition(lake_dir, "cdrs", month, part))
    return months


def quarantine_id(source: str, file: str, line: int, raw: str) -> str:
    return cdr_id(source, file, str(line), raw)


def write_quarantine(lake_dir: Path, source: str, format: str, issues: list[CdrIssue],
                     header: str | None = None) -> int:
    """Append ``issues`` to the quarantine, skipping those already there; how many were new."""
    return _write_quarantine(lake_dir, source, format, issues, header, [])


def _write_quarantine(lake_dir: Path, source: str, format: str, issues: list[CdrIssue], header: str | None,
                      written: list[Path]) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    ids = [quarantine_id(source, i.file, i.line, i.raw) for i in issues]
    known: set[str] = set()
    if lake.partition_files(lake_dir, "quarantine"):
        con = lake.connect_duckdb()
        try:
            con.register("ids", pa.table({"quarantine_id": pa.array(ids, pa.string())}))
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
    written.append(lake.write_partition(lake_dir, "quarantine", now.strftime("%Y-%m"), table))
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

def _find_imported(wb, sha: str, source: str, format: str) -> int | None:
    """The ledger row of these bytes imported before for this source in this format, if any (the
    same bytes imported under another source or with the wrong format do not block them)."""
    from sqlalchemy import select

    from bluerocktel.db.models import CdrFile

    with wb.db.session() as s:
        return s.scalar(select(CdrFile.id).where(CdrFile.sha256 == sha, CdrFile.source == source,
                                                 CdrFile.format == format,
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


def _ledger_failed(wb, job: _Job, summary: ImportSummary, file_name: str, size: int, error: str) -> None:
    """A ``failed`` row for an input refused before any of it was imported (a zip archive)."""
    summary.cdr_file_id = _ledger_start(wb, job, summary, file_name, size)
    _ledger_finish(wb, job, summary, error=error)


def _audit_details(summary: ImportSummary) -> dict:
    return {k: v for k, v in summary.as_dict().items() if k not in ("issues", "cdr_file_id", "members")}
