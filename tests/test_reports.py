"""Reports from hand-made invoices and lake rows: exact integer sums, display text from integers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from bluerocktel import lake, reports
from bluerocktel.db.models import Account, Brand, Invoice, InvoiceLine, Product
from bluerocktel.errors import UserFacingError

UTC = dt.timezone.utc


def seed_sample_invoices(session) -> None:
    """Two brands; October: an invoice each, a credit note cancelling Azur's installation; one September invoice."""
    blue = Brand(code="BLUEROCK", name="BlueRock Télécom", legal_name="BlueRock Télécom SAS", invoice_prefix="BRT")
    azur = Brand(code="AZUR", name="Azur Connect", legal_name="Azur Connect SARL", invoice_prefix="AZC")
    session.add_all([blue, azur])
    session.flush()
    a1 = Account(number="C000001", brand_id=blue.id, name="Atelier Martin SARL")
    a2 = Account(number="C000002", brand_id=azur.id, name="Garage Roux SAS")
    products = {code: Product(code=code, name=name, kind=kind, price=Decimal(price))
                for code, name, kind, price in [("SIP-CH", "Canal SIP trunk", "recurring", "9.90"),
                                                ("DID", "Numéro SDA", "recurring", "1.00"),
                                                ("INSTALL", "Frais de mise en service", "one_off", "150.00")]}
    session.add_all([a1, a2, *products.values()])
    session.flush()

    def invoice(number, account, brand, start, kind, lines, vat):
        end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        subtotal = sum(amount for *_, amount in lines)
        inv = Invoice(number=number, kind=kind, account_id=account.id, brand_id=brand.id, period_start=start,
                      period_end=end, issue_date=end, due_date=end + dt.timedelta(days=30),
                      subtotal_minor=subtotal, vat_minor=vat, total_minor=subtotal + vat)
        inv.lines = [InvoiceLine(position=i, kind=line_kind, description=line_kind,
                                 product_id=products[code].id if code else None, quantity=Decimal(qty),
                                 amount_precise=Decimal(amount) / 100, amount_minor=amount, vat_rate=Decimal("0.20"),
                                 zone="national_mobile" if line_kind == "usage" else None)
                     for i, (line_kind, code, qty, amount) in enumerate(lines, 1)]
        session.add(inv)

    october, september = dt.date(2026, 10, 1), dt.date(2026, 9, 1)
    invoice("BRT-2026-000001", a1, blue, october, "invoice",
            [("subscription", "SIP-CH", "4", 3960), ("subscription", "DID", "10", 1000),
             ("usage", None, "1", 1234)], 1239)
    invoice("AZC-2026-000001", a2, azur, october, "invoice",
            [("subscription", "SIP-CH", "2", 1980), ("one_off", "INSTALL", "1", 15000)], 3396)
    invoice("AZC-2026-000002", a2, azur, october, "credit_note", [("one_off", "INSTALL", "1", 15000)], 3000)
    invoice("BRT-2026-000000", a1, blue, september, "invoice", [("subscription", "SIP-CH", "4", 3960)], 792)


def test_revenue_by_product_sums_lines_exactly_and_subtracts_credit_notes(wb):
    with wb.db.transaction() as s:
        seed_sample_invoices(s)
    frame = reports.revenue_by_product(wb, "2026-10")
    assert frame[["product_code", "product", "invoices", "lines", "amount_minor", "amount_eur"]].values.tolist() == [
        ["SIP-CH", "Canal SIP trunk", 2, 2, 5940, "59.40"],
        ["", "Consommations", 1, 1, 1234, "12.34"],
        ["DID", "Numéro SDA", 1, 1, 1000, "10.00"],
        ["INSTALL", "Frais de mise en service", 2, 2, 0, "0.00"],
    ]
    assert str(frame["amount_minor"].dtype) == "int64"
    assert frame["amount_minor"].sum() == 6194 + 16980 - 15000
    assert reports.revenue_by_product(wb, "2026-09")["amount_minor"].tolist() == [3960]
    assert reports.revenue_by_product(wb, "2026-08").empty


def test_revenue_by_brand_uses_invoice_totals(wb):
    with wb.db.transaction() as s:
        seed_sample_invoices(s)
    frame = reports.revenue_by_brand(wb, "2026-10")
    assert frame.drop(columns=["brand", "currency"]).values.tolist() == [
        ["AZUR", 2, 1980, 396, 2376, "19.80", "3.96", "23.76"],
        ["BLUEROCK", 1, 6194, 1239, 7433, "61.94", "12.39", "74.33"],
    ]
    assert all(str(frame[c].dtype) == "int64" for c in ["invoices", "subtotal_minor", "vat_minor", "total_minor"])
    assert reports.invoiced_periods(wb) == ["2026-10", "2026-09"]
    empty = reports.revenue_by_brand(wb, "2025-01")
    assert empty.empty and "total_eur" in empty.columns


def test_periods_are_checked():
    with pytest.raises(UserFacingError, match="YYYY-MM"):
        reports._bounds("2026-13")
    with pytest.raises(UserFacingError, match="YYYY-MM"):
        reports._bounds("2026-10'; DROP TABLE invoices; --")


def test_minor_text_is_exact():
    assert reports.minor_text(0) == "0.00"
    assert reports.minor_text(-5) == "-0.05"
    assert reports.minor_text(123456789012345678) == "1234567890123456.78"
    assert reports.minor_text(1500, "JPY") == "1500"
    assert reports.micro_to_minor(36_200) == 4 and reports.micro_to_minor(35_000) == 4
    assert reports.micro_to_minor(34_999) == 3


def cdr_row(start_at: dt.datetime, **overrides) -> dict:
    """A normalized CDR with every column of the lake schema; ``overrides`` change any of them."""
    billsec = overrides.pop("billsec_s", 60)
    row = dict(cdr_id=f"id-{start_at.isoformat()}-{billsec}", source="test", source_file="Master.csv", source_line=1,
               start_at=start_at, answer_at=start_at if billsec else None,
               end_at=start_at + dt.timedelta(seconds=billsec), duration_s=billsec, billsec_s=billsec,
               caller="+33140000000", callee="+33612345678", account_code="C000001", channel="PJSIP/x",
               dst_channel="PJSIP/y", disposition="ANSWERED" if billsec else "NO ANSWER", direction="out",
               call_type="voice", unique_id="1.1")
    row.update(overrides)
    return row


def rated_row(start_at: dt.datetime, zone: str | None, billable_s: int, price_micro: int | None,
              status: str = "rated", **overrides) -> dict:
    row = cdr_row(start_at, **overrides)
    row.update(account_id=1, service_id=1, rate_deck_id=1, rate_id=1, prefix="336", destination="France mobile",
               zone=zone, billable_s=billable_s, price_micro=price_micro, rating_status=status,
               rated_at=dt.datetime(2026, 11, 1, tzinfo=UTC))
    return row


def write_sample_usage(lake_dir) -> None:
    t = dt.datetime(2026, 10, 5, 8, 30, tzinfo=UTC)   # 10:30 in Paris
    rated = [
        rated_row(t, "national_fixed", 120, 24_000, billsec_s=120),
        rated_row(t, "national_fixed", 61, 12_200, billsec_s=61),
        rated_row(t, "national_mobile", 30, 19_500, billsec_s=30),
        rated_row(t, "national_mobile", 0, 0, "free", billsec_s=0),
        rated_row(t, None, 45, None, "unrated", billsec_s=45),
    ]
    lake.write_partition(lake_dir, "rated", "2026-10", pa.Table.from_pylist(rated, schema=lake.RATED_SCHEMA))
    lake.write_partition(lake_dir, "rated", "2026-09", pa.Table.from_pylist(
        [rated_row(dt.datetime(2026, 9, 30, 12, tzinfo=UTC), "national_fixed", 60, 999_999)], schema=lake.RATED_SCHEMA))
    cdrs = [cdr_row(t), cdr_row(t, billsec_s=0), cdr_row(dt.datetime(2026, 10, 5, 22, 15, tzinfo=UTC))]
    lake.write_partition(lake_dir, "cdrs", "2026-10", pa.Table.from_pylist(cdrs, schema=lake.CDR_SCHEMA))


def test_usage_by_zone_sums_micro_units_exactly(tmp_path):
    class Wb:   # usage reports only need the lake
        lake_dir = tmp_path / "lake"

    write_sample_usage(Wb.lake_dir)
    frame = reports.usage_by_zone(Wb, "2026-10")
    assert frame.values.tolist() == [
        ["national_fixed", 2, 2, 181, 36_200, 4, "0.04"],
        ["national_mobile", 2, 1, 30, 19_500, 2, "0.02"],
        ["(unrated)", 1, 1, 45, 0, 0, "0.00"],
    ]
    assert list(frame.columns) == ["zone", "calls", "answered_calls", "billable_s", "price_micro", "amount_minor",
                                   "amount_eur"]
    assert all(str(frame[c].dtype) == "int64" for c in ["calls", "billable_s", "price_micro", "amount_minor"])
    assert reports.usage_by_zone(Wb, "2026-08").empty
    assert reports.lake_months(Wb, "rated") == ["2026-10", "2026-09"]

    hours = reports.traffic_by_hour(Wb, "2026-10")
    assert hours[["hour", "calls", "answered_calls", "billsec_s"]].values.tolist() == [[0, 1, 1, 60], [10, 2, 1, 60]]
    assert hours["answer_rate"].tolist() == [1.0, 0.5]
    days = reports.traffic_by_day(Wb, "2026-10")
    assert [str(d)[:10] for d in days["day"]] == ["2026-10-05", "2026-10-06"]
