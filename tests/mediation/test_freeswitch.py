"""FreeSWITCH mod_cdr_csv and mod_xml_cdr: raw lines and documents next to what they must become."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from lxml import etree

from bluerocktel import lake
from bluerocktel.db.models import CdrFile
from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, import_cdr_file, read_quarantine
from bluerocktel.mediation.formats import freeswitch
from bluerocktel.mediation.formats.freeswitch import parse_freeswitch_csv, parse_freeswitch_xml
from bluerocktel.mediation.records import CdrIssue, cdr_id

DATA = Path(__file__).parent.parent / "data" / "freeswitch"
UTC = dt.timezone.utc
SHOWN = ("source_line", "start_at", "answer_at", "end_at", "duration_s", "billsec_s", "caller", "callee",
         "direction", "disposition", "account_code", "unique_id")


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def csv(text: str | bytes, **kwargs) -> tuple[list[dict], list[CdrIssue]]:
    data = textwrap.dedent(text).lstrip("\n").encode() if isinstance(text, str) else text
    kwargs.setdefault("timezone", "Europe/Paris")
    table, issues = parse_freeswitch_csv(data, file_name="Master.csv", source="fs1", country="FR", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def xml(data: str | bytes, **kwargs) -> tuple[list[dict], list[CdrIssue]]:
    data = data.encode() if isinstance(data, str) else data
    kwargs.setdefault("timezone", "Europe/Paris")
    table, issues = parse_freeswitch_xml(data, file_name="cdr.xml", source="fs1", country="FR", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def shown(row: dict) -> tuple:
    return tuple(row[k] for k in SHOWN)


# --- freeswitch-csv: the golden file -------------------------------------------------------------

def test_golden_master_csv_default_template():
    rows, issues = csv((DATA / "Master.csv").read_bytes())
    u = "3f6b9c1e-5d2a-4e8f-9b7c-0000000000"
    assert [shown(r) for r in rows] == [
        # CEST (UTC+2) until 25 October 03:00, then CET (UTC+1)
        (1, utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41), 218, 210,
         "1000", "+33612345678", "out", "ANSWERED", "acme", u + "01"),
        (2, utc(2026, 10, 5, 12, 0, 0), utc(2026, 10, 5, 12, 0, 7), utc(2026, 10, 5, 12, 5, 7), 307, 300,
         "+33478123456", "1001", "in", "ANSWERED", "acme", u + "02"),
        (3, utc(2026, 10, 6, 6, 30, 0), utc(2026, 10, 6, 6, 30, 4), utc(2026, 10, 6, 6, 31, 4), 64, 60,
         "1002", "1003", "internal", "ANSWERED", "acme", u + "03"),
        (4, utc(2026, 10, 6, 8, 0, 0), None, utc(2026, 10, 6, 8, 0, 30), 30, 0,
         "1000", "+33478123456", "out", "NO ANSWER", "acme", u + "04"),
        (5, utc(2026, 10, 6, 9, 20, 0), None, utc(2026, 10, 6, 9, 20, 4), 4, 0,
         "1006", "+33145678901", "out", "BUSY", "globex", u + "05"),
        (6, utc(2026, 10, 6, 16, 2, 10), None, utc(2026, 10, 6, 16, 2, 22), 12, 0,
         "+33320456789", "1002", "in", "NO ANSWER", "acme", u + "06"),
        (7, utc(2026, 10, 7, 7, 0, 0), None, utc(2026, 10, 7, 7, 0, 2), 2, 0,
         "1007", "+447700900123", "out", "FAILED", "globex", u + "07"),
        (8, utc(2026, 10, 7, 7, 5, 0), None, utc(2026, 10, 7, 7, 5, 1), 1, 0,
         "1007", "+33899123456", "out", "CONGESTION", "globex", u + "08"),
        # a '"' inside the caller name: read as is
        (9, utc(2026, 10, 8, 14, 45, 0), utc(2026, 10, 8, 14, 45, 9), utc(2026, 10, 8, 14, 46, 9), 69, 60,
         "1004", "+33687654321", "out", "ANSWERED", "globex", u + "09"),
        # a ',' inside the caller name: the exact path cuts at '","'
        (10, utc(2026, 10, 9, 10, 0, 0), utc(2026, 10, 9, 10, 0, 3), utc(2026, 10, 9, 10, 10, 3), 603, 600,
         "1005", "+33612000001", "out", "ANSWERED", "acme", u + "10"),
        # across the fall-back hour: 02:50 summer time to 02:10 winter time, as the duration says
        (11, utc(2026, 10, 25, 0, 50, 0), utc(2026, 10, 25, 0, 50, 5), utc(2026, 10, 25, 1, 10, 5), 1205, 1200,
         "1008", "+33612345679", "out", "ANSWERED", "acme", u + "11"),
        (12, utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41), 218, 210,
         "1000", "+33612345678", "out", "ANSWERED", "acme", u + "01"),
        (17, utc(2026, 11, 2, 10, 0, 0), utc(2026, 11, 2, 10, 0, 8), utc(2026, 11, 2, 10, 1, 8), 68, 60,
         "1000", "+33612345678", "out", "ANSWERED", "acme", u + "17"),
    ]
    assert [(i.line, i.reason) for i in issues] == [
        (13, "wrong field count: 3 (expected 15)"),
        (14, "unparseable start time: '2026-10-32 10:00:00'"),
        (16, 'wrong field count: 16 (expected 15; a value holding "," cannot be told from two fields)'),
    ]
    lines = (DATA / "Master.csv").read_text().splitlines()
    assert [i.raw for i in issues] == [lines[12], lines[13], lines[15]]   # raw_kind line: the line itself
    assert rows[0]["cdr_id"] == cdr_id("fs1", u + "01") == rows[11]["cdr_id"]
    assert [(r["channel"], r["dst_channel"], r["call_type"], r["units"]) for r in rows[:1]] == [("", "", "voice", 0)]


def test_quote_inside_a_used_value_is_kept():
    rows, issues = csv('''
        "x","1000","0612345678","default","2026-10-05 10:00:00","2026-10-05 10:00:05","2026-10-05 10:01:05","65","60","NORMAL_CLEARING","u-1","","ac"me","PCMA","PCMA"
    ''')
    assert issues == [] and rows[0]["account_code"] == 'ac"me'


def test_comma_inside_a_used_value_takes_the_exact_path():
    rows, issues = csv('''
        "x","1000","0612345678","default","2026-10-05 10:00:00","2026-10-05 10:00:05","2026-10-05 10:01:05","65","60","NORMAL_CLEARING","u-1","","acme, sud","PCMA","PCMA"
        "x","1000","0612345678","default","2026-10-05 10:00:00","2026-10-05 10:00:05","2026-10-05 10:01:05","65","60","NORMAL_CLEARING","u-2","","acme","PCMA","PCMA"
    ''')
    assert issues == []
    assert [(r["source_line"], r["account_code"], r["unique_id"]) for r in rows] == [
        (1, "acme, sud", "u-1"), (2, "acme", "u-2")]


def test_unquoted_fields_are_an_issue():
    line = ('x,1000,0612345678,default,2026-10-05 10:00:00,2026-10-05 10:00:05,2026-10-05 10:01:05,65,60,'
            'NORMAL_CLEARING,u-1,,acme,PCMA,PCMA')
    rows, issues = csv(line + "\n")
    assert rows == [] and issues == [CdrIssue("Master.csv", 1, "fields are not all quoted (not a mod_cdr_csv line)",
                                              line)]


# --- hangup causes ----------------------------------------------------------------------------------

def cause_line(cause: str, answer: str = "", billsec: int = 0, uid: str = "u-1") -> str:
    return (f'"x","1000","0612345678","default","2026-10-05 10:00:00","{answer}","2026-10-05 10:01:00",'
            f'"60","{billsec}","{cause}","{uid}","","acme","PCMA","PCMA"\n')


@pytest.mark.parametrize("cause,disposition", [
    ("NO_ANSWER", "NO ANSWER"), ("NO_USER_RESPONSE", "NO ANSWER"), ("ORIGINATOR_CANCEL", "NO ANSWER"),
    ("NORMAL_CLEARING", "NO ANSWER"), ("LOSE_RACE", "NO ANSWER"), ("PICKED_OFF", "NO ANSWER"),
    ("USER_BUSY", "BUSY"), ("BUSY_EVERYWHERE", "BUSY"),
    ("NORMAL_CIRCUIT_CONGESTION", "CONGESTION"), ("SWITCH_CONGESTION", "CONGESTION"),
    ("NORMAL_TEMPORARY_FAILURE", "CONGESTION"), ("REQUESTED_CHAN_UNAVAIL", "CONGESTION"),
    ("CALL_REJECTED", "FAILED"), ("UNALLOCATED_NUMBER", "FAILED"), ("NO_ROUTE_DESTINATION", "FAILED"),
    ("SUBSCRIBER_ABSENT", "FAILED"), ("GATEWAY_DOWN", "FAILED"), ("RECOVERY_ON_TIMER_EXPIRE", "FAILED"),
    ("SOME_FUTURE_CAUSE", "FAILED"), ("no_answer", "NO ANSWER"), ("", "NO ANSWER"),
])
def test_unanswered_disposition_from_the_hangup_cause(cause, disposition):
    rows, issues = csv(cause_line(cause))
    assert issues == []
    assert (rows[0]["disposition"], rows[0]["answer_at"], rows[0]["billsec_s"]) == (disposition, None, 0)


@pytest.mark.parametrize("cause", ["NORMAL_CLEARING", "NORMAL_TEMPORARY_FAILURE", "MEDIA_TIMEOUT", ""])
def test_an_answered_leg_is_answered_whatever_the_cause(cause):
    rows, issues = csv(cause_line(cause, answer="2026-10-05 10:00:10", billsec=50))
    assert issues == [] and rows[0]["disposition"] == "ANSWERED" and rows[0]["billsec_s"] == 50


def test_a_value_that_is_not_a_cause_name_is_an_issue():
    rows, issues = csv(cause_line("NORMAL CLEARING") + cause_line("NO_ANSWER", uid="u-2"))
    assert [r["unique_id"] for r in rows] == ["u-2"]
    assert [(i.line, i.reason) for i in issues] == [(1, "unknown hangup_cause: 'NORMAL CLEARING'")]


def test_billsec_without_answer_time_is_an_issue():
    rows, issues = csv(cause_line("NORMAL_CLEARING", billsec=30))
    assert rows == [] and [i.reason for i in issues] == ["billsec > 0 without answer time: '30'"]


# --- the column option ------------------------------------------------------------------------------

EPOCH_COLUMNS = ["caller_id_number", "destination_number", "start_epoch", "answer_epoch", "end_epoch",
                 "duration", "billsec", "mduration", "billmsec", "hangup_cause", "uuid", "accountcode"]


def test_columns_option_with_epochs_gives_exact_utc_times_and_rounds_milliseconds_up():
    text = ('"1000","0612345678","1791184323","1791184331","1791184541","218","210","218450","210330",'
            '"NORMAL_CLEARING","u-1","acme"\n'
            '"1000","0612345678","1791184323","0","1791184353","30","0","30999","0","NO_ANSWER","u-2","acme"\n')
    for timezone in ("Europe/Paris", "Asia/Tokyo"):        # epochs: the time zone does not matter
        rows, issues = csv(text, timezone=timezone, options={"columns": EPOCH_COLUMNS})
        assert issues == []
        assert [shown(r) for r in rows] == [
            (1, utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41), 219, 211,
             "1000", "+33612345678", "out", "ANSWERED", "acme", "u-1"),
            (2, utc(2026, 10, 5, 7, 12, 3), None, utc(2026, 10, 5, 7, 12, 33), 31, 0,
             "1000", "+33612345678", "out", "NO ANSWER", "acme", "u-2"),
        ]


def test_columns_option_accepts_the_template_text():
    template = ('"${caller_id_number}","${destination_number}","${start_stamp}","${end_stamp}",'
                '"${billsec}","${uuid}","${sip_hangup_disposition}"')
    rows, issues = csv('"201","0320456789","2026-07-01 12:00:00","2026-07-01 12:01:01","0","u-1","send_bye"\n',
                       options={"columns": template})
    assert issues == []
    assert shown(rows[0]) == (1, utc(2026, 7, 1, 10), None, utc(2026, 7, 1, 10, 1, 1), 61, 0, "201",
                              "+33320456789", "out", "NO ANSWER", "", "u-1")


def test_columns_option_fields_fall_back_to_the_next_variable():
    rows, _ = csv('"","1000","0612345678","","2026-07-01 12:00:00","2026-07-01 12:01:00","60","u-1"\n',
                  options={"columns": ["caller_id_number", "sip_from_user", "sip_to_user", "destination_number",
                                       "start_stamp", "end_stamp", "duration", "uuid"]})
    assert (rows[0]["caller"], rows[0]["callee"]) == ("1000", "+33612345678")


@pytest.mark.parametrize("columns,message", [
    (["caller_id_number", "destination_number", "end_stamp", "uuid"], r"lacks a start time \(start_epoch or "
                                                                      r"start_uepoch or start_stamp\)"),
    (["caller_id_number", "start_stamp", "end_stamp"], r"lacks a callee"),
    (["caller_id_number", "destination_number", "start_stamp"], r"lacks an end time or a duration"),
    ({"caller_id_number": 1}, r"must be a list of FreeSWITCH variable names"),
    (["caller_id_number", ""], r"empty variable name"),
])
def test_columns_option_is_checked(columns, message):
    with pytest.raises(FormatError, match=message):
        parse_freeswitch_csv(b"", file_name="Master.csv", options={"columns": columns})


@pytest.mark.parametrize("start,reason", [("abc", "unparseable start_epoch: 'abc'"),
                                          ("0", "unparseable start_epoch: '0'")])
def test_bad_epochs_are_issues(start, reason):
    line = f'"1000","0612345678","{start}","0","1791184353","30","0","30999","0","NO_ANSWER","u-1","acme"'
    rows, issues = csv(line + "\n", options={"columns": EPOCH_COLUMNS})
    assert rows == [] and issues == [CdrIssue("Master.csv", 1, reason, line)]


def test_source_time_zone_applies_to_stamps():
    line = cause_line("NORMAL_CLEARING", answer="2026-10-05 10:00:10", billsec=50)
    assert csv(line, timezone="UTC")[0][0]["start_at"] == utc(2026, 10, 5, 10)
    assert csv(line, timezone="America/New_York")[0][0]["start_at"] == utc(2026, 10, 5, 14)


def test_without_uuid_the_fallback_key_is_used():
    rows, _ = csv(cause_line("NO_ANSWER", uid=""))
    start_us = str(int(utc(2026, 10, 5, 8).timestamp()) * 1_000_000)
    assert rows[0]["unique_id"] is None
    assert rows[0]["cdr_id"] == cdr_id("fs1", start_us, "1000", "+33612345678", "", "", "60", "0")


def test_chunk_boundaries_keep_line_numbers(monkeypatch):
    lines = [cause_line("NORMAL_CLEARING", answer="2026-10-05 10:00:10", billsec=50, uid=f"u-{k}").strip()
             for k in range(1, 601)]
    for k in (5, 200, 201, 600):
        lines[k - 1] = lines[k - 1].replace('"x"', '"Dupont, Jean"')          # exact path
    for k in (7, 333):
        lines[k - 1] = lines[k - 1].rsplit(",", 2)[0]                          # 13 fields
    lines.insert(99, "")                                                        # a blank line: line 100
    data = ("\n".join(lines) + "\n").encode()
    whole, whole_issues = csv(data)
    monkeypatch.setattr(freeswitch, "CHUNK_BYTES", 8192)
    rows, issues = csv(data)
    assert rows == whole and issues == whole_issues
    assert [i.line for i in issues] == [7, 334]
    expected = [n for n in range(1, 602) if n not in (7, 100, 334)]
    assert [r["source_line"] for r in rows] == expected
    assert [r["unique_id"] for r in rows] == [f"u-{k}" for k in range(1, 601) if k not in (7, 333)]


def test_bom_crlf_blank_lines_and_bad_bytes():
    good = cause_line("NO_ANSWER").strip()
    data = ("\ufeff" + good + "\r\n\r\n" + good.replace("u-1", "u-2") + "\r\n").encode()
    data += good.replace('"x"', '"Hélène"').replace("u-1", "u-3").encode("latin-1") + b"\n"
    rows, issues = csv(data)
    assert issues == [] and [(r["source_line"], r["unique_id"]) for r in rows] == [(1, "u-1"), (3, "u-2"), (4, "u-3")]


def test_empty_file():
    assert csv(b"") == ([], [])


# --- freeswitch-xml -------------------------------------------------------------------------------

ONE = DATA / "a_3f6b9c1e-5d2a-4e8f-9b7c-1a2b3c4d5e6f.cdr.xml"


def test_golden_single_document():
    rows, issues = xml(ONE.read_bytes())
    assert issues == []
    [row] = rows
    # epochs (exact UTC); mduration 218450 ms and billmsec 210330 ms rounded up
    assert shown(row) == (1, utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41),
                          219, 211, "1000", "+33612345678", "out", "ANSWERED", "acme",
                          "3f6b9c1e-5d2a-4e8f-9b7c-1a2b3c4d5e6f")
    assert (row["channel"], row["dst_channel"]) == ("sofia/internal/1000@pbx.bluerock.example",
                                                    "sofia/gateway/ovh/0612345678")
    assert row["cdr_id"] == cdr_id("fs1", "3f6b9c1e-5d2a-4e8f-9b7c-1a2b3c4d5e6f")


def test_golden_concatenated_documents_with_a_broken_one():
    rows, issues = xml((DATA / "batch.cdr.xml").read_bytes())
    u = "3f6b9c1e-5d2a-4e8f-9b7c-000000000"
    assert [shown(r) for r in rows] == [
        # %2B33478123456 is +33478123456; 307.4 s and 300.1 s rounded up
        (1, utc(2026, 10, 6, 12, 0, 0), utc(2026, 10, 6, 12, 0, 7), utc(2026, 10, 6, 12, 5, 7), 308, 301,
         "+33478123456", "1001", "in", "ANSWERED", "acme", u + "102"),
        # answer_epoch 0: unanswered; caller and callee from the callflow
        (2, utc(2026, 10, 7, 14, 30, 0), None, utc(2026, 10, 7, 14, 30, 25), 26, 0,
         "1000", "+33478123456", "out", "NO ANSWER", "acme", u + "103"),
        # no epoch, no callflow: local stamps (CEST); no milliseconds: FreeSWITCH's seconds
        (4, utc(2026, 10, 8, 14, 45, 0), utc(2026, 10, 8, 14, 45, 9), utc(2026, 10, 8, 14, 46, 9), 69, 60,
         "1004", "+33687654321", "out", "ANSWERED", "globex", u + "105"),
    ]
    assert rows[0]["channel"] == "sofia/external/+33478123456@trunk.ovh.example"
    assert [(i.line, i.reason) for i in issues] == [
        (3, "broken XML: Opening and ending tag mismatch: variables line 54 and variabls (line 58)")]
    # the raw of the issue is the document alone: it fails the same way when read again
    assert issues[0].raw.startswith('<?xml version="1.0"?>\n<cdr ') and issues[0].raw.endswith("</cdr>")
    again, again_issues = xml(issues[0].raw)
    assert again == [] and [i.reason for i in again_issues] == [
        "broken XML: Opening and ending tag mismatch: variables line 3 and variabls (line 7)"]


def doc(variables: str, callflow: str = "", uuid: str = "u-1") -> str:
    return (f'<?xml version="1.0"?>\n<cdr core-uuid="c1"><variables><uuid>{uuid}</uuid>{variables}</variables>'
            f"{callflow}</cdr>\n")


EPOCHS = ("<start_epoch>1791184323</start_epoch><answer_epoch>1791184331</answer_epoch>"
          "<end_epoch>1791184541</end_epoch><duration>218</duration><billsec>210</billsec>")
NUMBERS = "<caller_id_number>1000</caller_id_number><destination_number>0612345678</destination_number>"


def test_batch_root_with_cdr_children():
    body = doc(NUMBERS + EPOCHS).split("?>", 1)[1] + doc(NUMBERS + EPOCHS, uuid="u-2").split("?>", 1)[1]
    rows, issues = xml(f'<?xml version="1.0"?>\n<cdrs>\n<!-- two legs -->\n{body}<note>ignored</note></cdrs>')
    assert issues == [] and [(r["source_line"], r["unique_id"]) for r in rows] == [(1, "u-1"), (2, "u-2")]


def test_broken_batch_document_is_one_issue_for_the_file():
    data = f'<cdrs>{doc(NUMBERS + EPOCHS).split("?>", 1)[1]}<cdr><variables></cdr></cdrs>'
    rows, issues = xml(data)
    assert rows == []
    assert [(i.line, i.reason.split(":")[0]) for i in issues] == [(1, "broken XML")]
    assert issues[0].raw == data


def test_root_without_cdr_is_an_issue():
    rows, issues = xml("<cdrs><call/></cdrs>")
    assert rows == [] and [i.reason for i in issues] == ["no <cdr> element under the root <cdrs>"]


XXE = ('<?xml version="1.0"?>\n<!DOCTYPE cdr [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>\n'
       f"<cdr><variables><uuid>&xxe;</uuid>{NUMBERS}{EPOCHS}</variables></cdr>\n")
LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE cdr [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>\n'
          f"<cdr><variables><uuid>&d;</uuid>{NUMBERS}{EPOCHS}</variables></cdr>\n")


@pytest.mark.parametrize("document", [XXE, LAUGHS], ids=["external-entity", "entity-expansion"])
def test_doctype_is_refused_and_nothing_is_expanded(document):
    rows, issues = xml(document)
    assert rows == []
    assert [(i.line, i.reason) for i in issues] == [
        (1, "DOCTYPE refused (line 2): no DTD, entity or external reference is read")]
    # in a concatenation only that document is refused
    rows, issues = xml(doc(NUMBERS + EPOCHS, uuid="u-ok") + document)
    assert [r["unique_id"] for r in rows] == ["u-ok"] and [i.line for i in issues] == [2]
    assert "DOCTYPE refused (line 4)" in issues[0].reason
    # under a batch root: the whole file
    rows, issues = xml(document.replace("<cdr>", "<cdrs><cdr>").replace("</cdr>", "</cdr></cdrs>")
                       .replace("DOCTYPE cdr", "DOCTYPE cdrs"))
    assert rows == [] and "DOCTYPE refused" in issues[0].reason


def test_undeclared_entity_is_a_broken_document_not_a_lookup():
    rows, issues = xml(doc(NUMBERS + EPOCHS.replace("1791184323", "&xxe;")))
    assert rows == [] and issues[0].reason.startswith("broken XML: Entity 'xxe' not defined")


def test_variables_win_over_the_callflow_which_wins_over_sip_users():
    callflow = ("<callflow><caller_profile><caller_id_number>1000</caller_id_number>"
                "<destination_number>0478123456</destination_number></caller_profile></callflow>")
    sip = "<sip_from_user>1999</sip_from_user><sip_to_user>0199999999</sip_to_user>"
    rows, _ = xml(doc("<caller_id_number>%2B33612000001</caller_id_number>" + sip + EPOCHS, callflow)
                  + doc(sip + EPOCHS, callflow, uuid="u-2") + doc(sip + EPOCHS, uuid="u-3"))
    assert [(r["caller"], r["callee"]) for r in rows] == [
        ("+33612000001", "+33478123456"), ("1000", "+33478123456"), ("1999", "+33199999999")]


def test_without_epochs_the_callflow_times_are_exact_and_stamps_local():
    times = ("<callflow><caller_profile>" + NUMBERS + "</caller_profile>"
             "<times><created_time>1791184323500000</created_time><answered_time>1791184331000000</answered_time>"
             "<hangup_time>1791184541900000</hangup_time></times></callflow>")
    stamps = ("<start_stamp>2026-10-05%2009%3A12%3A03</start_stamp><answer_stamp>2026-10-05%2009%3A12%3A11"
              "</answer_stamp><end_stamp>2026-10-05%2009%3A15%3A41</end_stamp>")
    for timezone in ("Europe/Paris", "Asia/Tokyo"):
        rows, issues = xml(doc("<duration>218</duration><billsec>210</billsec>", times), timezone=timezone)
        assert issues == [] and (rows[0]["start_at"], rows[0]["answer_at"], rows[0]["end_at"]) == (
            utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41))
    rows, issues = xml(doc(NUMBERS + stamps + "<duration>218</duration><billsec>210</billsec>"),
                       timezone="Asia/Tokyo")
    assert issues == [] and rows[0]["start_at"] == utc(2026, 10, 5, 0, 12, 3)      # JST = UTC+9


@pytest.mark.parametrize("variables,expected", [
    ("<mduration>218000</mduration><billmsec>210000</billmsec>", (218, 210)),     # whole seconds: kept
    ("<mduration>218001</mduration><billmsec>210001</billmsec>", (219, 211)),     # rounded up
    ("<billmsec>210001</billmsec>", (218, 210)),                                  # only one: the seconds
    ("<mduration>900</mduration><billmsec>0</billmsec>", (1, 0)),
])
def test_billmsec_and_mduration_are_used_together_rounded_up(variables, expected):
    rows, issues = xml(doc(NUMBERS + EPOCHS + variables))
    assert issues == [] and (rows[0]["duration_s"], rows[0]["billsec_s"]) == expected


def test_bad_record_is_an_issue_whose_raw_reads_again():
    bad = doc(NUMBERS + EPOCHS.replace("<start_epoch>1791184323", "<start_epoch>17911843x3"), uuid="u-bad")
    rows, issues = xml(doc(NUMBERS + EPOCHS) + bad + doc(NUMBERS + EPOCHS, uuid="u-3"))
    assert [(r["source_line"], r["unique_id"]) for r in rows] == [(1, "u-1"), (3, "u-3")]
    assert [(i.line, i.reason) for i in issues] == [(2, "unparseable start_epoch: '17911843x3'")]
    assert issues[0].raw == bad.strip()
    assert [i.reason for i in xml(issues[0].raw)[1]] == ["unparseable start_epoch: '17911843x3'"]
    # under a batch root the raw is the <cdr> element serialized alone
    rows, issues = xml("<cdrs>" + bad.split("?>", 1)[1] + "</cdrs>")
    assert etree.fromstring(issues[0].raw.encode()).findtext("variables/uuid") == "u-bad"
    assert [i.reason for i in xml(issues[0].raw)[1]] == ["unparseable start_epoch: '17911843x3'"]


def test_normalizer_checks_apply():
    answer_after_end = EPOCHS.replace("<answer_epoch>1791184331", "<answer_epoch>1791184600")
    rows, issues = xml(doc(NUMBERS + answer_after_end + "<hangup_cause>NORMAL_CLEARING</hangup_cause>"))
    assert rows == [] and [i.reason for i in issues] == ["answer after end: '2026-10-05T07:16:40Z'"]


def test_documents_without_times_are_issues():
    rows, issues = xml(doc(NUMBERS) + doc(NUMBERS + "<start_epoch>1791184323</start_epoch>", uuid="u-2")
                       + doc(NUMBERS + EPOCHS, uuid="u-3"))
    assert [r["unique_id"] for r in rows] == ["u-3"]
    assert [(i.line, i.reason) for i in issues] == [
        (1, "no start time (start_epoch, start_uepoch, start_stamp or callflow created_time)"),
        (2, "no end time (end_epoch, end_uepoch, end_stamp or callflow hangup_time)")]
    rows, issues = xml(doc(NUMBERS) + doc(NUMBERS, uuid="u-2"))
    assert rows == [] and [i.line for i in issues] == [1, 2]


def test_latin1_bytes_do_not_abort_the_file():
    rows, issues = csv(cause_line("NO_ANSWER").replace('"x"', '"Hélène"').encode("latin-1")
                       + b'"\xe9t\xe9"\n' + cause_line("NO_ANSWER", uid="u-2").encode())
    assert [r["unique_id"] for r in rows] == ["u-1", "u-2"]
    assert [(i.line, i.reason, i.raw) for i in issues] == [(2, "wrong field count: 1 (expected 15)", '"\ufffdt\ufffd"')]


def test_empty_and_garbage_files():
    assert xml(b"  \n") == ([], [])
    rows, issues = xml(b"not xml at all")
    assert rows == [] and len(issues) == 1 and issues[0].reason.startswith("broken XML: ")


# --- formats and end to end --------------------------------------------------------------------------

def test_formats_are_registered_with_their_raw_kind():
    assert (FORMATS["freeswitch-csv"].line_based, FORMATS["freeswitch-csv"].raw_kind) == (True, "line")
    assert (FORMATS["freeswitch-xml"].line_based, FORMATS["freeswitch-xml"].raw_kind) == (False, "document")
    assert "uuid" in FORMATS["freeswitch-csv"].fingerprint and "uuid" in FORMATS["freeswitch-xml"].fingerprint


def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


def test_import_csv_end_to_end(wb):
    summary = import_cdr_file(wb, DATA / "Master.csv", "freeswitch-csv", source="fs-paris", timezone="Europe/Paris")
    # 17 lines: one blank, 3 malformed, line 12 repeats line 1
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (16, 12, 1, 3)
    assert summary.months == ["2026-10", "2026-11"]
    rows = lake_rows(wb)
    assert [r["source_line"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 17]
    assert {r["source"] for r in rows} == {"fs-paris"}
    quarantined = read_quarantine(wb).to_pylist()
    lines = (DATA / "Master.csv").read_text().splitlines()
    assert [(q["source_line"], q["format"], q["raw"], q["header"]) for q in quarantined] == [
        (13, "freeswitch-csv", lines[12], None), (14, "freeswitch-csv", lines[13], None),
        (16, "freeswitch-csv", lines[15], None)]
    with wb.db.session() as s:
        [ledger] = s.query(CdrFile).all()
        assert (ledger.format, ledger.status, ledger.imported, ledger.quarantined) == (
            "freeswitch-csv", "imported", 12, 3)


def test_import_xml_end_to_end(wb, tmp_path):
    summary = import_cdr_file(wb, DATA / "batch.cdr.xml", "freeswitch-xml", source="fs-paris",
                              timezone="Europe/Paris")
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (4, 3, 0, 1)
    single = import_cdr_file(wb, ONE, "freeswitch-xml", source="fs-paris", timezone="Europe/Paris")
    assert (single.received, single.imported) == (1, 1)
    rows = lake_rows(wb)
    assert [(r["source_file"], r["source_line"], r["billsec_s"]) for r in rows] == [
        (ONE.name, 1, 211), ("batch.cdr.xml", 1, 301), ("batch.cdr.xml", 2, 0), ("batch.cdr.xml", 4, 60)]
    [q] = read_quarantine(wb).to_pylist()
    assert (q["source_line"], q["format"], q["byte_offset"]) == (3, "freeswitch-xml", None)
    assert q["raw"].startswith("<?xml") and "3f6b9c1e-5d2a-4e8f-9b7c-000000000104" in q["raw"]
    # the same call again in another file is a duplicate record
    copy = tmp_path / "a_again.cdr.xml"
    copy.write_bytes(ONE.read_bytes().replace(b"<session_id>42", b"<session_id>43"))
    again = import_cdr_file(wb, copy, "freeswitch-xml", source="fs-paris")
    assert (again.received, again.imported, again.duplicates) == (1, 0, 1)


def test_quarantined_lines_and_documents_are_read_again(wb):
    from bluerocktel.db.models import CdrSource
    from bluerocktel.mediation.quarantine import reprocess_quarantine

    # a switch with its own template, imported before the source said so: every line refused
    template = ["caller_id_number", "destination_number", "start_stamp", "answer_stamp", "end_stamp", "uuid"]
    with wb.db.transaction() as s:
        s.add(CdrSource(name="fs-custom", format="freeswitch-csv", timezone="Europe/Paris"))
    path = wb.lake_dir.parent / "custom.csv"
    path.write_text('"1000","0612345678","2026-10-05 10:00:00","2026-10-05 10:00:05","2026-10-05 10:01:05","u-1"\n'
                    '"1001","1002","2026-10-05 11:00:00","","2026-10-05 11:00:09","u-2"\n')
    first = import_cdr_file(wb, path, "freeswitch-csv", source="fs-custom")
    assert (first.imported, first.quarantined) == (0, 2)
    with wb.db.transaction() as s:
        s.query(CdrSource).filter_by(name="fs-custom").one().options = {"columns": template}
    again = reprocess_quarantine(wb, source="fs-custom")
    assert (again.received, again.imported, again.still_failing) == (2, 2, 0)
    assert [(r["source_file"], r["source_line"], r["start_at"], r["billsec_s"], r["disposition"])
            for r in lake_rows(wb)] == [("custom.csv", 1, utc(2026, 10, 5, 8), 60, "ANSWERED"),
                                        ("custom.csv", 2, utc(2026, 10, 5, 9), 0, "NO ANSWER")]

    # a broken XML document is read again alone, and still fails the same way
    import_cdr_file(wb, DATA / "batch.cdr.xml", "freeswitch-xml", source="fs-xml")
    xml_again = reprocess_quarantine(wb, source="fs-xml")
    assert (xml_again.received, xml_again.imported, xml_again.still_failing) == (1, 0, 1)
    assert [(i.line, i.reason) for i in xml_again.issues] == [
        (3, "broken XML: Opening and ending tag mismatch: variables line 3 and variabls (line 7)")]
