"""``rating rerate``: re-rate a period with the current tariffs, report per account, settle
invoiced months with adjustments (never an edit of an issued invoice).

World (deck FR-SELL, per minute): 33 → 0.02 (60/60), 336 → 0.10 + 0.015 fee (30/6).
C0001 (brand BRT) calls from +33123456789, C0002 (brand OTH) from +33987654321.

    March  m1 C0001 → +33145678901  60 s  33: 60 s × 0.02/60                 = 0.020000
           m2 C0001 → +33612345678  31 s  336: 30+6 = 36 s × 0.10/60 + 0.015 = 0.075000
           m3 C0002 → +33145678901 121 s  33: 180 s × 0.02/60                = 0.060000
           m4 C0002 → +12125550100  60 s  no rate: unrated
           m5 +33999999999 (nobody) →      unassigned
    April  a1 C0001 → +33145678901  60 s                                     = 0.020000

March is invoiced for brand BRT only (C0001). The deck fix: 33 costs 0.03 (not 0.02) and
prefix 1 is added at 0.06 (60/60): m1 0.03, m3 180 s × 0.03/60 = 0.09, m4 0.06, a1 0.03.
"""

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rating_builders import at, cdr, cdr_table

from bluerocktel.billing.cycle import build_drafts, issue_invoices, prepare_run
from bluerocktel.billing.periods import parse_period
from bluerocktel.billing.usage import read_period_usage
from bluerocktel.cli import main
from bluerocktel.db.models import (Account, AuditEntry, Brand, Invoice, Product, Rate, RateDeck, RatingAdjustment,
                                   Service, ServiceIdentifier)
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.lake import partition_files, read_table, write_partition
from bluerocktel.rating import rate_pending
from bluerocktel.rating.pending import rating_lock
from bluerocktel.rating.rerate import parse_period_range, rerate

C1, C2, NOBODY = "+33123456789", "+33987654321", "+33999999999"
FIXED, MOBILE, NANP = "+33145678901", "+33612345678", "+12125550100"

MARCH = cdr_table(
    cdr(FIXED, caller=C1, start="2026-03-05 10:00", billsec_s=60),     # m1
    cdr(MOBILE, caller=C1, start="2026-03-05 11:00", billsec_s=31),    # m2
    cdr(FIXED, caller=C2, start="2026-03-06 10:00", billsec_s=121),    # m3
    cdr(NANP, caller=C2, start="2026-03-07 10:00", billsec_s=60),      # m4
    cdr(FIXED, caller=NOBODY, start="2026-03-08 10:00", billsec_s=60),  # m5
)
APRIL = cdr_table(cdr(FIXED, caller=C1, start="2026-04-02 10:00", billsec_s=60))   # a1


def seed(wb) -> dict:
    with wb.db.transaction() as s:
        brt = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS", invoice_prefix="FA")
        oth = Brand(code="OTH", name="Other", legal_name="Other SAS", invoice_prefix="OT")
        product = Product(code="VOIP", name="SIP trunk", kind="usage")
        deck = RateDeck(code="FR-SELL", name="France sell", kind="sell")
        s.add_all([brt, oth, product, deck])
        s.flush()
        acme = Account(number="C0001", brand_id=brt.id, name="ACME")
        globex = Account(number="C0002", brand_id=oth.id, name="Globex")
        s.add_all([acme, globex])
        s.flush()
        s.add_all([
            Rate(deck_id=deck.id, prefix="33", destination="France", zone="fr-fixed", price=Decimal("0.02"),
                 first_increment=60, next_increment=60, valid_from=at("2026-01-01")),
            Rate(deck_id=deck.id, prefix="336", destination="France mobile", zone="fr-mobile",
                 price=Decimal("0.10"), connection_fee=Decimal("0.015"), first_increment=30, next_increment=6,
                 valid_from=at("2026-01-01")),
        ])
        services = [Service(account_id=acme.id, product_id=product.id, rate_deck_id=deck.id, label="trunk 1"),
                    Service(account_id=globex.id, product_id=product.id, rate_deck_id=deck.id, label="trunk 2")]
        s.add_all(services)
        s.flush()
        s.add_all([ServiceIdentifier(service_id=services[0].id, kind="number", value=C1, valid_from=at("2026-01-01")),
                   ServiceIdentifier(service_id=services[1].id, kind="number", value=C2, valid_from=at("2026-01-01"))])
        return {"C0001": acme.id, "C0002": globex.id, "deck": deck.id, "s1": services[0].id}


def fix_deck(wb, deck_id: int) -> None:
    """The correction: 33 at 0.03 instead of 0.02, and a rate for prefix 1 (NANP) at 0.06."""
    with wb.db.transaction() as s:
        s.execute(sa.update(Rate).where(Rate.deck_id == deck_id, Rate.prefix == "33").values(price=Decimal("0.03")))
        s.add(Rate(deck_id=deck_id, prefix="1", destination="NANP", zone="world", price=Decimal("0.06"),
                   first_increment=60, next_increment=60, valid_from=at("2026-01-01")))


def invoice_march(wb, brand_code: str = "BRT") -> list[str]:
    ctx = prepare_run(wb.data_dir, "2026-03", False, brand_code=brand_code, issue_date="2026-04-01")
    try:
        return issue_invoices(ctx, build_drafts(ctx))
    finally:
        ctx.wb.close()


def world(wb) -> dict:
    """Seeded, rated, March invoiced for C0001 (0.02 + 0.075 = 0.095 → 0.10 + VAT)."""
    ids = seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-03", MARCH)
    write_partition(wb.lake_dir, "cdrs", "2026-04", APRIL)
    assert rate_pending(wb).considered == 6
    assert invoice_march(wb) == ["FA-2026-000001"]
    return ids


def by_account(summary) -> dict:
    return {a["account_number"]: (a["calls"], a["calls_changed"], a["old_total_micro"], a["new_total_micro"],
                                  a["delta_micro"]) for a in summary.as_dict()["accounts"]}


def adjustments(wb) -> list[tuple]:
    with wb.db.session() as s:
        return [(a.account_id, a.usage_month, a.delta_micro, a.calls, a.invoice_id)
                for a in s.scalars(sa.select(RatingAdjustment).order_by(RatingAdjustment.id))]


def test_a_deck_fix_is_reported_per_account_and_settled_only_for_invoiced_months(wb):
    ids = world(wb)
    with wb.db.session() as s:
        issued = s.scalars(sa.select(Invoice)).one()
        issued_before = (issued.subtotal_minor, issued.total_minor, issued.updated_at)
    fix_deck(wb, ids["deck"])
    files_before = partition_files(wb.lake_dir, "rated")

    dry = rerate(wb, ["2026-03", "2026-04"], dry_run=True, actor="tester")
    # March  C0001: m1 0.02 -> 0.03, m2 unchanged: 0.095 -> 0.105 (+0.01), invoiced
    #        C0002: m3 0.06 -> 0.09, m4 unrated (0) -> 0.06: 0.06 -> 0.15 (+0.09), not invoiced (brand OTH)
    # April  C0001: a1 0.02 -> 0.03 (+0.01), not invoiced
    assert by_account(dry) == {"C0001": (3, 2, 115_000, 135_000, 20_000), "C0002": (2, 2, 60_000, 150_000, 90_000)}
    assert (dry.cdrs, dry.changed, dry.rated_months) == (6, 4, ["2026-03", "2026-04"])
    months = {(r["account_number"], r["month"]): (r["delta_micro"], r["invoiced"]) for r in dry.as_dict()["by_month"]}
    assert months == {("C0001", "2026-03"): (10_000, True), ("C0002", "2026-03"): (90_000, False),
                      ("C0001", "2026-04"): (10_000, False)}
    assert [(a["account_number"], a["month"], a["calls"], a["delta_micro"], a["delta"], a["adjustment_id"])
            for a in dry.as_dict()["adjustments"]] == [("C0001", "2026-03", 1, 10_000, "0.010000", None)]
    assert dry.as_dict()["delta"] == "0.110000"
    assert "1 adjustment(s) would be recorded" in dry.describe()
    # a dry run writes nothing: no rating, no adjustment, no audit
    assert partition_files(wb.lake_dir, "rated") == files_before
    assert adjustments(wb) == []

    done = rerate(wb, ["2026-03", "2026-04"], actor="tester")
    assert by_account(done) == by_account(dry)
    assert len(done.files) == 2 and len(partition_files(wb.lake_dir, "rated")) == 4
    assert [a[:4] for a in adjustments(wb)] == [(ids["C0001"], "2026-03", 10_000, 1)]
    assert adjustments(wb)[0][4] is None                        # billed by the next cycle
    # billing reads the latest rating: April (not invoiced) will be billed at the new price
    april = read_period_usage(wb.lake_dir, parse_period("2026-04"))
    assert [(u.account_id, u.calls, u.price_micro) for u in april.rated] == [(ids["C0001"], 1, 30_000)]
    march = read_period_usage(wb.lake_dir, parse_period("2026-03"))
    assert sorted((u.account_id, u.zone, u.price_micro) for u in march.rated) == sorted([
        (ids["C0001"], "fr-fixed", 30_000), (ids["C0001"], "fr-mobile", 75_000),
        (ids["C0002"], "fr-fixed", 90_000), (ids["C0002"], "world", 60_000)])
    # the issued invoice is untouched
    with wb.db.session() as s:
        issued = s.scalars(sa.select(Invoice)).one()
        assert (issued.subtotal_minor, issued.total_minor, issued.updated_at) == issued_before
        audit = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "rating.rerate")).one()
    assert (audit.actor, audit.details["cdrs"], audit.details["delta_micro"]) == ("tester", 6, 110_000)
    assert [a["adjustment_id"] for a in audit.details["adjustments"]] == [adjustments(wb)[0][0]]

    # the property: a second re-rating with unchanged tariffs changes nothing and settles nothing
    again = rerate(wb, ["2026-03", "2026-04"], actor="tester")
    assert again.changed == 0 and again.as_dict()["delta_micro"] == 0
    assert {k: v[4] for k, v in by_account(again).items()} == {"C0001": 0, "C0002": 0}
    assert len(adjustments(wb)) == 1


def test_the_next_cycle_bills_the_adjustment_and_marks_it(wb):
    ids = world(wb)
    fix_deck(wb, ids["deck"])
    rerate(wb, ["2026-03", "2026-04"])
    ctx = prepare_run(wb.data_dir, "2026-04", False, brand_code="BRT", issue_date="2026-05-01")
    try:
        drafts = build_drafts(ctx)
        assert issue_invoices(ctx, drafts) == ["FA-2026-000002"]
    finally:
        ctx.wb.close()
    with wb.db.session() as s:
        invoice = s.scalars(sa.select(Invoice).where(Invoice.number == "FA-2026-000002")).one()
        lines = [(l.kind, l.description, l.quantity, l.amount_precise, l.amount_minor) for l in invoice.lines]
        adjustment = s.scalars(sa.select(RatingAdjustment)).one()
        # April usage a1 at the new price 0.03 → 3 cents; March adjustment +0.01 → 1 cent;
        # subtotal 4, VAT 20 % = 0.8 → 1, total 5
        assert lines == [
            ("usage", "Communications fr-fixed : 1 appel, 1 min 00 s", Decimal(1), Decimal("0.030000"), 3),
            ("adjustment", "Régularisation des appels de 2026-03 (1 appel)", Decimal(1), Decimal("0.010000"), 1)]
        assert (invoice.subtotal_minor, invoice.vat_minor, invoice.total_minor) == (4, 1, 5)
        assert adjustment.invoice_id == invoice.id


def test_calls_priced_after_their_month_was_invoiced_are_settled_by_rate_pending(wb):
    ids = world(wb)
    late = cdr_table(cdr(FIXED, caller=C1, start="2026-03-20 10:00", billsec_s=60, line=7),   # 0.02
                     cdr(NANP, caller=C1, start="2026-03-21 10:00", billsec_s=60, line=8))    # no rate yet
    write_partition(wb.lake_dir, "cdrs", "2026-03", late)
    first = rate_pending(wb, actor="tester")
    assert [(a["account_number"], a["month"], a["calls"], a["delta_micro"]) for a in first.adjustments] == [
        ("C0001", "2026-03", 1, 20_000)]
    assert "1 adjustment(s) recorded for calls of months already invoiced: C0001 2026-03 0.020000" in (
        first.describe())
    fix_deck(wb, ids["deck"])
    # the queue: C0001's NANP call (0.06, March invoiced for C0001), C0002's m4 (not invoiced), m5 (nobody)
    second = rate_pending(wb, actor="tester")
    assert (second.reprocessed, second.left_queue) == (3, 2)
    assert [(a["account_number"], a["calls"], a["delta_micro"]) for a in second.adjustments] == [
        ("C0001", 1, 60_000)]
    # the re-rating then only settles the price change of the two 33 calls (0.02 -> 0.03 each)
    rerate(wb, ["2026-03"])
    assert [a[1:4] for a in adjustments(wb)] == [("2026-03", 20_000, 1), ("2026-03", 60_000, 1),
                                                  ("2026-03", 20_000, 2)]
    assert {a[0] for a in adjustments(wb)} == {ids["C0001"]}


def test_a_mapping_change_moves_calls_between_accounts(wb):
    ids = world(wb)
    with wb.db.transaction() as s:       # +33987654321 now belongs to C0001's service
        s.execute(sa.update(ServiceIdentifier).where(ServiceIdentifier.value == C2).values(service_id=ids["s1"]))
    # m3 (0.06) and m4 (unrated, 0) move from C0002 to C0001; each counts for both accounts
    moved = {"C0001": (2, 2, 0, 60_000, 60_000), "C0002": (2, 2, 60_000, 0, -60_000)}
    assert by_account(rerate(wb, ["2026-03"], account_number="C0002", dry_run=True)) == moved   # calls it lost
    assert by_account(rerate(wb, ["2026-03"], account_number="C0001", dry_run=True))["C0002"] == moved["C0002"]
    summary = rerate(wb, ["2026-03"])
    assert by_account(summary) == {"C0001": (4, 2, 95_000, 155_000, 60_000), "C0002": (2, 2, 60_000, 0, -60_000)}
    assert summary.as_dict()["delta_micro"] == 0
    assert [a[:4] for a in adjustments(wb)] == [(ids["C0001"], "2026-03", 60_000, 2)]


def test_account_filter_rerates_only_that_accounts_calls(wb):
    ids = world(wb)
    fix_deck(wb, ids["deck"])
    summary = rerate(wb, ["2026-03", "2026-04"], account_number="C0002")
    assert by_account(summary) == {"C0002": (2, 2, 60_000, 150_000, 90_000)}
    assert summary.rated_months == ["2026-03"]          # C0002 made no April call
    written = read_table(wb.lake_dir, "rated", ["2026-03"])
    latest = {}
    for row in sorted(written.to_pylist(), key=lambda r: r["rated_at"]):
        latest[row["caller"], row["callee"]] = row["price_micro"]
    assert latest[(C2, FIXED)] == 90_000 and latest[(C2, NANP)] == 60_000
    assert latest[(C1, FIXED)] == 20_000                # C0001 not re-rated
    assert written.num_rows == 5 + 2
    assert adjustments(wb) == []                        # C0002's March is not invoiced
    with pytest.raises(NotFoundError, match="no account with number 'C9'"):
        rerate(wb, ["2026-03"], account_number="C9")


def test_rerate_waits_for_a_running_rating(wb):
    world(wb)
    finished = threading.Event()

    def run():
        rerate(wb, ["2026-03"])
        finished.set()

    with rating_lock(wb.lake_dir):
        worker = threading.Thread(target=run)
        worker.start()
        assert not finished.wait(0.5)
    worker.join(30)
    assert finished.is_set()


def test_period_ranges_and_the_command(wb, capsys):
    assert parse_period_range("2025-11:2026-02") == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert parse_period_range("2026-03") == ["2026-03"]
    for bad in ("2026-04:2026-03", "2026-13", "2026-01:", "March"):
        with pytest.raises(UserFacingError):
            parse_period_range(bad)

    ids = world(wb)
    fix_deck(wb, ids["deck"])
    args = ["rating", "rerate", "--data-dir", str(wb.data_dir), "--period", "2026-03:2026-04"]
    assert main(args + ["--dry-run", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["dry_run"], payload["cdrs"], payload["delta_micro"], payload["delta"]) == (True, 6, 110_000,
                                                                                               "0.110000")
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "C0001: 2 of 3 calls changed, 0.115000 -> 0.135000 (delta +0.020000)" in text
    assert "C0001 2026-03: +0.010000 (1 calls)" in text
    assert main(args + ["--account", "NOPE"]) == 2
    assert main(["rating", "rerate", "--data-dir", str(wb.data_dir), "--period", "2026-04:2026-01"]) == 2
    assert main(["rating", "rerate", "--data-dir", str(wb.data_dir), "--period", "2020-01"]) == 0
    assert capsys.readouterr().out.startswith("nothing to re-rate")


CALLS = st.lists(st.tuples(st.sampled_from([C1, C2, NOBODY]), st.sampled_from([FIXED, MOBILE, NANP, "1234"]),
                           st.integers(0, 3_600), st.integers(0, 27 * 86_400)), max_size=25)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=CALLS, fix=st.booleans())
@example(calls=[(C1, MOBILE, 95, 3_600), (C2, MOBILE, 40, 7_200), (C1, FIXED, 61, 9_000)], fix=True)
def test_property_rerating_settles_exactly_the_billing_change_once(wb, calls, fix):
    """For any calls of a month invoiced for C0001, with or without a deck change: the
    re-rating's total delta is the change of what billing reads, C0001's adjustments sum its
    delta, and re-rating again with the same tariffs changes nothing and settles nothing.

    The workbench lives across examples (one world); each example uses a month of its own."""
    state = wb.__dict__.setdefault("property_state", {})
    if not state:
        state.update(world(wb), examples=0)
    state["examples"] += 1
    period = parse_period(f"{2026 + (4 + state['examples']) // 12}-{(4 + state['examples']) % 12 + 1:02d}")
    month = period.label                                       # 2026-06, 2026-07, ...
    rows = [cdr(callee, caller=caller, billsec_s=sec, line=i,
                start=(period.start_at + dt.timedelta(seconds=offset)).strftime("%Y-%m-%d %H:%M:%S"))
            for i, (caller, callee, sec, offset) in enumerate(calls)]
    if rows:
        write_partition(wb.lake_dir, "cdrs", month, cdr_table(*rows))
    rate_pending(wb, months=[month])
    before = sum(u.price_micro for u in read_period_usage(wb.lake_dir, period).rated)
    with wb.db.transaction() as s:
        if fix:                                                # a new mobile price in every example
            s.execute(sa.update(Rate).where(Rate.deck_id == state["deck"], Rate.prefix == "336")
                      .values(price=Decimal(f"0.{state['examples']:02d}1")))
        s.add(Invoice(number=f"X-{month}", account_id=state["C0001"], period_start=period.period_start,
                      brand_id=s.scalar(sa.select(Brand.id).where(Brand.code == "BRT")),
                      period_end=period.period_end, issue_date=period.period_end, due_date=period.period_end,
                      subtotal_minor=0, vat_minor=0, total_minor=0))
    summary = rerate(wb, [month])
    after = sum(u.price_micro for u in read_period_usage(wb.lake_dir, period).rated)
    assert summary.as_dict()["delta_micro"] == after - before
    settled = [a for a in adjustments(wb) if a[1] == month]
    assert all(a[0] == state["C0001"] for a in settled)
    assert sum(a[2] for a in settled) == sum(r.delta_micro for r in summary.rows if r.account_number == "C0001")
    again = rerate(wb, [month])
    assert again.changed == 0 and all(r.delta_micro == 0 for r in again.rows)
    assert [a for a in adjustments(wb) if a[1] == month] == settled
