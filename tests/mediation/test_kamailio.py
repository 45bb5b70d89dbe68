"""Kamailio / OpenSIPS acc rows paired into calls: rows next to the calls they must make,
the golden export ``tests/data/kamailio/acc_2026-10-05.csv``, and the import end to end."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from bluerocktel import lake
from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, import_cdr_file, read_quarantine
from bluerocktel.mediation.formats.kamailio import parse_kamailio_acc
from bluerocktel.mediation.quarantine import reprocess_quarantine
from bluerocktel.mediation.records import CdrIssue, cdr_id

GOLDEN = Path(__file__).parent.parent / "data" / "kamailio" / "acc_2026-10-05.csv"
UTC = dt.timezone.utc
HEADER = "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,src_domain,src_ip,dst_ouser,dst_user,dst_domain"


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def parse(text: str | bytes, **kwargs) -> tuple[list[dict], list[CdrIssue]]:
    """Parse dedented ``text`` (an acc export, header first) as file ``acc.csv``."""
    data = textwrap.dedent(text).lstrip("\n").encode() if isinstance(text, str) else text
    kwargs.setdefault("timezone", "Europe/Paris")
    kwargs.setdefault("country", "FR")
    table, issues = parse_kamailio_acc(data, file_name="acc.csv", source="kam1", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def acc(rows: str, header: str = HEADER) -> str:
    return header + "\n" + textwrap.dedent(rows).lstrip("\n")


# --- the golden export ------------------------------------------------------------------------

def test_golden_export_pairs_invites_and_byes_into_calls():
    rows, issues = parse(GOLDEN.read_bytes())
    got = [(r["source_line"], r["start_at"], r["answer_at"], r["end_at"], r["duration_s"], r["billsec_s"],
            r["caller"], r["callee"], r["direction"], r["disposition"], r["account_code"], r["channel"],
            r["dst_channel"], r["unique_id"]) for r in rows]
    acme, carrier = "acme.sip.bluerock.fr", "carrier.example.net"
    assert got == [
        # answered, the caller hangs up (11:12:11 in Paris is 09:12:11 UTC); the callee's crossing
        # BYE (481, line 4) ends nothing more
        (2, utc(2026, 10, 5, 9, 12, 11), utc(2026, 10, 5, 9, 12, 11), utc(2026, 10, 5, 9, 15, 41), 210, 210,
         "+33145678901", "+33612345678", "out", "ANSWERED", acme, "192.0.2.10", carrier,
         "3c26700e2a9d-8fn2p1x0y5qs@192.0.2.10"),
        # inbound to extension 201, re-INVITEd by the callee (line 6) and the caller (line 7), the
        # callee hangs up: its BYE has the tags swapped
        (5, utc(2026, 10, 5, 9, 30, 6), utc(2026, 10, 5, 9, 30, 6), utc(2026, 10, 5, 9, 35, 6), 300, 300,
         "+33478123456", "201", "in", "ANSWERED", carrier, "198.51.100.7", acme, "a84b4c76e66710@198.51.100.7"),
        (9, utc(2026, 10, 5, 9, 40), None, utc(2026, 10, 5, 9, 40), 0, 0,
         "+33145678901", "+33320456789", "out", "BUSY", acme, "192.0.2.10", carrier, "1f0e2d3c4b5a@192.0.2.10"),
        # 487 after the caller's CANCEL (the CANCEL row itself is not a call)
        (10, utc(2026, 10, 5, 9, 41), None, utc(2026, 10, 5, 9, 41), 0, 0,
         "+33478123456", "202", "in", "NO ANSWER", carrier, "198.51.100.7", acme, "b2c3d4e5f6a7@198.51.100.7"),
        # the 407 challenge (line 12) is not a call; the INVITE sent again with credentials is
        (13, utc(2026, 10, 5, 9, 50, 9), utc(2026, 10, 5, 9, 50, 9), utc(2026, 10, 5, 9, 52, 9), 120, 120,
         "+33145678903", "+442079460000", "out", "ANSWERED", acme, "192.0.2.10", carrier, "c3d4e5f6a7b8@192.0.2.10"),
        (16, utc(2026, 10, 5, 10), None, utc(2026, 10, 5, 10), 0, 0,
         "+33145678902", "+33556789012", "out", "CONGESTION", acme, "192.0.2.10", carrier,
         "e5f6a7b8c9d0@192.0.2.10"),
        (17, utc(2026, 10, 5, 10, 1), None, utc(2026, 10, 5, 10, 1), 0, 0,
         "+33145678902", "+33899999999", "out", "FAILED", acme, "192.0.2.10", carrier, "f6a7b8c9d0e1@192.0.2.10"),
    ]
    # record id: source + callid + the caller's From tag
    assert rows[0]["cdr_id"] == cdr_id("kam1", "3c26700e2a9d-8fn2p1x0y5qs@192.0.2.10", "as1f2e3d4c")
    assert rows[1]["cdr_id"] == cdr_id("kam1", "a84b4c76e66710@198.51.100.7", "7c1e9f40")
    lines = GOLDEN.read_text().split("\n")
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (18, "unparseable time: '0000-00-00 00:00:00'", lines[17]),
        (19, "BYE without INVITE in this file (callid '07b8c9d0e1f2@192.0.2.10')", lines[18]),
        (20, "wrong column count: 4 (expected 14 from the header)", lines[19]),
        (21, "call not ended in this file (no BYE for callid '18c9d0e1f2a3@192.0.2.10')", lines[20]),
        (22, "BYE without INVITE in this file (callid '77aa88bb99cc@198.51.100.7')", lines[21]),
    ]


# --- pairing rules ----------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "disposition"), [
    (486, "BUSY"), (600, "BUSY"), (408, "NO ANSWER"), (480, "NO ANSWER"), (487, "NO ANSWER"),
    (503, "CONGESTION"), (404, "FAILED"), (603, "FAILED"), (302, "FAILED"), (500, "FAILED"),
])
def test_failed_invite_is_an_unanswered_call_with_the_disposition_of_its_code(code, disposition):
    rows, issues = parse(acc(f'''
        1,INVITE,as01,b01,call-1@192.0.2.10,{code},Some Reason,2026-10-05 11:40:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    assert issues == []
    [r] = rows
    assert (r["disposition"], r["answer_at"], r["duration_s"], r["billsec_s"]) == (disposition, None, 0, 0)


def test_retries_of_a_failed_call_make_one_call_with_the_last_outcome():
    rows, issues = parse(acc('''
        1,INVITE,as02,b02,call-2@192.0.2.10,408,Request Timeout,2026-10-05 11:40:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        2,INVITE,as02,b03,call-2@192.0.2.10,486,Busy Here,2026-10-05 11:40:20,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    assert issues == []
    assert [(r["source_line"], r["disposition"]) for r in rows] == [(3, "BUSY")]


def test_two_dialogs_sharing_a_call_id_are_two_calls():
    # a B2BUA reusing the Call-ID on two branches, each with its own From tag
    rows, issues = parse(acc('''
        1,INVITE,as03a,b03a,shared@192.0.2.10,200,OK,2026-10-05 12:00:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        2,INVITE,as03b,b03b,shared@192.0.2.10,200,OK,2026-10-05 12:00:01,0145678901,acme.sip.bluerock.fr,192.0.2.10,0698765432,0698765432,carrier.example.net
        3,BYE,b03b,as03b,shared@192.0.2.10,200,OK,2026-10-05 12:00:31,0698765432,carrier.example.net,203.0.113.5,0145678901,0145678901,acme.sip.bluerock.fr
        4,BYE,as03a,b03a,shared@192.0.2.10,200,OK,2026-10-05 12:01:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    assert issues == []
    assert [(r["callee"], r["billsec_s"], r["cdr_id"]) for r in rows] == [
        ("+33612345678", 60, cdr_id("kam1", "shared@192.0.2.10", "as03a")),
        ("+33698765432", 30, cdr_id("kam1", "shared@192.0.2.10", "as03b")),
    ]


def test_first_bye_ends_the_call_and_later_ones_are_consumed():
    rows, issues = parse(acc('''
        1,INVITE,as04,b04,call-4@192.0.2.10,200,OK,2026-10-05 12:00:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        2,BYE,b04,as04,call-4@192.0.2.10,200,OK,2026-10-05 12:00:45,0612345678,carrier.example.net,203.0.113.5,0145678901,0145678901,acme.sip.bluerock.fr
        3,BYE,as04,b04,call-4@192.0.2.10,481,Call Leg/Transaction Does Not Exist,2026-10-05 12:00:46,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        4,BYE,as04,b04,call-4@192.0.2.10,200,OK,2026-10-05 12:00:45,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    assert issues == []
    assert [(r["billsec_s"], r["end_at"]) for r in rows] == [(45, utc(2026, 10, 5, 10, 0, 45))]


def test_epoch_times_quoted_values_other_column_order_and_missing_extras():
    rows, issues = parse('''
        "callid","time","method","sip_code","sip_reason","from_tag","to_tag","src_user","dst_user"
        "call-5@192.0.2.10","1791191531","INVITE","200","OK","as05","b05","0145678901","+33612345678"
        "call-5@192.0.2.10","1791191741","BYE","200","OK","as05","b05","0145678901","+33612345678"
    ''')
    assert issues == []
    [r] = rows
    assert (r["start_at"], r["end_at"], r["billsec_s"]) == (utc(2026, 10, 5, 9, 12, 11), utc(2026, 10, 5, 9, 15, 41), 210)
    # no dst_ouser: the Request-URI user; no src_ip / domains: empty
    assert (r["caller"], r["callee"], r["channel"], r["dst_channel"], r["account_code"]) == (
        "+33145678901", "+33612345678", "", "", "")


def test_numbers_follow_the_national_rules_of_the_source_country():
    rows, issues = parse(acc('''
        1,INVITE,as20,b20,call-20@192.0.2.10,200,OK,2026-10-05 11:12:11,02079460001,london.sip.example.co.uk,192.0.2.20,07700900123,07700900123,carrier.example.net
        2,BYE,as20,b20,call-20@192.0.2.10,200,OK,2026-10-05 11:13:11,02079460001,london.sip.example.co.uk,192.0.2.20,07700900123,07700900123,carrier.example.net
    '''), country="GB", timezone="Europe/London")
    assert issues == []
    assert [(r["caller"], r["callee"], r["start_at"]) for r in rows] == [
        ("+442079460001", "+447700900123", utc(2026, 10, 5, 10, 12, 11))]


def test_iso_t_separator_and_fractions_of_a_second():
    rows, issues = parse(acc('''
        1,INVITE,as06,b06,call-6@192.0.2.10,200,OK,2026-10-05T11:12:11.284,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        2,BYE,as06,b06,call-6@192.0.2.10,200,OK,2026-10-05 11:13:11.901,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    assert issues == []
    assert [(r["start_at"], r["billsec_s"]) for r in rows] == [(utc(2026, 10, 5, 9, 12, 11), 60)]


def test_opensips_cdr_mode_rows_are_whole_calls():
    header = HEADER + ",duration,ms_duration,setuptime,created"
    rows, issues = parse(acc('''
        1,INVITE,as07,b07,call-7@192.0.2.10,200,OK,2026-10-05 11:12:11,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net,210,210417,8,2026-10-05 11:12:03
        2,INVITE,as08,b08,call-8@192.0.2.10,486,Busy Here,2026-10-05 11:20:04,0145678901,acme.sip.bluerock.fr,192.0.2.10,0320456789,0320456789,carrier.example.net,0,0,4,2026-10-05 11:20:00
        3,INVITE,as09,b09,call-9@192.0.2.10,200,OK,2026-10-05 11:30:10,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net,60,60000,10,
        4,BYE,as09,b09,call-9@192.0.2.10,200,OK,2026-10-05 11:31:10,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net,,,,
    ''', header=header))
    assert issues == []
    assert [(r["start_at"], r["answer_at"], r["end_at"], r["duration_s"], r["billsec_s"], r["disposition"])
            for r in rows] == [
        (utc(2026, 10, 5, 9, 12, 3), utc(2026, 10, 5, 9, 12, 11), utc(2026, 10, 5, 9, 15, 41), 218, 210, "ANSWERED"),
        (utc(2026, 10, 5, 9, 20), None, utc(2026, 10, 5, 9, 20, 4), 4, 0, "BUSY"),
        # no created: time − setuptime; its BYE row is consumed, not an orphan
        (utc(2026, 10, 5, 9, 30), utc(2026, 10, 5, 9, 30, 10), utc(2026, 10, 5, 9, 31, 10), 70, 60, "ANSWERED"),
    ]


def test_bye_in_the_repeated_autumn_hour_is_read_after_its_invite():
    # 25 Oct 2026, Paris: 02:00-03:00 happens twice. INVITE at 02:59:30 summer time (00:59:30 UTC),
    # BYE 60 s later at 02:00:30 winter time (01:00:30 UTC).
    rows, issues = parse(acc('''
        1,INVITE,as10,b10,call-10@192.0.2.10,200,OK,2026-10-25 02:59:30,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        2,BYE,as10,b10,call-10@192.0.2.10,200,OK,2026-10-25 02:00:30,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    assert issues == []
    assert [(r["start_at"], r["end_at"], r["billsec_s"]) for r in rows] == [
        (utc(2026, 10, 25, 0, 59, 30), utc(2026, 10, 25, 1, 0, 30), 60)]


def test_a_bye_before_its_invite_is_an_issue_naming_both_times():
    text = acc('''
        1,INVITE,as19,b19,call-19@192.0.2.10,200,OK,2026-10-05 12:00:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        2,BYE,as19,b19,call-19@192.0.2.10,200,OK,2026-10-05 11:59:00,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    ''')
    rows, issues = parse(text)
    assert rows == []
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (2, "call ends before it starts: 2026-10-05 09:59:00 < 2026-10-05 10:00:00 UTC", text.split("\n")[1])]


def test_rows_that_are_not_calls_are_skipped_and_bad_rows_are_issues():
    text = acc('''
        1,REGISTER,as11,b11,reg-11@192.0.2.10,200,OK,2026-10-05 12:00:00,201,acme.sip.bluerock.fr,192.0.2.10,201,201,acme.sip.bluerock.fr
        2,INVITE,as12,b12,call-12@192.0.2.10,183,Session Progress,2026-10-05 12:00:01,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        3,INVITE,as13,b13,call-13@192.0.2.10,2OO,OK,2026-10-05 12:00:02,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        4,INVITE,as14,b14,,200,OK,2026-10-05 12:00:03,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        5,INVITE,as15,b15,call-15@192.0.2.10,200,OK,yesterday,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
        6,INVITE,as16,b16,"call-16@192.0.2.10,200,OK,2026-10-05 12:00:05,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net

        8,INVITE,as17,b17,call-17@192.0.2.10,486,Busy Here,2026-10-05 12:00:07,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    ''')
    rows, issues = parse(text)
    assert [(r["source_line"], r["disposition"]) for r in rows] == [(9, "BUSY")]
    lines = text.split("\n")
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (4, "unparseable sip_code: '2OO'", lines[3]),
        (5, "missing callid: ''", lines[4]),
        (6, "unparseable time: 'yesterday'", lines[5]),
        (7, "unbalanced quotes (truncated line?)", lines[6]),
    ]


def test_quarantined_invite_and_bye_of_two_files_pair_when_read_together():
    # what `cdr quarantine reprocess` does with raw_kind "line": the header, then the lines
    first, first_issues = parse(acc('''
        1,INVITE,as18,b18,call-18@192.0.2.10,200,OK,2026-10-05 23:59:30,0145678901,acme.sip.bluerock.fr,192.0.2.10,0612345678,0612345678,carrier.example.net
    '''))
    second, second_issues = parse(acc('''
        9,BYE,b18,as18,call-18@192.0.2.10,200,OK,2026-10-06 00:01:10,0612345678,carrier.example.net,203.0.113.5,0145678901,0145678901,acme.sip.bluerock.fr
    '''))
    assert first == second == []
    assert [i.reason for i in first_issues + second_issues] == [
        "call not ended in this file (no BYE for callid 'call-18@192.0.2.10')",
        "BYE without INVITE in this file (callid 'call-18@192.0.2.10')"]
    rows, issues = parse(HEADER + "\n" + "\n".join(i.raw for i in first_issues + second_issues) + "\n")
    assert issues == []
    assert [(r["start_at"], r["end_at"], r["billsec_s"], r["cdr_id"]) for r in rows] == [
        (utc(2026, 10, 5, 21, 59, 30), utc(2026, 10, 5, 22, 1, 10), 100, cdr_id("kam1", "call-18@192.0.2.10", "as18"))]


def test_files_that_are_not_acc_exports_are_refused_whole():
    with pytest.raises(FormatError, match=r"acc.csv: line 1 is not an acc table header: it lacks column\(s\) "
                                          r"method, from_tag, to_tag, callid, sip_code, time"):
        parse('"acme","201","0612345678","from-internal"\n')
    with pytest.raises(FormatError, match=r"lacks column\(s\) to_tag"):
        parse("id,method,from_tag,callid,sip_code,sip_reason,time\n")


def test_empty_file_and_header_only():
    assert parse("") == ([], [])
    assert parse(HEADER + "\n") == ([], [])
    assert parse(HEADER) == ([], [])


def test_format_is_registered_whole_file_with_line_raws():
    spec = FORMATS["kamailio-acc"]
    assert (spec.line_based, spec.header_lines, spec.raw_kind) == (False, 1, "line")
    assert "callid" in spec.fingerprint and "From tag" in spec.fingerprint


# --- import end to end ------------------------------------------------------------------------

def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


def test_import_golden_export_ledger_lake_and_quarantine(wb, tmp_path):
    summary = import_cdr_file(wb, GOLDEN, "kamailio-acc", source="kam-paris", actor="alice")
    assert (summary.status, summary.received, summary.imported, summary.duplicates, summary.quarantined) == (
        "imported", 12, 7, 0, 5)
    assert summary.months == ["2026-10"]
    rows = lake_rows(wb)
    assert [r["source_line"] for r in rows] == [2, 5, 9, 10, 13, 16, 17]
    assert rows[0]["cdr_id"] == cdr_id("kam-paris", "3c26700e2a9d-8fn2p1x0y5qs@192.0.2.10",
                                                           "as1f2e3d4c")
    quarantined = read_quarantine(wb).to_pylist()
    lines = GOLDEN.read_text().split("\n")
    assert [(q["source"], q["format"], q["source_line"], q["raw"]) for q in quarantined] == [
        ("kam-paris", "kamailio-acc", n, lines[n - 1]) for n in (18, 19, 20, 21, 22)]

    # the next export holds the BYE of the call left open: alone it is an orphan BYE, and the
    # re-sent rows of the first export are duplicates
    nxt = tmp_path / "acc_2026-10-06.csv"
    nxt.write_text("\n".join([lines[0], *lines[1:3],
                              "48240,BYE,d0e1f2a3b4,as9c0d1e2f,18c9d0e1f2a3@192.0.2.10,200,OK,2026-10-06 00:04:30,"
                              "+33240123456,carrier.example.net,203.0.113.5,0145678904,0145678904,acme.sip.bluerock.fr"])
                   + "\n")
    second = import_cdr_file(wb, nxt, "kamailio-acc", source="kam-paris")
    assert (second.received, second.imported, second.duplicates, second.quarantined) == (2, 0, 1, 1)
    # the header line is kept with the quarantined lines: reprocessing reads them together, and
    # the INVITE left open in the first export meets its BYE from the second
    assert {q["header"] for q in read_quarantine(wb).to_pylist()} == {lines[0]}
    again = reprocess_quarantine(wb, source="kam-paris", actor="alice")
    assert (again.received, again.imported, again.consumed, again.still_failing) == (6, 1, 1, 4)
    with_call = [r for r in lake_rows(wb) if r["unique_id"] == "18c9d0e1f2a3@192.0.2.10"]
    assert [(r["source_file"], r["source_line"], r["start_at"], r["end_at"], r["billsec_s"], r["callee"],
             r["cdr_id"]) for r in with_call] == [
        (GOLDEN.name, 21, utc(2026, 10, 5, 21, 59, 30), utc(2026, 10, 5, 22, 4, 30), 300, "+33240123456",
         cdr_id("kam-paris", "18c9d0e1f2a3@192.0.2.10", "as9c0d1e2f"))]
