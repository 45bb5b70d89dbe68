"""The SFTP collector against a real OpenSSH sshd (chrooted, key-only; see sshd.py).

Files are put on the server as a switch would (written into the chroot, owned by the SFTP
user); every remote effect is checked over SFTP. Tests taking ``wb`` run on SQLite and
PostgreSQL, those taking ``wb1`` on SQLite only.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.collectors import collect, save_state, watch
from bluerocktel.collectors import sftp as sftp_collector
from bluerocktel.collectors.sftp import RemoteFile, check_name, parse_settings, plan_files
from bluerocktel.db.models import CdrFile, CdrSource, CdrSourceState
from bluerocktel.errors import FormatError
from bluerocktel.workbench import Workbench

from mediation.asterisk_gen import generate_lines

GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"
BIN = Path(sys.executable).parent / "bluerocktel"
LINES = generate_lines(60, seed=11)          # distinct unique ids: slices of it never overlap


@pytest.fixture
def wb1(tmp_path, monkeypatch):
    """An empty workbench on SQLite (the tests that need no second backend)."""
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    workbench = Workbench.open(tmp_path / "data1")
    yield workbench
    workbench.close()


def csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@functools.lru_cache(maxsize=1)
def big_file() -> bytes:
    """About 20 MB of Asterisk Master.csv: 75,000 records."""
    return csv(generate_lines(75_000, seed=5))


def add_source(wb, server, remote: str, name: str = "pbx", **options) -> str:
    with wb.db.transaction() as s:
        s.add(CdrSource(name=name, format="asterisk-csv", url=server.url(remote), timezone="Europe/Paris",
                        country="FR", options=server.options(**options)))
    return name


def run(wb, name: str = "pbx", **hooks):
    """One collector run with test hooks, its state saved as ``collectors.collect`` does."""
    with wb.db.session() as s:
        source = s.scalar(select(CdrSource).where(CdrSource.name == name))
        s.expunge(source)
    summary = sftp_collector.collect(wb, source, "test", **hooks)
    save_state(wb, source.id, summary)
    return summary


def ledger(wb) -> list[tuple]:
    with wb.db.session() as s:
        return [(r.file_name, r.remote_path, r.collector, r.status, r.imported, r.duplicates)
                for r in s.scalars(select(CdrFile).order_by(CdrFile.id))]


def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


def lake_count(wb) -> int:
    con = lake.connect_duckdb()
    try:
        return con.sql(f"SELECT count(*) FROM {lake.scan_sql(wb.lake_dir, 'cdrs')}").fetchall()[0][0]
    finally:
        con.close()


def spool_files(wb, name: str = "pbx") -> list[str]:
    root = wb.data_dir / "spool" / name
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def state(wb, name: str = "pbx") -> CdrSourceState:
    with wb.db.session() as s:
        source = s.scalar(select(CdrSource).where(CdrSource.name == name))
        row = s.get(CdrSourceState, source.id)
        s.expunge(row)
        return row


# --- end to end -----------------------------------------------------------------------------------

def test_collect_imports_complete_files_and_moves_them(wb, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    sftp_server.put(folder, "Master-20261105.csv", GOLDEN.read_bytes())
    sftp_server.put(folder, "Master-20261106.csv.tmp", csv(LINES[:3]))      # still being written
    add_source(wb, sftp_server, remote, completion="rename", after="move")

    summary = collect(wb, "pbx")

    assert summary.status == "ok", summary.error
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (20, 17, 1, 2)
    assert summary.skipped == ["Master-20261106.csv.tmp: incomplete (still being written: temporary suffix)"]
    assert ledger(wb) == [("Master-20261105.csv", f"{remote}/Master-20261105.csv", "sftp", "imported", 17, 1)]
    rows = lake_rows(wb)
    assert len(rows) == 17
    first = rows[0]
    assert (first["source"], first["source_file"], first["source_line"]) == ("pbx", "Master-20261105.csv", 1)
    assert first["start_at"] == dt.datetime(2026, 10, 5, 7, 12, 3, tzinfo=dt.timezone.utc)   # 09:12:03 Paris
    assert (first["caller"], first["callee"], first["duration_s"], first["billsec_s"], first["direction"]) == (
        "201", "+33612345678", 218, 210, "out")
    # Moved on the server (archive folder created), the incomplete file left alone.
    assert sftp_server.listdir(remote) == ["Master-20261106.csv.tmp", "archive"]
    assert sftp_server.listdir(f"{remote}/archive") == ["Master-20261105.csv"]
    assert spool_files(wb) == []                       # the local copy is gone
    st = state(wb)
    assert (st.last_status, st.last_error) == ("ok", None)

    again = collect(wb, "pbx")
    assert (again.status, again.received, again.files) == ("ok", 0, [])
    assert len(ledger(wb)) == 1 and len(lake_rows(wb)) == 17


def test_cli_collect_json_through_the_console_script(wb, data_dir, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    sftp_server.put(folder, "Master.csv", csv(LINES[:12]))

    def cli(*args):
        return subprocess.run([str(BIN), *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                              timeout=120)

    opts = sftp_server.options(pattern="Master*.csv", stable_s=0.2, after="delete")
    added = cli("source", "add", "pbx-lyon", "--format", "asterisk-csv", "--url", sftp_server.url(remote),
                *[a for k, v in opts.items() for a in ("--option", f"{k}={v}")])
    assert added.returncode == 0, added.stderr
    done = cli("collect", "pbx-lyon", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["source"], out["collector"], out["status"], out["imported"], out["error"]) == (
        "pbx-lyon", "sftp", "ok", 12, None)
    assert [f["file"] for f in out["files"]] == [str(data_dir / "spool" / "pbx-lyon" / "Master.csv")]
    assert sftp_server.listdir(remote) == []            # after=delete
    assert len(lake_rows(wb)) == 12
    assert (state(wb, "pbx-lyon").last_status, json.loads(state(wb, "pbx-lyon").cursor)["seen"]) == ("ok", {})


# --- completion -------------------------------------------------------------------------------------

def test_stable_takes_a_file_only_once_two_polls_saw_it_unchanged(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    path = sftp_server.put(folder, "cdr-1.csv", csv(LINES[:10]), mtime=1_790_000_000)
    add_source(wb1, sftp_server, remote, stable_s=0, stable_wait=False)

    first = run(wb1)
    assert (first.status, first.files) == ("ok", [])
    assert first.skipped == ["cdr-1.csv: incomplete (size and mtime not yet seen unchanged for 0 s)"]

    with open(path, "ab") as fh:                        # the switch is still writing it
        fh.write(csv(LINES[10:15]))
    os.utime(path, (1_790_000_060, 1_790_000_060))
    assert run(wb1).files == []

    third = run(wb1)
    assert (third.imported, third.skipped) == (15, [])
    assert ledger(wb1) == [("cdr-1.csv", f"{remote}/cdr-1.csv", "sftp", "imported", 15, 0)]
    assert json.loads(state(wb1).cursor)["taken"] == {"cdr-1.csv": [path.stat().st_size, 1_790_000_060]}


def test_stable_wait_lists_again_within_the_run(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    path = sftp_server.put(folder, "cdr-2.csv", csv(LINES[:4]))
    add_source(wb1, sftp_server, remote, stable_s=0.2)
    waits = []

    def grow_while_waiting(seconds):
        waits.append(seconds)
        with open(path, "ab") as fh:
            fh.write(csv(LINES[4:6]))

    grown = run(wb1, sleep=grow_while_waiting)
    assert waits == [pytest.approx(0.21)] and grown.files == []
    assert grown.skipped == ["cdr-2.csv: incomplete (size and mtime not yet seen unchanged for 0.2 s)"]

    def no_wait_expected(seconds):
        raise AssertionError("the previous run's second listing saw it already, 0.2 s ago")

    time.sleep(0.25)
    taken = run(wb1, sleep=no_wait_expected)
    assert taken.imported == 6 and waits == [pytest.approx(0.21)]


def test_marker_waits_for_the_done_file_and_never_imports_it(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    sftp_server.put(folder, "cdr-3.csv", csv(LINES[:5]))
    add_source(wb1, sftp_server, remote, completion="marker", after="move", archive_dir="../archive-3")

    waiting = run(wb1)
    assert waiting.files == []
    assert waiting.skipped == ["cdr-3.csv: incomplete (waiting for its marker cdr-3.csv.done)"]

    sftp_server.put(folder, "cdr-3.csv.done", b"")
    taken = run(wb1)
    assert (taken.imported, taken.skipped) == (5, [])
    assert [row[0] for row in ledger(wb1)] == ["cdr-3.csv"]
    assert sftp_server.listdir(remote) == []
    assert sftp_server.listdir(f"{remote}/../archive-3") == ["cdr-3.csv", "cdr-3.csv.done"]


def test_rename_takes_a_file_once_its_temporary_suffix_is_gone(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    part = sftp_server.put(folder, "cdr-4.csv.part", csv(LINES[:7]))
    add_source(wb1, sftp_server, remote, completion="rename", after="rename", pattern="*.csv", keep_local=True)

    waiting = run(wb1)
    assert waiting.files == []
    assert waiting.skipped == ["cdr-4.csv.part: incomplete (still being written: temporary suffix)"]

    os.rename(part, folder / "cdr-4.csv")
    taken = run(wb1)
    assert (taken.imported, taken.skipped) == (7, [])
    assert sftp_server.listdir(remote) == ["cdr-4.csv.imported"]
    assert spool_files(wb1) == ["imported/cdr-4.csv"]          # keep_local
    assert (wb1.data_dir / "spool" / "pbx" / "imported" / "cdr-4.csv").read_bytes() == csv(LINES[:7])
    quiet = run(wb1)                              # the .imported file is neither taken nor reported
    assert (quiet.files, quiet.skipped) == ([], [])


# --- after ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("after", "left"), [
    ("move", ["archive"]),
    ("rename", ["cdr-5.csv.imported"]),
    ("delete", []),
    ("keep", ["cdr-5.csv"]),
])
def test_after_action_is_done_on_the_server_and_the_file_is_taken_once(wb1, sftp_server, sftp_folder, after, left):
    folder, remote = sftp_folder
    sftp_server.put(folder, "cdr-5.csv", csv(LINES[:8]))
    add_source(wb1, sftp_server, remote, completion="rename", after=after)

    assert run(wb1).imported == 8
    assert sftp_server.listdir(remote) == left
    if after == "move":
        assert sftp_server.listdir(f"{remote}/archive") == ["cdr-5.csv"]
    again = run(wb1)
    assert (again.files, again.skipped) == ([], [])
    assert len(ledger(wb1)) == 1


def test_keep_takes_a_changed_file_again_and_imports_only_its_new_records(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    path = sftp_server.put(folder, "Master.csv", csv(LINES[:10]), mtime=1_790_000_000)
    add_source(wb1, sftp_server, remote, completion="rename", after="keep")
    assert run(wb1).imported == 10
    assert run(wb1).files == []

    with open(path, "ab") as fh:                   # Asterisk appends to Master.csv
        fh.write(csv(LINES[10:14]))
    os.utime(path, (1_790_003_600, 1_790_003_600))
    grown = run(wb1)
    assert (grown.received, grown.imported, grown.duplicates) == (14, 4, 10)
    assert len(lake_rows(wb1)) == 14
    assert sftp_server.listdir(remote) == ["Master.csv"]


def test_same_bytes_under_another_name_is_a_duplicate_and_moved_anyway(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    data = csv(LINES[20:30])
    sftp_server.put(folder, "cdr-6.csv", data)
    add_source(wb1, sftp_server, remote, completion="rename", after="move")
    assert run(wb1).imported == 10

    sftp_server.put(folder, "cdr-6-resent.csv", data)
    sftp_server.put(folder, "cdr-6.csv", data)           # and once more under the archived name
    again = run(wb1)
    assert again.status == "ok"
    assert [(f.file.rsplit("/", 1)[-1], f.status, f.imported) for f in again.files] == [
        ("cdr-6-resent.csv", "duplicate", 0), ("cdr-6.csv", "duplicate", 0)]
    assert sftp_server.listdir(remote) == ["archive"]
    archived = sftp_server.listdir(f"{remote}/archive")
    assert archived[:2] == ["cdr-6-resent.csv", "cdr-6.csv"] and len(archived) == 3
    assert archived[2].startswith("cdr-6.csv.20")       # a name already archived gets a UTC time suffix
    assert [row[3] for row in ledger(wb1)] == ["imported", "duplicate", "duplicate"]
    assert len(lake_rows(wb1)) == 10


def test_process_killed_between_import_and_move_counts_nothing_twice(wb, data_dir, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    sftp_server.put(folder, "cdr-7.csv", csv(LINES[30:42]))
    add_source(wb, sftp_server, remote, completion="rename", after="move")
    script = textwrap.dedent("""
        import os, sys
        from sqlalchemy import select
        from bluerocktel.collectors import sftp
        from bluerocktel.db.models import CdrSource
        from bluerocktel.workbench import Workbench

        wb = Workbench.open(sys.argv[1])
        with wb.db.session() as s:
            source = s.scalar(select(CdrSource).where(CdrSource.name == "pbx"))
            s.expunge(source)
        # Die the hard way right after the import committed, before the remote move.
        sftp.collect(wb, source, "test", on_imported=lambda name, summary: os._exit(9))
        raise SystemExit("not reached")
    """)
    died = subprocess.run([sys.executable, "-c", script, str(data_dir)], capture_output=True, text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    assert sftp_server.listdir(remote) == ["cdr-7.csv"]          # still there: not moved
    assert [row[3] for row in ledger(wb)] == ["imported"] and len(lake_rows(wb)) == 12

    summary = collect(wb, "pbx")
    assert summary.status == "ok"
    assert [(f.status, f.imported) for f in summary.files] == [("duplicate", 0)]
    assert sftp_server.listdir(remote) == ["archive"]
    assert sftp_server.listdir(f"{remote}/archive") == ["cdr-7.csv"]
    assert [row[3] for row in ledger(wb)] == ["imported", "duplicate"]
    assert len(lake_rows(wb)) == 12


# --- dropped connections ---------------------------------------------------------------------------

def test_dropped_connection_mid_transfer_resumes_from_the_partial_file(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    data = big_file()
    sftp_server.put(folder, "Master-big.csv", data)
    add_source(wb1, sftp_server, remote, completion="rename", after="move", backoff_s=0)
    events, dropped = [], []

    def progress(event):
        events.append(event)
        if event.attempt == 1 and event.offset >= 4 << 20 and not dropped:
            dropped.append(sftp_server.drop_connections())      # kill the sshd processes of the session

    summary = run(wb1, on_progress=progress)

    assert summary.status == "ok", summary.error
    assert dropped and dropped[0] >= 1
    first = [e for e in events if e.attempt == 1]
    second = [e for e in events if e.attempt == 2]
    assert first and second and {e.attempt for e in events} == {1, 2}
    cut = first[-1].offset
    assert (4 << 20) <= cut < len(data)
    assert second[0].resumed_from == cut                 # went on from the partial file, not from 0
    transferred = (cut - 0) + (second[-1].offset - second[0].resumed_from)
    assert transferred == len(data) == second[-1].offset  # each byte fetched once
    assert (summary.received, summary.imported, summary.quarantined) == (75_000, 75_000, 0)
    with wb1.db.session() as s:
        [row] = s.scalars(select(CdrFile)).all()
        assert row.sha256 == hashlib.sha256(data).hexdigest() and row.size_bytes == len(data)
    assert lake_count(wb1) == 75_000
    assert sftp_server.listdir(f"{remote}/archive") == ["Master-big.csv"]
    assert spool_files(wb1) == []


def test_a_run_that_lost_the_connection_is_resumed_by_the_next_run(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    data = big_file()
    sftp_server.put(folder, "Master-big.csv", data)
    add_source(wb1, sftp_server, remote, completion="rename", after="move", retries=0)
    cut = []

    def progress(event):
        if event.offset >= 4 << 20 and not cut:
            cut.append(sftp_server.drop_connections())

    failed = run(wb1, on_progress=progress)
    assert failed.status == "failed" and failed.files == []
    assert f"sftp brt-sftp@127.0.0.1:{sftp_server.port}: connection lost while downloading " \
           f"{remote}/Master-big.csv (byte " in failed.error
    assert "the next run resumes from there" in failed.error
    assert state(wb1).last_status == "failed"
    assert spool_files(wb1) == [".meta/Master-big.csv", ".partial/Master-big.csv"]
    kept = (wb1.data_dir / "spool" / "pbx" / ".partial" / "Master-big.csv").stat().st_size
    assert (4 << 20) <= kept < len(data)
    assert sftp_server.listdir(remote) == ["Master-big.csv"] and ledger(wb1) == []

    events = []
    resumed = run(wb1, on_progress=events.append)
    assert resumed.status == "ok" and resumed.imported == 75_000
    assert events[0].resumed_from == kept and events[-1].offset == len(data)
    with wb1.db.session() as s:
        assert s.scalar(select(CdrFile.sha256)) == hashlib.sha256(data).hexdigest()
    assert spool_files(wb1) == []


def test_a_partial_download_is_resumed_only_if_the_remote_file_is_the_same(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    data = csv(LINES[:40])
    put = sftp_server.put(folder, "cdr-11.csv", data, mtime=1_790_000_000)
    add_source(wb1, sftp_server, remote, completion="rename", after="keep")
    spool = wb1.data_dir / "spool" / "pbx"
    (spool / ".partial").mkdir(parents=True)
    (spool / ".meta").mkdir()
    half = len(data) // 2
    # As a run killed mid-download leaves it: the first half, and what it was a part of.
    (spool / ".partial" / "cdr-11.csv").write_bytes(data[:half])
    (spool / ".meta" / "cdr-11.csv").write_text(json.dumps(
        {"remote": f"{remote}/cdr-11.csv", "size": len(data), "mtime": 1_790_000_000}))
    events = []
    assert run(wb1, on_progress=events.append).imported == 40
    assert [(e.resumed_from, e.offset) for e in events] == [(half, len(data))]

    # The switch rewrote the file (new mtime) after a partial download of its old version.
    new = csv(LINES[:40] + LINES[40:45])
    put.write_bytes(new)
    os.utime(put, (1_790_000_900, 1_790_000_900))
    (spool / ".partial" / "cdr-11.csv").write_bytes(b"stale bytes of the old version")
    (spool / ".meta" / "cdr-11.csv").write_text(json.dumps(
        {"remote": f"{remote}/cdr-11.csv", "size": len(new), "mtime": 1_790_000_000}))
    events.clear()
    again = run(wb1, on_progress=events.append)
    assert (again.imported, again.duplicates, again.quarantined) == (5, 40, 0)
    assert [(e.resumed_from, e.offset) for e in events] == [(0, len(new))]
    with wb1.db.session() as s:
        assert s.scalars(select(CdrFile.sha256).order_by(CdrFile.id)).all() == [
            hashlib.sha256(data).hexdigest(), hashlib.sha256(new).hexdigest()]


def test_a_local_copy_left_by_a_dead_run_is_imported_once_its_remote_file_is_gone(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    add_source(wb1, sftp_server, remote, completion="rename", after="delete")
    spool = wb1.data_dir / "spool" / "pbx"
    spool.mkdir(parents=True)
    # Downloaded whole (renamed from .partial) when the process died; the switch rotated it away.
    (spool / "cdr-12.csv").write_bytes(csv(LINES[45:48]))
    sftp_server.put(folder, "cdr-13.csv", b"")          # an empty file is a file too

    summary = run(wb1)

    assert (summary.status, summary.imported) == ("ok", 3)
    assert [(row[0], row[1], row[3], row[4]) for row in ledger(wb1)] == [
        ("cdr-12.csv", f"{remote}/cdr-12.csv", "imported", 3), ("cdr-13.csv", f"{remote}/cdr-13.csv", "imported", 0)]
    assert spool_files(wb1) == [] and sftp_server.listdir(remote) == []


# --- refusals ---------------------------------------------------------------------------------------

def test_odd_and_traversal_names_and_non_regular_files_are_skipped(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    good = csv(LINES[42:44])
    sftp_server.put(folder, "good.csv", good)
    odd = ["-rf.csv", ".hidden.csv", "a..b.csv", "back\\slash.csv", "new\nline.csv", "notes.txt"]
    for k, name in enumerate(odd):
        sftp_server.put(folder, name, csv(LINES[44 + k:45 + k]))
    sftp_server.put(folder, b"latin1-\xe9.csv", csv(LINES[50:51]))
    os.symlink("/etc/passwd", folder / "passwd.csv")
    os.symlink("good.csv", folder / "alias.csv")
    os.mkfifo(folder / "pipe.csv")
    (folder / "sub.csv").mkdir()
    add_source(wb1, sftp_server, remote, completion="rename", pattern="*.csv")

    summary = run(wb1)

    assert summary.status == "ok" and summary.imported == 2
    assert ledger(wb1) == [("good.csv", f"{remote}/good.csv", "sftp", "imported", 2, 0)]
    assert sorted(summary.skipped) == sorted([
        "-rf.csv: refused name: starts with '-'",
        ".hidden.csv: refused name: starts with '.'",
        "a..b.csv: refused name: holds '..'",
        "back\\slash.csv: refused name: holds a path separator",
        "'new\\nline.csv': refused name: holds a control character",
        "notes.txt: does not match pattern '*.csv'",
        "'latin1-\\udce9.csv': refused name: not valid UTF-8",
        "passwd.csv: a symbolic link, not followed",
        "alias.csv: a symbolic link, not followed",
        "pipe.csv: not a regular file, not followed",
    ])
    assert spool_files(wb1) == []                   # nothing left behind, nothing written elsewhere
    assert {p.name for p in wb1.data_dir.iterdir()} <= {
        "bluerocktel.db", "bluerocktel.db-shm", "bluerocktel.db-wal", "lake", "spool", "secret_key"}


@pytest.mark.parametrize(("name", "reason"), [
    ("../../etc/passwd", "refused name: holds a path separator"),
    ("..", "refused name: holds '..'"),
    ("a/b.csv", "refused name: holds a path separator"),
    ("x\x00.csv", "refused name: holds a NUL byte"),
    ("", "empty name"),
    ("x" * 201 + ".csv", "refused name: longer than 200 bytes"),
    ("CDR_20261105.csv", None),
    ("Master.csv.1", "does not match pattern '*.csv'"),
])
def test_check_name(name, reason):
    assert check_name(name, "*.csv") == reason


def test_a_malicious_listing_never_yields_a_path_outside_the_spool():
    settings = parse_settings("sftp://u@h/d", {"key_file": "/k", "completion": "rename"})
    files = [RemoteFile(name, 10, 0, 0o100644) for name in ("../x.csv", "/etc/cron.d/x", "ok.csv", "a\\..\\b")]
    plan = plan_files(files, settings, {}, time.time())
    assert [f.name for f in plan.ready] == ["ok.csv"]
    assert len(plan.skipped) == 3


@pytest.mark.parametrize(("options", "expected"), [
    ({"host_key": "WRONG"}, "host key mismatch: the server offered ssh-ed25519 SHA256:"),
    ({"known_hosts": "EMPTY"}, "host key not known: [127.0.0.1]:{port} is not in "),
])
def test_a_host_key_that_does_not_match_is_refused(wb1, sftp_server, sftp_folder, tmp_path, options, expected):
    folder, remote = sftp_folder
    sftp_server.put(folder, "cdr-8.csv", csv(LINES[51:53]))
    opts = {"completion": "rename"}
    if options.get("host_key") == "WRONG":     # another ed25519 key: the client's, not the server's
        opts.update(host_key=Path(f"{sftp_server.client_key}.pub").read_text(), known_hosts=str(tmp_path / "none"))
        (tmp_path / "none").write_text("")
    else:
        (tmp_path / "empty").write_text("")
        opts["known_hosts"] = str(tmp_path / "empty")
    add_source(wb1, sftp_server, remote, **opts)

    summary = collect(wb1, "pbx")

    assert summary.status == "failed"
    assert summary.error.startswith(f"sftp brt-sftp@127.0.0.1:{sftp_server.port}: ")
    assert expected.format(port=sftp_server.port) in summary.error
    assert "refused" in summary.error
    assert ledger(wb1) == [] and spool_files(wb1) == []
    assert (state(wb1).last_status, state(wb1).last_error) == ("failed", summary.error)


def test_the_host_key_option_alone_is_enough(wb1, sftp_server, sftp_folder, tmp_path):
    folder, remote = sftp_folder
    sftp_server.put(folder, "cdr-9.csv", csv(LINES[53:55]))
    (tmp_path / "empty").write_text("")
    add_source(wb1, sftp_server, remote, completion="rename", host_key=sftp_server.host_key_line,
               known_hosts=str(tmp_path / "empty"))
    assert collect(wb1, "pbx").imported == 2


def test_unreachable_server_or_wrong_credentials_fail_the_run_without_raising(wb1, sftp_server, sftp_folder):
    from collectors.sshd import free_port

    folder, remote = sftp_folder
    port = sftp_server.port
    cases = {
        "closed": (f"sftp://brt-sftp@127.0.0.1:{free_port()}/cdr", {},
                   "sftp brt-sftp@127.0.0.1:{p}: connection refused"),
        "wrong-key": (sftp_server.url(remote), {"key_file": str(sftp_server.host_key_file)},
                      f"sftp brt-sftp@127.0.0.1:{port}: authentication failed for user brt-sftp (key "),
        "no-dir": (sftp_server.url("/cdr/does-not-exist"), {},
                   f"sftp brt-sftp@127.0.0.1:{port}: no such directory /cdr/does-not-exist"),
        "no-auth": (sftp_server.url(remote), {"key_file": None},
                    "CDR source no-auth: say how to sign in: option key_file"),
        "no-password": (sftp_server.url(remote), {"key_file": None, "password_env": "BLUEROCKTEL_CDR_TEST_UNSET_PASSWORD"},
                        f"sftp brt-sftp@127.0.0.1:{port}: environment variable BLUEROCKTEL_CDR_TEST_UNSET_PASSWORD "
                        "(option password_env) is not set"),
    }
    with wb1.db.transaction() as s:
        for name, (url, extra, _) in cases.items():
            options = {k: v for k, v in sftp_server.options(**extra).items() if v is not None}
            s.add(CdrSource(name=name, format="asterisk-csv", url=url, options=options))
    for name, (url, _, expected) in cases.items():
        summary = collect(wb1, name)
        assert summary.status == "failed", name
        p = url.split(":")[2].split("/")[0]
        assert summary.error.startswith(expected.format(p=p)), summary.error
        assert state(wb1, name).last_status == "failed"


def test_a_file_the_importer_refuses_is_reported_left_and_not_fetched_again(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    sftp_server.put(folder, "cdr-10.csv.gz", b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    add_source(wb1, sftp_server, remote, completion="rename", after="move")
    fetched = []

    first = run(wb1, on_progress=fetched.append)
    assert first.status == "ok" and first.files == [] and fetched
    [reason] = first.skipped
    assert reason.startswith("cdr-10.csv.gz: not imported: cdr-10.csv.gz: damaged gzip stream")
    fetched.clear()
    second = run(wb1, on_progress=fetched.append)
    assert fetched == []                                  # not downloaded again
    assert second.skipped == [f"cdr-10.csv.gz: refused by an earlier run, not taken again until it changes: "
                              f"{reason.split(': not imported: ', 1)[1]}"]
    assert sftp_server.listdir(remote) == ["cdr-10.csv.gz"]     # left where it was


def test_max_files_takes_the_oldest_first(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    for k, mtime in enumerate([1_790_000_300, 1_790_000_100, 1_790_000_200]):
        sftp_server.put(folder, f"cdr-1{k}.csv", csv(LINES[k * 2:k * 2 + 2]), mtime=mtime)
    add_source(wb1, sftp_server, remote, completion="rename", after="delete", max_files=2)
    first = run(wb1)
    assert [Path(f.file).name for f in first.files] == ["cdr-11.csv", "cdr-12.csv"]
    assert first.skipped == ["cdr-10.csv: left for the next run (max_files 2)"]
    assert [Path(f.file).name for f in run(wb1).files] == ["cdr-10.csv"]


def test_a_source_with_a_mapping_reads_its_files_with_it(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    sftp_server.put(folder, "export-1105.csv", b"id;start;end;from;to\n"
                    b"A1;2026-11-05 10:00:00;2026-11-05 10:02:05;0145678912;0612345678\n")
    with wb1.db.transaction() as s:
        s.add(CdrSource(name="pbx", format="custom", url=sftp_server.url(remote),
                        options=sftp_server.options(completion="rename"), mapping=textwrap.dedent("""
                            [format]
                            name = "pbx-mini"
                            kind = "delimited"
                            [input]
                            delimiter = ";"
                            [fields]
                            unique_id = "id"
                            start = "start"
                            end = "end"
                            caller = "from"
                            callee = "to"
                            [key]
                            fields = ["unique_id"]
                        """)))
    summary = collect(wb1, "pbx")
    assert (summary.status, summary.imported) == ("ok", 1)
    with wb1.db.session() as s:
        assert s.scalar(select(CdrFile.format)) == "pbx-mini"
    [row] = lake_rows(wb1)
    assert (row["start_at"], row["duration_s"], row["caller"], row["callee"]) == (
        dt.datetime(2026, 11, 5, 9, 0, tzinfo=dt.timezone.utc), 125, "+33145678912", "+33612345678")


# --- polling ------------------------------------------------------------------------------------------

def test_watch_picks_up_a_file_that_appears_between_rounds(wb1, sftp_server, sftp_folder):
    folder, remote = sftp_folder
    add_source(wb1, sftp_server, remote, completion="rename", after="move")
    results, naps = [], []

    def drop_a_file(seconds):
        naps.append(seconds)
        sftp_server.put(folder, "cdr-late.csv", csv(LINES[56:60]))

    runs = watch(wb1, ["pbx"], interval_s=0, rounds=2, on_result=results.append, sleep=drop_a_file)

    assert runs == 2 and naps == [0.0]
    assert [(r.status, r.imported) for r in results] == [("ok", 0), ("ok", 4)]
    assert sftp_server.listdir(f"{remote}/archive") == ["cdr-late.csv"]


# --- settings ---------------------------------------------------------------------------------------

def test_settings_are_checked_with_clear_errors():
    ok = parse_settings("sftp://cdr@pbx.example.net:2222/var/spool/cdr/", {"key_file": "/k", "after": "move"})
    assert (ok.user, ok.host, ok.port, ok.directory, ok.archive_path) == (
        "cdr", "pbx.example.net", 2222, "/var/spool/cdr", "/var/spool/cdr/archive")
    assert (ok.completion, ok.stable_s, ok.temp_suffixes, ok.max_files) == ("stable", 2.0, (".tmp", ".part"), 1000)
    assert parse_settings("sftp://cdr@h", {"password_env": "X"}).port == 22
    with pytest.raises(FormatError, match="the URL holds a password"):
        parse_settings("sftp://cdr:secret@h/d", {"key_file": "/k"})
    with pytest.raises(FormatError, match=r"option completion: one of stable, marker, rename, got 'later'"):
        parse_settings("sftp://cdr@h/d", {"key_file": "/k", "completion": "later"})
    with pytest.raises(FormatError, match=r"option max_files: a whole number expected, got 'many'"):
        parse_settings("sftp://cdr@h/d", {"key_file": "/k", "max_files": "many"})
    with pytest.raises(FormatError, match="archive folder cannot be the collected folder"):
        parse_settings("sftp://cdr@h/d", {"key_file": "/k", "after": "move", "archive_dir": "."})
    assert parse_settings("sftp://cdr@h/d", {"key_file": "/k", "temp_suffix": ".partial, .tmp"}).temp_suffixes == (
        ".partial", ".tmp")
