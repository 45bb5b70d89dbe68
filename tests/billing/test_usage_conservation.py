"""Property: the usage rated in a period is invoiced or explicitly carried over, to the micro unit.

Random rated lakes (accounts with and without an active service, an unknown account, re-rated
CDRs whose latest rating counts, unrated and unassigned calls) are drafted by the cycle; the sum
of the latest ``rated`` prices equals the drafts' usage lines (exact micro amounts) plus what
``carried_over`` lists.
"""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluerocktel import lake
from bluerocktel.billing.cycle import build_drafts, prepare_run
from bluerocktel.db.models import Account, Brand, Product, Service
from bluerocktel.workbench import Workbench

UTC = dt.timezone.utc
MICRO = Decimal(1_000_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    wb = Workbench.open(tmp_path_factory.mktemp("conservation"))
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        product = Product(code="L", name="Ligne", kind="recurring", price=Decimal("10.00"), billing_timing="arrears")
        served = Account(number="C1", brand_id=brand.id, name="Served")
        served2 = Account(number="C2", brand_id=brand.id, name="Served too")
        idle = Account(number="C3", brand_id=brand.id, name="No service")
        s.add_all([product, served, served2, idle])
        s.flush()
        s.add_all([Service(account_id=a.id, product_id=product.id, label="l", activated_on=dt.date(2026, 1, 1))
                   for a in (served, served2)])
        ids = [served.id, served2.id, idle.id, 9999]          # 9999: no such account
    yield wb, ids
    wb.close()


calls = st.lists(st.tuples(
    st.integers(0, 3),                                  # which account
    st.sampled_from(["rated", "rated", "rated", "unrated", "unassigned", "free"]),
    st.integers(0, 5_000_000),                          # price_micro
    st.sampled_from(["France fixe", "Mobiles", "Maroc"]),
    st.sampled_from(["voice", "sms"]),
    st.booleans(),                                      # rated again later with another price
    st.integers(0, 5_000_000)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls)
def test_rated_usage_is_invoiced_or_carried_over(world, rows):
    wb, ids = world
    shutil.rmtree(wb.lake_dir / "rated", ignore_errors=True)
    records, expected = [], 0
    for n, (who, status, price, zone, call_type, rerated, new_price) in enumerate(rows):
        start = dt.datetime(2026, 3, 1 + n % 28, 9, n % 60, tzinfo=UTC)
        base = {"cdr_id": f"c{n}", "start_at": start, "answer_at": start, "end_at": start + dt.timedelta(seconds=60),
                "duration_s": 60, "billsec_s": 60, "direction": "out", "call_type": call_type, "zone": zone,
                "billable_s": 60, "account_id": None if status == "unassigned" else ids[who],
                "rating_status": status, "price_micro": None if status in ("unrated", "unassigned") else
                (0 if status == "free" else price), "rated_at": dt.datetime(2026, 4, 1, tzinfo=UTC)}
        records.append(base)
        latest = base
        if rerated:
            latest = {**base, "rating_status": "rated", "price_micro": new_price,
                      "account_id": ids[who], "rated_at": dt.datetime(2026, 4, 2, tzinfo=UTC)}
            records.append(latest)
        if latest["rating_status"] == "rated":
            expected += latest["price_micro"]
    lake.write_partition(wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(records, schema=lake.RATED_SCHEMA))
    ctx = prepare_run(wb.data_dir, "2026-03", True, issue_date="2026-04-01")
    try:
        drafts = build_drafts(ctx)
    finally:
        ctx.wb.close()
    invoiced = sum(line.amount_precise * MICRO for d in drafts for line in d.lines if line.kind == "usage")
    carried = sum(c["price_micro"] for c in ctx.carried_over)
    assert invoiced + carried == expected
    assert {c["reason"] for c in ctx.carried_over} <= {"usage_without_service", "unknown_account"}
