"""3CX CDR output: raw lines next to what they must become."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from bluerocktel import lake
from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, import_cdr_file, read_quarantine
from bluerocktel.mediation.formats import freeswitch
from bluerocktel.mediation.formats.threecx import parse_3cx
from bluerocktel.mediation.records import CdrIssue, cdr_id

DATA = Path(__file__).parent.parent / "data" / "3cx"
UTC = dt.timezone.utc
HEADER = ("historyid,callid,duration,time-start,time-answered,time-end,reason-terminated,from-no,to-no,from-dn,"
          "to-dn,dial-no,reason-changed,final-number,final-dn,bill-code,bill-rate,bill-cost,bill-name,chain,"
          "from-type,to-type,final-type,from-dispname,to-dispname,final-dispname,missed-queue-calls")
SHOWN = ("source_line", "start_at", "answer_at", "end_at", "duration_s", "billsec_s", "caller", "callee",
         "direction", "disposition", "account_code", "channel", "dst_channel", "unique_id")


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def parse(text: str | bytes, **kwargs) -> tuple[list[dict], list[CdrIssue]]:
    data = textwrap.dedent(text).lstrip("\n").encode() if isinstance(text, str) else text
    kwargs.setdefault("timezone", "Europe/Paris")
    table, issues = parse_3cx(data, file_name="cdr.log", source="3cx1", country="FR", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def shown(row: dict) -> tuple:
    return tuple(row[k] for k in SHOWN)


def test_golden_cdr_log_with_header():
    rows, issues = parse((DATA / "cdr.log").read_bytes())
    c = "00000C21DE5C2470_65"
    assert [shown(r) for r in rows] == [
        # times are UTC (3CX v18+), whatever the source's time zone
        (2, utc(2026, 10, 5, 13, 33, 54), utc(2026, 10, 5, 13, 33, 55), utc(2026, 10, 5, 13, 39, 31), 337, 336,
         "+33478123456", "960", "in", "ANSWERED", "", "10021", "960", c + "31"),
        (3, utc(2026, 10, 5, 14, 0, 0), utc(2026, 10, 5, 14, 0, 12), utc(2026, 10, 5, 14, 2, 12), 132, 120,
         "101", "+33612345678", "out", "ANSWERED", "**42", "101", "10000", c + "32"),
        (4, utc(2026, 10, 5, 15, 10, 0), utc(2026, 10, 5, 15, 10, 3), utc(2026, 10, 5, 15, 10, 48), 48, 45,
         "101", "102", "internal", "ANSWERED", "", "101", "102", c + "33"),
        (5, utc(2026, 10, 5, 16, 0, 0), None, utc(2026, 10, 5, 16, 0, 6), 6, 0,
         "103", "+33145678901", "out", "BUSY", "", "103", "10000", c + "34"),
        (6, utc(2026, 10, 5, 16, 30, 0), None, utc(2026, 10, 5, 16, 30, 25), 25, 0,
         "+33320456789", "800", "in", "NO ANSWER", "", "10021", "800", c + "35"),
        (7, utc(2026, 10, 6, 8, 0, 0), None, utc(2026, 10, 6, 8, 0, 2), 2, 0,
         "104", "+447700900123", "out", "FAILED", "", "104", "", c + "36"),
        # v20 spellings: times with '-', lower-case types and reasons
        (8, utc(2026, 10, 6, 9, 0, 0), utc(2026, 10, 6, 9, 0, 10), utc(2026, 10, 6, 9, 3, 30), 210, 200,
         "105", "+33687654321", "out", "ANSWERED", "", "105", "10000", c + "37"),
        (9, utc(2026, 10, 6, 9, 30, 0), None, utc(2026, 10, 6, 9, 30, 4), 4, 0,
         "+41223456789", "106", "in", "FAILED", "", "10021", "106", c + "38"),
        # a quoted display name holding a comma
        (10, utc(2026, 10, 6, 10, 0, 0), utc(2026, 10, 6, 10, 0, 2), utc(2026, 10, 6, 10, 0, 32), 32, 30,
         "107", "101", "internal", "ANSWERED", "", "107", "101", c + "39"),
        # the transferred leg of line 2's call: same historyid and callid, another record
        (13, utc(2026, 10, 5, 13, 39, 31), utc(2026, 10, 5, 13, 39, 35), utc(2026, 10, 5, 13, 40, 45), 74, 70,
         "+33478123456", "961", "in", "ANSWERED", "", "10021", "961", c + "31"),
        (14, utc(2026, 10, 5, 14, 0, 0), utc(2026, 10, 5, 14, 0, 12), utc(2026, 10, 5, 14, 2, 12), 132, 120,
         "101", "+33612345678", "out", "ANSWERED", "**42", "101", "10000", c + "32"),
    ]
    assert [(i.line, i.reason) for i in issues] == [
        (11, "wrong field count: 4 (expected 27 from the header)"),
        (12, "unparseable start time: '2026-10-32 10:30:00'"),
    ]
    lines = (DATA / "cdr.log").read_text().splitlines()
    assert [i.raw for i in issues] == [lines[10], lines[11]]
    # the id: source + historyid ("Call " dropped) + callid + start + caller + callee
    start_us = str(int(utc(2026, 10, 5, 14).timestamp()) * 1_000_000)
    assert rows[1]["cdr_id"] == cdr_id("3cx1", "612505", c + "32", start_us, "101", "+33612345678")
    assert rows[1]["cdr_id"] == rows[10]["cdr_id"]                      # the same line sent twice
    assert rows[0]["cdr_id"] != rows[9]["cdr_id"]                       # two legs of one call


CUSTOM = ["callid", "time-start", "time-answered", "time-end", "from-no", "to-no", "reason-terminated"]


def test_columns_from_the_source_option_when_there_is_no_header():
    rows, issues = parse('''
        Call 00000C21DE5C2470_7001,2026/10/05 09:00:00,2026/10/05 09:00:04,2026/10/05 09:01:04,Ext.101,0612345678,TerminatedBySrc
        Call 00000C21DE5C2470_7002,2026/10/05 09:10:00,,2026/10/05 09:10:09,Ext.101,0612345678,Failed_Cancelled
    ''', options={"columns": CUSTOM})
    assert issues == []
    assert [shown(r) for r in rows] == [
        (1, utc(2026, 10, 5, 9, 0, 0), utc(2026, 10, 5, 9, 0, 4), utc(2026, 10, 5, 9, 1, 4), 64, 60,
         "101", "+33612345678", "out", "ANSWERED", "", "", "", "00000C21DE5C2470_7001"),
        (2, utc(2026, 10, 5, 9, 10, 0), None, utc(2026, 10, 5, 9, 10, 9), 9, 0,
         "101", "+33612345678", "out", "NO ANSWER", "", "", "", "00000C21DE5C2470_7002"),
    ]
    # a comma-separated string works too, and underscores read as dashes
    again, _ = parse("x1,2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,0612345678,TargetBusy\n",
                     options={"columns": "callid,time_start,time_answered,time_end,from_no,to_no,reason_terminated"})
    assert again[0]["disposition"] == "BUSY"


def test_no_header_and_no_option_refuses_the_file_naming_the_fix():
    with pytest.raises(FormatError, match=r"cdr\.log: 3CX CDR lines carry no field names .* set the source option "
                                          r"columns"):
        parse("Call 1,x,00:00:10,2026/10/05 09:00:00,,2026/10/05 09:00:10,TerminatedBySrc,101,102\n")


def test_header_wins_over_the_option():
    rows, issues = parse("""
        time-start,time-end,time-answered,to-no,from-no
        2026/10/05 09:00:00,2026/10/05 09:01:00,2026/10/05 09:00:10,0612345678,Ext.101
    """, options={"columns": CUSTOM})
    assert issues == [] and shown(rows[0])[:8] == (2, utc(2026, 10, 5, 9), utc(2026, 10, 5, 9, 0, 10),
                                                   utc(2026, 10, 5, 9, 1), 60, 50, "101", "+33612345678")


@pytest.mark.parametrize("columns,missing", [
    (["callid", "time-start", "time-end", "from-no", "to-no"], "time-answered"),
    (["time-start", "time-answered", "from-no", "to-no"], "time-end or duration"),
    (["time-start", "time-answered", "time-end", "from-no"], "to-no or dial-no"),
])
def test_missing_needed_fields_refuse_the_file(columns, missing):
    with pytest.raises(FormatError, match=f"the source option columns lacks the 3CX field\\(s\\) {missing} "):
        parse("a,b,c\n", options={"columns": columns})
    with pytest.raises(FormatError, match=f"the header line lacks the 3CX field\\(s\\) {missing} "):
        parse(",".join(columns) + "\n")


def test_bad_option_type_is_refused():
    with pytest.raises(FormatError, match="must be a list of 3CX field names"):
        parse("a\n", options={"columns": {"a": 1}})


def test_local_times_and_time_format_options():
    text = "time-start,time-answered,time-end,from-no,to-no\n05.10.2026 09:00:00,05.10.2026 09:00:05,05.10.2026 09:01:05,101,102\n"
    rows, _ = parse(text, options={"time_format": "%d.%m.%Y %H:%M:%S"})
    assert (rows[0]["start_at"], rows[0]["end_at"]) == (utc(2026, 10, 5, 9), utc(2026, 10, 5, 9, 1, 5))
    rows, _ = parse(text, options={"time_format": "%d.%m.%Y %H:%M:%S", "local_times": True})
    assert rows[0]["start_at"] == utc(2026, 10, 5, 7)                          # CEST
    rows, _ = parse(text.replace("05.10.2026", "2026/10/05"), options={"local_times": True}, timezone="Asia/Tokyo")
    assert rows[0]["start_at"] == utc(2026, 10, 5, 0)


NO_END = ["historyid", "duration", "time-start", "time-answered", "from-no", "to-no"]


def test_duration_gives_the_end_without_time_end():
    rows, issues = parse("""
        Call 1,00:05:36,2026/10/05 13:33:54,2026/10/05 13:33:59,+33478123456,Ext.960
        Call 2,75,2026/10/05 14:00:00,2026/10/05 14:00:10,Ext.101,0612345678
        Call 3,00:00:00,2026/10/05 15:00:00,,Ext.101,0612345678
        Call 4,1:02:03,2026/10/05 16:00:00,2026/10/05 16:00:01,Ext.101,0612345678
        Call 5,5 min,2026/10/05 16:00:00,2026/10/05 16:00:01,Ext.101,0612345678
        Call 6,00:61:00,2026/10/05 16:00:00,2026/10/05 16:00:01,Ext.101,0612345678
    """, options={"columns": NO_END})
    assert [(r["source_line"], r["end_at"], r["duration_s"], r["billsec_s"]) for r in rows] == [
        (1, utc(2026, 10, 5, 13, 39, 35), 341, 336),
        (2, utc(2026, 10, 5, 14, 1, 25), 85, 75),
        (3, utc(2026, 10, 5, 15), 0, 0),
        (4, utc(2026, 10, 5, 17, 2, 4), 3724, 3723),
    ]
    assert [(i.line, i.reason) for i in issues] == [(5, "unparseable duration: '5 min'"),
                                                    (6, "unparseable duration: '00:61:00'")]


@pytest.mark.parametrize("reason,disposition", [
    ("TerminatedBySrc", "NO ANSWER"), ("TerminatedByDst", "NO ANSWER"), ("Failed_Cancelled", "NO ANSWER"),
    ("NoAnswerTimeout", "NO ANSWER"), ("src_participant_terminated", "NO ANSWER"), ("cancelled", "NO ANSWER"),
    ("polling", "NO ANSWER"), ("", "NO ANSWER"), ("SomethingNew", "NO ANSWER"),
    ("TargetBusy", "BUSY"), ("busy", "BUSY"), ("RouteBusy", "CONGESTION"),
    ("Failed", "FAILED"), ("Failed_RefreshTimeout", "FAILED"), ("NoRouteExists", "FAILED"),
    ("RouteNotFound", "FAILED"), ("TargetNotFound", "FAILED"), ("no_route", "FAILED"), ("not_found", "FAILED"),
    ("declined", "FAILED"), ("rejected", "FAILED"),
])
def test_unanswered_disposition_from_reason_terminated(reason, disposition):
    rows, issues = parse(f"x,2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,0612345678,{reason}\n",
                         options={"columns": CUSTOM})
    assert issues == [] and rows[0]["disposition"] == disposition


def test_answered_is_answered_whatever_the_reason():
    rows, _ = parse("x,2026/10/05 09:00:00,2026/10/05 09:00:02,2026/10/05 09:00:09,Ext.101,0612345678,Failed\n",
                    options={"columns": CUSTOM})
    assert rows[0]["disposition"] == "ANSWERED"


TYPED = ["time-start", "time-answered", "time-end", "from-no", "to-no", "from-type", "to-type"]


@pytest.mark.parametrize("from_no,to_no,from_type,to_type,direction", [
    ("Ext.101", "0612345678", "Extension", "Line", "out"),
    ("+33478123456", "Ext.101", "Line", "Extension", "in"),
    ("+33478123456", "Ext.800", "external_line", "queue", "in"),
    ("Ext.101", "Ext.102", "Extension", "Extension", "internal"),
    ("+33478123456", "0612345678", "Line", "Line", "out"),
    ("Ext.101", "0612345678", "extension", "provider", "out"),
    ("Ext.101", "Ext.800", "Extension", "IVR", "internal"),
    # a type missing: from the numbers
    ("+33478123456", "Ext.101", "", "Extension", "in"),
    ("101", "0612345678", "", "", "out"),
])
def test_direction_from_the_types(from_no, to_no, from_type, to_type, direction):
    rows, _ = parse(f"2026/10/05 09:00:00,,2026/10/05 09:00:09,{from_no},{to_no},{from_type},{to_type}\n",
                    options={"columns": TYPED})
    assert rows[0]["direction"] == direction


def test_dn_designations_and_dial_no():
    rows, _ = parse("""
        time-start,time-answered,time-end,from-no,to-no,dial-no
        2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,VMail.800,800
        2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,,0612345678
        2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,*97,*97
    """)
    assert [(r["caller"], r["callee"]) for r in rows] == [("101", "800"), ("101", "+33612345678"), ("101", "*97")]


def test_call_prefix_is_kept_in_a_free_text_first_field():
    rows, _ = parse("""
        from-dispname,time-start,time-answered,time-end,from-no,to-no,historyid
        Call Center,2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,0612345678,Call 9
    """)
    assert rows[0]["cdr_id"] == cdr_id("3cx1", "Call 9", "", str(int(utc(2026, 10, 5, 9).timestamp()) * 1_000_000),
                                       "101", "+33612345678")


def test_chunk_boundaries_and_exact_path(monkeypatch):
    lines = [f"Call {k},cid_{k},00:00:50,2026/10/05 09:00:00,2026/10/05 09:00:10,2026/10/05 09:01:00,"
             f"TerminatedBySrc,Ext.101,06123{k:05d},101,10000,,,,,,,,,,Extension,Line,Line,Jean,,,"
             for k in range(1, 501)]
    for k in (3, 250, 499):
        lines[k - 1] = lines[k - 1].replace(",Jean,", ',"Dupont, Jean",')
    lines[99] = lines[99][:40]
    data = (HEADER + "\n" + "\n".join(lines) + "\n").encode()
    whole, whole_issues = parse(data)
    monkeypatch.setattr(freeswitch, "CHUNK_BYTES", 4096)
    rows, issues = parse(data)
    assert rows == whole and issues == whole_issues
    assert [(i.line, i.reason) for i in issues] == [(101, "wrong field count: 4 (expected 27 from the header)")]
    assert [r["source_line"] for r in rows] == [n for n in range(2, 502) if n != 101]
    assert [r["unique_id"] for r in rows] == [f"cid_{k}" for k in range(1, 501) if k != 100]


def test_unbalanced_quote_is_an_issue_of_its_line():
    good = "x,2026/10/05 09:00:00,,2026/10/05 09:00:09,Ext.101,0612345678,TerminatedBySrc"
    rows, issues = parse(good + '\n"x,2026/10/05 09:00:00\n' + good.replace("x,", "y,") + "\n",
                         options={"columns": CUSTOM})
    assert [r["source_line"] for r in rows] == [1, 3]
    assert issues == [CdrIssue("cdr.log", 2, "unbalanced quotes (truncated line?)", '"x,2026/10/05 09:00:00')]


def test_empty_and_blank_files():
    assert parse(b"") == ([], [])
    assert parse(b"\n\n  \n") == ([], [])
    assert parse(HEADER.encode() + b"\n") == ([], [])


def test_format_is_registered():
    spec = FORMATS["3cx"]
    assert (spec.line_based, spec.header_lines, spec.raw_kind) == (True, 1, "line")
    assert "historyid" in spec.fingerprint


# --- end to end -------------------------------------------------------------------------------------

def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


def test_import_end_to_end(wb):
    summary = import_cdr_file(wb, DATA / "cdr.log", "3cx", source="3cx-lyon")
    # 14 lines: the header, 2 malformed, line 14 repeats line 3
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (13, 10, 1, 2)
    assert summary.months == ["2026-10"]
    rows = lake_rows(wb)
    assert [r["source_line"] for r in rows] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 13]
    assert rows[0]["start_at"] == utc(2026, 10, 5, 13, 33, 54)
    quarantined = read_quarantine(wb).to_pylist()
    lines = (DATA / "cdr.log").read_text().splitlines()
    assert [(q["source_line"], q["raw"], q["header"]) for q in quarantined] == [
        (11, lines[10], HEADER), (12, lines[11], HEADER)]


def big_file(path: Path, n: int, header: bool) -> Path:
    with open(path, "w") as out:
        if header:
            out.write(HEADER + "\n")
        for k in range(n):
            out.write(f"Call {k},cid_{k},00:00:50,2026/10/{1 + k % 28:02d} 09:00:00,2026/10/{1 + k % 28:02d} 09:00:10,"
                      f"2026/10/{1 + k % 28:02d} 09:01:00,TerminatedBySrc,Ext.{100 + k % 300},06{k:08d},"
                      f"{100 + k % 300},10000,06{k:08d},,06{k:08d},10000,,,,,Chain: Ext.{100 + k % 300};06{k:08d};,"
                      "Extension,Line,Line,Jean Dupont,,,\n")
    return path


def test_large_file_in_slices_keeps_the_header_and_the_line_numbers(wb, tmp_path, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_IMPORT_CHUNK_MB", "1")
    path = big_file(tmp_path / "big.log", 8000, header=True)          # about 1.9 MB: two slices
    assert path.stat().st_size > 1 << 20
    summary = import_cdr_file(wb, path, "3cx", source="3cx-big")
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (8000, 8000, 0, 0)
    rows = lake_rows(wb)
    assert sorted(r["source_line"] for r in rows) == list(range(2, 8002))
    assert {r["unique_id"]: r["source_line"] for r in rows}["cid_7999"] == 8001


def test_large_file_without_header_imports_every_record_once(wb, tmp_path, monkeypatch):
    # the importer asks the format how many header lines this file has (none): slices are cut as is
    monkeypatch.setenv("BLUEROCKTEL_IMPORT_CHUNK_MB", "1")
    path = big_file(tmp_path / "big.log", 8000, header=False)
    summary = import_cdr_file(wb, path, "3cx", source="3cx-big", options={"columns": HEADER.split(",")})
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (8000, 8000, 0, 0)
    assert sorted(r["source_line"] for r in lake_rows(wb)) == list(range(1, 8001))


def test_quarantined_lines_are_read_again_with_the_fixed_options(wb, tmp_path):
    from bluerocktel.db.models import CdrSource
    from bluerocktel.mediation.quarantine import reprocess_quarantine

    columns = ["historyid", "time-start", "time-answered", "time-end", "from-no", "to-no"]
    with wb.db.transaction() as s:
        s.add(CdrSource(name="3cx-old", format="3cx", options={"columns": columns}))
    path = tmp_path / "cdr.log"
    path.write_text("Call 1,05.10.2026 09:00:00,05.10.2026 09:00:05,05.10.2026 09:01:05,Ext.101,0612345678\n"
                    "Call 2,05.10.2026 10:00:00,,05.10.2026 10:00:20,Ext.102,0478123456\n")
    first = import_cdr_file(wb, path, "3cx", source="3cx-old")
    assert (first.imported, first.quarantined) == (0, 2)
    assert first.issues[0].reason == "unparseable start time: '05.10.2026 09:00:00'"
    with wb.db.transaction() as s:
        s.query(CdrSource).filter_by(name="3cx-old").one().options = {"columns": columns,
                                                                      "time_format": "%d.%m.%Y %H:%M:%S"}
    again = reprocess_quarantine(wb, source="3cx-old")
    assert (again.received, again.imported, again.still_failing) == (2, 2, 0)
    assert [(r["source_file"], r["source_line"], r["start_at"], r["callee"]) for r in lake_rows(wb)] == [
        ("cdr.log", 1, utc(2026, 10, 5, 9), "+33612345678"), ("cdr.log", 2, utc(2026, 10, 5, 10), "+33478123456")]


def test_header_line_count():
    from bluerocktel.mediation.formats.threecx import header_line_count

    assert header_line_count(b"\xef\xbb\xbf" + HEADER.encode() + b"\nCall 1,x\n") == 1
    assert header_line_count(b"Call 1,cid,00:00:10,2026/10/05 09:00:00,,2026/10/05 09:00:10\n") == 0
    assert header_line_count(b"time_start,time_end,from_no") == 1
    assert header_line_count(b"") == 0
