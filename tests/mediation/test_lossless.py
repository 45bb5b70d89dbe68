"""Lossless by construction: imports killed with SIGKILL, imports racing, gzip and zip inputs.

The kills and races use the real console script in subprocesses (``bluerocktel cdr import``);
the reference is one clean import of the same file into a fresh data dir. A ``database_url``
test runs on SQLite and on PostgreSQL (its database shared with the subprocesses through
``BLUEROCKTEL_DATABASE_URL``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.db.models import CdrFile
from bluerocktel.errors import FormatError
from bluerocktel.mediation import FORMATS, import_cdr_bytes, import_cdr_file, read_quarantine, register_format
from bluerocktel.mediation.formats.asterisk import parse_asterisk_csv
from bluerocktel.workbench import Workbench

from .asterisk_gen import generate_lines

BIN = Path(sys.executable).parent / "bluerocktel"
GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"
LINES = 18_000
BAD_AT = [37 + 1201 * k for k in range(15)]          # 0-based line indexes, spread over every slice


def _corrupt(line: str, k: int) -> str:
    """A bad line of three kinds: cut by a crash, an impossible date, billsec > duration."""
    if k % 3 == 0:
        return ",".join(line.split(",")[:6])
    if k % 3 == 1:
        return line.replace('"2026-10-', '"2026-13-', 1)
    fields = line.split(",")
    fields[12], fields[13] = "5", "10"
    return ",".join(fields)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """A 5 MB Master.csv (18 columns, 18,000 lines, 15 of them bad): 5 slices of 1 MiB."""
    lines = generate_lines(LINES, variant=18, seed=11)
    for k, at in enumerate(BAD_AT):
        lines[at] = _corrupt(lines[at], k)
    path = tmp_path_factory.mktemp("big") / "Master-big.csv"
    path.write_text("\n".join(lines) + "\n")
    assert 4 << 20 < path.stat().st_size < 8 << 20
    return path


def _rows(lake_dir: Path, dataset: str, order: str) -> list[dict]:
    con = lake.connect_duckdb()
    try:
        return con.sql(f"SELECT * FROM {lake.scan_sql(lake_dir, dataset)} ORDER BY {order}").to_arrow_table().to_pylist()
    finally:
        con.close()


def lake_records(lake_dir: Path) -> list[dict]:
    return _rows(lake_dir, "cdrs", "cdr_id")


def lake_table(lake_dir: Path):
    """The lake's records as one Arrow table sorted by cdr_id (compared whole with ``equals``)."""
    con = lake.connect_duckdb()
    try:
        return con.sql(f"SELECT * FROM {lake.scan_sql(lake_dir, 'cdrs')} ORDER BY cdr_id").to_arrow_table()
    finally:
        con.close()


def count_records(lake_dir: Path) -> int:
    con = lake.connect_duckdb()
    try:
        return con.sql(f"SELECT count(*) FROM {lake.scan_sql(lake_dir, 'cdrs')}").fetchall()[0][0]
    finally:
        con.close()


def quarantined(lake_dir: Path) -> list[tuple]:
    return [(r["source"], r["source_file"], r["source_line"], r["reason"], r["raw"])
            for r in _rows(lake_dir, "quarantine", "source_file, source_line")]


@pytest.fixture(scope="module")
def reference(big_file, tmp_path_factory) -> dict:
    """One clean import of ``big_file`` into a fresh data dir (SQLite): its records and quarantine."""
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(tmp_path_factory.mktemp("reference"))
        try:
            summary = import_cdr_file(wb, big_file, "asterisk-csv", source="pbx")
        finally:
            wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    assert (summary.received, summary.imported, summary.quarantined) == (LINES, LINES - 15, 15)
    records = lake_table(wb.lake_dir)
    assert records.num_rows == LINES - 15
    return {"records": records, "quarantine": quarantined(wb.lake_dir)}


def cdr_import(path: Path, data_dir: Path, *, kill_at: str | None = None, chunk_mb: int = 1,
               extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = dict(os.environ, BLUEROCKTEL_IMPORT_CHUNK_MB=str(chunk_mb))
    env.pop("BLUEROCKTEL_TEST_KILL_AT", None)
    if kill_at:
        env["BLUEROCKTEL_TEST_KILL_AT"] = kill_at
    return subprocess.Popen([str(BIN), "cdr", "import", str(path), "--format", "asterisk-csv", "--source", "pbx",
                             "--data-dir", str(data_dir), "--json", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def ledger(data_dir: Path) -> list[tuple]:
    wb = Workbench.open(data_dir, migrate=False)
    try:
        with wb.db.session() as s:
            return [(f.file_name, f.status, f.received, f.imported, f.duplicates, f.quarantined)
                    for f in s.scalars(select(CdrFile).order_by(CdrFile.id))]
    finally:
        wb.close()


# --- SIGKILL ------------------------------------------------------------------------------------

KILL_POINTS = {
    # point: (records in the lake after the kill, quarantined records after the kill); None: some
    "ledger-start": (0, 0),                       # the row is committed, nothing written yet
    "slice-3-records": (None, None),              # mid-way: slice 3's records written, not its quarantine
    "slice-2": (None, None),                      # mid-way: after slice 2, whole
    "ledger-finish": (LINES - 15, 15),            # every slice written, the row not finished
}


def kill_then_import_again(kill_at: str, big_file: Path, reference: dict, data_dir: Path) -> None:
    code, out, err = finish(cdr_import(big_file, data_dir, kill_at=kill_at))
    assert code == -signal.SIGKILL, (out, err)

    killed_records = count_records(data_dir / "lake")
    in_quarantine = quarantined(data_dir / "lake")
    expected_records, expected_quarantine = KILL_POINTS[kill_at]
    if expected_records is not None:
        assert (killed_records, len(in_quarantine)) == (expected_records, expected_quarantine)
    else:
        assert 0 < killed_records < LINES - 15              # killed mid-way: a part is in the lake
    if kill_at == "slice-3-records":
        # slice 3's records are in the lake, its bad lines not yet in the quarantine
        lines = [line for _, _, line, _, _ in in_quarantine]
        last = max(r["source_line"] for r in lake_records(data_dir / "lake"))
        pending = [at + 1 for at in BAD_AT if at + 1 < last and at + 1 not in lines]
        assert pending and lines == [at + 1 for at in BAD_AT if at + 1 < min(pending)]
    assert ledger(data_dir) == [("Master-big.csv", "importing", 0, 0, 0, 0)]

    code, out, err = finish(cdr_import(big_file, data_dir))
    assert code == 0, err
    assert lake_table(data_dir / "lake").equals(reference["records"])     # every column of every record
    assert quarantined(data_dir / "lake") == reference["quarantine"]      # each bad line exactly once
    assert ledger(data_dir) == [
        ("Master-big.csv", "interrupted", 0, 0, 0, 0),
        ("Master-big.csv", "imported", LINES, LINES - 15 - killed_records, killed_records, 15)]


@pytest.mark.parametrize("kill_at", ["ledger-start", "slice-3-records", "ledger-finish"])
def test_an_import_killed_at_any_point_then_run_again_equals_one_clean_import(
        kill_at, big_file, reference, tmp_path, monkeypatch):
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)         # SQLite in the data dir
    kill_then_import_again(kill_at, big_file, reference, tmp_path / "data")


def test_a_killed_import_on_both_backends(big_file, reference, database_url, tmp_path):
    data_dir = tmp_path / "data"
    kill_then_import_again("slice-2", big_file, reference, data_dir)
    # ... and a third run is a duplicate of the imported file.
    code, out, _ = finish(cdr_import(big_file, data_dir))
    assert code == 0 and '"status": "duplicate"' in out
    assert count_records(data_dir / "lake") == LINES - 15


def test_imports_killed_at_random_moments_then_run_again(big_file, reference, tmp_path, monkeypatch):
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    data_dir = tmp_path / "data"
    killed = 0
    for delay in (0.5, 0.9):
        proc = cdr_import(big_file, data_dir)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code, _, _ = finish(proc)
        killed += code == -signal.SIGKILL
    code, _, err = finish(cdr_import(big_file, data_dir))
    assert code == 0, err
    assert lake_table(data_dir / "lake").equals(reference["records"])
    assert quarantined(data_dir / "lake") == reference["quarantine"]
    statuses = [row[1] for row in ledger(data_dir)]
    # every killed run that got as far as its ledger row left it interrupted; one import finished
    assert statuses.count("imported") == 1 and set(statuses) <= {"interrupted", "imported", "duplicate"}
    assert killed >= 1


# --- two imports at once ------------------------------------------------------------------------

def test_the_same_file_imported_twice_at_once_is_imported_once(big_file, reference, database_url, tmp_path):
    data_dir = tmp_path / "data"
    Workbench.open(data_dir).close()              # migrated once, so both start at once
    procs = [cdr_import(big_file, data_dir), cdr_import(big_file, data_dir)]
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert sorted('"status": "duplicate"' in out for _, out, _ in results) == [False, True]
    assert lake_table(data_dir / "lake").equals(reference["records"])
    assert quarantined(data_dir / "lake") == reference["quarantine"]
    assert sorted(row[1] for row in ledger(data_dir)) == ["duplicate", "imported"]


def test_two_overlapping_files_imported_at_once_hold_each_record_once(big_file, reference, database_url, tmp_path):
    lines = big_file.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("".join(lines[:12_000]))
    second.write_text("".join(lines[6_000:]))            # 6,000 lines in common
    data_dir = tmp_path / "data"
    Workbench.open(data_dir).close()
    procs = [cdr_import(first, data_dir), cdr_import(second, data_dir)]
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]

    records = lake_table(data_dir / "lake")
    # the same records, each once; only their file and line depend on which import came first
    keep = [c for c in records.column_names if c not in ("source_file", "source_line")]
    assert records.select(keep).equals(reference["records"].select(keep))
    rows = {row[0]: row for row in ledger(data_dir)}
    good_common = 6_000 - sum(6_000 <= at < 12_000 for at in BAD_AT)
    assert rows["first.csv"][3] + rows["second.csv"][3] == LINES - 15                 # imported
    assert rows["first.csv"][4] + rows["second.csv"][4] == good_common                # duplicates
    # each file's bad lines are quarantined once, under that file's name and line
    q = quarantined(data_dir / "lake")
    assert sorted((f, line) for _, f, line, _, _ in q) == sorted(
        [("first.csv", at + 1) for at in BAD_AT if at < 12_000]
        + [("second.csv", at - 6_000 + 1) for at in BAD_AT if at >= 6_000])


# --- gzip and zip -------------------------------------------------------------------------------

def lake_files(wb) -> list[Path]:
    return lake.partition_files(wb.lake_dir, "cdrs") + lake.partition_files(wb.lake_dir, "quarantine")


def ledger_rows(wb) -> list[tuple]:
    with wb.db.session() as s:
        return [(f.file_name, f.status, f.received, f.imported, f.duplicates, f.quarantined, f.error)
                for f in s.scalars(select(CdrFile).order_by(CdrFile.id))]


def test_a_gzip_file_imports_the_records_of_the_plain_file(wb, tmp_path):
    gz = tmp_path / "Master.csv.gz"
    gz.write_bytes(gzip.compress(GOLDEN.read_bytes()))
    packed = import_cdr_file(wb, gz, "asterisk-csv", source="pbx-paris")
    assert (packed.received, packed.imported, packed.duplicates, packed.quarantined) == (20, 17, 1, 2)

    plain_dir = tmp_path / "plain"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        other = Workbench.open(plain_dir)
        import_cdr_file(other, GOLDEN, "asterisk-csv", source="pbx-paris")
        other.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    assert lake_records(wb.lake_dir) == lake_records(other.lake_dir)        # source_file "Master.csv" too
    assert quarantined(wb.lake_dir) == quarantined(other.lake_dir)

    # The plain file after its gzip: other bytes, the same records.
    plain = import_cdr_file(wb, GOLDEN, "asterisk-csv", source="pbx-paris")
    assert (plain.status, plain.received, plain.imported, plain.duplicates, plain.quarantined) == (
        "imported", 20, 0, 18, 2)
    assert len(lake_records(wb.lake_dir)) == 17 and len(read_quarantine(wb)) == 2
    assert [row[:2] for row in ledger_rows(wb)] == [("Master.csv.gz", "imported"), ("Master.csv", "imported")]


def test_a_zip_imports_each_member_as_its_own_file(wb, tmp_path):
    lines = GOLDEN.read_text().splitlines(keepends=True)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.csv", "".join(lines[:10]))
        z.writestr("y.csv", "".join(lines[10:]))
    summary = import_cdr_file(wb, archive, "asterisk-csv", source="pbx-paris")
    assert [(m.file, m.received, m.imported, m.duplicates, m.quarantined) for m in summary.members] == [
        ("a.zip/x.csv", 10, 10, 0, 0), ("a.zip/y.csv", 10, 7, 1, 2)]
    assert (summary.received, summary.imported, summary.status) == (20, 17, "imported")
    assert [row[:6] for row in ledger_rows(wb)] == [("a.zip/x.csv", "imported", 10, 10, 0, 0),
                                                    ("a.zip/y.csv", "imported", 10, 7, 1, 2)]
    records = lake_records(wb.lake_dir)
    assert sorted({r["source_file"] for r in records}) == ["a.zip/x.csv", "a.zip/y.csv"]
    assert [(r["source_file"], r["source_line"]) for r in read_quarantine(wb).to_pylist()] == [
        ("a.zip/y.csv", 3), ("a.zip/y.csv", 4)]

    again = import_cdr_file(wb, archive, "asterisk-csv", source="pbx-paris")
    assert again.status == "duplicate" and [m.status for m in again.members] == ["duplicate", "duplicate"]
    assert "x.csv: already imported (same SHA-256), nothing imported" in again.describe()
    assert len(lake_records(wb.lake_dir)) == 17


def test_a_zip_member_refused_by_its_format_does_not_stop_the_others(wb, tmp_path):
    def refuse_junk(data: bytes, **kwargs):
        if data.startswith(b"NOT A CDR"):
            raise FormatError(f"{kwargs['file_name']}: not a Master.csv (first line 'NOT A CDR FILE')")
        return parse_asterisk_csv(data, **kwargs)

    lines = GOLDEN.read_text().splitlines(keepends=True)
    archive = tmp_path / "day.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.csv", "".join(lines[:10]))
        z.writestr("junk.csv", "NOT A CDR FILE\n")
        z.writestr("y.csv", "".join(lines[14:]))
    register_format("refuse-junk", refuse_junk)
    try:
        with pytest.raises(FormatError, match=r"day\.zip: 1 of 3 members refused \(day\.zip/junk\.csv: not a "
                                              r"Master\.csv \(first line 'NOT A CDR FILE'\)\); the others were imported"):
            import_cdr_file(wb, archive, "refuse-junk")
    finally:
        FORMATS.pop("refuse-junk")
    assert [row[:4] for row in ledger_rows(wb)] == [("day.zip/x.csv", "imported", 10, 10),
                                                    ("day.zip/junk.csv", "failed", 0, 0),
                                                    ("day.zip/y.csv", "imported", 6, 6)]
    assert len(lake_records(wb.lake_dir)) == 16


@pytest.fixture(scope="module")
def newline_bomb() -> bytes:
    """200 MiB of newlines, gzip-compressed by streaming (about 200 KB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    return b"".join([z.compress(block) for _ in range(200)] + [z.flush()])


def assert_nothing_written(wb, name: str, message: str) -> None:
    assert lake_files(wb) == []
    [row] = ledger_rows(wb)
    assert row[:6] == (name, "failed", 0, 0, 0, 0) and message in row[6]


def test_a_gzip_bomb_is_refused_by_its_ratio_and_nothing_is_written(wb, tmp_path, newline_bomb):
    bomb = tmp_path / "cdr.csv.gz"
    bomb.write_bytes(newline_bomb)
    started = time.monotonic()
    with pytest.raises(FormatError, match=r"cdr\.csv\.gz: refused, decompresses more than 200:1 "
                                          r"\(BLUEROCKTEL_MAX_COMPRESSION_RATIO\)"):
        import_cdr_file(wb, bomb, "asterisk-csv")
    assert time.monotonic() - started < 5         # stopped early, not after 200 MiB
    assert_nothing_written(wb, "cdr.csv.gz", "BLUEROCKTEL_MAX_COMPRESSION_RATIO")


def test_a_gzip_past_the_size_limit_is_refused(wb, tmp_path, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_MAX_DECOMPRESSED_MB", "1")
    text = "\n".join(generate_lines(8_000, seed=3)) + "\n"            # 2.2 MB, about 5:1
    path = tmp_path / "Master.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(FormatError, match=r"decompresses to more than 1 MiB \(BLUEROCKTEL_MAX_DECOMPRESSED_MB\)"):
        import_cdr_file(wb, path, "asterisk-csv")
    assert_nothing_written(wb, "Master.csv.gz", "BLUEROCKTEL_MAX_DECOMPRESSED_MB")


def test_a_truncated_gzip_is_refused_and_nothing_is_written(wb, tmp_path):
    data = gzip.compress(GOLDEN.read_bytes())
    path = tmp_path / "Master.csv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FormatError, match=r"Master\.csv\.gz: damaged gzip stream \(Compressed file ended before "
                                          r"the end-of-stream marker was reached\); nothing imported"):
        import_cdr_file(wb, path, "asterisk-csv")
    assert_nothing_written(wb, "Master.csv.gz", "damaged gzip stream")


def zip_of_newlines(mib: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("cdr.csv", "w") as fh:
            block = b"\n" * (1 << 20)
            for _ in range(mib):
                fh.write(block)
    return buf.getvalue()


def test_a_zip_bomb_is_refused_by_its_declared_size(wb, tmp_path):
    path = tmp_path / "bomb.zip"
    path.write_bytes(zip_of_newlines(100))
    with pytest.raises(FormatError, match=r"bomb\.zip: refused, decompresses more than 200:1 \(BLUEROCKTEL_MAX_"
                                          r"COMPRESSION_RATIO\): a decompression bomb\? nothing imported "
                                          r"\(declared sizes: 104857600 bytes\)"):
        import_cdr_file(wb, path, "asterisk-csv")
    assert_nothing_written(wb, "bomb.zip", "declared sizes")


def test_a_zip_member_lying_about_its_size_is_refused_and_nothing_is_written(wb, tmp_path):
    data = bytearray(zip_of_newlines(100))
    # Declare 1,000 bytes instead of 100 MiB, in the local header and in the central directory.
    assert data[:4] == b"PK\x03\x04"
    struct.pack_into("<I", data, 22, 1000)
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1000)
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(data))
    # zipfile stops at the declared size, then the CRC of what it read fails: refused as damaged.
    with pytest.raises(FormatError, match=r"liar\.zip: damaged or unreadable zip member 'cdr\.csv' "
                                          r"\(Bad CRC-32 for file 'cdr\.csv'\); nothing imported"):
        import_cdr_file(wb, path, "asterisk-csv")
    assert_nothing_written(wb, "liar.zip", "Bad CRC-32")


def test_an_archive_inside_an_archive_is_refused(wb, tmp_path):
    path = tmp_path / "nested.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("inner.csv.gz", gzip.compress(GOLDEN.read_bytes()))
    with pytest.raises(FormatError, match="member 'inner.csv.gz' is itself an archive"):
        import_cdr_file(wb, path, "asterisk-csv")
    assert_nothing_written(wb, "nested.zip", "itself an archive")


# --- failures and files that change --------------------------------------------------------------

def test_a_file_refused_at_its_third_slice_leaves_nothing_in_the_lake(wb, big_file, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_IMPORT_CHUNK_MB", "1")
    calls = []

    def refuse_third(data: bytes, **kwargs):
        calls.append(len(data))
        if len(calls) == 3:
            raise FormatError("slice 3: not a CDR file after all")
        return parse_asterisk_csv(data, **kwargs)

    register_format("refuse-third", refuse_third)
    try:
        with pytest.raises(FormatError, match="slice 3: not a CDR file after all"):
            import_cdr_file(wb, big_file, "refuse-third")
    finally:
        FORMATS.pop("refuse-third")
    assert len(calls) == 3
    assert lake_files(wb) == []                   # slices 1 and 2 were written, then removed
    [row] = ledger_rows(wb)
    assert row[1] == "failed" and row[6] == "FormatError: slice 3: not a CDR file after all"
    assert import_cdr_file(wb, big_file, "asterisk-csv").imported == LINES - 15


def test_a_file_appended_to_during_its_import_is_imported_up_to_its_first_size(wb, tmp_path):
    path = tmp_path / "Master.csv"
    lines = GOLDEN.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:10]))

    def parse_while_asterisk_writes(data: bytes, **kwargs):
        with open(path, "a") as fh:               # Asterisk appends a call meanwhile
            fh.write(lines[10])
        return parse_asterisk_csv(data, **kwargs)

    register_format("appending", parse_while_asterisk_writes)
    try:
        first = import_cdr_file(wb, path, "appending")
    finally:
        FORMATS.pop("appending")
    assert (first.received, first.imported) == (10, 10)
    assert first.sha256 == hashlib.sha256("".join(lines[:10]).encode()).hexdigest()
    second = import_cdr_file(wb, path, "asterisk-csv")           # the grown file: only the new call
    assert (second.received, second.imported, second.duplicates) == (11, 1, 10)


def test_a_file_rewritten_during_its_import_is_refused(wb, big_file, tmp_path, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_IMPORT_CHUNK_MB", "1")
    path = tmp_path / "Master.csv"
    original = big_file.read_bytes()
    path.write_bytes(original)

    def parse_while_rewritten(data: bytes, **kwargs):
        path.write_bytes(original.replace(b"ANSWERED", b"ANSWERXD"))       # same size, other bytes
        return parse_asterisk_csv(data, **kwargs)

    register_format("rewritten", parse_while_rewritten)
    try:
        with pytest.raises(FormatError, match=r"Master\.csv: changed while being imported \(SHA-256 differs "
                                              r"from the first read\); nothing imported"):
            import_cdr_file(wb, path, "rewritten")
    finally:
        FORMATS.pop("rewritten")
    assert lake_files(wb) == []                   # the slices read before the change were removed
    assert ledger_rows(wb)[0][1] == "failed"


# --- the same records through another collector ---------------------------------------------------

def test_records_pushed_through_the_api_after_a_file_import_are_duplicates(wb):
    import_cdr_file(wb, GOLDEN, "asterisk-csv", source="pbx-paris")
    # The same calls pushed again in another order with CRLF line ends: other bytes, same records.
    good = [line for n, line in enumerate(GOLDEN.read_text().splitlines(), start=1) if n not in (13, 14)]
    pushed = import_cdr_bytes(wb, "\r\n".join(reversed(good)).encode(), "push-0001.csv", "asterisk-csv",
                              source="pbx-paris")
    assert (pushed.status, pushed.received, pushed.imported, pushed.duplicates, pushed.quarantined) == (
        "imported", 18, 0, 18, 0)
    assert len(lake_records(wb.lake_dir)) == 17
    with wb.db.session() as s:
        assert [(f.file_name, f.collector) for f in s.scalars(select(CdrFile).order_by(CdrFile.id))] == [
            ("Master.csv", "manual"), ("push-0001.csv", "api")]


def test_stale_temporary_files_of_a_killed_writer_are_never_read(wb, tmp_path):
    import_cdr_file(wb, GOLDEN, "asterisk-csv")
    folder = wb.lake_dir / "cdrs" / "month=2026-10"
    shutil.copy(next(folder.glob("*.parquet")), folder / ".half-written.parquet.0123.tmp")
    assert len(lake_records(wb.lake_dir)) == 17 and len(lake.partition_files(wb.lake_dir, "cdrs")) == 2
