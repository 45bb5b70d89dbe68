"""Re-rating adjustments become ``adjustment`` lines of the account's next invoice.

World: brand BRT, product TRUNK 29.90/month. April 2026 is billed.

    C001 (fr, trunk)  a1 2026-02  +0.123456 (12 calls) -> +0.12  (half up)
                      a2 2026-03  -0.050000  (3 calls) -> -0.05
                      a3 2026-03  -0.005000  (1 call)  -> -0.01  (half away from zero)
                      a4 2026-04  +0.500000  (2 calls)    usage month not before April: waits for May
                      a0 2026-01  +9.000000               billed already (January invoice): ignored
                      29.90 + 0.12 - 0.05 - 0.01 = 29.96; VAT 20 % 5.992 -> 5.99; total 35.95
    C002 (en, none)   a5 2026-03  -2.000000  (5 calls) -> -2.00; VAT -0.40; total -2.40 (negative: an anomaly)
    C003 (fr, trunk)  nothing to adjust: 29.90 + 5.98 = 35.88
"""

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.billing.cycle import build_drafts, finish_run, issue_invoices, prepare_run, render_documents
from bluerocktel.db.models import Account, Brand, Invoice, Product, RatingAdjustment, Service


def build_world(wb) -> dict:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS", invoice_prefix="FA")
        s.add(brand)
        s.flush()
        trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"))
        c1 = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin")
        c2 = Account(number="C002", brand_id=brand.id, name="Acme Ltd", language="en")
        c3 = Account(number="C003", brand_id=brand.id, name="Sans Ajustement")
        s.add_all([trunk, c1, c2, c3])
        s.flush()
        s.add_all([Service(account_id=c1.id, product_id=trunk.id, label="Trunk SIP"),
                   Service(account_id=c3.id, product_id=trunk.id, label="Trunk SIP")])
        january = Invoice(number="OLD-1", account_id=c1.id, brand_id=brand.id, period_start=dt.date(2026, 1, 1),
                          period_end=dt.date(2026, 2, 1), issue_date=dt.date(2026, 2, 1),
                          due_date=dt.date(2026, 3, 1), subtotal_minor=900, vat_minor=180, total_minor=1080)
        s.add(january)
        s.flush()
        rows = {
            "a0": RatingAdjustment(account_id=c1.id, usage_month="2026-01", delta_micro=9_000_000, calls=1,
                                   reason="earlier", invoice_id=january.id),
            "a1": RatingAdjustment(account_id=c1.id, usage_month="2026-02", delta_micro=123_456, calls=12),
            "a2": RatingAdjustment(account_id=c1.id, usage_month="2026-03", delta_micro=-50_000, calls=3),
            "a3": RatingAdjustment(account_id=c1.id, usage_month="2026-03", delta_micro=-5_000, calls=1),
            "a4": RatingAdjustment(account_id=c1.id, usage_month="2026-04", delta_micro=500_000, calls=2),
            "a5": RatingAdjustment(account_id=c2.id, usage_month="2026-03", delta_micro=-2_000_000, calls=5),
        }
        s.add_all(rows.values())
        s.flush()
        return {name: row.id for name, row in rows.items()} | {"january": january.id}


def billed_by(wb) -> dict[int, int | None]:
    with wb.db.session() as s:
        return dict(s.execute(sa.select(RatingAdjustment.id, RatingAdjustment.invoice_id)).all())


def test_drafts_carry_adjustment_lines_and_a_dry_run_marks_nothing(wb):
    ids = build_world(wb)
    ctx = prepare_run(wb.data_dir, "2026-04", True, issue_date="2026-05-01")
    try:
        drafts = {d.account_number: d for d in build_drafts(ctx)}
        assert issue_invoices(ctx, list(drafts.values())) == []
    finally:
        ctx.wb.close()
    c1, c2, c3 = drafts["C001"], drafts["C002"], drafts["C003"]
    assert [(l.kind, l.description, l.quantity, l.amount_precise, l.amount_minor, l.vat_rate) for l in c1.lines] == [
        ("subscription", "Trunk SIP, du 01/05/2026 au 31/05/2026", Decimal(1), Decimal("29.9000000000"), 2990,
         Decimal("0.20")),   # billed in advance: the April cycle bills May
        ("adjustment", "Régularisation des appels de 2026-02 (12 appels)", Decimal(12), Decimal("0.123456"), 12,
         Decimal("0.20")),
        ("adjustment", "Régularisation des appels de 2026-03 (3 appels)", Decimal(3), Decimal("-0.050000"), -5,
         Decimal("0.20")),
        ("adjustment", "Régularisation des appels de 2026-03 (1 appel)", Decimal(1), Decimal("-0.005000"), -1,
         Decimal("0.20")),
    ]
    assert (c1.subtotal_minor, c1.vat_minor, c1.total_minor) == (2996, 599, 3595)
    assert c1.adjustment_ids == [ids["a1"], ids["a2"], ids["a3"]]
    assert [(l.description, l.amount_minor) for l in c2.lines] == [("Re-rating of calls of 2026-03 (5 calls)", -200)]
    assert (c2.subtotal_minor, c2.vat_minor, c2.total_minor) == (-200, -40, -240)
    assert c2.anomalies == ["total -2.40 EUR is negative: re-rating adjustments exceed the charges of the period"]
    assert (c3.total_minor, c3.adjustment_ids) == (3588, [])
    assert all(invoice_id is None for key, invoice_id in billed_by(wb).items() if key != ids["a0"])


def test_issuing_bills_each_adjustment_once_and_the_next_month_takes_the_rest(wb):
    ids = build_world(wb)
    ctx = prepare_run(wb.data_dir, "2026-04", False, issue_date="2026-05-01")
    try:
        assert issue_invoices(ctx, build_drafts(ctx)) == ["FA-2026-000001", "FA-2026-000002", "FA-2026-000003"]
        documents = render_documents(ctx)
        summary = finish_run(ctx)
    finally:
        ctx.wb.close()
    assert len(documents) == 3 and all((wb.data_dir / d).read_bytes().startswith(b"%PDF-") for d in documents)
    assert summary["issued_totals"] == {"EUR": {"subtotal_minor": 2996 - 200 + 2990, "vat_minor": 599 - 40 + 598,
                                                "total_minor": 3595 - 240 + 3588}}
    with wb.db.session() as s:
        invoices = {i.account.number: i for i in s.scalars(
            sa.select(Invoice).where(Invoice.period_start == dt.date(2026, 4, 1))
            .options(selectinload(Invoice.lines), selectinload(Invoice.account)))}
        c1, c2 = invoices["C001"], invoices["C002"]
        assert [(l.position, l.kind, l.amount_minor) for l in c1.lines] == [
            (1, "subscription", 2990), (2, "adjustment", 12), (3, "adjustment", -5), (4, "adjustment", -1)]
        assert (c1.total_minor, c2.total_minor) == (3595, -240)
    assert billed_by(wb) == {ids["a0"]: ids["january"], ids["a1"]: c1.id, ids["a2"]: c1.id, ids["a3"]: c1.id,
                             ids["a4"]: None, ids["a5"]: c2.id}

    # May: only a4 (April's calls) is left to bill, +0.50
    ctx = prepare_run(wb.data_dir, "2026-05", False, issue_date="2026-06-01")
    try:
        drafts = {d.account_number: d for d in build_drafts(ctx)}
        assert [(l.kind, l.amount_minor) for l in drafts["C001"].lines] == [("subscription", 2990),
                                                                            ("adjustment", 50)]
        assert drafts["C001"].adjustment_ids == [ids["a4"]]
        assert [d.adjustment_ids for n, d in drafts.items() if n != "C001"] == [[]]    # C003 only; C002 has nothing
        issue_invoices(ctx, list(drafts.values()))
    finally:
        ctx.wb.close()
    assert billed_by(wb)[ids["a4"]] is not None


def test_adjustments_billed_by_another_run_meanwhile_skip_the_account_without_a_gap(wb):
    ids = build_world(wb)
    ctx = prepare_run(wb.data_dir, "2026-04", False, issue_date="2026-05-01")
    try:
        drafts = build_drafts(ctx)
        with wb.db.transaction() as s:     # another run billed a2 between the draft and the issue
            s.execute(sa.update(RatingAdjustment).where(RatingAdjustment.id == ids["a2"])
                      .values(invoice_id=ids["january"]))
        assert issue_invoices(ctx, drafts) == ["FA-2026-000001", "FA-2026-000002"]     # C002, C003
    finally:
        ctx.wb.close()
    assert ctx.skipped == [{"account": "C001", "reason": "its re-rating adjustments were billed by another run "
                                                         "meanwhile; run again"}]
    billed = billed_by(wb)
    assert (billed[ids["a1"]], billed[ids["a3"]]) == (None, None)      # rolled back with the invoice
    with wb.db.session() as s:
        c1 = s.scalar(sa.select(Account.id).where(Account.number == "C001"))
        assert s.scalar(sa.select(sa.func.count()).select_from(Invoice).where(
            Invoice.account_id == c1, Invoice.period_start == dt.date(2026, 4, 1))) == 0
