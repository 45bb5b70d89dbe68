"""import_cdr_file end to end: ledger, record dedup, lake partitions, quarantine, audit, CLI.

Every test taking ``wb`` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.db.models import AuditEntry, CdrFile, CdrSource
from bluerocktel.errors import FormatError, NotFoundError
from bluerocktel.mediation import FORMATS, ImportSummary, import_cdr_bytes, import_cdr_file, read_quarantine, register_format
from bluerocktel.mediation.records import CdrIssue

GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"
BIN = Path(sys.executable).parent / "bluerocktel"


def lake_rows(wb, months=None) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", months, order_by="source_file, source_line").to_pylist()


def test_golden_file_summary_lake_and_ledger(wb, tmp_path):
    summary = import_cdr_file(wb, GOLDEN, "asterisk-csv", source="pbx-paris", actor="alice")

    # 20 lines: 2 malformed, line 12 repeats line 1.
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (20, 17, 1, 2)
    assert summary.status == "imported"
    assert summary.months == ["2026-10", "2026-11"]
    assert [(i.line, i.reason) for i in summary.issues] == [
        (13, "wrong column count: 6 (expected 16, 18 or 21)"),
        (14, "unparseable start time: '2026-10-32 10:00:00'"),
    ]
    text = summary.describe()
    assert "20 received, 17 imported, 1 duplicates, 2 quarantined" in text
    assert "Master.csv:14: unparseable start time: '2026-10-32 10:00:00'" in text
    json.dumps(summary.as_dict())   # JSON-able

    # One Parquet file per UTC month touched (the 31 Oct 23:58 local call is still October in UTC).
    assert [p.parent.name for p in lake.partition_files(wb.lake_dir, "cdrs")] == ["month=2026-10", "month=2026-11"]
    rows = lake_rows(wb)
    assert len(rows) == 17 and 12 not in [r["source_line"] for r in rows]
    assert len(lake_rows(wb, ["2026-11"])) == 3

    with wb.db.session() as s:
        [ledger] = s.scalars(select(CdrFile)).all()
        assert (ledger.source, ledger.file_name, ledger.format, ledger.status) == (
            "pbx-paris", "Master.csv", "asterisk-csv", "imported")
        assert (ledger.received, ledger.imported, ledger.duplicates, ledger.quarantined) == (20, 17, 1, 2)
        assert ledger.sha256 == summary.sha256 and ledger.size_bytes == GOLDEN.stat().st_size
        [audit] = s.scalars(select(AuditEntry).where(AuditEntry.action == "cdr.import")).all()
        assert (audit.actor, audit.target_type, audit.target_id) == ("alice", "cdr_file", str(ledger.id))
        assert audit.details["imported"] == 17 and audit.details["sha256"] == summary.sha256


def test_same_file_twice_imports_nothing_and_is_ledgered_duplicate(wb, tmp_path):
    first = import_cdr_file(wb, GOLDEN, "asterisk-csv")
    copy = tmp_path / "Master-resent.csv"
    shutil.copy(GOLDEN, copy)
    again = import_cdr_file(wb, copy, "asterisk-csv")

    assert first.imported == 17
    assert (again.status, again.received, again.imported, again.quarantined) == ("duplicate", 0, 0, 0)
    assert "already imported" in again.describe()
    assert len(lake_rows(wb)) == 17
    assert len(read_quarantine(wb)) == 2          # the quarantine was not written twice
    with wb.db.session() as s:
        statuses = [(f.file_name, f.status) for f in s.scalars(select(CdrFile).order_by(CdrFile.id))]
        assert statuses == [("Master.csv", "imported"), ("Master-resent.csv", "duplicate")]
        audits = s.scalars(select(AuditEntry).where(AuditEntry.action == "cdr.import")
                           .order_by(AuditEntry.id)).all()
        assert [a.details["status"] for a in audits] == ["imported", "duplicate"]
        assert audits[1].details["duplicate_of"] == s.scalar(select(CdrFile.id).where(CdrFile.status == "imported"))


CALL = ('"acme","201","{dst}","from-internal","","PJSIP/201-{uid}","PJSIP/ovh-{uid}","Dial","",'
        '"2026-10-{day:02d} 10:00:00","2026-10-{day:02d} 10:00:05","2026-10-{day:02d} 10:01:05",'
        '65,60,"ANSWERED","BILLING","{uid}",""\n')


def write_calls(path: Path, uids: list[int]) -> Path:
    path.write_text("".join(CALL.format(dst=f"06123456{u:02d}", uid=f"1790000000.{u}", day=1 + u % 28)
                            for u in uids))
    return path


def test_overlapping_file_counts_the_records_already_in_the_lake(wb, tmp_path):
    a = import_cdr_file(wb, write_calls(tmp_path / "a.csv", list(range(0, 10))), "asterisk-csv")
    # b repeats records 5..9 (new bytes: a different file) and brings 10..14, one of them twice.
    b = import_cdr_file(wb, write_calls(tmp_path / "b.csv", list(range(5, 15)) + [12]), "asterisk-csv")
    assert (a.received, a.imported, a.duplicates) == (10, 10, 0)
    assert (b.status, b.received, b.imported, b.duplicates) == ("imported", 11, 5, 6)
    ids = [r["unique_id"] for r in lake_rows(wb)]
    assert sorted(ids) == sorted(f"1790000000.{u}" for u in range(15))
    # the same records (even the same bytes) from another source are other records
    c = import_cdr_file(wb, tmp_path / "b.csv", "asterisk-csv", source="pbx-lyon")
    assert (c.status, c.imported, c.duplicates) == ("imported", 10, 1)
    again = import_cdr_file(wb, tmp_path / "b.csv", "asterisk-csv", source="pbx-lyon")
    assert again.status == "duplicate"


def test_quarantine_keeps_file_line_reason_and_raw_text(wb):
    import_cdr_file(wb, GOLDEN, "asterisk-csv", source="pbx-paris")
    table = read_quarantine(wb)
    assert table.schema == lake.QUARANTINE_SCHEMA
    rows = table.to_pylist()
    assert [(r["source"], r["source_file"], r["source_line"], r["reason"]) for r in rows] == [
        ("pbx-paris", "Master.csv", 13, "wrong column count: 6 (expected 16, 18 or 21)"),
        ("pbx-paris", "Master.csv", 14, "unparseable start time: '2026-10-32 10:00:00'"),
    ]
    assert rows[0]["raw"] == GOLDEN.read_text().splitlines()[12]
    assert rows[0]["quarantined_at"] is not None
    month = rows[0]["quarantined_at"].strftime("%Y-%m")
    assert len(read_quarantine(wb, [month])) == 2
    assert len(read_quarantine(wb, ["1999-01"])) == 0


def test_source_settings_give_the_time_zone(wb, tmp_path):
    with wb.db.transaction() as s:
        s.add(CdrSource(name="pbx-tokyo", format="asterisk-csv", timezone="Asia/Tokyo"))
    path = write_calls(tmp_path / "t.csv", [1])
    import_cdr_file(wb, path, "asterisk-csv", source="pbx-tokyo")
    [row] = lake_rows(wb)
    assert row["start_at"].isoformat() == "2026-10-02T01:00:00+00:00"   # 10:00 in Tokyo


def test_unknown_format_names_the_known_ones(wb):
    with pytest.raises(FormatError, match=r"unknown CDR format 'cisco-cdr'; known formats: .*asterisk-csv"):
        import_cdr_file(wb, GOLDEN, "cisco-cdr")


def test_missing_file_is_a_clear_error(wb, tmp_path):
    with pytest.raises(NotFoundError, match="CDR file not found: .*nope.csv"):
        import_cdr_file(wb, tmp_path / "nope.csv", "asterisk-csv")


def test_a_third_party_format_registers_through_the_same_door(wb, tmp_path):
    from bluerocktel.mediation.formats.asterisk import parse_asterisk_csv

    def parse_semicolons(data: bytes, **kwargs):
        return parse_asterisk_csv(data.replace(b";", b","), **kwargs)

    register_format("asterisk-semicolon", parse_semicolons)
    try:
        path = tmp_path / "semi.csv"
        path.write_bytes(write_calls(tmp_path / "x.csv", [1, 2]).read_bytes().replace(b",", b";"))
        assert import_cdr_file(wb, path, "asterisk-semicolon").imported == 2
    finally:
        FORMATS.pop("asterisk-semicolon")


def test_a_refused_file_is_ledgered_failed_and_may_come_again(wb, tmp_path):
    def parse_nothing(data: bytes, **kwargs):
        raise FormatError("not a CDR file: no header")

    register_format("refusing", parse_nothing)
    try:
        with pytest.raises(FormatError, match="not a CDR file"):
            import_cdr_file(wb, GOLDEN, "refusing")
    finally:
        FORMATS.pop("refusing")
    assert import_cdr_file(wb, GOLDEN, "asterisk-csv").imported == 17     # failed ≠ imported before
    with wb.db.session() as s:
        assert [f.status for f in s.scalars(select(CdrFile).order_by(CdrFile.id))] == ["failed", "imported"]
        audit = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).first()
        assert audit.details["error"] == "FormatError: not a CDR file: no header"


def test_summary_describe_caps_the_listed_issues():
    issues = [CdrIssue("m.csv", n, "unparseable start time: 'x'", "raw") for n in range(1, 4)]
    summary = ImportSummary(file="/x/m.csv", format="asterisk-csv", source="default", received=30,
                            imported=27, quarantined=25, issues=issues)
    lines = summary.describe().splitlines()
    assert lines[0] == "m.csv (asterisk-csv, source default): 30 received, 27 imported, 0 duplicates, 25 quarantined"
    assert lines[1] == "  quarantined m.csv:1: unparseable start time: 'x'"
    assert lines[-1] == "  … and 22 more in the quarantine"


def test_cli_import_prints_json(wb, data_dir):
    cmd = [str(BIN), "cdr", "import", str(GOLDEN), "--format", "asterisk-csv", "--source", "pbx-paris",
           "--data-dir", str(data_dir), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert {k: payload[k] for k in ("received", "imported", "duplicates", "quarantined", "status")} == {
        "received": 20, "imported": 17, "duplicates": 1, "quarantined": 2, "status": "imported"}
    assert payload["issues"][0] == {"file": "Master.csv", "line": 13,
                                    "reason": "wrong column count: 6 (expected 16, 18 or 21)",
                                    "raw": GOLDEN.read_text().splitlines()[12], "offset": None}
    # the workbench of the test sees what the CLI wrote (same data dir, same database)
    assert len(lake_rows(wb)) == 17
    with wb.db.session() as s:
        assert s.scalar(select(CdrFile.status)) == "imported"

    again = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already imported" in again.stdout


def test_cli_unknown_format_exits_2_with_the_message(data_dir):
    done = subprocess.run([str(BIN), "cdr", "import", str(GOLDEN), "--format", "nope",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: unknown CDR format 'nope'; known formats: " in done.stderr
    assert "asterisk-csv" in done.stderr.split("known formats: ")[1].split(", ")


def test_a_record_being_written_is_left_for_the_next_import(wb, tmp_path):
    # Asterisk ends every record with a line end: an unterminated last line is a record being
    # appended. Importing it as it stands would make another record id (no uniqueid yet) and bill
    # the call twice once the line is complete.
    full = write_calls(tmp_path / "full.csv", [1, 2, 3]).read_bytes()
    live = tmp_path / "Master.csv"
    live.write_bytes(full[:len(full) - 40])             # the third line cut before its uniqueid
    first = import_cdr_file(wb, live, "asterisk-csv")
    assert (first.received, first.imported, first.quarantined) == (2, 2, 0)
    assert first.held_back_bytes > 0 and "left for the next import" in first.describe()
    live.write_bytes(full)
    second = import_cdr_file(wb, live, "asterisk-csv")
    assert (second.received, second.imported, second.duplicates, second.held_back_bytes) == (3, 1, 2, 0)
    assert sorted(r["unique_id"] for r in lake_rows(wb)) == [f"1790000000.{u}" for u in (1, 2, 3)]
    # bytes received whole (an upload) are complete: nothing is held back
    pushed = import_cdr_bytes(wb, full[:-1], "upload.csv", "asterisk-csv", source="other")
    assert (pushed.imported, pushed.held_back_bytes) == (3, 0)


def test_the_same_bytes_in_another_format_are_not_a_duplicate(wb, tmp_path):
    path = write_calls(tmp_path / "calls.csv", [1, 2])
    columns = ["historyid", "callid", "time-start", "time-answered", "time-end", "from-no", "to-no"]
    wrong = import_cdr_file(wb, path, "3cx", source="pbx", options={"columns": columns})
    assert wrong.status == "imported" and wrong.imported == 0 and wrong.quarantined == 2
    right = import_cdr_file(wb, path, "asterisk-csv", source="pbx")
    assert (right.status, right.imported) == ("imported", 2)
