"""json-records: the API's push format, parsed with json and normalized by normalize_batch."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, import_cdr_bytes, read_quarantine
from bluerocktel.mediation.formats.jsonrecords import parse_json_records
from bluerocktel.mediation.records import cdr_id

UTC = dt.timezone.utc

# Four realistic records of a PBX: an outgoing call with offsets, an incoming one in Paris local
# time (November: UTC+1) without end, a busy call with end and no answer, an SMS.
RECORDS = [
    {"start": "2026-10-05T09:12:03+02:00", "answer": "2026-10-05T09:12:11+02:00", "end": "2026-10-05T09:15:41+02:00",
     "caller": "201", "callee": "06 12 34 56 78", "account_code": "acme", "channel": "PJSIP/201-00000001",
     "dst_channel": "PJSIP/ovh-trunk-00000002", "unique_id": "1791184323.1"},
    {"start": "2026-11-02 14:00:00", "answer": "2026-11-02 14:00:07", "duration": 307, "billsec": "300",
     "caller": "+33478123456", "callee": "202", "disposition": "answered", "unique_id": "1791208800.7"},
    {"start": "2026-10-05T10:00:00Z", "end": "2026-10-05T10:00:04Z", "caller": "0145678912",
     "callee": "0033 1 40 20 50 50", "disposition": "BUSY", "unique_id": "u-3"},
    {"start": "2026-10-05T11:00:00.250+02:00", "duration": 0, "caller": "+33612345678", "callee": "+33698765432",
     "call_type": "SMS", "units": 2, "unique_id": "sms-1"},
]


def parse(document, **kwargs):
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    opts = dict(file_name="push.json", source="pbx-paris", timezone="Europe/Paris", country="FR")
    opts.update(kwargs)
    table, issues = parse_json_records(data, **opts)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_format_is_registered_as_a_whole_document_format():
    spec = FORMATS["json-records"]
    assert (spec.line_based, spec.raw_kind, spec.extensions) == (False, "document", (".json",))


def test_records_become_the_expected_normalized_cdrs():
    rows, issues = parse(RECORDS)
    assert issues == []
    assert [r["source_line"] for r in rows] == [1, 2, 3, 4]
    out, inbound, busy, sms = rows

    assert (out["start_at"], out["answer_at"], out["end_at"]) == (
        utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41))
    assert (out["duration_s"], out["billsec_s"], out["disposition"], out["direction"]) == (218, 210, "ANSWERED", "out")
    assert (out["caller"], out["callee"], out["account_code"]) == ("201", "+33612345678", "acme")
    assert (out["channel"], out["dst_channel"]) == ("PJSIP/201-00000001", "PJSIP/ovh-trunk-00000002")
    assert (out["call_type"], out["units"], out["unique_id"]) == ("voice", 0, "1791184323.1")
    assert out["cdr_id"] == cdr_id("pbx-paris", "1791184323.1")
    assert (out["source"], out["source_file"]) == ("pbx-paris", "push.json")

    # 14:00 in Paris on 2 November (winter time, UTC+1) is 13:00 UTC; the end comes from the duration.
    assert (inbound["start_at"], inbound["answer_at"], inbound["end_at"]) == (
        utc(2026, 11, 2, 13), utc(2026, 11, 2, 13, 0, 7), utc(2026, 11, 2, 13, 5, 7))
    assert (inbound["duration_s"], inbound["billsec_s"], inbound["disposition"]) == (307, 300, "ANSWERED")
    assert (inbound["caller"], inbound["callee"], inbound["direction"]) == ("+33478123456", "202", "in")

    assert (busy["answer_at"], busy["duration_s"], busy["billsec_s"], busy["disposition"]) == (None, 4, 0, "BUSY")
    assert (busy["caller"], busy["callee"], busy["direction"]) == ("+33145678912", "+33140205050", "out")

    # Fractional seconds are dropped; an SMS carries its message count.
    assert (sms["start_at"], sms["end_at"], sms["duration_s"]) == (utc(2026, 10, 5, 9), utc(2026, 10, 5, 9), 0)
    assert (sms["call_type"], sms["units"], sms["disposition"]) == ("sms", 2, "NO ANSWER")


def test_every_document_shape_gives_the_same_cdrs():
    expected, _ = parse(RECORDS)
    assert parse({"records": RECORDS})[0] == expected
    assert parse({"records": RECORDS, "batch": {"id": "b-1", "received_at": "2026-11-26T08:00:00Z"}})[0] == expected
    # one record alone (what a quarantined record's raw holds)
    [alone], _ = parse(RECORDS[2])
    assert alone == {**expected[2], "source_line": 1}
    # a UTF-8 byte order mark is tolerated; an empty array is no records
    assert parse(b"\xef\xbb\xbf" + json.dumps(RECORDS).encode())[0] == expected
    assert parse([]) == ([], [])


def test_bad_records_are_issues_with_record_number_reason_and_raw_the_others_are_imported():
    good = {"start": "2026-10-05T10:00:00Z", "duration": 30, "caller": "201", "callee": "0612345678", "unique_id": "g"}
    records = [
        "not a record",                                                       # 1
        {**good, "unique_id": "g1", "colour": "red", "price": 1},             # 2
        {**good, "unique_id": "g2", "duration": True},                        # 3
        {**good, "unique_id": "g3", "caller": {"number": "201"}},             # 4
        {"duration": 30, "caller": "201"},                                    # 5
        {"start": "2026-10-05T10:00:00Z", "caller": "201"},                   # 6
        {**good, "unique_id": "g4", "start": "2026-10-32T10:00:00Z"},         # 7
        {**good, "unique_id": "g5", "duration": 12.5},                        # 8
        {**good, "unique_id": "g6", "duration": 30.0},                        # 9: integral number, fine
        {**good, "unique_id": "g7", "direction": "sideways"},                 # 10
        {**good, "unique_id": "g8", "billsec": 40},                           # 11
        {**good, "unique_id": "g9", "duration": "31", "answer": None},        # 12: text number, null = absent
        [1, 2],                                                               # 13
    ]
    rows, issues = parse(records)
    assert [(i.line, i.reason) for i in issues] == [
        (1, "record is not a JSON object but a string"),
        (2, "unknown field(s): 'colour', 'price'"),
        (3, "field 'duration' must be text or a number, not a boolean: true"),
        (4, 'field \'caller\' must be text or a number, not an object: {"number":"201"}'),
        (5, "missing field 'start'"),
        (6, "needs 'end' or 'duration'"),
        (7, "unparseable start time: '2026-10-32T10:00:00Z'"),
        (8, "unparseable duration: '12.5'"),
        (10, "unknown direction: 'sideways'"),
        (11, "billsec > duration: '40'"),
        (13, "record is not a JSON object but an array"),
    ]
    assert {i.file for i in issues} == {"push.json"}
    assert issues[0].raw == '"not a record"'
    assert json.loads(issues[1].raw) == records[1]
    assert issues[6].raw == json.dumps(records[6], separators=(",", ":"))
    assert [(r["source_line"], r["unique_id"], r["duration_s"]) for r in rows] == [(9, "g6", 30), (12, "g9", 31)]


def test_a_quarantined_record_raw_parses_again_alone():
    late = {"start": "2026-10-05T09:12:03+02:00", "answer": "2026-10-05T09:00:00+02:00", "duration": 218,
            "billsec": 210, "caller": "201", "callee": "0612345678", "unique_id": "x"}
    _, [issue] = parse([RECORDS[0], late])
    assert (issue.line, issue.reason) == (2, "answer before start: '2026-10-05T09:00:00+02:00'")
    rows, [again] = parse(issue.raw.encode())
    assert rows == [] and again.reason == issue.reason and again.raw == issue.raw


@pytest.mark.parametrize("data, message", [
    (b'[{"start": "2026-10-05T10:00:00Z",\n "duration": 3', r"push.json: not a JSON document \(line 2, column"),
    (b"[NaN]", r"push.json: not a JSON document \(NaN is not JSON\)"),
    (b"42", r"expected an array of records, an object with 'records' or one record object, not a number"),
    (b'{"records": [], "source": "pbx"}', r"unknown top-level key\(s\) 'source'"),
    (b'{"records": {"start": "x"}}', r"'records' must be an array, not an object"),
    ('[{"caller": "Jérôme"}]'.encode("latin-1"), r"push.json: not UTF-8 text \(byte 14\)"),
])
def test_a_document_that_is_not_records_is_refused_whole(data, message):
    with pytest.raises(FormatError, match=message):
        parse_json_records(data, file_name="push.json", source="s", timezone="Europe/Paris", country="FR")


def test_import_dedups_records_and_quarantines_the_raw_json(wb):
    bad = {"start": "yesterday", "duration": 5, "unique_id": "bad-1"}
    first = import_cdr_bytes(wb, json.dumps(RECORDS + [bad]).encode(), "push-1.json", "json-records",
                             source="pbx-paris")
    assert (first.received, first.imported, first.duplicates, first.quarantined) == (5, 4, 0, 1)
    assert first.months == ["2026-10", "2026-11"]
    # Another document repeating two records (same unique_id) and bringing one new: gzip is fine.
    again = RECORDS[:2] + [{**RECORDS[2], "unique_id": "u-4"}]
    second = import_cdr_bytes(wb, gzip.compress(json.dumps({"records": again}).encode()), "push-2.json.gz",
                              "json-records", source="pbx-paris")
    assert (second.received, second.imported, second.duplicates, second.quarantined) == (3, 1, 2, 0)
    [quarantined] = read_quarantine(wb).to_pylist()
    assert (quarantined["format"], quarantined["source_file"], quarantined["source_line"]) == (
        "json-records", "push-1.json", 5)
    assert quarantined["reason"] == "unparseable start time: 'yesterday'"
    assert json.loads(quarantined["raw"]) == bad
