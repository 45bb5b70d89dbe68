"""Reports for finance and analysts, as pandas DataFrames.

Revenue comes from the system of record (issued invoices and their lines); traffic and usage
come from the usage lake through DuckDB. Money columns are exact integers (``*_minor`` cents,
``*_micro`` millionths); the ``*_eur`` columns are display text computed from those integers
(``"1234.56"``), never floats. Credit notes count negatively: their amounts are stored positive,
as printed on the document, and a report subtracts them.

A period is ``YYYY-MM``; an invoice belongs to the period its ``period_start`` falls in.
"""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
from sqlalchemy import func, select

from bluerocktel import lake
from bluerocktel.db.models import Brand, Invoice, InvoiceLine, Product
from bluerocktel.errors import UserFacingError
from bluerocktel.money import div_half_up, minor_digits
from bluerocktel.vocabulary import InvoiceKind, InvoiceStatus

ISSUED_STATUSES = tuple(s.value for s in InvoiceStatus)   # every stored invoice is issued (no drafts)
LINE_KIND_LABELS = {"subscription": "Abonnements", "one_off": "Frais ponctuels", "usage": "Consommations",
                    "adjustment": "Ajustements"}
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _bounds(period: str) -> tuple[dt.date, dt.date]:
    if not isinstance(period, str) or not _PERIOD.match(period):
        raise UserFacingError(f"period {period!r} is not YYYY-MM")
    start = dt.date(int(period[:4]), int(period[5:]), 1)
    end = dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start, end


def minor_text(minor: int, currency: str = "EUR") -> str:
    """``-1234.5`` € as ``"-1234.50"``: exact text of an integer minor amount."""
    digits = minor_digits(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(int(minor)), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


def micro_to_minor(micro: int, currency: str = "EUR") -> int:
    """Integer micro units rounded half up to minor units."""
    return div_half_up(int(micro), 10 ** (6 - minor_digits(currency)))


def invoiced_periods(wb) -> list[str]:
    """The periods that have issued invoices, newest first."""
    with wb.db.session() as s:
        starts = s.scalars(select(Invoice.period_start).distinct().where(Invoice.status.in_(ISSUED_STATUSES))).all()
    return sorted({d.strftime("%Y-%m") for d in starts}, reverse=True)


def lake_months(wb, dataset: str = "rated") -> list[str]:
    """The months holding files of a lake dataset, newest first."""
    root = lake.dataset_dir(wb.lake_dir, dataset)
    if not root.exists():
        return []
    return sorted((p.name.split("=", 1)[1] for p in root.glob("month=*") if any(p.glob("*.parquet"))), reverse=True)


def _signed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    sign = [-1 if k == InvoiceKind.CREDIT_NOTE.value else 1 for k in frame["invoice_kind"]]
    for col in columns:
        frame[col] = [int(v or 0) * s for v, s in zip(frame[col], sign)]
    return frame


def revenue_by_product(wb, period: str) -> pd.DataFrame:
    """Revenue excl. VAT of ``period`` per product (lines without product: per line kind).

    Columns: product_code, product, currency, invoices, lines, amount_minor, amount_eur;
    largest amount first.
    """
    start, end = _bounds(period)
    query = (select(Invoice.id, Invoice.kind, Invoice.currency, Product.code, Product.name, InvoiceLine.kind,
                    InvoiceLine.amount_minor)
             .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
             .outerjoin(Product, Product.id == InvoiceLine.product_id)
             .where(Invoice.period_start >= start, Invoice.period_start < end, Invoice.status.in_(ISSUED_STATUSES)))
    with wb.db.session() as s:
        rows = s.execute(query).all()
    columns = ["product_code", "product", "currency", "invoices", "lines", "amount_minor", "amount_eur"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("invoices", "lines", "amount_minor") else "object")
                             for c in columns})
    frame = _signed(pd.DataFrame([{
        "invoice_id": invoice_id, "invoice_kind": invoice_kind, "currency": currency, "product_code": code or "",
        "product": name or LINE_KIND_LABELS.get(line_kind, line_kind), "amount_minor": amount}
        for invoice_id, invoice_kind, currency, code, name, line_kind, amount in rows]), ["amount_minor"])
    out = (frame.groupby(["product_code", "product", "currency"], as_index=False)
           .agg(invoices=("invoice_id", "nunique"), lines=("invoice_id", "size"), amount_minor=("amount_minor", "sum"))
           .sort_values(["amount_minor", "product_code", "product"], ascending=[False, True, True]))
    out["amount_eur"] = [minor_text(m, c) for m, c in zip(out["amount_minor"], out["currency"])]
    return out[columns].astype({"invoices": "int64", "lines": "int64", "amount_minor": "int64"}).reset_index(drop=True)


def revenue_by_brand(wb, period: str) -> pd.DataFrame:
    """Invoiced revenue of ``period`` per brand (issuer).

    Columns: brand_code, brand, currency, invoices, subtotal_minor, vat_minor, total_minor and
    their ``*_eur`` texts; brands in code order.
    """
    start, end = _bounds(period)
    query = (select(Brand.code, Brand.name, Invoice.kind, Invoice.currency, func.count(Invoice.id),
                    func.sum(Invoice.subtotal_minor), func.sum(Invoice.vat_minor), func.sum(Invoice.total_minor))
             .join(Brand, Brand.id == Invoice.brand_id)
             .where(Invoice.period_start >= start, Invoice.period_start < end, Invoice.status.in_(ISSUED_STATUSES))
             .group_by(Brand.code, Brand.name, Invoice.kind, Invoice.currency))
    with wb.db.session() as s:
        rows = s.execute(query).all()
    money = ["subtotal_minor", "vat_minor", "total_minor"]
    columns = ["brand_code", "brand", "currency", "invoices"] + money
    texts = [m.replace("_minor", "_eur") for m in money]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "invoices" or c in money else "object")
                             for c in columns + texts})
    frame = _signed(pd.DataFrame([{"brand_code": code, "brand": name, "invoice_kind": kind, "currency": currency,
                                   "invoices": int(n), "subtotal_minor": sub, "vat_minor": vat, "total_minor": tot}
                                  for code, name, kind, currency, n, sub, vat, tot in rows]), money)
    out = (frame.groupby(["brand_code", "brand", "currency"], as_index=False)
           .agg({c: "sum" for c in ["invoices"] + money}).sort_values(["brand_code", "currency"]))
    for m, t in zip(money, texts):
        out[t] = [minor_text(v, c) for v, c in zip(out[m], out["currency"])]
    return out[columns + texts].astype({c: "int64" for c in ["invoices"] + money}).reset_index(drop=True)


def _lake_frame(wb, dataset: str, period: str, sql: str, params: list | None = None) -> pd.DataFrame:
    _bounds(period)
    con = lake.connect_duckdb()
    try:
        return con.execute(sql.format(src=lake.scan_sql(wb.lake_dir, dataset, [period])), params or []).df()
    finally:
        con.close()


def usage_by_zone(wb, period: str) -> pd.DataFrame:
    """Rated traffic of ``period`` per zone, from the lake's ``rated`` dataset.

    Columns: zone (calls without a zone show their rating status in brackets), calls,
    answered_calls, billable_s, price_micro, amount_minor (price rounded half up to cents) and
    amount_eur; largest amount first.
    """
    frame = _lake_frame(wb, "rated", period, """
        SELECT coalesce(zone, '(' || rating_status || ')') AS zone,
               CAST(count(*) AS BIGINT) AS calls,
               CAST(count(*) FILTER (WHERE billsec_s > 0) AS BIGINT) AS answered_calls,
               CAST(coalesce(sum(billable_s), 0) AS BIGINT) AS billable_s,
               CAST(coalesce(sum(price_micro), 0) AS BIGINT) AS price_micro
        FROM {src}
        GROUP BY 1
        ORDER BY price_micro DESC, zone""")
    frame["amount_minor"] = [micro_to_minor(v) for v in frame["price_micro"]]
    frame["amount_eur"] = [minor_text(v) for v in frame["amount_minor"]]
    return frame.astype({"calls": "int64", "answered_calls": "int64", "billable_s": "int64",
                         "price_micro": "int64", "amount_minor": "int64"})


def traffic_by_hour(wb, period: str, timezone: str = "Europe/Paris") -> pd.DataFrame:
    """Normalized CDRs of ``period`` per local hour of day: calls, answered_calls, billsec_s, answer_rate."""
    return _traffic(wb, period, "CAST(hour(timezone(?, start_at)) AS INTEGER) AS hour", timezone)


def traffic_by_day(wb, period: str, timezone: str = "Europe/Paris") -> pd.DataFrame:
    """Normalized CDRs of ``period`` per local day: day, calls, answered_calls, billsec_s, answer_rate."""
    return _traffic(wb, period, "CAST(timezone(?, start_at) AS DATE) AS day", timezone)


def _traffic(wb, period: str, key_sql: str, timezone: str) -> pd.DataFrame:
    frame = _lake_frame(wb, "cdrs", period, f"""
        SELECT {key_sql},
               CAST(count(*) AS BIGINT) AS calls,
               CAST(count(*) FILTER (WHERE disposition = 'ANSWERED') AS BIGINT) AS answered_calls,
               CAST(coalesce(sum(billsec_s), 0) AS BIGINT) AS billsec_s
        FROM {{src}}
        GROUP BY 1 ORDER BY 1""", [timezone])
    return _with_answer_rate(frame)


def _with_answer_rate(frame: pd.DataFrame) -> pd.DataFrame:
    # a ratio for charts, not money: a float is fine here
    frame["answer_rate"] = [a / c if c else 0.0 for a, c in zip(frame["answered_calls"], frame["calls"])]
    return frame
