"""The control report of a dry run: its frames and the Excel file read back with openpyxl.

March 2026 (31 days), products billed in arrears. By hand:

A001 (BRT): trunk 29.90 x 2 = 59.80; two calls to "France fixe" 0.50 + 0.25 = 0.75 (the second
            cost us 0.35: margin -0.10); one call without a rate. Subtotal 60.55, VAT 12.11,
            total 72.66. February's invoice: 40.00 -> delta 32.66 = 81.65 % -> 81.7 %
            (ROUND_HALF_UP): over 50 % and over 10.00, an anomaly.
A002 (BRT): line 10.00 activated 11 March: 21/31 days = 6.7741.. -> 6.77; VAT 1.354 -> 1.35;
            total 8.12. February: 8.00 -> delta 0.12 = 1.5 %, no anomaly.
A003 (AZ):  a trunk at 0.00: a zero invoice, an anomaly.
"""

import datetime as dt
from decimal import Decimal

import openpyxl
import pyarrow as pa
import sqlalchemy as sa

from bluerocktel import lake
from bluerocktel.billing.cycle import build_drafts, control_report, finish_run, prepare_run
from bluerocktel.billing.report import delta_pct
from bluerocktel.db.models import Account, BillingRun, Brand, Invoice, Product, Service

UTC = dt.timezone.utc


def call(n: int, account_id: int, status: str = "rated", price_micro: int | None = 0, **extra) -> dict:
    start = dt.datetime(2026, 3, 10, 9, n, tzinfo=UTC)
    return {"cdr_id": f"r{n}", "source": "pbx", "source_file": "Master.csv", "source_line": n, "start_at": start,
            "answer_at": start, "end_at": start + dt.timedelta(seconds=60), "duration_s": 60, "billsec_s": 60,
            "caller": "+33140000000", "callee": "+33145000000", "account_code": "", "channel": "SIP/a",
            "dst_channel": "SIP/b", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
            "unique_id": str(n), "account_id": account_id, "zone": "France fixe", "billable_s": 60,
            "price_micro": price_micro, "rating_status": status, "flags": "", "rating_reason": "",
            "rated_at": dt.datetime(2026, 4, 1, tzinfo=UTC), **extra}


def previous_invoice(s, number: str, account: Account, total_minor: int) -> None:
    s.add(Invoice(number=number, account_id=account.id, brand_id=account.brand_id, period_start=dt.date(2026, 2, 1),
                  period_end=dt.date(2026, 3, 1), issue_date=dt.date(2026, 3, 1), due_date=dt.date(2026, 3, 31),
                  subtotal_minor=total_minor, vat_minor=0, total_minor=total_minor))


def build_world(wb) -> None:
    with wb.db.transaction() as s:
        brt = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        az = Brand(code="AZ", name="Azur", legal_name="Azur SAS")
        trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"),
                        billing_timing="arrears")
        line = Product(code="LINE", name="Ligne", kind="recurring", price=Decimal("10.00"), billing_timing="arrears")
        s.add_all([brt, az, trunk, line])
        s.flush()
        a1 = Account(number="A001", brand_id=brt.id, name="Martin")
        a2 = Account(number="A002", brand_id=brt.id, name="Durand")
        a3 = Account(number="A003", brand_id=az.id, name="Gratuit")
        s.add_all([a1, a2, a3])
        s.flush()
        s.add_all([Service(account_id=a1.id, product_id=trunk.id, label="Siège", quantity=2),
                   Service(account_id=a2.id, product_id=line.id, label="Ligne", activated_on=dt.date(2026, 3, 11)),
                   Service(account_id=a3.id, product_id=trunk.id, label="Offert", unit_price=Decimal("0"))])
        previous_invoice(s, "FA-2026-000001", a1, 4000)
        previous_invoice(s, "FA-2026-000002", a2, 800)
        ids = (a1.id, a2.id)
    rows = [call(1, ids[0], price_micro=500_000, cost_micro=100_000, margin_micro=400_000),
            call(2, ids[0], price_micro=250_000, cost_micro=350_000, margin_micro=-100_000, flags="negative_margin"),
            call(3, ids[0], status="unrated", price_micro=None, rating_reason="no rate for +88216000001")]
    lake.write_partition(wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))


def dry_run(wb):
    ctx = prepare_run(wb.data_dir, "2026-03", True, issue_date="2026-04-01")
    try:
        report = control_report(ctx, build_drafts(ctx))
        summary = finish_run(ctx)
    finally:
        ctx.wb.close()
    return ctx, report, summary


def test_delta_percent_rounds_half_up_to_one_decimal():
    assert delta_pct(4000, 3266) == Decimal("81.7")        # 81.65
    assert delta_pct(800, 12) == Decimal("1.5")
    assert delta_pct(800, -4) == Decimal("-0.5")
    assert delta_pct(None, 10) is None and delta_pct(0, 10) is None


def test_the_frames_of_the_control_report(wb):
    build_world(wb)
    ctx, report, summary = dry_run(wb)

    assert report.summary[["currency", "invoices", "lines", "subtotal_minor", "vat_minor", "total_minor"]
                          ].values.tolist() == [["EUR", 3, 4, 6055 + 677 + 0, 1211 + 135, 7266 + 812]]
    accounts = report.accounts.set_index("account")
    assert accounts.loc["A001", ["subtotal_minor", "vat_minor", "total_minor", "previous_total_minor",
                                 "delta_minor"]].tolist() == [6055, 1211, 7266, 4000, 3266]
    assert accounts.loc["A001", "delta_pct"] == Decimal("81.7")
    assert accounts.loc["A002", ["total_minor", "previous_total_minor", "delta_minor"]].tolist() == [812, 800, 12]
    assert accounts.loc["A002", "delta_pct"] == Decimal("1.5")
    assert accounts.loc["A003", "total_minor"] == 0 and accounts.loc["A003", "delta_pct"] is None

    products = report.by_product.set_index(["kind", "product_code"])
    assert products.loc[("subscription", "TRUNK"), ["lines", "quantity", "amount_minor"]].tolist() == [2, 3, 5980]
    assert products.loc[("subscription", "LINE"), ["lines", "amount_minor"]].tolist() == [1, 677]
    assert products.loc[("usage", ""), "amount_minor"] == 75
    assert report.by_zone[["zone", "lines", "amount_minor"]].values.tolist() == [["France fixe", 1, 75]]
    assert report.by_brand[["brand", "invoices", "subtotal_minor", "vat_minor", "total_minor"]].values.tolist() == [
        ["AZ", 1, 0, 0, 0], ["BRT", 2, 6732, 1346, 8078]]
    assert report.prorations[["account", "service", "days", "period_days", "amount_minor"]].values.tolist() == [
        ["A002", "Ligne", 21, 31, 677]]

    found = {(a.kind, a.account) for a in report.anomalies.itertuples()}
    assert found == {("zero_or_negative", "A003"), ("draft", "A001"), ("delta", "A001"),
                     ("unrated_pending", None), ("negative_margin", "A001")}
    details = dict(zip(report.anomalies["kind"], report.anomalies["detail"]))
    assert details["delta"] == ("total 72.66 EUR against 40.00 EUR for the previous period "
                                "(+81.7%, over ±50% and ±10.00 EUR)")
    assert details["negative_margin"] == "1 call(s) rated below cost, margin -0.100000"
    assert details["unrated_pending"] == ("1 call(s) of 2026-03 still unrated in the rating queue: "
                                          "no rate for +88216000001")
    assert details["zero_or_negative"] == "total 0.00 EUR is zero"

    assert summary["accounts"] == 3 and summary["account_totals"] == {"A001": 7266, "A002": 812, "A003": 0}
    assert summary["totals"] == {"EUR": {"subtotal_minor": 6732, "vat_minor": 1346, "total_minor": 8078}}
    assert len(summary["anomalies"]) == 5
    with wb.db.session() as s:
        run = s.get(BillingRun, ctx.run_id)
        assert (run.report_path, run.step, run.status) == (
            f"runs/{ctx.run_id}/control_report.xlsx", "finished", "previewed")


def test_the_excel_file_read_back(wb):
    build_world(wb)
    ctx, report, summary = dry_run(wb)
    book = openpyxl.load_workbook(wb.data_dir / "runs" / str(ctx.run_id) / "control_report.xlsx")
    assert book.sheetnames == ["Summary", "By product", "By zone", "By brand", "Accounts", "Prorations", "Anomalies"]
    sheet = book["Accounts"]
    header = [c.value for c in sheet[1]]
    assert header == ["account", "name", "currency", "lines", "subtotal", "vat", "total", "previous_total", "delta",
                      "delta_pct"]
    assert sheet["A1"].font.bold and sheet["A1"].fill.fgColor.rgb.endswith("0B3D91")
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == "A1:J4"
    rows = {r[0]: r for r in sheet.iter_rows(min_row=2, values_only=True)}
    # amounts are numbers with two decimals: 7266 minor units -> 72.66
    assert [Decimal(str(v)) for v in rows["A001"][4:9]] == [Decimal("60.55"), Decimal("12.11"), Decimal("72.66"),
                                                            Decimal("40.00"), Decimal("32.66")]
    assert Decimal(str(rows["A001"][9])) == Decimal("81.7")
    assert rows["A003"][7:10] == (None, None, None)
    assert sheet["G2"].number_format == "#,##0.00" and sheet["J2"].number_format == "0.0"
    summary_sheet = book["Summary"]
    assert [c.value for c in summary_sheet[1]][-3:] == ["subtotal", "vat", "total"]
    assert [Decimal(str(c.value)) for c in summary_sheet[2][-3:]] == [Decimal("67.32"), Decimal("13.46"),
                                                                     Decimal("80.78")]
    anomalies = [r for r in book["Anomalies"].iter_rows(min_row=2, values_only=True)]
    assert ("negative_margin", "A001", "Martin", "1 call(s) rated below cost, margin -0.100000") in anomalies


def test_a_run_with_nothing_to_bill_still_has_a_report(wb):
    with wb.db.transaction() as s:
        s.add(Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS"))
    ctx, report, summary = dry_run(wb)
    assert report.summary[["currency", "invoices", "total_minor"]].values.tolist() == [["", 0, 0]]
    assert report.accounts.empty and report.anomalies.empty
    book = openpyxl.load_workbook(wb.data_dir / summary_path(wb, ctx.run_id))
    assert book["Accounts"].max_row == 1


def summary_path(wb, run_id: int) -> str:
    with wb.db.session() as s:
        return s.scalar(sa.select(BillingRun.report_path).where(BillingRun.id == run_id))
