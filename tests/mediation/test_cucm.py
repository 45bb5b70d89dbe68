"""Cisco CUCM CDR flat files: raw rows next to what they must become, then import end to end.

The golden file ``tests/data/cucm/cdr_StandAloneCluster_01_202611010105_118`` has the 133
columns of CUCM 12.5; the small inline files below have the columns of an older release in
another order (CUCM versions differ), which the parser must read by name.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

import pytest

from bluerocktel import lake
from bluerocktel.db.models import CdrFile
from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, import_cdr_file, read_quarantine
from bluerocktel.mediation.formats.cucm import parse_cucm
from bluerocktel.mediation.records import CdrIssue, cdr_id

GOLDEN = Path(__file__).parent.parent / "data" / "cucm" / "cdr_StandAloneCluster_01_202611010105_118"
UTC = dt.timezone.utc


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def parse_bytes(data: bytes, **kwargs) -> tuple[list[dict], list[CdrIssue]]:
    kwargs.setdefault("timezone", "Europe/Paris")
    kwargs.setdefault("country", "FR")
    table, issues = parse_cucm(data, file_name="cdr_test", source="cm1", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


# An older CUCM's column set, in its own order: what the inline tests are written in.
SHORT_NAMES = ("cdrRecordType", "globalCallID_callManagerId", "globalCallID_callId", "origLegCallIdentifier",
               "dateTimeOrigination", "callingPartyNumber", "origCause_value", "destLegIdentifier",
               "originalCalledPartyNumber", "finalCalledPartyNumber", "destCause_value", "dateTimeConnect",
               "dateTimeDisconnect", "pkid", "callingPartyNumberPartition", "duration", "origDeviceName",
               "destDeviceName", "authCodeDescription")
SHORT_TYPES = ("INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),INTEGER,INTEGER,VARCHAR(50),VARCHAR(50),"
               "INTEGER,INTEGER,INTEGER,UNIQUEIDENTIFIER,VARCHAR(50),INTEGER,VARCHAR(129),VARCHAR(129),VARCHAR(50)")


def cucm(rows: str, names=SHORT_NAMES, types=SHORT_TYPES) -> bytes:
    """A CUCM file: the names row, the types row, then the dedented ``rows``."""
    header = ",".join(f'"{n}"' for n in names) + "\n" + types + "\n"
    return (header + textwrap.dedent(rows).lstrip("\n")).encode()


# --- the golden file (CUCM 12.5, 133 columns) ---------------------------------------------------

def test_golden_file_every_leg_normalized():
    rows, issues = parse_bytes(GOLDEN.read_bytes())
    got = [(r["source_line"], r["start_at"], r["answer_at"], r["end_at"], r["duration_s"], r["billsec_s"],
            r["caller"], r["callee"], r["direction"], r["disposition"], r["account_code"], r["channel"],
            r["dst_channel"], r["unique_id"]) for r in rows]
    trunk = "SIPTRUNK_ORANGE_BTIP"
    assert got == [
        # outbound to a mobile, answered (times are epoch UTC: 11:12:03 in Paris)
        (3, utc(2026, 10, 5, 9, 12, 3), utc(2026, 10, 5, 9, 12, 11), utc(2026, 10, 5, 9, 15, 41), 218, 210,
         "1001", "+33612345678", "out", "ANSWERED", "PT_ACME", "SEP00AB0403E9A", trunk,
         "3f2b6c1e-9a4d-4e8b-b1f0-6d2a7c9e5f01"),
        # inbound on a DID, translated to extension 1002 (finalCalledPartyNumber)
        (4, utc(2026, 10, 5, 9, 30), utc(2026, 10, 5, 9, 30, 6), utc(2026, 10, 5, 9, 35, 6), 306, 300,
         "+33145678901", "1002", "in", "ANSWERED", "", trunk, "SEP00AB0404CB1",
         "9c81d4a2-57e3-4f0a-8d6b-2e4f1a7c3b92"),
        (5, utc(2026, 10, 5, 10), utc(2026, 10, 5, 10, 0, 4), utc(2026, 10, 5, 10, 1, 4), 64, 60,
         "1001", "1003", "internal", "ANSWERED", "PT_ACME", "SEP00AB0403E9A", "SEP00AB0405F3C",
         "0d6e2f47-b8c1-4a39-9e75-c13a8f6b2d04"),
        # dateTimeConnect 0, destCause 17
        (6, utc(2026, 10, 5, 10, 10), None, utc(2026, 10, 5, 10, 10, 3), 3, 0,
         "1002", "+33320456789", "out", "BUSY", "PT_ACME", "SEP00AB0404CB1", trunk,
         "b7a3e915-2c6d-48f1-a0e4-5d9c7b1f8e36"),
        # the caller (national number on the trunk) hung up while it rang: origCause 16
        (7, utc(2026, 10, 5, 10, 20), None, utc(2026, 10, 5, 10, 20, 22), 22, 0,
         "+33612345678", "1003", "in", "NO ANSWER", "", trunk, "SEP00AB0405F3C",
         "41f09c3d-6e2a-4b87-95d1-8a7e3c6f0b58"),
        # destCause 34: no circuit available
        (8, utc(2026, 10, 5, 10, 30), None, utc(2026, 10, 5, 10, 30, 1), 1, 0,
         "1004", "+442079460000", "out", "CONGESTION", "PT_GLOBEX", "SEP00AB0406F9A", trunk,
         "e5c2a8f1-3b7d-4c96-8f0a-7d1e4b9c2a63"),
        # destCause 1: unallocated number
        (9, utc(2026, 10, 5, 10, 40), None, utc(2026, 10, 5, 10, 40, 2), 2, 0,
         "1004", "+33899999999", "out", "FAILED", "PT_GLOBEX", "SEP00AB0406F9A", trunk,
         "72d8b0e4-91a5-4f3c-b6e2-0f4a9d7c1e85"),
        # a transferred call: two legs of globalCallID 1/120041 (the first split by the transfer)
        (10, utc(2026, 10, 5, 11), utc(2026, 10, 5, 11, 0, 5), utc(2026, 10, 5, 11, 1, 5), 65, 60,
         "+33478123456", "1000", "in", "ANSWERED", "", trunk, "SEP00AB0403A18",
         "c49e1a7b-d2f5-4e08-a3b9-6f8c0d2e4a17"),
        (11, utc(2026, 10, 5, 11, 0, 50), utc(2026, 10, 5, 11, 1, 5), utc(2026, 10, 5, 11, 4, 5), 195, 180,
         "+33478123456", "1005", "in", "ANSWERED", "", trunk, "SEP00AB0407B2D",
         "5a0f3d9c-8e1b-47a2-9c6d-b3e7f1a0c529"),
        # anonymous caller (empty callingPartyNumber)
        (12, utc(2026, 10, 5, 11, 30), utc(2026, 10, 5, 11, 30, 7), utc(2026, 10, 5, 11, 31, 7), 67, 60,
         "", "1002", "in", "ANSWERED", "", trunk, "SEP00AB0404CB1", "d81c6b2e-4f9a-4d73-8e05-1a2b9c7d6e40"),
        # dialed in E.164; November in UTC
        (14, utc(2026, 11, 1, 0, 30), utc(2026, 11, 1, 0, 30, 12), utc(2026, 11, 1, 0, 32, 12), 132, 120,
         "1001", "+33612345678", "out", "ANSWERED", "PT_GLOBEX", "SEP00AB0403E9A", trunk,
         "8b3f7e0a-c5d2-4961-b4a8-2d6f0e9c3b71"),
    ]
    assert {(r["source"], r["source_file"], r["call_type"], r["units"]) for r in rows} == {
        ("cm1", "cdr_test", "voice", 0)}
    # record id: source + globalCallID_callManagerId + globalCallID_callId + pkid
    assert rows[0]["cdr_id"] == cdr_id("cm1", "1", "120034", "3f2b6c1e-9a4d-4e8b-b1f0-6d2a7c9e5f01")
    assert rows[7]["cdr_id"] == cdr_id("cm1", "1", "120041", "c49e1a7b-d2f5-4e08-a3b9-6f8c0d2e4a17")
    assert rows[8]["cdr_id"] == cdr_id("cm1", "1", "120041", "5a0f3d9c-8e1b-47a2-9c6d-b3e7f1a0c529")

    lines = GOLDEN.read_text().split("\n")
    assert [(i.file, i.line, i.reason) for i in issues] == [
        ("cdr_test", 13, "billsec > 0 without answer time: '45'"),     # connect 0 but duration 45
        ("cdr_test", 15, "unbalanced quotes (truncated line?)"),      # the CDR writer stopped mid-line
    ]
    assert [i.raw for i in issues] == [lines[12], lines[14]]


def test_epoch_times_do_not_depend_on_the_source_time_zone():
    paris, _ = parse_bytes(GOLDEN.read_bytes(), timezone="Europe/Paris")
    tokyo, _ = parse_bytes(GOLDEN.read_bytes(), timezone="Asia/Tokyo")
    assert [r["start_at"] for r in tokyo] == [r["start_at"] for r in paris]
    assert tokyo[0]["start_at"] == utc(2026, 10, 5, 9, 12, 3)


def test_account_code_column_is_a_source_option():
    rows, _ = parse_bytes(GOLDEN.read_bytes(), options={"account_code_column": "authCodeDescription"})
    assert [r["account_code"] for r in rows] == [""] * 10 + ["Direction generale"]
    rows, _ = parse_bytes(GOLDEN.read_bytes(), options={"account_code_column": "clientMatterCode"})
    assert rows[0]["account_code"] == "4711"
    with pytest.raises(FormatError, match=r"cdr_test: line 1: the CUCM header lacks column\(s\) accountCode"):
        parse_bytes(GOLDEN.read_bytes(), options={"account_code_column": "accountCode"})


# --- columns by name, dispositions, legs ----------------------------------------------------------

def test_columns_are_found_by_name_whatever_their_order_and_case():
    row = ('1,2,7001,11,1791191523,"1001",16,12,"0612345678","0612345678",0,1791191531,1791191741,'
           '"aa11bb22-0000-4000-8000-000000000001","PT_ACME",210,"SEP00AB0403E9A","SIPTRUNK_ORANGE_BTIP",""\n')
    rows, issues = parse_bytes(cucm(row))
    assert issues == []
    fields = row.rstrip("\n").split(",")
    types = SHORT_TYPES.split(",")
    order = list(reversed(range(len(SHORT_NAMES))))
    other, other_issues = parse_bytes(cucm(",".join(fields[k] for k in order) + "\n",
                                           names=[SHORT_NAMES[k].lower() for k in order],
                                           types=",".join(types[k] for k in order)))
    assert other_issues == []
    assert other == rows
    [r] = rows
    assert (r["caller"], r["callee"], r["billsec_s"], r["disposition"]) == ("1001", "+33612345678", 210, "ANSWERED")
    assert r["cdr_id"] == cdr_id("cm1", "2", "7001", "aa11bb22-0000-4000-8000-000000000001")


@pytest.mark.parametrize(("connect", "orig_cause", "dest_cause", "disposition"), [
    (1791191526, 16, 0, "ANSWERED"),
    (1791191526, 0, 393216, "ANSWERED"),     # connected, then split by a transfer
    (0, 0, 17, "BUSY"),
    (0, 17, 0, "BUSY"),
    (0, 16, 0, "NO ANSWER"),                 # the caller gave up
    (0, 0, 0, "NO ANSWER"),
    (0, 0, 19, "NO ANSWER"),
    (0, 0, 18, "NO ANSWER"),
    (0, 0, 31, "NO ANSWER"),
    (0, 0, 393216, "NO ANSWER"),             # CUCM's own cause (call split) before an answer
    (0, 0, 34, "CONGESTION"),
    (0, 0, 38, "CONGESTION"),
    (0, 0, 41, "CONGESTION"),
    (0, 0, 42, "CONGESTION"),
    (0, 0, 44, "CONGESTION"),
    (0, 0, 47, "CONGESTION"),
    (0, 0, 1, "FAILED"),                     # unallocated number
    (0, 0, 21, "FAILED"),                    # call rejected
    (0, 0, 28, "FAILED"),                    # invalid number format
    (0, 16, 17, "BUSY"),                     # the destination's cause wins when both are set
])
def test_disposition_from_connect_time_and_q850_causes(connect, orig_cause, dest_cause, disposition):
    duration = 20 if connect else 0
    rows, issues = parse_bytes(cucm(
        f'1,1,7002,11,1791191523,"1001",{orig_cause},12,"0320456789","0320456789",{dest_cause},{connect},'
        f'1791191546,"aa11bb22-0000-4000-8000-000000000002","PT_ACME",{duration},"SEP1","TRUNK1",""\n'))
    assert issues == []
    [r] = rows
    assert r["disposition"] == disposition
    assert (r["answer_at"] is None) == (connect == 0)
    assert r["billsec_s"] == duration and r["duration_s"] == 23


def test_legs_of_one_call_are_separate_records_and_ids_need_all_three_parts():
    rows, issues = parse_bytes(cucm('''
        1,1,7003,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-00000000000a","PT_ACME",20,"SEP1","SEP2",""
        1,1,7003,13,1791191540,"1001",16,14,"1003","1003",0,1791191545,1791191605,"aa11bb22-0000-4000-8000-00000000000b","PT_ACME",60,"SEP2","SEP3",""
        1,1,7004,15,1791191600,"1001",16,16,"1003","1003",0,1791191605,1791191665,"aa11bb22-0000-4000-8000-00000000000a","PT_ACME",60,"SEP2","SEP3",""
        1,2,7003,17,1791191600,"1001",16,18,"1003","1003",0,1791191605,1791191665,"aa11bb22-0000-4000-8000-00000000000a","PT_ACME",60,"SEP2","SEP3",""
    '''))
    assert issues == []
    assert [r["cdr_id"] for r in rows] == [
        cdr_id("cm1", "1", "7003", "aa11bb22-0000-4000-8000-00000000000a"),
        cdr_id("cm1", "1", "7003", "aa11bb22-0000-4000-8000-00000000000b"),
        cdr_id("cm1", "1", "7004", "aa11bb22-0000-4000-8000-00000000000a"),
        cdr_id("cm1", "2", "7003", "aa11bb22-0000-4000-8000-00000000000a"),
    ]
    assert len({r["cdr_id"] for r in rows}) == 4


def test_callee_falls_back_to_the_original_called_number():
    rows, _ = parse_bytes(cucm('''
        1,1,7005,11,1791191523,"1001",16,12,"0556789012","",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000005","PT_ACME",20,"SEP1","TRUNK1",""
        1,1,7006,11,1791191523,"1001",16,12,"0556789012","  ",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000006","PT_ACME",20,"SEP1","TRUNK1",""
    '''))
    assert [r["callee"] for r in rows] == ["+33556789012", "+33556789012"]


def test_national_rules_follow_the_source_country():
    rows, _ = parse_bytes(cucm('''
        1,1,7007,11,1791191523,"0471123456",16,12,"2001","2001",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000007","",20,"TRUNK_BE","SEP1",""
    '''), country="BE")
    assert (rows[0]["caller"], rows[0]["direction"]) == ("+32471123456", "in")


# --- record types, CMR files ----------------------------------------------------------------------

def test_start_records_and_cmr_rows_are_skipped_unknown_types_are_issues():
    rows, issues = parse_bytes(cucm('''
        0,1,7008,11,1791191523,"1001",0,12,"1002","1002",0,0,0,"aa11bb22-0000-4000-8000-000000000008","PT_ACME",0,"SEP1","SEP2",""
        2,1,7009,1,"1001",31,1791191545,120,19200,118,18880,0,0,0,"PT_ACME"
        1,1,7009,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000009","PT_ACME",20,"SEP1","SEP2",""
        7,1,7010,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000010","PT_ACME",20,"SEP1","SEP2",""
    '''))
    assert [r["source_line"] for r in rows] == [5]
    assert [(i.line, i.reason) for i in issues] == [(6, "unknown cdrRecordType: '7'")]


def test_a_cmr_file_holds_no_calls():
    cmr = ('"cdrRecordType","globalCallID_callManagerId","globalCallID_callId","nodeId","directoryNum",'
           '"callIdentifier","dateTimeStamp","numberPacketsSent","numberOctetsSent","numberPacketsReceived",'
           '"numberOctetsReceived","numberPacketsLost","jitter","latency","pkid","directoryNumPartition"\n'
           'INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,'
           'INTEGER,INTEGER,UNIQUEIDENTIFIER,VARCHAR(50)\n'
           '2,1,120034,1,"1001",20001201,1791191741,10450,1672000,10448,1671680,0,1,0,'
           '"5e1f2a3b-0000-4000-8000-000000000001","PT_ACME"\n')
    assert parse_bytes(cmr.encode()) == ([], [])


# --- bad input ------------------------------------------------------------------------------------

def test_row_problems_are_issues_with_line_reason_and_raw():
    data = cucm('''
        1,1,7011,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"","PT_ACME",20,"SEP1","SEP2",""
        1,1,7012,11,1791191523,"1001",sixteen,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000012","PT_ACME",20,"SEP1","SEP2",""
        1,1,7013,11,1791191523,"1001",16,12,"1002","1002",x,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000013","PT_ACME",20,"SEP1","SEP2",""
        1,1,7014,11,17911915xx,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000014","PT_ACME",20,"SEP1","SEP2",""
        1,1,7015,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191500,"aa11bb22-0000-4000-8000-000000000015","PT_ACME",20,"SEP1","SEP2",""
        1,1,7016,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000016","PT_ACME",twenty,"SEP1","SEP2",""
        1,1,7017,11,1791191523,"1001",16,12,"1002"

        1,1,7018,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000018","PT_ACME",20,"SEP1","SEP2",""
    ''')
    rows, issues = parse_bytes(data)
    assert [r["source_line"] for r in rows] == [11]            # line 10 is blank: skipped, still counted
    text = data.decode().split("\n")
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (3, "missing pkid (the record id): ''", text[2]),
        (4, "unparseable origCause_value: 'sixteen'", text[3]),
        (5, "unparseable destCause_value: 'x'", text[4]),
        (6, "unparseable start time: '17911915xx'", text[5]),
        (7, "dateTimeDisconnect before dateTimeOrigination: 1791191500 < 1791191523", text[6]),
        (8, "unparseable billsec: 'twenty'", text[7]),
        (9, f"wrong column count: 9 (expected {len(SHORT_NAMES)} from the header)", text[8]),
    ]


def test_crlf_bom_and_bytes_that_are_not_utf8():
    data = cucm('''
        1,1,7019,11,1791191523,"1001",16,12,"1002","1002",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000019","PT_ACME",20,"SEP1","SEP2","Soci\xe9t\xe9"
        1,1,7020,11,1791191523,"1001",16,12,"1003","1003",0,1791191525,1791191545,"aa11bb22-0000-4000-8000-000000000020","PT_ACME",20,"SEP1","SEP2",""
    ''').replace(b"\n", b"\r\n").replace("Soci\xe9t\xe9".encode(), b"Soci\xe9t\xe9")
    rows, issues = parse_bytes(b"\xef\xbb\xbf" + data, options={"account_code_column": "authCodeDescription"})
    assert issues == []
    assert [(r["source_line"], r["callee"], r["account_code"]) for r in rows] == [
        (3, "1002", "Soci\ufffdt\ufffd"), (4, "1003", "")]


def test_files_that_are_not_cucm_cdr_files_are_refused_whole():
    asterisk = b'"acme","201","0612345678","from-internal","","PJSIP/201-1","PJSIP/ovh-2","Dial","",' \
               b'"2026-10-05 09:12:03","2026-10-05 09:12:11","2026-10-05 09:15:41",218,210,"ANSWERED","BILLING"\n'
    with pytest.raises(FormatError, match="cdr_test: line 1 is not a CUCM CDR header"):
        parse_bytes(asterisk)
    no_types = cucm("").split(b"\n")[0] + b"\n" + b'1,1,7021,11,1791191523,"1001"\n'
    with pytest.raises(FormatError, match="cdr_test: line 2 should be the CUCM types row"):
        parse_bytes(no_types)
    names = [n for n in SHORT_NAMES if n not in ("pkid", "dateTimeConnect")]
    with pytest.raises(FormatError, match=r"lacks column\(s\) dateTimeConnect, pkid"):
        parse_bytes(cucm("", names=names))


def test_empty_file_and_header_only():
    assert parse_bytes(b"") == ([], [])
    assert parse_bytes(cucm("")) == ([], [])
    assert parse_bytes(cucm("").split(b"\n")[0]) == ([], [])


def test_format_is_registered_line_based_with_two_header_lines():
    spec = FORMATS["cucm"]
    assert (spec.line_based, spec.header_lines, spec.raw_kind) == (True, 2, "line")
    assert "pkid" in spec.fingerprint and "globalCallID_callId" in spec.fingerprint


# --- import end to end ------------------------------------------------------------------------------

def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


def test_import_golden_file_ledger_lake_and_quarantine(wb, tmp_path):
    summary = import_cdr_file(wb, GOLDEN, "cucm", source="cucm-paris", actor="alice")
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (13, 11, 0, 2)
    assert summary.months == ["2026-10", "2026-11"]
    rows = lake_rows(wb)
    assert [r["source_line"] for r in rows] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14]
    assert rows[0]["cdr_id"] == cdr_id("cucm-paris", "1", "120034", "3f2b6c1e-9a4d-4e8b-b1f0-6d2a7c9e5f01")
    assert {r["source_file"] for r in rows} == {GOLDEN.name}
    with wb.db.session() as s:
        [ledger] = s.query(CdrFile).all()
        assert (ledger.format, ledger.status, ledger.received, ledger.imported, ledger.quarantined) == (
            "cucm", "imported", 13, 11, 2)
    quarantined = read_quarantine(wb).to_pylist()
    lines = GOLDEN.read_text().split("\n")
    assert [(q["source_line"], q["format"], q["raw"]) for q in quarantined] == [
        (13, "cucm", lines[12]), (15, "cucm", lines[14])]
    # both header lines are kept with them, so the raw lines can be parsed again
    assert {q["header"] for q in quarantined} == {lines[0] + "\n" + lines[1]}
    again, _ = parse_bytes((quarantined[0]["header"] + "\n" + quarantined[0]["raw"] + "\n").encode())
    assert again == []

    # the same legs in another file (re-sent, plus one new leg) are duplicates
    resent = tmp_path / "cdr_StandAloneCluster_01_202611010106_119"
    extra = re.sub(r'"3f2b6c1e-', '"3f2b6c1f-', lines[2])
    resent.write_text("\n".join(lines[:12]) + "\n" + extra + "\n")
    second = import_cdr_file(wb, resent, "cucm", source="cucm-paris")
    assert (second.received, second.imported, second.duplicates, second.quarantined) == (11, 1, 10, 0)


def test_file_larger_than_a_slice_gives_the_rows_and_lines_of_a_whole_file_parse(wb, tmp_path, monkeypatch):
    lines = GOLDEN.read_text().split("\n")
    body = lines[2:14]                                            # 11 good legs and a bad one
    out = lines[:2]
    for k in range(440):   # pkids and call ids made unique per copy
        out += [re.sub(r'"[0-9a-f]{8}-', f'"{k:08x}-', line).replace(",1200", f",{k + 10}00", 1) for line in body]
    out.append(lines[14])                                         # the truncated last line
    big = tmp_path / "cdr_StandAloneCluster_01_202611010200_120"
    big.write_text("\n".join(out))
    assert big.stat().st_size > 3_000_000

    whole, whole_issues = parse_cucm(big.read_bytes(), file_name=big.name, source="cucm-paris",
                                     timezone="Europe/Paris", country="FR")
    monkeypatch.setenv("BLUEROCKTEL_IMPORT_CHUNK_MB", "1")
    summary = import_cdr_file(wb, big, "cucm", source="cucm-paris")
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (5281, 4840, 0, 441)
    assert whole.num_rows == 4840 and len(whole_issues) == 441
    imported = lake_rows(wb)
    expected = sorted(whole.to_pylist(), key=lambda r: r["source_line"])
    assert imported == expected
    quarantined = read_quarantine(wb).to_pylist()
    assert sorted((q["source_line"], q["reason"], q["raw"]) for q in quarantined) == sorted(
        (i.line, i.reason, i.raw) for i in whole_issues)
    assert quarantined[-1]["source_line"] == len(out) and max(r["source_line"] for r in imported) == len(out) - 1
