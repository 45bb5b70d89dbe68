"""rate_pending on a real workbench: system of record + lake, idempotent, audited."""

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa
from rating_builders import at, cdr, cdr_table

from bluerocktel.cli import main
from bluerocktel.db.models import (
    Account,
    AuditEntry,
    Brand,
    Product,
    Rate,
    RateDeck,
    Service,
    ServiceIdentifier,
)
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import connect_duckdb, partition_files, scan_sql, write_partition
from bluerocktel.rating import rate_pending
from bluerocktel.rating.unrated import unrated_counts, unrated_queue


def seed(wb) -> dict:
    """One account with one service identified by +33123456789, rated with deck FR-SELL."""
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        account = Account(number="C0001", brand=brand, name="ACME")
        product = Product(code="VOIP", name="SIP trunk", kind="usage")
        deck = RateDeck(code="FR-SELL", name="France sell", kind="sell")
        unused = RateDeck(code="UNUSED", name="no service uses it", kind="sell")
        s.add_all([brand, account, product, deck, unused])
        s.flush()
        s.add_all([
            Rate(deck_id=deck.id, prefix="33", destination="France", zone="fr-fixed",
                 price=Decimal("0.0200"), first_increment=60, next_increment=60,
                 valid_from=at("2026-01-01")),
            Rate(deck_id=deck.id, prefix="336", destination="France mobile", zone="fr-mobile",
                 price=Decimal("0.1000"), connection_fee=Decimal("0.0150"),
                 first_increment=30, next_increment=6, valid_from=at("2026-01-01")),
            # six decimals, priced per minute: 7 s cost 7 x 12346 / 60 micro
            Rate(deck_id=deck.id, prefix="44", destination="United Kingdom", zone="europe",
                 price=Decimal("0.012346"), first_increment=1, next_increment=1,
                 valid_from=at("2026-01-01")),
            Rate(deck_id=unused.id, prefix="1", destination="NANP", zone="world",
                 price=Decimal("9"), valid_from=at("2026-01-01")),
        ])
        service = Service(account_id=account.id, product_id=product.id, rate_deck_id=deck.id, label="trunk 1")
        s.add(service)
        s.flush()
        s.add(ServiceIdentifier(service_id=service.id, kind="number", value="+33123456789",
                                valid_from=at("2026-01-01")))
        return {"account_id": account.id, "service_id": service.id, "deck_id": deck.id}


SEPTEMBER = cdr_table(
    cdr("+33145678901", start="2026-09-30 23:59:59", billsec_s=60),   # 33, 60/60: 20000
)
OCTOBER = cdr_table(
    cdr("+33612345678", start="2026-10-01 09:00", billsec_s=31),      # 336, 30/6 -> 36 s: 60000 + 15000
    cdr("+33612345678", start="2026-10-01 09:05", billsec_s=0),       # unanswered: free
    cdr("+33145678901", start="2026-10-02 10:00", caller="+33999999999"),  # nobody's number: unassigned
    cdr("+12125550100", start="2026-10-03 11:00"),                    # no rate in the deck: unrated
    cdr("+447911123456", start="2026-10-04 12:00", billsec_s=7),      # 44, 1/1: 7 x 12346 / 60 = 1440.37 -> 1440
)


def rated_by_callee_and_start(wb) -> dict:
    con = connect_duckdb()
    rows = con.sql(f"SELECT * FROM {scan_sql(wb.lake_dir, 'rated')}").to_arrow_table().to_pylist()
    return {(r["callee"], r["start_at"].isoformat()[:16]): r for r in rows}


def test_rate_pending_rates_each_cdr_once_and_audits(wb):
    ids = seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-09", SEPTEMBER)
    write_partition(wb.lake_dir, "cdrs", "2026-10", OCTOBER)

    summary = rate_pending(wb, actor="tester")

    assert summary.as_dict() == {
        "months": ["2026-09", "2026-10"], "considered": 6, "reprocessed": 0, "left_queue": 0, "rated": 3,
        "unrated": 1, "unassigned": 1, "free": 1, "total_price_micro": 20_000 + 75_000 + 1_440, "adjustments": [],
    }
    assert "rated 6 CDRs in 2026-09, 2026-10" in summary.describe()
    assert len(partition_files(wb.lake_dir, "rated", ["2026-09"])) == 1
    assert len(partition_files(wb.lake_dir, "rated", ["2026-10"])) == 1

    rated = rated_by_callee_and_start(wb)
    assert len(rated) == 6
    got = {key: (r["rating_status"], r["prefix"], r["billable_s"], r["price_micro"]) for key, r in rated.items()}
    assert got == {
        ("+33145678901", "2026-09-30T23:59"): ("rated", "33", 60, 20_000),
        ("+33612345678", "2026-10-01T09:00"): ("rated", "336", 36, 75_000),
        ("+33612345678", "2026-10-01T09:05"): ("free", None, 0, 0),
        ("+33145678901", "2026-10-02T10:00"): ("unassigned", None, None, None),
        ("+12125550100", "2026-10-03T11:00"): ("unrated", None, None, None),
        ("+447911123456", "2026-10-04T12:00"): ("rated", "44", 7, 1_440),
    }
    mobile = rated[("+33612345678", "2026-10-01T09:00")]
    assert (mobile["account_id"], mobile["service_id"], mobile["rate_deck_id"]) == (
        ids["account_id"], ids["service_id"], ids["deck_id"])
    assert (mobile["destination"], mobile["zone"]) == ("France mobile", "fr-mobile")

    # idempotent: nothing left to rate, no new file, no new audit entry
    again = rate_pending(wb, actor="tester")
    assert (again.considered, again.months, again.total_price_micro) == (0, [], 0)
    assert again.describe().startswith("nothing to rate")
    assert len(partition_files(wb.lake_dir, "rated")) == 2

    with wb.db.session() as s:
        entries = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "rating.run")).all()
    assert len(entries) == 1
    assert (entries[0].actor, entries[0].target_type, entries[0].target_id) == ("tester", "lake", "rated")
    assert entries[0].details["considered"] == 6
    assert entries[0].details["total_price_micro"] == 96_440
    assert len(entries[0].details["files"]) == 2


def test_new_cdrs_of_one_month_are_rated_alone(wb):
    seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-09", SEPTEMBER)
    write_partition(wb.lake_dir, "cdrs", "2026-10", OCTOBER)

    assert rate_pending(wb, months=["2026-10"]).considered == 5
    assert partition_files(wb.lake_dir, "rated", ["2026-09"]) == []

    late = cdr_table(cdr("+33145678901", start="2026-10-31 23:00", billsec_s=121))   # 180 s at 0.02: 60000
    write_partition(wb.lake_dir, "cdrs", "2026-10", late)
    summary = rate_pending(wb)
    assert (summary.months, summary.considered, summary.rated, summary.total_price_micro) == (
        ["2026-09", "2026-10"], 2, 2, 20_000 + 60_000)
    assert len(rated_by_callee_and_start(wb)) == 7


def test_a_cdr_written_twice_is_rated_once(wb):
    seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-09", SEPTEMBER)
    write_partition(wb.lake_dir, "cdrs", "2026-09", SEPTEMBER)
    assert rate_pending(wb).considered == 1


def test_the_rate_command(wb, capsys):
    seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-10", OCTOBER)
    assert main(["rate", "--data-dir", str(wb.data_dir), "--period", "2026-10", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["considered"], payload["rated"], payload["total_price_micro"]) == (5, 2, 76_440)
    assert main(["rate", "--data-dir", str(wb.data_dir)]) == 0
    assert capsys.readouterr().out.startswith("nothing to rate")
    assert main(["rate", "--data-dir", str(wb.data_dir), "--period", "2026-13"]) == 2


def test_an_empty_lake_rates_nothing(wb):
    assert rate_pending(wb).as_dict()["considered"] == 0
    with pytest.raises(UserFacingError, match="not a month"):
        rate_pending(wb, months=["October"])


def latest_by_callee_and_start(wb) -> dict:
    """The latest rating of each CDR (what billing reads), and how many ratings it has."""
    con = connect_duckdb()
    rows = con.sql(f"SELECT * FROM {scan_sql(wb.lake_dir, 'rated')} ORDER BY rated_at").to_arrow_table().to_pylist()
    latest: dict = {}
    for r in rows:
        key = (r["callee"], r["start_at"].isoformat()[:16])
        latest[key] = (r, latest.get(key, (None, 0))[1] + 1)
    return latest


def test_the_unrated_queue_is_rated_again_once_the_tariffs_change(wb):
    ids = seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-10", OCTOBER)
    first = rate_pending(wb)
    assert (first.unrated, first.unassigned, first.reprocessed) == (1, 1, 0)

    assert [(r["callee"], r["status"]) for r in unrated_queue(wb.lake_dir)] == [
        ("+33145678901", "unassigned"), ("+12125550100", "unrated")]

    # same tariffs: the queue is not rated over and over
    assert rate_pending(wb).considered == 0

    # the deck gets a rate for +1: both queued CDRs are taken again (the tariff version changed),
    # the unrated one leaves the queue: 60 s at 0.06/min = 0.06
    with wb.db.transaction() as s:
        s.add(Rate(deck_id=ids["deck_id"], prefix="1", destination="NANP", zone="world", price=Decimal("0.06"),
                   first_increment=60, next_increment=60, valid_from=at("2026-01-01")))
    fixed = rate_pending(wb, actor="tester")
    assert (fixed.considered, fixed.reprocessed, fixed.left_queue, fixed.rated, fixed.unassigned) == (2, 2, 1, 1, 1)
    assert fixed.total_price_micro == 60_000
    assert "2 taken again from the unrated queue, 1 of them left it" in fixed.describe()
    assert rate_pending(wb).considered == 0

    # the unknown caller gets an identifier: the unassigned CDR is priced (60 s to 33 at 0.02)
    with wb.db.transaction() as s:
        s.add(ServiceIdentifier(service_id=ids["service_id"], kind="number", value="+33999999999",
                                valid_from=at("2026-01-01")))
    assigned = rate_pending(wb)
    assert (assigned.considered, assigned.reprocessed, assigned.left_queue, assigned.total_price_micro) == (
        1, 1, 1, 20_000)

    assert unrated_queue(wb.lake_dir) == [] and unrated_counts(wb.lake_dir) == []
    latest = latest_by_callee_and_start(wb)
    got = {key: (r["rating_status"], r["price_micro"], n) for key, (r, n) in latest.items()}
    assert got == {   # rated and free CDRs were never rated again; the queued ones once per fix
        ("+33612345678", "2026-10-01T09:00"): ("rated", 75_000, 1),
        ("+33612345678", "2026-10-01T09:05"): ("free", 0, 1),
        ("+33145678901", "2026-10-02T10:00"): ("rated", 20_000, 3),
        ("+12125550100", "2026-10-03T11:00"): ("rated", 60_000, 2),
        ("+447911123456", "2026-10-04T12:00"): ("rated", 1_440, 1),
    }
    with wb.db.session() as s:
        runs = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "rating.run").order_by(AuditEntry.id)).all()
    assert [(e.details["reprocessed"], e.details["left_queue"]) for e in runs] == [(0, 0), (2, 1), (1, 1)]


def test_a_month_with_nothing_new_is_not_selected_again(wb, monkeypatch):
    """Once a run leaves a month with nothing pending, the next runs skip its selection query until
    one of its files or the tariffs change; then they select it again and rate what is new."""
    import bluerocktel.rating.pending as pending

    seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-10", OCTOBER)
    assert rate_pending(wb).considered == 5
    selected = []
    real = pending.pending_batches
    monkeypatch.setattr(pending, "pending_batches", lambda con, lake, month, *a: selected.append(month) or
                        real(con, lake, month, *a))
    assert rate_pending(wb).considered == 0 and selected == []
    late = cdr_table(cdr("+33145678901", start="2026-10-20 10:00", billsec_s=60))
    write_partition(wb.lake_dir, "cdrs", "2026-10", late)
    summary = rate_pending(wb)
    assert selected == ["2026-10"] and summary.considered == 1 and summary.rated == 1
    assert rate_pending(wb).considered == 0 and selected == ["2026-10"]


def test_cdrs_imported_while_a_month_is_rated_are_rated_by_the_next_run(wb, monkeypatch):
    import bluerocktel.rating.pending as pending

    seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-10", OCTOBER)
    real = pending.pending_batches
    late = cdr_table(cdr("+33145678901", start="2026-10-20 10:00", billsec_s=60))

    def import_meanwhile(con, lake, month, *args):
        batches = real(con, lake, month, *args)
        first = next(batches)               # the selection has read the month's files
        write_partition(wb.lake_dir, "cdrs", "2026-10", late)
        yield first
        yield from batches

    monkeypatch.setattr(pending, "pending_batches", import_meanwhile)
    assert rate_pending(wb).considered == 5
    monkeypatch.setattr(pending, "pending_batches", real)
    assert rate_pending(wb).considered == 1
    assert rate_pending(wb).considered == 0
