"""Usage totals read from the lake: one aggregate per account, call type and zone."""

import datetime as dt

import pyarrow as pa

from bluerocktel import lake
from bluerocktel.billing.charges import UsageTotal
from bluerocktel.billing.periods import parse_period
from bluerocktel.billing.usage import read_period_usage

UTC = dt.timezone.utc
MARCH = parse_period("2026-03")


def row(cdr_id, account_id, call_type, zone, price_micro, units, bundle_units=0, status="rated",
        start=dt.datetime(2026, 3, 10, 9, 0, tzinfo=UTC), rated_at=dt.datetime(2026, 4, 1, tzinfo=UTC)):
    voice = call_type == "voice"
    return {"cdr_id": cdr_id, "source": "pbx", "source_file": "f.csv", "source_line": 1, "start_at": start,
            "answer_at": start, "end_at": start, "duration_s": units if voice else 0,
            "billsec_s": units if voice else 0, "caller": "+33140000000", "callee": "+33612345678",
            "account_code": "", "channel": "", "dst_channel": "", "disposition": "ANSWERED", "direction": "out",
            "call_type": call_type, "units": units, "unique_id": cdr_id, "account_id": account_id,
            "service_id": 1, "zone": zone, "billable_s": units if voice else 0, "billable_units": units,
            "price_micro": price_micro, "bundle_units": bundle_units, "rating_status": status, "rated_at": rated_at}


def test_totals_per_account_call_type_and_zone_with_bundle_units(tmp_path):
    rows = [
        row("v1", 1, "voice", "France fixe", 0, 120, bundle_units=120),      # inside the bundle
        row("v2", 1, "voice", "France fixe", 20_000, 180, bundle_units=60),   # overflow: 120 s priced
        row("s1", 1, "sms", "France fixe", 50_000, 2),                        # same zone, another type
        row("d1", 1, "data", "Europe", 1_500_000, 3_000_000, bundle_units=1_000_000),
        row("v3", 2, "voice", "mobile", 99_000, 60),
        row("v4", 2, "voice", "mobile", 10_000, 60, rated_at=dt.datetime(2026, 4, 1, tzinfo=UTC)),
        row("u1", 2, "voice", "mobile", None, 60, status="unrated"),
        row("x1", None, "voice", "", None, 60, status="unassigned"),
        # 1 April 00:00 UTC belongs to April
        row("late", 1, "voice", "France fixe", 5_000_000, 60, start=dt.datetime(2026, 4, 1, tzinfo=UTC)),
    ]
    lake.write_partition(tmp_path, "rated", "2026-03", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))
    # re-rated later in another file: v4's later rating (70 000) counts, once
    rerated = [row("v4", 2, "voice", "mobile", 70_000, 60, rated_at=dt.datetime(2026, 4, 2, tzinfo=UTC))]
    lake.write_partition(tmp_path, "rated", "2026-03", pa.Table.from_pylist(rerated, schema=lake.RATED_SCHEMA))
    usage = read_period_usage(tmp_path, MARCH)
    assert usage.rated == [
        UsageTotal(1, "Europe", 1, 0, 1_500_000, "data", 3_000_000, 1_000_000),
        UsageTotal(1, "France fixe", 1, 0, 50_000, "sms", 2, 0),
        UsageTotal(1, "France fixe", 2, 300, 20_000, "voice", 300, 180),
        UsageTotal(2, "mobile", 2, 120, 169_000, "voice", 120, 0),
    ]
    assert (usage.unrated_calls, usage.unassigned_calls) == ({2: 1}, 1)
    assert list(usage.rated_by_account()) == [1, 2]


def test_an_empty_lake_has_no_usage(tmp_path):
    usage = read_period_usage(tmp_path, MARCH)
    assert (usage.rated, usage.unrated_calls, usage.unassigned_calls) == ([], {}, 0)
