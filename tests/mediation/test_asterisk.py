"""Asterisk Master.csv parsing: raw lines next to what they must become."""

from __future__ import annotations

import csv
import datetime as dt
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.formats import asterisk
from bluerocktel.mediation.formats.asterisk import parse_asterisk_csv
from bluerocktel.mediation.records import CdrIssue, cdr_id

from .asterisk_gen import generate_lines

DATA = Path(__file__).parent.parent / "data" / "asterisk"
UTC = dt.timezone.utc


def parse(text: str, **kwargs) -> tuple[list[dict], list[CdrIssue]]:
    """Parse dedented ``text`` (the lines of a Master.csv) as file ``Master.csv``."""
    data = textwrap.dedent(text).lstrip("\n").encode() if isinstance(text, str) else text
    kwargs.setdefault("timezone", "Europe/Paris")
    table, issues = parse_asterisk_csv(data, file_name="Master.csv", source="pbx1", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# --- the three layouts ----------------------------------------------------------------------

def test_16_columns_answered_call():
    rows, issues = parse('''
        "acme","201","0612345678","from-internal","""Jean Dupont"" <201>","PJSIP/201-00000001","PJSIP/ovh-00000002","Dial","PJSIP/0612345678@ovh,60,tTr","2026-10-05 09:12:03","2026-10-05 09:12:11","2026-10-05 09:15:41",218,210,"ANSWERED","BILLING"
    ''')
    assert issues == []
    [row] = rows
    assert row["source"] == "pbx1" and row["source_file"] == "Master.csv" and row["source_line"] == 1
    assert (row["start_at"], row["answer_at"], row["end_at"]) == (
        utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41))
    assert (row["duration_s"], row["billsec_s"]) == (218, 210)
    assert (row["caller"], row["callee"], row["direction"]) == ("201", "+33612345678", "out")
    assert (row["account_code"], row["channel"], row["dst_channel"]) == (
        "acme", "PJSIP/201-00000001", "PJSIP/ovh-00000002")
    assert (row["disposition"], row["call_type"], row["unique_id"]) == ("ANSWERED", "voice", None)
    # No uniqueid: the id is made of the call's own fields.
    start_us = str(int(utc(2026, 10, 5, 7, 12, 3).timestamp()) * 1_000_000)
    assert row["cdr_id"] == cdr_id("pbx1", start_us, "201", "+33612345678", "PJSIP/201-00000001",
                                   "PJSIP/ovh-00000002", "218", "210")
    assert len(row["cdr_id"]) == 32


def test_18_columns_id_is_source_and_uniqueid():
    rows, issues = parse('''
        "acme","+33478123456","202","from-trunk","""CLINIQUE DU PARC"" <+33478123456>","PJSIP/ovh-00000007","PJSIP/202-00000008","Dial","PJSIP/202,30,r","2026-10-05 14:00:00","2026-10-05 14:00:07","2026-10-05 14:05:07",307,300,"ANSWERED","DOCUMENTATION","1791208800.7","vip"
    ''')
    assert issues == []
    [row] = rows
    assert (row["caller"], row["callee"], row["direction"]) == ("+33478123456", "202", "in")
    assert row["unique_id"] == "1791208800.7"
    assert row["cdr_id"] == cdr_id("pbx1", "1791208800.7")


def test_21_columns_id_adds_linkedid_and_sequence():
    rows, issues = parse('''
        "acme","203","0320456789","from-internal","""Accueil"" <203>","PJSIP/203-00000021","PJSIP/ovh-00000022","Dial","PJSIP/0320456789@ovh,60,tTr","2026-11-02 11:00:00","2026-11-02 11:00:08","2026-11-02 11:01:08",68,60,"ANSWERED","BILLING","1793613600.33","","","1793613600.30",0
        "acme","203","0320456789","from-internal","""Accueil"" <203>","PJSIP/203-00000021","PJSIP/ovh-00000022","Dial","PJSIP/0320456789@ovh,60,tTr","2026-11-02 11:01:08","2026-11-02 11:01:10","2026-11-02 11:02:10",62,60,"ANSWERED","BILLING","1793613600.33","","","1793613600.30",1
    ''')
    assert issues == []
    assert [r["cdr_id"] for r in rows] == [cdr_id("pbx1", "1793613600.33", "1793613600.30", "0"),
                                          cdr_id("pbx1", "1793613600.33", "1793613600.30", "1")]
    assert rows[0]["start_at"] == utc(2026, 11, 2, 10, 0, 0)      # CET: UTC+1


def test_layouts_mixed_in_one_file_are_read_line_by_line():
    # newcdrcolumns switched on in the middle of the day: 18 columns, then 21, then 16.
    rows, issues = parse('''
        "acme","201","202","from-internal","","PJSIP/201-1","PJSIP/202-2","Dial","PJSIP/202","2026-11-02 09:00:00","2026-11-02 09:00:02","2026-11-02 09:01:02",62,60,"ANSWERED","DOCUMENTATION","100.1",""
        "acme","201","202","from-internal","","PJSIP/201-3","PJSIP/202-4","Dial","PJSIP/202","2026-11-02 10:00:00","2026-11-02 10:00:02","2026-11-02 10:01:02",62,60,"ANSWERED","DOCUMENTATION","100.2","","","100.2",0
        "acme","201","202","from-internal","","PJSIP/201-5","PJSIP/202-6","Dial","PJSIP/202","2026-11-02 11:00:00","2026-11-02 11:00:02","2026-11-02 11:01:02",62,60,"ANSWERED","DOCUMENTATION"
        "acme","201","202","from-internal","","PJSIP/201-7","PJSIP/202-8","Dial","PJSIP/202","2026-11-02 12:00:00","2026-11-02 12:00:02","2026-11-02 12:01:02",62,60,"ANSWERED","DOCUMENTATION","100.4",""
    ''')
    assert issues == []
    assert [r["source_line"] for r in rows] == [1, 2, 3, 4]
    assert [r["unique_id"] for r in rows] == ["100.1", "100.2", None, "100.4"]
    assert rows[1]["cdr_id"] == cdr_id("pbx1", "100.2", "100.2", "0")
    assert [r["direction"] for r in rows] == ["internal"] * 4


# --- quoting --------------------------------------------------------------------------------

def test_quoted_commas_pipes_and_doubled_quotes_stay_inside_their_field():
    rows, issues = parse('''
        "globex","301","01 23 45 67 89","from-internal","""Paul """"PJ"""" Jacob, DG"" <301>","SIP/301-00000014","SIP/orange-00000015","Dial","SIP/orange/0123456789|60|tT,M(x,""y"")","2026-10-07 18:45:00","2026-10-07 18:45:09","2026-10-07 18:46:09",69,60,"ANSWERED","BILLING","1791392700.20","a,b|c"
        "acme","33612345678","203","from-trunk","""Martin, Sophie"" <33612345678>","PJSIP/ovh-10","PJSIP/203-11","Queue","support,tT,,,300","2026-10-06 08:59:58","2026-10-06 09:00:10","2026-10-06 09:04:10",252,240,"ANSWERED","DOCUMENTATION","1791270000.16",""
    ''')
    assert issues == []
    assert [(r["caller"], r["callee"], r["channel"], r["unique_id"]) for r in rows] == [
        ("301", "+33123456789", "SIP/301-00000014", "1791392700.20"),
        ("+33612345678", "203", "PJSIP/ovh-10", "1791270000.16"),
    ]


def test_doubled_quotes_in_a_used_field_are_unescaped():
    rows, _ = parse('''
        "ac""me","201","202","from-internal","","PJSIP/201-1","PJSIP/202-2","Dial","","2026-11-02 09:00:00","2026-11-02 09:00:02","2026-11-02 09:01:02",62,60,"ANSWERED","DOCUMENTATION","1.1",""
    ''')
    assert rows[0]["account_code"] == 'ac"me'


# --- unanswered calls -----------------------------------------------------------------------

@pytest.mark.parametrize("disposition", ["NO ANSWER", "BUSY", "FAILED", "CONGESTION"])
def test_unanswered_call_has_no_answer_time_and_no_billsec(disposition):
    rows, issues = parse(f'''
        "acme","201","0687654321","from-internal","","PJSIP/201-b","","Dial","PJSIP/0687654321@ovh,60","2026-10-05 16:00:00","","2026-10-05 16:00:30",30,0,"{disposition}","BILLING","1791216000.11",""
    ''')
    assert issues == []
    [row] = rows
    assert row["answer_at"] is None and row["billsec_s"] == 0 and row["duration_s"] == 30
    assert row["disposition"] == disposition and row["dst_channel"] == ""


def test_disposition_spellings_are_normalized():
    rows, issues = parse('''
        "","201","202","x","","c1","c2","Dial","","2026-10-05 16:00:00","","2026-10-05 16:00:30",30,0,"NOANSWER","DOCUMENTATION","1.1",""
        "","201","202","x","","c1","c2","Dial","","2026-10-05 16:00:00","","2026-10-05 16:00:30",30,0,"no answer","DOCUMENTATION","1.2",""
    ''')
    assert issues == [] and [r["disposition"] for r in rows] == ["NO ANSWER", "NO ANSWER"]


# --- time zones and daylight saving time ------------------------------------------------------

def line(start: str, answer: str, end: str, duration: int, billsec: int, uid: str) -> str:
    return (f'"acme","201","0612345678","from-internal","","PJSIP/201-1","PJSIP/ovh-2","Dial","",'
            f'"{start}","{answer}","{end}",{duration},{billsec},"ANSWERED","BILLING","{uid}",""\n')


def test_fall_back_call_across_the_repeated_hour_uses_the_duration():
    # 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET. The call starts at 02:50 summer
    # time and ends at 02:10 winter time: 20 min 5 s later, as the duration says.
    rows, issues = parse(line("2026-10-25 02:50:00", "2026-10-25 02:50:05", "2026-10-25 02:10:05", 1205, 1200, "1"))
    assert issues == []
    assert (rows[0]["start_at"], rows[0]["answer_at"], rows[0]["end_at"]) == (
        utc(2026, 10, 25, 0, 50, 0), utc(2026, 10, 25, 0, 50, 5), utc(2026, 10, 25, 1, 10, 5))


def test_fall_back_start_in_the_second_occurrence_when_the_duration_says_so():
    # 02:30 winter time (01:30 UTC) to 03:10 (02:10 UTC): 40 minutes.
    rows, _ = parse(line("2026-10-25 02:30:00", "2026-10-25 02:30:10", "2026-10-25 03:10:00", 2400, 2390, "1"))
    assert (rows[0]["start_at"], rows[0]["answer_at"], rows[0]["end_at"]) == (
        utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 1, 30, 10), utc(2026, 10, 25, 2, 10))


def test_fall_back_times_without_a_hint_read_as_the_first_occurrence():
    rows, _ = parse(line("2026-10-25 02:30:00", "2026-10-25 02:30:10", "2026-10-25 02:31:00", 61, 50, "1"))
    # the duration is inconsistent with every reading: first occurrences (summer time)
    assert (rows[0]["start_at"], rows[0]["end_at"]) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 31))


def test_spring_forward_gap_reads_as_the_first_instant_after_it():
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    rows, issues = parse(line("2026-03-29 02:30:00", "2026-03-29 03:00:05", "2026-03-29 03:01:05", 65, 60, "1")
                         + line("2026-03-29 01:59:59", "2026-03-29 03:00:00", "2026-03-29 03:00:10", 11, 10, "2"))
    assert issues == []
    assert rows[0]["start_at"] == utc(2026, 3, 29, 1, 0, 0)          # 03:00 CEST
    assert rows[0]["answer_at"] == utc(2026, 3, 29, 1, 0, 5)
    assert rows[1]["start_at"] == utc(2026, 3, 29, 0, 59, 59)        # 01:59:59 CET


def test_source_time_zone_is_an_argument():
    text = line("2026-07-01 12:00:00", "2026-07-01 12:00:01", "2026-07-01 12:01:01", 61, 60, "1")
    assert parse(text, timezone="UTC")[0][0]["start_at"] == utc(2026, 7, 1, 12)
    assert parse(text, timezone="America/New_York")[0][0]["start_at"] == utc(2026, 7, 1, 16)


def test_default_time_zone_comes_from_the_settings(monkeypatch):
    text = line("2026-07-01 12:00:00", "2026-07-01 12:00:01", "2026-07-01 12:01:01", 61, 60, "1").encode()
    monkeypatch.setenv("BLUEROCKTEL_DEFAULT_TIMEZONE", "Asia/Tokyo")
    table, _ = parse_asterisk_csv(text, file_name="Master.csv")
    assert table.column("start_at")[0].as_py() == utc(2026, 7, 1, 3)


# --- malformed lines -----------------------------------------------------------------------

GOOD = line("2026-10-05 10:00:00", "2026-10-05 10:00:05", "2026-10-05 10:01:05", 65, 60, "9.9")


@pytest.mark.parametrize("bad,reason", [
    ('"acme","201","0612","from-internal","""Jean"" <201>","PJSIP/201-16"',
     "wrong column count: 6 (expected 16, 18 or 21)"),
    ('"a","201","202","x","","c1","c2","Dial","","2026-10-05 10:00:00","","2026-10-05 10:00:10",10,0,"BUSY","D","1.1","",""',
     "wrong column count: 19 (expected 16, 18 or 21)"),
    (line("2026-10-32 10:00:00", "", "2026-10-05 10:01:05", 65, 0, "1").strip(),
     "unparseable start time: '2026-10-32 10:00:00'"),
    (line("05/10/2026 10:00", "", "2026-10-05 10:01:05", 65, 0, "1").strip(),
     "unparseable start time: '05/10/2026 10:00'"),
    (line("2026-10-05 10:00:00", "2026-10-05 25:00:05", "2026-10-05 10:01:05", 65, 60, "1").strip(),
     "unparseable answer time: '2026-10-05 25:00:05'"),
    (line("2026-10-05 10:00:00", "", "", 65, 0, "1").strip(),
     "unparseable end time: ''"),
    (line("2026-10-05 10:00:00", "", "2026-10-05 10:01:05", "65s", 0, "1").strip(),  # type: ignore[arg-type]
     "unparseable duration: '65s'"),
    (line("2026-10-05 10:00:00", "", "2026-10-05 10:01:05", 65, "", "1").strip(),  # type: ignore[arg-type]
     "unparseable billsec: ''"),
    (line("2026-10-05 10:00:00", "", "2026-10-05 10:01:05", -65, 0, "1").strip(),
     "negative duration: -65"),
    (line("2026-10-05 10:00:00", "2026-10-05 10:00:05", "2026-10-05 10:01:05", 65, -1, "1").strip(),
     "negative billsec: -1"),
    (line("2026-10-05 10:00:00", "2026-10-05 10:00:05", "2026-10-05 10:01:05", 65, 70, "1").strip(),
     "billsec > duration: 70 > 65"),
    (line("2026-10-05 10:00:00", "", "2026-10-05 09:59:00", 0, 0, "1").strip(),
     "end before start: 2026-10-05 09:59:00 < 2026-10-05 10:00:00"),
    (line("2026-10-05 10:00:00", "2026-10-05 09:59:59", "2026-10-05 10:01:05", 65, 60, "1").strip(),
     "answer before start: 2026-10-05 09:59:59 < 2026-10-05 10:00:00"),
    (line("2026-10-05 10:00:00", "2026-10-05 10:02:00", "2026-10-05 10:01:05", 65, 60, "1").strip(),
     "answer after end: 2026-10-05 10:02:00 > 2026-10-05 10:01:05"),
    (line("2026-10-05 10:00:00", "", "2026-10-05 10:01:05", 65, 60, "1").strip(),
     "billsec > 0 without answer time: billsec 60"),
    (line("2026-10-05 10:00:00", "2026-10-05 10:00:05", "2026-10-05 10:01:05", 65, 60, "1").strip()
     .replace('"ANSWERED"', '"DIVERTED"'),
     "unknown disposition: 'DIVERTED'"),
])
def test_malformed_line_is_an_issue_and_the_others_are_kept(bad, reason):
    rows, issues = parse(GOOD + bad + "\n" + GOOD.replace('"9.9"', '"9.10"'))
    assert [r["source_line"] for r in rows] == [1, 3]
    assert issues == [CdrIssue("Master.csv", 2, reason, bad)]
    assert str(issues[0]) == f"Master.csv:2: {reason}"


def test_blank_lines_crlf_and_bom_keep_line_numbers():
    data = ("\ufeff" + GOOD + "\n" + "   \n" + GOOD.replace('"9.9"', '"9.10"')).replace("\n", "\r\n").encode()
    rows, issues = parse(data)
    assert issues == [] and [r["source_line"] for r in rows] == [1, 4]


def test_bytes_that_are_not_utf8_do_not_abort_the_file():
    data = GOOD.replace('"",', '"Hélène <201>",', 1).encode("latin-1") + b'"x"\n' + GOOD.encode()
    rows, issues = parse(data)
    assert [r["source_line"] for r in rows] == [1, 3]
    assert [(i.line, i.reason) for i in issues] == [(2, "wrong column count: 1 (expected 16, 18 or 21)")]


def test_truncated_lines_and_stray_bytes_are_issues_of_their_own_line():
    # A crash truncated line 2 inside a quoted field; the switch then went on writing.
    good2 = GOOD.replace('"9.9"', '"9.10"')
    data = (GOOD + '"acme","201","06123\n' + ",".join([""] * 18) + "\n" + "x\ry\n"
            + '"\x00",\n' + good2.rstrip("\n")).encode()       # last line has no newline
    rows, issues = parse(data)
    assert [r["source_line"] for r in rows] == [1, 6]
    assert [(i.line, i.reason.split(":")[0]) for i in issues] == [
        (2, "unbalanced quotes (truncated line?)"),
        (3, "unparseable start time"),                  # 18 empty fields
        (4, "unreadable line"),                         # a lone CR
        (5, "wrong column count"),
    ]
    assert issues[0].raw == '"acme","201","06123'


def test_empty_file():
    rows, issues = parse(b"")
    assert rows == [] and issues == []


# --- the fast and the exact path agree -----------------------------------------------------

def test_fast_path_and_exact_path_give_the_same_records(monkeypatch):
    lines = generate_lines(3000, variant=18, seed=3)
    fast, fast_issues = parse_asterisk_csv(("\n".join(lines) + "\n").encode(), file_name="m.csv",
                                           source="s", timezone="Europe/Paris")
    # A 21-column first line makes every 18-column line go through the csv-module path; tiny
    # chunks make the line numbering cross many chunk boundaries.
    monkeypatch.setattr(asterisk, "CHUNK_BYTES", 4096)
    first = generate_lines(1, variant=21, seed=99)[0]
    slow, slow_issues = parse_asterisk_csv(("\n".join([first] + lines) + "\n").encode(), file_name="m.csv",
                                           source="s", timezone="Europe/Paris")
    assert fast_issues == [] and slow_issues == []
    assert slow.num_rows == fast.num_rows + 1
    slow = slow.slice(1)
    assert slow.column("source_line").to_pylist() == [n + 1 for n in fast.column("source_line").to_pylist()]
    columns = [c for c in CDR_SCHEMA.names if c != "source_line"]
    assert slow.select(columns).equals(fast.select(columns))
    assert fast.column("source_line").to_pylist() == list(range(1, 3001))


def test_chunk_boundaries_keep_line_numbers_of_rejected_lines(monkeypatch):
    monkeypatch.setattr(asterisk, "CHUNK_BYTES", 2048)
    lines = generate_lines(400, variant=16, seed=5)
    for n in (7, 150, 151, 399):
        lines[n - 1] = lines[n - 1].rsplit(",", 3)[0]          # drop 3 columns: 13 left
    table, issues = parse_asterisk_csv(("\n".join(lines) + "\n").encode(), file_name="m.csv")
    assert [i.line for i in issues] == [7, 150, 151, 399]
    assert [i.raw for i in issues] == [lines[n - 1] for n in (7, 150, 151, 399)]
    assert table.column("source_line").to_pylist() == [n for n in range(1, 401) if n not in (7, 150, 151, 399)]


# --- golden file ---------------------------------------------------------------------------

def test_golden_master_csv():
    table, issues = parse_asterisk_csv((DATA / "Master.csv").read_bytes(), file_name="Master.csv",
                                       source="pbx-paris", timezone="Europe/Paris")
    with open(DATA / "Master.expected.csv", newline="") as fh:
        expected = list(csv.DictReader(fh))
    got = []
    for row in table.to_pylist():
        got.append({k: "" if row[k] is None else row[k].isoformat() if isinstance(row[k], dt.datetime)
                    else str(row[k]) for k in expected[0]})
    assert got == expected
    assert [(i.line, i.reason) for i in issues] == [
        (13, "wrong column count: 6 (expected 16, 18 or 21)"),
        (14, "unparseable start time: '2026-10-32 10:00:00'"),
    ]
    assert issues[0].raw == '"acme","201","0612","from-internal","""Jean Dupont"" <201>","PJSIP/201-00000016"'
    assert table.num_rows + len(issues) == 20
    assert isinstance(table, pa.Table)
