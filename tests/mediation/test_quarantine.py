"""The quarantine read again after a fix: list, reprocess, original file and line, no duplicates.

Every test taking ``wb`` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.db.models import AuditEntry, CdrFile, CdrSource
from bluerocktel.mediation import FORMATS, FormatSpec, import_cdr_bytes, import_cdr_file, register_format
from bluerocktel.mediation.custom import load_mapping
from bluerocktel.mediation.formats.jsonrecords import parse_json_records
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.quarantine import list_quarantine, reprocess_quarantine
from bluerocktel.mediation.records import CdrIssue
from bluerocktel.workbench import Workbench

from .test_fuzz import CASES, case          # the valid samples of every format and custom mapping

GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"
BIN = Path(sys.executable).parent / "bluerocktel"
UTC = dt.timezone.utc

# An SBC's daily export, read through a custom mapping whose value map of "Statut" lacked the
# code 2 (busy): those calls are quarantined "unknown disposition: '2'".
MAPPING = """
[format]
name = "acme-sbc"
kind = "delimited"

[input]
delimiter = ";"

[times]
format = "%d/%m/%Y %H:%M:%S"

[fields]
unique_id = "IdAppel"
start = "Debut"
answer = "Reponse"
end = "Fin"
caller = "Appelant"
callee = "Appele"
disposition = { column = "Statut", map = { "0" = "ANSWERED", "1" = "NO ANSWER" } }
"""
FIXED_MAPPING = MAPPING.replace('"1" = "NO ANSWER" }', '"1" = "NO ANSWER", "2" = "BUSY" }')

SBC_FILE = """\
IdAppel;Debut;Reponse;Fin;Appelant;Appele;Statut
A-1001;05/10/2026 09:12:03;05/10/2026 09:12:11;05/10/2026 09:15:41;0478123456;0612345678;0
A-1002;05/10/2026 09:20:00;;05/10/2026 09:20:04;0478123456;0145678912;2
A-1003;05/10/2026 10:00:00;;05/10/2026 10:00:30;0478123457;0699887766;1
A-1004;05/10/2026 11:30:00;;05/10/2026 11:30:02;0478123458;0320456789;2
"""


def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


def resolved_rows(wb) -> list[dict]:
    con = lake.connect_duckdb()
    try:
        return con.sql(f"SELECT * FROM {lake.scan_sql(wb.lake_dir, 'quarantine_resolved')} "
                       "ORDER BY quarantine_id").to_arrow_table().to_pylist()
    finally:
        con.close()


def add_sbc_source(wb, mapping: str = MAPPING, timezone: str = "America/Martinique") -> None:
    with wb.db.transaction() as s:
        s.add(CdrSource(name="sbc-fdf", format="custom", mapping=mapping, timezone=timezone, country="FR"))


def set_mapping(wb, mapping: str) -> None:
    with wb.db.transaction() as s:
        s.scalar(select(CdrSource).where(CdrSource.name == "sbc-fdf")).mapping = mapping


def test_master_csv_bad_lines_stay_quarantined_and_their_new_reason_is_reported(wb):
    import_cdr_file(wb, GOLDEN, "asterisk-csv", source="pbx-paris")
    listed = list_quarantine(wb)
    assert listed.schema.names == lake.QUARANTINE_SCHEMA.names + ["outcome"]
    assert [(r["source_file"], r["source_line"], r["outcome"]) for r in listed.to_pylist()] == [
        ("Master.csv", 13, None), ("Master.csv", 14, None)]

    summary = reprocess_quarantine(wb, actor="alice")
    assert (summary.received, summary.imported, summary.duplicates, summary.still_failing) == (2, 0, 0, 2)
    assert [(i.file, i.line, i.reason) for i in summary.issues] == [
        ("Master.csv", 13, "wrong column count: 6 (expected 16, 18 or 21)"),
        ("Master.csv", 14, "unparseable start time: '2026-10-32 10:00:00'"),
    ]
    assert "2 records read again, 0 imported, 0 duplicates, 0 consumed, 2 still failing" in summary.describe()
    assert len(lake_rows(wb)) == 17 and resolved_rows(wb) == []
    assert list_quarantine(wb).num_rows == 2          # still there, not rewritten
    with wb.db.session() as s:
        ledger = s.scalar(select(CdrFile).where(CdrFile.file_name == "quarantine-reprocess"))
        assert (ledger.status, ledger.collector, ledger.source, ledger.format) == (
            "imported", "manual", "pbx-paris", "asterisk-csv")
        assert (ledger.received, ledger.imported, ledger.duplicates, ledger.quarantined) == (2, 0, 0, 2)
        assert ledger.finished_at is not None and ledger.duration_ms is not None
        audit = s.scalar(select(AuditEntry).where(AuditEntry.action == "cdr.quarantine.reprocess"))
        assert (audit.actor, audit.target_id, audit.details["still_failing"]) == ("alice", str(ledger.id), 2)


def test_a_mapping_fix_imports_the_quarantined_calls_with_their_original_file_and_line(wb, tmp_path):
    add_sbc_source(wb)
    path = tmp_path / "sbc-2026-10-05.csv"
    path.write_text(SBC_FILE)
    first = import_cdr_file(wb, path, load_mapping(MAPPING), source="sbc-fdf")
    assert (first.imported, first.quarantined) == (2, 2)
    assert [(i.line, i.reason) for i in first.issues] == [(3, "unknown disposition: '2'"),
                                                        (5, "unknown disposition: '2'")]
    # The switch sends the day again under another name with one more call: other bytes, the
    # same records; its busy calls are quarantined again (another file: other quarantine ids).
    resent = tmp_path / "sbc-2026-10-05-resent.csv"
    resent.write_text(SBC_FILE + "A-1005;05/10/2026 12:00:00;05/10/2026 12:00:05;05/10/2026 12:01:05;"
                                 "0478123456;0612345678;0\n")
    second = import_cdr_file(wb, resent, load_mapping(MAPPING), source="sbc-fdf")
    assert (second.imported, second.duplicates, second.quarantined) == (1, 2, 2)

    # Without the fix nothing changes.
    before = reprocess_quarantine(wb)
    assert (before.received, before.imported, before.still_failing) == (4, 0, 4)
    assert {i.reason for i in before.issues} == {"unknown disposition: '2'"}

    set_mapping(wb, FIXED_MAPPING)           # the operator adds "2" = "BUSY" to the source's mapping
    fixed = reprocess_quarantine(wb)
    assert (fixed.received, fixed.imported, fixed.duplicates, fixed.still_failing, fixed.errors) == (4, 2, 2, 0, [])
    busy = [r for r in lake_rows(wb) if r["disposition"] == "BUSY"]
    assert [(r["unique_id"], r["source"], r["source_file"], r["source_line"]) for r in busy] == [
        ("A-1002", "sbc-fdf", "sbc-2026-10-05.csv", 3), ("A-1004", "sbc-fdf", "sbc-2026-10-05.csv", 5)]
    # Read in the source's time zone (Martinique, UTC-4), numbers in E.164.
    assert [(r["start_at"], r["end_at"], r["duration_s"], r["billsec_s"], r["answer_at"]) for r in busy] == [
        (dt.datetime(2026, 10, 5, 13, 20, 0, tzinfo=UTC), dt.datetime(2026, 10, 5, 13, 20, 4, tzinfo=UTC), 4, 0, None),
        (dt.datetime(2026, 10, 5, 15, 30, 0, tzinfo=UTC), dt.datetime(2026, 10, 5, 15, 30, 2, tzinfo=UTC), 2, 0, None)]
    assert [(r["caller"], r["callee"]) for r in busy] == [("+33478123456", "+33145678912"),
                                                         ("+33478123458", "+33320456789")]
    assert len(lake_rows(wb)) == 5                     # A-1001..A-1005, each once

    listed = list_quarantine(wb, include_resolved=True).to_pylist()
    assert sorted((r["source_file"], r["source_line"], r["outcome"]) for r in listed) == [
        ("sbc-2026-10-05-resent.csv", 3, "duplicate"), ("sbc-2026-10-05-resent.csv", 5, "duplicate"),
        ("sbc-2026-10-05.csv", 3, "imported"), ("sbc-2026-10-05.csv", 5, "imported")]
    assert list_quarantine(wb).num_rows == 0
    by_line = {(r["quarantine_id"]): r for r in resolved_rows(wb)}
    assert len(by_line) == 4 and {r["cdr_id"] for r in by_line.values()} == {b["cdr_id"] for b in busy}

    again = reprocess_quarantine(wb)
    assert (again.received, again.imported, again.duplicates) == (0, 0, 0)
    assert again.describe() == "nothing to reprocess: the quarantine holds no unresolved record"
    assert len(lake_rows(wb)) == 5 and len(resolved_rows(wb)) == 4
    with wb.db.session() as s:
        runs = s.scalars(select(CdrFile).where(CdrFile.file_name == "quarantine-reprocess")
                         .order_by(CdrFile.id)).all()
        assert [(r.status, r.received, r.imported, r.duplicates, r.quarantined) for r in runs] == [
            ("imported", 4, 0, 0, 4), ("imported", 4, 2, 2, 0), ("imported", 0, 0, 0, 0)]
        assert len({r.sha256 for r in runs}) == 3


def test_a_mapping_given_for_the_run_reads_only_the_records_of_its_format(wb, tmp_path):
    import_cdr_file(wb, GOLDEN, "asterisk-csv", source="pbx-paris")
    path = tmp_path / "sbc.csv"
    path.write_text(SBC_FILE)
    import_cdr_file(wb, path, load_mapping(MAPPING), source="sbc-fdf")     # no source row, no stored mapping

    # Neither a registered format nor a source mapping: the sbc group is an error, the other goes on.
    plain = reprocess_quarantine(wb)
    assert (plain.received, plain.imported, plain.still_failing) == (4, 0, 4)
    assert plain.errors == ["source sbc-fdf, format acme-sbc: format 'acme-sbc' is not a known format and "
                            "source 'sbc-fdf' has no mapping; reprocess with --mapping MAPPING.toml"]

    summary = reprocess_quarantine(wb, format=load_mapping(FIXED_MAPPING))
    assert (summary.received, summary.imported, summary.still_failing) == (2, 2, 0)   # Master.csv's untouched
    assert [(r["source_file"], r["source_line"], r["disposition"]) for r in lake_rows(wb)
            if r["source"] == "sbc-fdf"] == [("sbc.csv", 2, "ANSWERED"), ("sbc.csv", 3, "BUSY"),
                                             ("sbc.csv", 4, "NO ANSWER"), ("sbc.csv", 5, "BUSY")]
    assert [(r["source"], r["source_line"]) for r in list_quarantine(wb).to_pylist()] == [
        ("pbx-paris", 13), ("pbx-paris", 14)]
    assert reprocess_quarantine(wb, source="sbc-fdf", format=load_mapping(FIXED_MAPPING)).received == 0


KAMAILIO_HEADER = ("id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,src_domain,src_ip,"
                   "dst_ouser,dst_user,dst_domain\n")


def test_an_invite_and_its_bye_quarantined_from_two_files_meet_when_reprocessed(wb):
    # Hourly exports of the acc table: the call starts at 09:59 and ends at 10:03.
    first = (KAMAILIO_HEADER
             + "100,INVITE,ft0,tt0,call-0@10.0.0.5,200,OK,2026-10-05 09:40:00,0478123456,acme.example,"
               "10.0.0.5,0612345670,0612345670,carrier.example\n"
             + "101,BYE,ft0,tt0,call-0@10.0.0.5,200,OK,2026-10-05 09:41:00,0478123456,acme.example,"
               "10.0.0.5,0612345670,0612345670,carrier.example\n"
             + "102,INVITE,ft1,tt1,call-1@10.0.0.5,200,OK,2026-10-05 09:59:03,0478123456,acme.example,"
               "10.0.0.5,0612345678,0612345678,carrier.example\n")
    second = (KAMAILIO_HEADER
              + "103,BYE,ft1,tt1,call-1@10.0.0.5,200,OK,2026-10-05 10:03:41,0478123456,acme.example,"
                "10.0.0.5,0612345678,0612345678,carrier.example\n")
    a = import_cdr_bytes(wb, first.encode(), "acc-09.csv", "kamailio-acc", source="kam")
    b = import_cdr_bytes(wb, second.encode(), "acc-10.csv", "kamailio-acc", source="kam")
    assert (a.imported, a.quarantined, b.imported, b.quarantined) == (1, 1, 0, 1)
    assert [r["header"] for r in list_quarantine(wb).to_pylist()] == [KAMAILIO_HEADER.rstrip("\n")] * 2

    summary = reprocess_quarantine(wb)
    assert (summary.received, summary.imported, summary.consumed, summary.still_failing) == (2, 1, 1, 0)
    call = [r for r in lake_rows(wb) if r["unique_id"] == "call-1@10.0.0.5"]
    assert [(r["source_file"], r["source_line"], r["start_at"], r["end_at"], r["billsec_s"]) for r in call] == [
        ("acc-09.csv", 4, dt.datetime(2026, 10, 5, 7, 59, 3, tzinfo=UTC),
         dt.datetime(2026, 10, 5, 8, 3, 41, tzinfo=UTC), 278)]
    assert sorted((r["source_file"], r["outcome"]) for r in list_quarantine(wb, include_resolved=True).to_pylist()) == [
        ("acc-09.csv", "imported"), ("acc-10.csv", "consumed")]
    assert reprocess_quarantine(wb).received == 0 and len(lake_rows(wb)) == 2


def test_json_documents_are_read_again_one_by_one(wb):
    batch = {"records": [
        {"unique_id": "j-1", "start": "2026-10-05T09:12:03+02:00", "duration": 60, "billsec": 50,
         "answer": "2026-10-05T09:12:13+02:00", "caller": "0478123456", "callee": "0612345678"},
        {"unique_id": "j-2", "start": "2026-10-05T09:20:00+02:00", "duration": 5, "caller": "0478123456",
         "callee": "0612345678", "disposition": "CANCELLED"},
        {"unique_id": "j-3", "start": "2026-10-05T09:30:00+02:00", "duration": 7, "caller": "0478123456",
         "callee": "0612345679", "disposition": "CANCELLED"},
    ]}
    summary = import_cdr_bytes(wb, json.dumps(batch).encode(), "push-1.json", "json-records", source="api-pbx")
    assert [(i.line, i.reason) for i in summary.issues] == [(2, "unknown disposition: 'CANCELLED'"),
                                                          (3, "unknown disposition: 'CANCELLED'")]

    # A newer parser that reads CANCELLED as NO ANSWER (the fix of an upgrade).
    def parse_with_cancelled(data: bytes, **kwargs):
        return parse_json_records(data.replace(b'"CANCELLED"', b'"NO ANSWER"'), **kwargs)

    upgraded = FormatSpec("json-records", parse_with_cancelled, line_based=False, raw_kind="document")
    done = reprocess_quarantine(wb, format=upgraded)
    assert (done.received, done.imported, done.still_failing) == (2, 2, 0)
    assert [(r["unique_id"], r["source_file"], r["source_line"], r["disposition"], r["duration_s"])
            for r in lake_rows(wb)] == [("j-1", "push-1.json", 1, "ANSWERED", 60),
                                        ("j-2", "push-1.json", 2, "NO ANSWER", 5),
                                        ("j-3", "push-1.json", 3, "NO ANSWER", 7)]


# A tiny binary format (raw_kind "binary"): 24-byte big-endian records, no header:
# call id (8 ASCII bytes), start (epoch s, u32), duration (u32), billsec (u32), status code (u32);
# answered billsec seconds before the end.
RECORD = struct.Struct(">8sIIII")
STATUS = {0: "ANSWERED", 1: "NO ANSWER"}           # the code table a fix extends


def parse_binary_calls(data: bytes, *, file_name: str, source: str, timezone: str, country: str, options=None):
    n = len(data) // RECORD.size
    issues = []
    if len(data) % RECORD.size:
        tail = n * RECORD.size
        issues.append(CdrIssue(file_name, n + 1, f"truncated record: {len(data) - tail} bytes",
                               base64.b64encode(data[tail:]).decode(), tail))
    recs = np.frombuffer(data[:n * RECORD.size], dtype=np.dtype(
        [("uid", "S8"), ("start", ">u4"), ("duration", ">u4"), ("billsec", ">u4"), ("status", ">u4")]))
    codes = recs["status"].astype(np.int64)
    raw = pa.table({
        "_line": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "_offset": pa.array(np.arange(n, dtype=np.int64) * RECORD.size),
        "_raw": pa.array([base64.b64encode(data[k * RECORD.size:(k + 1) * RECORD.size]).decode() for k in range(n)],
                         pa.string()),
        "unique_id": pa.array([u.decode("ascii", "replace") for u in recs["uid"]], pa.string()),
        "start": pa.array(recs["start"].astype(np.int64)).cast(pa.string()),
        "answer": pa.array(np.where(recs["billsec"] > 0, recs["start"].astype(np.int64) + recs["duration"]
                                    - recs["billsec"], 0)).cast(pa.string()),
        "duration": pa.array(recs["duration"].astype(np.int64)),
        "billsec": pa.array(recs["billsec"].astype(np.int64)),
        "disposition": pa.array([STATUS.get(int(c), str(c)) for c in codes], pa.string()),
        "caller": pa.array(["0478123456"] * n), "callee": pa.array(["0612345678"] * n),
    })
    table, more = normalize_batch(raw, file_name=file_name, source=source, timezone=timezone, country=country,
                                  time_format="epoch")
    return table, sorted(issues + more, key=lambda i: i.line)


@pytest.fixture
def binary_format():
    register_format("test-binary", parse_binary_calls, line_based=False, raw_kind="binary",
                    fingerprint="source + call id", description="test binary records")
    yield
    FORMATS.pop("test-binary")
    STATUS.pop(2, None)


def test_binary_records_are_read_again_from_base64_with_their_offset(wb, binary_format):
    start = int(dt.datetime(2026, 10, 5, 8, 0, tzinfo=UTC).timestamp())
    data = (RECORD.pack(b"B-000001", start, 60, 55, 0) + RECORD.pack(b"B-000002", start + 100, 4, 0, 2)
            + RECORD.pack(b"B-000003", start + 200, 9, 0, 1) + RECORD.pack(b"B-000004", start + 300, 3, 0, 2))
    summary = import_cdr_bytes(wb, data, "calls.bin", "test-binary", source="msc")
    assert [(i.line, i.offset, i.reason) for i in summary.issues] == [
        (2, 24, "unknown disposition: '2'"), (4, 72, "unknown disposition: '2'")]
    assert [r["byte_offset"] for r in list_quarantine(wb).to_pylist()] == [24, 72]

    STATUS[2] = "BUSY"                                  # the code table fixed
    done = reprocess_quarantine(wb, source="msc")
    assert (done.received, done.imported, done.still_failing) == (2, 2, 0)
    assert [(r["unique_id"], r["source_file"], r["source_line"], r["disposition"], r["start_at"])
            for r in lake_rows(wb) if r["disposition"] == "BUSY"] == [
        ("B-000002", "calls.bin", 2, "BUSY", dt.datetime(2026, 10, 5, 8, 1, 40, tzinfo=UTC)),
        ("B-000004", "calls.bin", 4, "BUSY", dt.datetime(2026, 10, 5, 8, 5, 0, tzinfo=UTC))]


def test_a_raw_that_is_not_base64_stays_failing_with_a_clear_reason(wb, binary_format):
    lake.write_partition(wb.lake_dir, "quarantine", "2026-10", pa.table({
        "quarantine_id": ["q1"], "source": ["msc"], "format": ["test-binary"], "source_file": ["calls.bin"],
        "source_line": pa.array([7], pa.int32()), "byte_offset": pa.array([144], pa.int64()),
        "reason": ["truncated record: 5 bytes"], "raw": ["not base64!"], "header": pa.array([None], pa.string()),
        "quarantined_at": pa.array([dt.datetime(2026, 10, 5, tzinfo=UTC)], lake.UTC_TS)}))
    done = reprocess_quarantine(wb)
    assert (done.received, done.still_failing) == (1, 1)
    [issue] = done.issues
    assert (issue.file, issue.line, issue.offset) == ("calls.bin", 7, 144)
    assert issue.reason.startswith("refused whole: raw is not base64")


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=120)


def test_cli_quarantine_list_and_reprocess_with_a_fixed_mapping(data_dir, tmp_path):
    (tmp_path / "acme.toml").write_text(MAPPING)
    (tmp_path / "acme-fixed.toml").write_text(FIXED_MAPPING)
    (tmp_path / "sbc.csv").write_text(SBC_FILE)
    done = cli("cdr", "import", str(tmp_path / "sbc.csv"), "--mapping", str(tmp_path / "acme.toml"),
               "--source", "sbc-fdf", "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["quarantined"] == 2

    listed = cli("cdr", "quarantine", "list", "--json", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["records"]
    assert [(r["source"], r["format"], r["source_file"], r["source_line"], r["reason"], r["outcome"])
            for r in rows] == [("sbc-fdf", "acme-sbc", "sbc.csv", 3, "unknown disposition: '2'", None),
                               ("sbc-fdf", "acme-sbc", "sbc.csv", 5, "unknown disposition: '2'", None)]
    assert rows[0]["raw"] == SBC_FILE.splitlines()[2]
    text = cli("cdr", "quarantine", "list", data_dir=data_dir).stdout
    assert "sbc-fdf sbc.csv:3: unknown disposition: '2'" in text

    redo = cli("cdr", "quarantine", "reprocess", "--mapping", str(tmp_path / "acme-fixed.toml"), "--json",
               data_dir=data_dir)
    assert redo.returncode == 0, redo.stderr
    payload = json.loads(redo.stdout)
    assert {k: payload[k] for k in ("received", "imported", "duplicates", "still_failing", "errors")} == {
        "received": 2, "imported": 2, "duplicates": 0, "still_failing": 0, "errors": []}

    assert json.loads(cli("cdr", "quarantine", "list", "--json", data_dir=data_dir).stdout)["records"] == []
    everything = json.loads(cli("cdr", "quarantine", "list", "--all", "--json", data_dir=data_dir).stdout)
    assert [r["outcome"] for r in everything["records"]] == ["imported", "imported"]
    again = cli("cdr", "quarantine", "reprocess", "--mapping", str(tmp_path / "acme-fixed.toml"), data_dir=data_dir)
    assert again.returncode == 0 and "nothing to reprocess" in again.stdout


# --- every format: reprocessing without a fix changes nothing and loses nothing --------------------


@pytest.mark.parametrize("name", CASES)
def test_reprocessing_without_a_fix_leaves_every_record_where_it_was(name, tmp_path, monkeypatch):
    spec, sample = case(name)
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)          # SQLite: this is about parsing
    wb = Workbench.open(tmp_path / "data")
    try:
        imported = import_cdr_bytes(wb, sample, "sample.cdr", spec, source="src")
        before = {(r["source_file"], r["source_line"]): r["reason"] for r in list_quarantine(wb).to_pylist()}
        assert len(before) == imported.quarantined
        done = reprocess_quarantine(wb, format=spec if name.startswith("mapping:") else None)
        assert (done.received, done.imported, done.duplicates, done.consumed) == (len(before), 0, 0, 0)
        assert done.still_failing == len(before) and resolved_rows(wb) == []
        assert {(i.file, i.line) for i in done.issues} == set(before) or len(before) > len(done.issues)
        if spec.raw_kind == "line" and not done.errors:
            # read again with the same header and neighbours: the same reasons
            assert {(i.file, i.line): i.reason for i in done.issues} == before
        assert list_quarantine(wb).num_rows == len(before)
    finally:
        wb.close()


def test_cli_reprocess_killed_after_writing_the_records_then_run_again(data_dir, tmp_path):
    (tmp_path / "acme.toml").write_text(MAPPING)
    (tmp_path / "acme-fixed.toml").write_text(FIXED_MAPPING)
    (tmp_path / "sbc.csv").write_text(SBC_FILE)
    assert cli("cdr", "import", str(tmp_path / "sbc.csv"), "--mapping", str(tmp_path / "acme.toml"),
               data_dir=data_dir).returncode == 0
    reprocess = [str(BIN), "cdr", "quarantine", "reprocess", "--mapping", str(tmp_path / "acme-fixed.toml"),
                 "--data-dir", str(data_dir), "--json"]
    killed = subprocess.run(reprocess, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "BLUEROCKTEL_TEST_KILL_AT": "reprocess-records"})
    assert killed.returncode == -signal.SIGKILL
    wb = Workbench.open(data_dir)
    try:
        assert len(lake_rows(wb)) == 4 and resolved_rows(wb) == []     # the records are in, not yet resolved

        again = subprocess.run(reprocess, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        payload = json.loads(again.stdout)
        assert (payload["received"], payload["imported"], payload["duplicates"]) == (2, 0, 2)
        assert len(lake_rows(wb)) == 4
        assert sorted(r["outcome"] for r in resolved_rows(wb)) == ["duplicate", "duplicate"]
        with wb.db.session() as s:
            assert [f.status for f in s.scalars(select(CdrFile).where(CdrFile.file_name == "quarantine-reprocess")
                                                .order_by(CdrFile.id))] == ["interrupted", "imported"]
    finally:
        wb.close()
