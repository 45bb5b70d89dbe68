"""normalize_batch: the conversions and checks every format parser relies on."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import cdr_id

UTC = dt.timezone.utc


def run(columns: dict, **kwargs):
    n = len(next(iter(columns.values())))
    raw = pa.table({"_line": pa.array(range(1, n + 1), pa.int32()), **columns})
    opts = dict(file_name="f.cdr", source="sw1", timezone="Europe/Paris", country="FR")
    opts.update(kwargs)
    table, issues = normalize_batch(raw, **opts)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_local_text_times_with_end_and_no_durations_derive_them():
    rows, issues = run({"start": ["2026-10-01 12:00:00"], "answer": ["2026-10-01 12:00:07"],
                        "end": ["2026-10-01 12:01:07"], "caller": ["0145678901"], "callee": ["0612345678"],
                        "unique_id": ["u1"]})
    assert issues == []
    [r] = rows
    # Paris is UTC+2 on 1 October: 12:00 local is 10:00 UTC.
    assert (r["start_at"], r["answer_at"], r["end_at"]) == (utc(2026, 10, 1, 10), utc(2026, 10, 1, 10, 0, 7),
                                                          utc(2026, 10, 1, 10, 1, 7))
    assert (r["duration_s"], r["billsec_s"], r["disposition"]) == (67, 60, "ANSWERED")
    assert (r["caller"], r["callee"], r["direction"]) == ("+33145678901", "+33612345678", "out")
    assert (r["call_type"], r["units"], r["unique_id"]) == ("voice", 0, "u1")
    assert r["cdr_id"] == cdr_id("sw1", "u1")


def test_iso_times_with_offsets_are_exact_and_without_are_local():
    rows, _ = run({"start": ["2026-10-01T10:00:00Z", "2026-10-01T10:00:00+05:30", "2026-01-15T09:00:00"],
                   "duration": ["30", "30", "30"]}, time_format="iso", key=())
    assert [r["start_at"] for r in rows] == [utc(2026, 10, 1, 10), utc(2026, 10, 1, 4, 30), utc(2026, 1, 15, 8)]
    assert [r["end_at"] for r in rows] == [utc(2026, 10, 1, 10, 0, 30), utc(2026, 10, 1, 4, 30, 30),
                                           utc(2026, 1, 15, 8, 0, 30)]
    # no answer time: unanswered, billsec 0
    assert {(r["answer_at"], r["billsec_s"], r["disposition"]) for r in rows} == {(None, 0, "NO ANSWER")}


def test_epoch_times_zero_means_no_time():
    rows, issues = run({"start": ["1790000000", "1790000100"], "answer": ["0", "1790000104"],
                        "end": ["1790000010", "1790000160"]}, time_format="epoch", key=())
    assert issues == []
    assert [r["answer_at"] for r in rows] == [None, dt.datetime.fromtimestamp(1790000104, UTC)]
    assert [(r["duration_s"], r["billsec_s"]) for r in rows] == [(10, 0), (60, 56)]


def test_timestamp_columns_aware_and_naive():
    aware = pa.array([utc(2026, 3, 29, 0, 30)], pa.timestamp("us", tz="UTC"))
    naive = pa.array([dt.datetime(2026, 3, 29, 3, 30)], pa.timestamp("us"))   # Paris summer time: 01:30 UTC
    rows, _ = run({"start": aware, "end": naive})
    assert (rows[0]["start_at"], rows[0]["end_at"], rows[0]["duration_s"]) == (
        utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), 3600)


def test_bad_records_are_issues_naming_the_value_and_keep_their_raw_text():
    rows, issues = run({"start": ["2026-10-01 12:00:00", "2026-10-32 12:00:00", "2026-10-01 12:00:00",
                                  "2026-10-01 12:00:00", "2026-10-01 12:00:00"],
                        "duration": ["10", "10", "ten", "10", "10"],
                        "billsec": ["5", "5", "5", "11", "5"],
                        "answer": ["2026-10-01 12:00:05", "", "", "2026-10-01 12:00:00", "2026-10-01 12:00:05"],
                        "disposition": ["ANSWERED", "NO ANSWER", "NO ANSWER", "ANSWERED", "HUNG UP"],
                        "_raw": ["l1", "l2", "l3", "l4", "l5"]})
    assert len(rows) == 1 and rows[0]["source_line"] == 1
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (2, "unparseable start time: '2026-10-32 12:00:00'", "l2"),
        (3, "unparseable duration: 'ten'", "l3"),
        (4, "billsec > duration: '11'", "l4"),
        (5, "unknown disposition: 'HUNG UP'", "l5"),
    ]


def test_disposition_aliases_call_types_units_and_given_direction():
    rows, issues = run({"start": ["2026-10-01 12:00:00"] * 4, "duration": ["0", "0", "60", "0"],
                        "disposition": ["answer", "noanswer", "ANSWERED", "BUSY"],
                        "call_type": ["sms", "SMS", "data", ""], "units": [None, "3", "1048576", None],
                        "direction": ["in", "", "out", "internal"],
                        "caller": ["+33612345678", "201", "201", "201"], "callee": ["201", "+4930123", "x", "202"]},
                       key=())
    assert issues == []
    assert [r["disposition"] for r in rows] == ["ANSWERED", "NO ANSWER", "ANSWERED", "BUSY"]
    assert [(r["call_type"], r["units"]) for r in rows] == [("sms", 1), ("sms", 3), ("data", 1048576), ("voice", 0)]
    # a given direction wins; an empty one is derived from the numbers
    assert [r["direction"] for r in rows] == ["in", "out", "out", "internal"]


def test_unknown_call_type_direction_and_negative_units_are_issues():
    rows, issues = run({"start": ["2026-10-01 12:00:00"] * 3, "duration": ["1"] * 3,
                        "call_type": ["fax", "voice", "data"], "direction": ["out", "sideways", "out"],
                        "units": ["0", "0", "-5"]}, key=())
    assert rows == []
    assert [i.reason for i in issues] == ["unknown call type: 'fax'", "unknown direction: 'sideways'",
                                          "negative units: '-5'"]


def test_record_key_given_parts_and_fallback_when_all_empty():
    rows, _ = run({"start": ["2026-10-01 12:00:00", "2026-10-01 12:00:00"], "duration": ["10", "10"],
                   "caller": ["201", "201"], "callee": ["0612345678", "0612345678"],
                   "unique_id": ["abc", ""], "_key_leg": ["2", ""]}, key=("unique_id", "_key_leg"))
    assert rows[0]["cdr_id"] == cdr_id("sw1", "abc", "2")
    start_us = str(int(utc(2026, 10, 1, 10).timestamp()) * 1_000_000)
    assert rows[1]["cdr_id"] == cdr_id("sw1", start_us, "201", "+33612345678", "", "", "10", "0")
    assert rows[1]["unique_id"] is None


def test_impossible_dates_are_refused_not_rolled_over():
    # Arrow's strptime alone reads 30 February as 2 March.
    rows, issues = run({"start": ["2026-02-30 09:12:03", "30/02/2026 09:12:03"], "duration": ["5", "5"]}, key=())
    assert rows == [] and [i.reason for i in issues] == ["unparseable start time: '2026-02-30 09:12:03'",
                                                         "unparseable start time: '30/02/2026 09:12:03'"]
    rows, issues = run({"start": ["1/2/2026 9:05:03", "29/02/2028 10:00:00"], "duration": ["5", "5"]},
                       time_format="%d/%m/%Y %H:%M:%S", key=())
    assert issues == [] and [r["start_at"] for r in rows] == [utc(2026, 2, 1, 8, 5, 3), utc(2028, 2, 29, 9)]


def test_month_names_in_capitals_are_read():
    rows, issues = run({"start": ["05-OCT-2026 09:00:00", "31-APR-2026 09:00:00"], "duration": ["5", "5"]},
                       time_format="%d-%b-%Y %H:%M:%S", key=())
    assert [r["start_at"] for r in rows] == [utc(2026, 10, 5, 7)]
    assert [i.reason for i in issues] == ["unparseable start time: '31-APR-2026 09:00:00'"]


def test_without_answer_column_billsec_places_the_answer_before_the_end():
    rows, issues = run({"start": ["2026-10-01 12:00:00", "2026-10-01 13:00:00"], "duration": ["100", "20"],
                        "billsec": ["90", "0"]}, key=())
    assert issues == []
    assert [(r["answer_at"], r["billsec_s"], r["disposition"]) for r in rows] == [
        (utc(2026, 10, 1, 10, 0, 10), 90, "ANSWERED"), (None, 0, "NO ANSWER")]


def test_a_batch_without_end_or_duration_is_a_programming_error():
    with pytest.raises(ValueError, match="needs an end time or a duration"):
        run({"start": ["2026-10-01 12:00:00"]})


def test_times_out_of_range_are_issues_not_crashes():
    rows, issues = run({"start": ["0000-01-01 00:00:00", "1970-01-01 00:00:01", "2026-10-01 12:00:00",
                                  "2026-10-01 12:00:00"],
                        "end": ["0000-01-01 00:01:00", "2100-01-01 00:00:00", "2200-01-01 00:00:00",
                                "2026-10-01 12:01:00"]}, key=())
    assert [r["source_line"] for r in rows] == [4]
    assert [i.reason for i in issues] == [
        "start time out of range (1990-2099): '0000-01-01 00:00:00'",
        "start time out of range (1990-2099): '1970-01-01 00:00:01'",
        "end time out of range (1990-2099): '2200-01-01 00:00:00'",
    ]
    # epochs: too many digits is unparseable, never a wrapped-around time
    rows, issues = run({"start": ["9999999999999999", "999999999999", "1790000000"], "duration": ["1", "1", "1"]},
                       time_format="epoch", key=())
    assert len(rows) == 1 and [i.reason.split(":")[0] for i in issues] == ["unparseable start time"] * 2


def test_a_batch_with_absurd_values_keeps_its_good_record(wb):
    import json

    from bluerocktel.mediation import import_cdr_bytes

    good = {"start": "2026-10-01T10:00:00Z", "duration": 60, "caller": "201", "callee": "0612345678",
            "unique_id": "ok-1"}
    bad = [dict(good, start="0000-01-01T00:00:00Z", unique_id="b1"),
           dict(good, start="1990-01-01T00:00:01Z", end="2099-12-31T00:00:00Z", duration=None, unique_id="b2"),
           dict(good, duration=1e19, unique_id="b3")]
    for k, record in enumerate(bad):
        record = {key: value for key, value in record.items() if value is not None}
        summary = import_cdr_bytes(wb, json.dumps([good, record]).encode(), f"push-{k}.json", "json-records",
                                   source="api")
        assert (summary.status, summary.received, summary.quarantined) == ("imported", 2, 1), summary.issues
