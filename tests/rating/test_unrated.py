"""The unrated queue: the latest rating of each CDR when it is ``unrated`` or ``unassigned``.

Lake used by most tests (ratings in the order written; the latest ``rated_at`` wins):

    cdr   start              ratings                                         in the queue?
    q1    2026-03-02 08:00   unrated (no rate for +1…)                       yes
    q2    2026-03-01 09:00   unassigned                                      yes
    q3    2026-03-03 10:00   unrated, then rated after the fix               no
    q4    2026-03-04 11:00   rated, then unassigned (identifier removed)     yes
    q5    2026-03-05 12:00   free                                            no
    q6    2026-04-01 00:30   unrated (no rate for +1…), account 11           yes
"""

import datetime as dt

import pyarrow as pa
import pytest
from rating_builders import at

from bluerocktel.errors import UserFacingError
from bluerocktel.lake import RATED_SCHEMA, write_partition
from bluerocktel.rating.unrated import unrated_counts, unrated_queue

NO_RATE = "no rate for +12125550100 (voice) in deck FR-SELL"
NO_SERVICE = "no service identifier matches caller +33999999999"
FIRST, FIX = at("2026-04-01 03:00"), at("2026-04-02 03:00")


def rated(cdr_id: str, start: str, status: str, reason: str = "", *, account_id: int | None = 10,
          rated_at: dt.datetime = FIRST, line: int = 1) -> dict:
    start_at = at(start)
    return {"cdr_id": cdr_id, "source": "pbx", "source_file": "Master.csv", "source_line": line,
            "start_at": start_at, "answer_at": start_at, "end_at": start_at + dt.timedelta(seconds=60),
            "duration_s": 60, "billsec_s": 60, "caller": "+33123456789", "callee": f"+1212555{line:04d}",
            "account_code": "", "channel": "SIP/pbx-1", "dst_channel": "SIP/carrier-1", "disposition": "ANSWERED",
            "direction": "out", "call_type": "voice", "unique_id": cdr_id,
            "account_id": None if status == "unassigned" else account_id,
            "price_micro": 20_000 if status == "rated" else (0 if status == "free" else None),
            "rating_status": status, "rating_reason": reason, "tariff_version": "v1", "rated_at": rated_at}


def lake(tmp_path):
    lake_dir = tmp_path / "lake"
    write_partition(lake_dir, "rated", "2026-03", pa.Table.from_pylist([
        rated("q1", "2026-03-02 08:00", "unrated", NO_RATE, line=1),
        rated("q2", "2026-03-01 09:00", "unassigned", NO_SERVICE, line=2),
        rated("q3", "2026-03-03 10:00", "unrated", NO_RATE, line=3),
        rated("q4", "2026-03-04 11:00", "rated", line=4),
        rated("q5", "2026-03-05 12:00", "free", line=5),
    ], schema=RATED_SCHEMA))
    write_partition(lake_dir, "rated", "2026-03", pa.Table.from_pylist([   # a later run
        rated("q3", "2026-03-03 10:00", "rated", rated_at=FIX, line=3),
        rated("q4", "2026-03-04 11:00", "unassigned", NO_SERVICE, rated_at=FIX, line=4),
    ], schema=RATED_SCHEMA))
    write_partition(lake_dir, "rated", "2026-04", pa.Table.from_pylist([
        rated("q6", "2026-04-01 00:30", "unrated", NO_RATE, account_id=11, line=6),
    ], schema=RATED_SCHEMA))
    return lake_dir


def test_the_queue_lists_the_latest_rating_of_queued_cdrs_oldest_call_first(tmp_path):
    lake_dir = lake(tmp_path)
    rows = unrated_queue(lake_dir)
    assert [(r["cdr_id"], r["status"], r["reason"], r["rated_at"]) for r in rows] == [
        ("q2", "unassigned", NO_SERVICE, FIRST),
        ("q1", "unrated", NO_RATE, FIRST),
        ("q4", "unassigned", NO_SERVICE, FIX),       # rated first, unassigned by the latest rating
        ("q6", "unrated", NO_RATE, FIRST),
    ]
    first = rows[1]
    assert first == {"cdr_id": "q1", "start_at": at("2026-03-02 08:00"), "caller": "+33123456789",
                     "callee": "+12125550001", "account_code": "", "channel": "SIP/pbx-1", "status": "unrated",
                     "reason": NO_RATE, "account_id": 10, "rated_at": FIRST, "source_file": "Master.csv",
                     "source_line": 1}


def test_pages_months_and_account_filter(tmp_path):
    lake_dir = lake(tmp_path)
    assert [r["cdr_id"] for r in unrated_queue(lake_dir, limit=2)] == ["q2", "q1"]
    assert [r["cdr_id"] for r in unrated_queue(lake_dir, limit=2, offset=2)] == ["q4", "q6"]
    assert unrated_queue(lake_dir, limit=2, offset=4) == []
    assert [r["cdr_id"] for r in unrated_queue(lake_dir, ["2026-04"])] == ["q6"]
    assert [r["cdr_id"] for r in unrated_queue(lake_dir, account_id=10)] == ["q1"]   # unassigned: no account
    assert [r["cdr_id"] for r in unrated_queue(lake_dir, account_id=11)] == ["q6"]
    assert unrated_queue(lake_dir, ["2026-05"]) == []
    assert unrated_queue(tmp_path / "empty") == [] and unrated_counts(tmp_path / "empty") == []


def test_counts_per_status_and_reason(tmp_path):
    lake_dir = lake(tmp_path)
    assert unrated_counts(lake_dir) == [
        {"status": "unassigned", "reason": NO_SERVICE, "calls": 2, "first_start_at": at("2026-03-01 09:00"),
         "last_start_at": at("2026-03-04 11:00")},
        {"status": "unrated", "reason": NO_RATE, "calls": 2, "first_start_at": at("2026-03-02 08:00"),
         "last_start_at": at("2026-04-01 00:30")},
    ]
    assert [(c["status"], c["calls"]) for c in unrated_counts(lake_dir, ["2026-03"])] == [
        ("unassigned", 2), ("unrated", 1)]


def test_bad_requests_are_refused_with_what_was_wrong(tmp_path):
    with pytest.raises(UserFacingError, match="not a month: 'March'"):
        unrated_queue(tmp_path, ["March"])
    with pytest.raises(UserFacingError, match="not a month: '2026-13'"):
        unrated_counts(tmp_path, ["2026-13"])
    with pytest.raises(UserFacingError, match="limit=-1"):
        unrated_queue(tmp_path, limit=-1)
