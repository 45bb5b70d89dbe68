"""rate_pending in sub-month batches: the same ratings, bundles and counts as one batch per month.

One service (+33123456789) owns two bundles on French mobiles, consumed in call order: A (750 s)
first, then B (1000 s). Mobile calls m01..m20 last 100 s each (0.06/min, 1/1: 100,000 micro).

    run 1 (m01..m10)     batches of 7: [m01..m07] [m08..m10]
        m01..m07  A 700 s                       m08  A 50 + B 50 (the call split at the boundary)
        m09, m10  B 200 s  -> B has 750 left
    run 2 (m11..m20, a re-sent m12, 4 others; October invoiced)   [m11..m17] [m18..m20, others]
        m11..m17  B 700 s  -> 50 left           m18  B 50, 50 s charged: 100,000 x 50/100 = 50,000
        m19, m20  nothing left: 100,000 each    fixed call 60 s at 0.02/min = 20,000; free; unassigned; unrated
    run 3 (a rate for +1 is added)   the unrated and unassigned calls are taken again, one leaves the queue

Every run is also made with one batch (batch_size 1000) on a second lake of the same system of
record, and the two lakes must hold the same ratings.
"""

import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest
import sqlalchemy as sa
from rating_builders import at, cdr, cdr_table

from bluerocktel.db.models import (
    Account,
    AuditEntry,
    Brand,
    Bundle,
    Invoice,
    Product,
    Rate,
    RateDeck,
    Service,
    ServiceBundle,
    ServiceIdentifier,
)
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import dataset_dir, partition_files, read_table, write_partition
from bluerocktel.rating import rate_pending
from bluerocktel.workbench import Workbench

MONTH = "2026-10"
BATCH = 7
CALL_MICRO = 100_000      # 100 s at 0.06 per minute


def mobile(n: int, *, line: int | None = None) -> dict:
    """Mobile call m<n>: 100 s on October n at 10:00; m07 and m08 start at the same second."""
    start = f"2026-10-{min(n, 7) if n == 8 else n:02d} 10:00"
    return cdr(f"+336{n:08d}", start=start, billsec_s=100, line=line or n)


RUN_1 = cdr_table(*(mobile(n) for n in range(1, 11)))
RUN_2 = cdr_table(
    *(mobile(n) for n in range(11, 21)),
    cdr("+33145678901", start="2026-10-25 10:00", billsec_s=60),                         # fixed: 20,000
    cdr("+33612345678", start="2026-10-26 10:00", billsec_s=0),                          # unanswered: free
    cdr("+33145678901", start="2026-10-27 10:00", caller="+33999999999"),                # nobody's: unassigned
    cdr("+12125550100", start="2026-10-28 10:00"),                                       # no rate: unrated
)
RESENT = cdr_table(mobile(12))          # m12 again in another file: the same call


def seed(wb) -> dict:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        account = Account(number="C0001", brand=brand, name="ACME")
        product = Product(code="VOIP", name="SIP trunk", kind="usage")
        deck = RateDeck(code="FR-SELL", name="France sell", kind="sell")
        first, second = (Bundle(code=code, name=code, call_type="voice", zones=["fr-mobile"], allowance=allowance)
                         for code, allowance in (("A750", 750), ("B1000", 1000)))
        s.add_all([brand, account, product, deck, first, second])
        s.flush()
        s.add_all([
            Rate(deck_id=deck.id, prefix="33", destination="France", zone="fr-fixed", price=Decimal("0.02"),
                 first_increment=60, next_increment=60, valid_from=at("2026-01-01")),
            Rate(deck_id=deck.id, prefix="336", destination="France mobile", zone="fr-mobile", price=Decimal("0.06"),
                 first_increment=1, next_increment=1, valid_from=at("2026-01-01")),
        ])
        service = Service(account_id=account.id, product_id=product.id, rate_deck_id=deck.id, label="trunk")
        s.add(service)
        s.flush()
        s.add(ServiceIdentifier(service_id=service.id, kind="number", value="+33123456789",
                                valid_from=at("2026-01-01")))
        a = ServiceBundle(service_id=service.id, bundle_id=first.id, valid_from=at("2026-01-01"))
        s.add(a)
        s.flush()
        b = ServiceBundle(service_id=service.id, bundle_id=second.id, valid_from=at("2026-01-01"))
        s.add(b)
        s.flush()
        return {"A": a.id, "B": b.id, "deck": deck.id, "account": account.id, "brand": brand.id}


def ratings(wb) -> dict[str, list[dict]]:
    """The lake's ratings of each cdr_id, oldest first (without rated_at)."""
    rows = read_table(wb.lake_dir, "rated", order_by="rated_at").to_pylist()
    by_cdr: dict[str, list[dict]] = {}
    for row in rows:
        by_cdr.setdefault(row.pop("cdr_id"), []).append(row | {"rated_at": None})
    return by_cdr


def rated_once(wb) -> dict[str, dict]:
    """The only rating of each cdr_id (a CDR rated twice is an error)."""
    got = ratings(wb)
    assert all(len(rows) == 1 for rows in got.values()), "a CDR was rated twice"
    return {cdr_id: rows[0] for cdr_id, rows in got.items()}


def by_callee(wb) -> dict[str, tuple]:
    """Per mobile call: (bundle_id, bundle_units, bundle_split, price_micro, bundle flag)."""
    return {r["callee"]: (r["bundle_id"], r["bundle_units"], r["bundle_split"], r["price_micro"],
                          "bundle" in r["flags"].split(","))
            for r in rated_once(wb).values() if r["callee"].startswith("+336000")}


def summary_of(summary) -> dict:
    """A RatingSummary as a dict, without the adjustment ids (both lakes share one database)."""
    return summary.as_dict() | {"adjustments": [a | {"adjustment_id": None} for a in summary.adjustments]}


@pytest.fixture
def lakes(wb, tmp_path):
    """(the workbench rated in batches of 7, one of the same database rated in one batch); their
    CDRs of run 1 written; the seeded ids."""
    ids = seed(wb)
    one_batch = Workbench(tmp_path / "one-batch", wb.db)
    for lake in (wb, one_batch):
        write_partition(lake.lake_dir, "cdrs", MONTH, RUN_1)
    return wb, one_batch, ids


def rate_both(batched, one_batch, **kwargs) -> dict:
    """Rate both lakes; their summaries must be equal; the batched one's, as a dict."""
    got = summary_of(rate_pending(batched, batch_size=BATCH, **kwargs))
    assert got == summary_of(rate_pending(one_batch, batch_size=1000, **kwargs))
    assert ratings(batched) == ratings(one_batch)
    return got


def write_run_2(*workbenches) -> None:
    for lake in workbenches:
        write_partition(lake.lake_dir, "cdrs", MONTH, RUN_2)
        write_partition(lake.lake_dir, "cdrs", MONTH, RESENT)


def invoice_october(wb, ids) -> None:
    with wb.db.transaction() as s:
        s.add(Invoice(number="F-2026-10", account_id=ids["account"], brand_id=ids["brand"],
                      period_start=at("2026-10-01").date(), period_end=at("2026-11-01").date(),
                      issue_date=at("2026-11-01").date(), due_date=at("2026-12-01").date(),
                      subtotal_minor=0, vat_minor=0, total_minor=0))


def test_batches_rate_exactly_as_one_batch_bundles_included(lakes):
    batched, one_batch, ids = lakes
    a, b = ids["A"], ids["B"]

    first = rate_both(batched, one_batch)
    assert (first["considered"], first["rated"], first["total_price_micro"]) == (10, 10, 0)
    assert len(partition_files(batched.lake_dir, "rated")) == 2          # 10 CDRs in batches of 7
    # m07 and m08 start together: the one with the smaller cdr_id comes first and ends batch 1
    calls = sorted(RUN_1.to_pylist(), key=lambda c: (c["start_at"], c["cdr_id"]))
    seventh, eighth = calls[6]["callee"], calls[7]["callee"]
    got = by_callee(batched)
    assert got[seventh] == (a, 100, None, 0, True)
    assert got[eighth] == (a, 100, f"{a}:50,{b}:50", 0, True)             # 750 - 6 x 100 - 100 = 50 left in A
    assert [got[f"+336{n:08d}"] for n in (9, 10)] == [(b, 100, None, 0, True)] * 2

    invoice_october(batched, ids)
    write_run_2(batched, one_batch)
    second = rate_both(batched, one_batch)
    late = 2 * CALL_MICRO + CALL_MICRO * 50 // 100 + 20_000              # m19, m20, half of m18, the fixed call
    assert {k: second[k] for k in ("considered", "rated", "free", "unassigned", "unrated", "total_price_micro")} == {
        "considered": 14, "rated": 11, "free": 1, "unassigned": 1, "unrated": 1, "total_price_micro": late}
    # October was invoiced: one adjustment for the account and month, not one per batch
    assert second["adjustments"] == [{"account_number": "C0001", "month": MONTH, "calls": 4, "delta_micro": late,
                                      "adjustment_id": None}]
    assert len(partition_files(batched.lake_dir, "rated")) == 2 + 2     # 14 CDRs in batches of 7
    got = by_callee(batched)
    assert [got[f"+336{n:08d}"] for n in range(11, 18)] == [(b, 100, None, 0, True)] * 7   # B: 950 used
    assert got["+33600000018"] == (b, 50, None, CALL_MICRO // 2, True)                     # B exhausted
    assert [got[f"+336{n:08d}"] for n in (19, 20)] == [(a, 0, None, CALL_MICRO, False)] * 2

    with batched.db.transaction() as s:    # a rate for +1: the queue is rated again, in batches too
        s.add(Rate(deck_id=ids["deck"], prefix="1", destination="NANP", zone="world", price=Decimal("0.06"),
                   first_increment=60, next_increment=60, valid_from=at("2026-01-01")))
    third = rate_both(batched, one_batch, months=[MONTH])
    assert (third["considered"], third["reprocessed"], third["left_queue"], third["total_price_micro"]) == (
        2, 2, 1, 60_000)

    with batched.db.session() as s:
        audits = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "rating.run")
                           .order_by(AuditEntry.id)).all()
    batched_files = [len(e.details["files"]) for e in audits][::2]      # runs alternate: batched, one batch
    assert batched_files == [2, 2, 1]


def no_temporary_files(wb) -> bool:
    return not [p for p in dataset_dir(wb.lake_dir, "rated").rglob("*") if p.is_file() and p.suffix != ".parquet"]


def test_a_failed_batch_takes_back_the_run_and_the_next_run_completes(lakes):
    batched, one_batch, _ = lakes
    rate_both(batched, one_batch)
    write_run_2(batched, one_batch)
    before = set(partition_files(batched.lake_dir, "rated"))

    def fail_after_the_first_batch(month: str, cdrs: int) -> None:
        assert (month, cdrs) == (MONTH, BATCH)
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        rate_pending(batched, batch_size=BATCH, progress=fail_after_the_first_batch)
    assert set(partition_files(batched.lake_dir, "rated")) == before and no_temporary_files(batched)
    with batched.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "rating.run")) == 2      # run 1 of both lakes

    assert rate_both(batched, one_batch)["considered"] == 14
    assert len(rated_once(batched)) == 10 + 14


KILL_AFTER_FIRST_BATCH = """
import os, signal, sys
from bluerocktel.rating import rate_pending
from bluerocktel.workbench import Workbench

rate_pending(Workbench.open(sys.argv[1]), batch_size=int(sys.argv[2]),
             progress=lambda month, cdrs: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_a_run_killed_mid_month_keeps_whole_batches_and_the_next_run_rates_the_rest(lakes):
    batched, one_batch, _ = lakes
    rate_both(batched, one_batch)
    write_run_2(batched, one_batch)

    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_BATCH, str(batched.data_dir), str(BATCH)],
                            env=os.environ, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(partition_files(batched.lake_dir, "rated")) == 2 + 1 and no_temporary_files(batched)
    assert len(rated_once(batched)) == 10 + BATCH     # run 1 and the first batch of run 2, each CDR once

    resumed = rate_pending(batched, batch_size=BATCH)
    whole = rate_pending(one_batch, batch_size=1000)
    assert (resumed.considered, whole.considered) == (14 - BATCH, 14)
    assert rated_once(batched) == rated_once(one_batch)   # no CDR lost or rated twice, bundles as in one batch


def test_the_batch_size_must_be_a_positive_integer(wb, monkeypatch):
    with pytest.raises(UserFacingError, match="batch size must be an integer >= 1"):
        rate_pending(wb, batch_size=0)
    monkeypatch.setenv("BLUEROCKTEL_RATING_BATCH_SIZE", "1e6")
    with pytest.raises(UserFacingError, match="got '1e6'"):
        rate_pending(wb)
