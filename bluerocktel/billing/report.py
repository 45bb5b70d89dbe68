"""The control report of a billing run: what a human checks before approving the issue.

:func:`build_control_report` turns the drafts of a run into pandas frames (no UI), one per
sheet of the Excel file :func:`write_xlsx` writes (``DATA_DIR/runs/<id>/control_report.xlsx``):

- **Summary**: the run, its period and brand, invoices, lines, anomalies and totals per currency;
- **By product**, **By zone** (usage lines), **By brand**: totals of the draft lines and invoices;
- **Accounts**: one row per draft with the total of the account's invoice of the previous
  period, the delta and the delta in % (one decimal, ROUND_HALF_UP);
- **Prorations**: subscription lines billed for part of the period (days active);
- **Anomalies**: zero or negative invoices, deltas over the thresholds (settings
  ``report_delta_threshold_pct`` and ``report_delta_threshold_minor``: both must be exceeded),
  calls of the period still in the unrated queue, calls rated at a negative margin (per account),
  usage nobody bills (found while drafting), and, for an issuing run, accounts whose total differs
  from the approved dry run.

Amounts stay integer minor units (``*_minor`` columns) in the frames; the Excel file shows them
as numbers with two decimals, converted through Decimal, never through a float.

The staff app's "Billing runs" view reads its data here too (:func:`billing_run_rows`,
:func:`notebook_html`).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa

from bluerocktel.billing.charges import DraftInvoice, active_days
from bluerocktel.db.models import Account, BillingRun, Brand, Invoice, Product, Service
from bluerocktel.errors import NotFoundError
from bluerocktel.lake import connect_duckdb
from bluerocktel.money import D, from_minor, quantize
from bluerocktel.rating.pending import latest_rated_sql
from bluerocktel.rating.unrated import unrated_counts
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import InvoiceKind, InvoiceLineKind, RatingFlag, RatingStatus
from bluerocktel.workbench import Workbench

if TYPE_CHECKING:
    from bluerocktel.billing.cycle import RunContext

ANOMALY_COLUMNS = ["kind", "account", "name", "detail"]


@dataclass
class ControlReport:
    """The frames of the control report, one per sheet (see :data:`SHEETS`)."""

    summary: pd.DataFrame
    by_product: pd.DataFrame
    by_zone: pd.DataFrame
    by_brand: pd.DataFrame
    accounts: pd.DataFrame
    prorations: pd.DataFrame
    anomalies: pd.DataFrame

    def summary_values(self) -> dict:
        """What the run's summary keeps of the report: accounts, totals per currency, per-account
        totals (to compare an issuing run with its approved dry run) and the anomalies."""
        totals = {row.currency: {"subtotal_minor": int(row.subtotal_minor), "vat_minor": int(row.vat_minor),
                                 "total_minor": int(row.total_minor)}
                  for row in self.summary.itertuples() if row.currency}
        return {
            "accounts": len(self.accounts), "totals": totals,
            "account_totals": {row.account: int(row.total_minor) for row in self.accounts.itertuples()},
            "anomalies": [{"kind": a.kind, "account_number": a.account, "account_name": a.name, "issue": a.detail}
                          for a in self.anomalies.itertuples()],
        }


SHEETS = {"Summary": "summary", "By product": "by_product", "By zone": "by_zone", "By brand": "by_brand",
          "Accounts": "accounts", "Prorations": "prorations", "Anomalies": "anomalies"}


def _previous_period_start(start: dt.date) -> dt.date:
    return (start - dt.timedelta(days=1)).replace(day=1)


def _frame(rows: list[dict], columns: list[str], ints: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({c: "int64" for c in ints}) if ints else frame


def _summary_frame(ctx: "RunContext", drafts: list[DraftInvoice], anomalies: int) -> pd.DataFrame:
    base = {"run_id": ctx.run_id, "period": ctx.period.label, "brand": ctx.brand_code or "all",
            "dry_run": ctx.dry_run, "anomalies": anomalies}
    per_currency: dict[str, dict] = {}
    for d in drafts:
        row = per_currency.setdefault(d.currency, {**base, "currency": d.currency, "invoices": 0, "lines": 0,
                                                   "subtotal_minor": 0, "vat_minor": 0, "total_minor": 0})
        row["invoices"] += 1
        row["lines"] += len(d.lines)
        row["subtotal_minor"] += d.subtotal_minor
        row["vat_minor"] += d.vat_minor
        row["total_minor"] += d.total_minor
    rows = [per_currency[c] for c in sorted(per_currency)] or [
        {**base, "currency": "", "invoices": 0, "lines": 0, "subtotal_minor": 0, "vat_minor": 0, "total_minor": 0}]
    columns = ["run_id", "period", "brand", "dry_run", "currency", "invoices", "lines", "anomalies",
               "subtotal_minor", "vat_minor", "total_minor"]
    return _frame(rows, columns, ("invoices", "lines", "anomalies", "subtotal_minor", "vat_minor", "total_minor"))


def _group_lines(drafts: list[DraftInvoice], key) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for d in drafts:
        for line in d.lines:
            k = key(line)
            if k is None:
                continue
            group = groups.setdefault((*k, d.currency), {"lines": 0, "quantity": Decimal(0), "amount_minor": 0})
            group["lines"] += 1
            group["quantity"] += line.quantity
            group["amount_minor"] += line.amount_minor
    return [{"key": k[:-1], "currency": k[-1], **v} for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def _by_product(drafts: list[DraftInvoice], products: dict[int, tuple[str, str]]) -> pd.DataFrame:
    rows = []
    for g in _group_lines(drafts, lambda line: (line.kind, line.product_id or 0)):
        kind, product_id = g["key"]
        code, name = products.get(product_id, ("", ""))
        rows.append({"kind": kind, "product_code": code, "product": name, "currency": g["currency"],
                     "lines": g["lines"], "quantity": g["quantity"], "amount_minor": g["amount_minor"]})
    return _frame(rows, ["kind", "product_code", "product", "currency", "lines", "quantity", "amount_minor"],
                  ("lines", "amount_minor"))


def _by_zone(drafts: list[DraftInvoice]) -> pd.DataFrame:
    rows = [{"zone": g["key"][0], "currency": g["currency"], "lines": g["lines"], "calls": g["quantity"],
             "amount_minor": g["amount_minor"]}
            for g in _group_lines(drafts, lambda line: (line.zone or "",) if line.kind == InvoiceLineKind.USAGE
                                  else None)]
    return _frame(rows, ["zone", "currency", "lines", "calls", "amount_minor"], ("lines", "amount_minor"))


def _by_brand(drafts: list[DraftInvoice], brands: dict[int, tuple[str, str]]) -> pd.DataFrame:
    groups: dict[tuple, dict] = {}
    for d in drafts:
        code, name = brands[d.brand_id]
        g = groups.setdefault((code, name, d.currency), {"invoices": 0, "subtotal_minor": 0, "vat_minor": 0,
                                                         "total_minor": 0})
        g["invoices"] += 1
        g["subtotal_minor"] += d.subtotal_minor
        g["vat_minor"] += d.vat_minor
        g["total_minor"] += d.total_minor
    rows = [{"brand": k[0], "name": k[1], "currency": k[2], **v} for k, v in sorted(groups.items())]
    return _frame(rows, ["brand", "name", "currency", "invoices", "subtotal_minor", "vat_minor", "total_minor"],
                  ("invoices", "subtotal_minor", "vat_minor", "total_minor"))


def delta_pct(previous_minor: int | None, delta_minor: int) -> Decimal | None:
    """``delta / previous × 100`` to one decimal, ROUND_HALF_UP; None without a previous amount."""
    if not previous_minor:
        return None
    return quantize(Decimal(delta_minor) * 100 / Decimal(abs(previous_minor)), 1, ROUND_HALF_UP)


def _accounts(drafts: list[DraftInvoice], previous: dict[int, int]) -> pd.DataFrame:
    rows = []
    for d in sorted(drafts, key=lambda d: d.account_number):
        before = previous.get(d.account_id)
        delta = None if before is None else d.total_minor - before
        rows.append({"account": d.account_number, "name": d.account_name, "currency": d.currency,
                     "lines": len(d.lines), "subtotal_minor": d.subtotal_minor, "vat_minor": d.vat_minor,
                     "total_minor": d.total_minor, "previous_total_minor": before, "delta_minor": delta,
                     "delta_pct": None if delta is None else delta_pct(before, delta)})
    frame = _frame(rows, ["account", "name", "currency", "lines", "subtotal_minor", "vat_minor", "total_minor",
                          "previous_total_minor", "delta_minor", "delta_pct"],
                   ("lines", "subtotal_minor", "vat_minor", "total_minor"))
    return frame.astype({"previous_total_minor": "Int64", "delta_minor": "Int64"})


def _prorations(drafts: list[DraftInvoice], services: dict[int, Service], ctx: "RunContext") -> pd.DataFrame:
    rows = []
    for d in sorted(drafts, key=lambda d: d.account_number):
        for line in d.lines:
            service = services.get(line.service_id)
            if line.kind != InvoiceLineKind.SUBSCRIPTION or service is None:
                continue
            days = active_days(service, ctx.period)
            if days < ctx.period.days:
                rows.append({"account": d.account_number, "service_id": service.id, "service": service.label,
                             "description": line.description, "days": days, "period_days": ctx.period.days,
                             "currency": d.currency, "amount_minor": line.amount_minor})
    return _frame(rows, ["account", "service_id", "service", "description", "days", "period_days", "currency",
                         "amount_minor"], ("service_id", "days", "period_days", "amount_minor"))


def _negative_margins(lake_dir: Path, ctx: "RunContext") -> list[tuple[int, int, int]]:
    """``(account_id, calls, margin_micro)`` of the period's calls rated at a negative margin."""
    sql = f"""
        SELECT account_id, count(*) AS calls, CAST(coalesce(sum(margin_micro), 0) AS BIGINT) AS margin_micro
        FROM {latest_rated_sql(lake_dir, [ctx.period.label])}
        WHERE start_at >= $start AND start_at < $end AND account_id IS NOT NULL
          AND rating_status = '{RatingStatus.RATED.value}'
          AND list_contains(string_split(coalesce(flags, ''), ','), '{RatingFlag.NEGATIVE_MARGIN.value}')
        GROUP BY account_id ORDER BY account_id
    """
    con = connect_duckdb()
    try:
        return [tuple(int(v) for v in row) for row in
                con.execute(sql, {"start": ctx.period.start_at, "end": ctx.period.end_at}).fetchall()]
    finally:
        con.close()


def _money(minor: int, currency: str) -> str:
    return f"{from_minor(minor, currency)} {currency}"


def _anomalies(ctx: "RunContext", drafts: list[DraftInvoice], accounts: pd.DataFrame,
               names: dict[int, tuple[str, str]], approved: tuple[int, dict] | None) -> pd.DataFrame:
    rows: list[dict] = []

    def add(kind: str, account: str | None, name: str | None, detail: str) -> None:
        rows.append({"kind": kind, "account": account, "name": name, "detail": detail})

    for d in sorted(drafts, key=lambda d: d.account_number):
        if d.total_minor <= 0:
            add("zero_or_negative", d.account_number, d.account_name,
                f"total {_money(d.total_minor, d.currency)} is {'zero' if d.total_minor == 0 else 'negative'}")
        for text in d.anomalies:
            add("draft", d.account_number, d.account_name, text)
    pct, minimum = (D(get_setting("report_delta_threshold_pct")),
                    D(get_setting("report_delta_threshold_minor")))
    for row in accounts.itertuples():
        if row.delta_pct is not None and abs(row.delta_pct) > pct and abs(int(row.delta_minor)) > minimum:
            add("delta", row.account, row.name,
                f"total {_money(int(row.total_minor), row.currency)} against "
                f"{_money(int(row.previous_total_minor), row.currency)} for the previous period "
                f"({row.delta_pct:+}%, over ±{pct}% and ±{_money(int(minimum), row.currency)})")
    for issue in ctx.issues:
        add(issue.kind, issue.account_number, issue.account_name, issue.issue)
    for queued in unrated_counts(ctx.wb.lake_dir, [ctx.period.label]):
        add("unrated_pending", None, None,
            f"{queued['calls']} call(s) of {ctx.period.label} still {queued['status']} in the rating queue"
            + (f": {queued['reason']}" if queued["reason"] else ""))
    for account_id, calls, margin_micro in _negative_margins(ctx.wb.lake_dir, ctx):
        number, name = names.get(account_id, (f"id {account_id}", None))
        add("negative_margin", number, name, f"{calls} call(s) rated below cost, margin "
                                             f"{quantize(Decimal(margin_micro) / 1_000_000, 6, ROUND_HALF_UP)}")
    if approved is not None:
        approved_id, approved_totals = approved
        current = {row.account: (int(row.total_minor), row.currency) for row in accounts.itertuples()}
        for number in sorted(set(current) | set(approved_totals)):
            now, currency = current.get(number, (None, "EUR"))
            before = approved_totals.get(number)
            if now != before:
                add("approval_mismatch", number, None,
                    f"total {'not billed' if now is None else _money(now, currency)} differs from the approved "
                    f"dry run {approved_id}: {'not billed' if before is None else _money(before, currency)}")
    frame = _frame(rows, ANOMALY_COLUMNS).astype(object)
    return frame.where(frame.notna(), None)          # no account: None, never NaN (the summary is JSON)


def build_control_report(ctx: "RunContext", drafts: list[DraftInvoice]) -> ControlReport:
    """The control report of ``drafts`` (see the module docstring for the sheets)."""
    account_ids = [d.account_id for d in drafts]
    previous_start = _previous_period_start(ctx.period.period_start)
    with ctx.wb.db.session() as s:
        products = {p.id: (p.code, p.name) for p in s.scalars(sa.select(Product))}
        brands = {b.id: (b.code, b.name) for b in s.scalars(sa.select(Brand))}
        service_ids = {line.service_id for d in drafts for line in d.lines if line.service_id}
        services = {sv.id: sv for sv in s.scalars(sa.select(Service).where(Service.id.in_(service_ids)))}
        previous = dict(s.execute(sa.select(Invoice.account_id, Invoice.total_minor).where(
            Invoice.kind == InvoiceKind.INVOICE, Invoice.period_start == previous_start,
            Invoice.account_id.in_(account_ids))).all())
        names = {a.id: (a.number, a.name) for a in s.scalars(sa.select(Account))}
        run = s.get(BillingRun, ctx.run_id)
        approved = None
        if run.approved_run_id is not None:
            dry = s.get(BillingRun, run.approved_run_id)
            approved = (dry.id, (dry.summary or {}).get("account_totals", {}))
    accounts = _accounts(drafts, previous)
    anomalies = _anomalies(ctx, drafts, accounts, names, approved)
    return ControlReport(
        summary=_summary_frame(ctx, drafts, len(anomalies)), by_product=_by_product(drafts, products),
        by_zone=_by_zone(drafts), by_brand=_by_brand(drafts, brands), accounts=accounts,
        prorations=_prorations(drafts, services, ctx), anomalies=anomalies)


# --- Excel -------------------------------------------------------------------------------------

MONEY_FORMAT = "#,##0.00"


def _cell_value(column: str, value, currency: str):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if column.endswith("_minor"):
        return from_minor(int(value), currency or "EUR")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item"):            # numpy scalars
        return value.item()
    return value


def write_xlsx(report: ControlReport, path: Path) -> Path:
    """Write ``report`` to ``path`` (one sheet per frame) atomically: styled header, frozen first row,
    autofilter; ``*_minor`` columns as Decimal amounts with two decimals (header without ``_minor``)."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    book = Workbook()
    book.remove(book.active)
    header_font = Font(bold=True, color="FFFFFF")
    header_fill = PatternFill("solid", fgColor="0B3D91")
    for title, attribute in SHEETS.items():
        frame: pd.DataFrame = getattr(report, attribute)
        sheet = book.create_sheet(title)
        columns = list(frame.columns)
        sheet.append([c.removesuffix("_minor") for c in columns])
        for cell in sheet[1]:
            cell.font, cell.fill, cell.alignment = header_font, header_fill, Alignment(vertical="center")
        for record in frame.to_dict("records"):
            currency = record.get("currency") or "EUR"
            sheet.append([_cell_value(c, record[c], currency) for c in columns])
        for index, column in enumerate(columns, 1):
            letter = get_column_letter(index)
            if column.endswith("_minor") or column == "delta_pct":
                for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = MONEY_FORMAT if column.endswith("_minor") else "0.0"
            width = max([len(str(column))] + [len(str(v)) for v in frame[column].head(500)])
            sheet.column_dimensions[letter].width = min(max(width + 2, 8), 60)
        sheet.freeze_panes = "A2"
        sheet.auto_filter.ref = sheet.dimensions
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        book.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_xlsx(path: Path) -> ControlReport:
    """A written control report read back (amount columns as numbers, headers as in the file)."""
    sheets = pd.read_excel(path, sheet_name=None, engine="openpyxl")
    return ControlReport(**{attribute: sheets[title] for title, attribute in SHEETS.items()})


# --- the staff app's "Billing runs" view -------------------------------------------------------

def billing_run_rows(wb: Workbench, limit: int = 50) -> list[dict]:
    """The latest billing runs, newest first, for the staff app: period, brand, dry run, status,
    step, approval, totals per currency (text), anomalies count and the run's files."""
    with wb.db.session() as s:
        runs = s.scalars(sa.select(BillingRun).order_by(BillingRun.id.desc()).limit(max(1, min(int(limit), 500))))
        rows = []
        for run in runs:
            summary = run.summary or {}
            totals = summary.get("issued_totals") if not run.dry_run else summary.get("totals")
            rows.append({
                "id": run.id, "period": run.period, "brand": run.brand_code or "all", "dry_run": run.dry_run,
                "status": run.status, "step": run.step or "", "approved_by": run.approved_by or "",
                "approved_at": run.approved_at, "approved_run_id": run.approved_run_id,
                "totals": ", ".join(_money(int(t["total_minor"]), currency)
                                    for currency, t in sorted((totals or {}).items())),
                "invoices": summary.get("invoices_issued"), "anomalies": len(summary.get("anomalies") or []),
                "started_at": run.started_at, "finished_at": run.finished_at, "started_by": run.started_by,
                "error": run.error or "", "notebook_path": run.notebook_path, "report_path": run.report_path,
                "approvable": bool(run.dry_run and run.status == "previewed" and run.approved_at is None),
            })
        return rows


def _run_file(wb: Workbench, run_id: int, attribute: str, what: str) -> Path:
    with wb.db.session() as s:
        run = s.get(BillingRun, int(run_id))
        relative = getattr(run, attribute) if run is not None else None
    path = wb.data_dir / relative if relative else None
    if path is None or not path.is_file():
        raise NotFoundError(f"billing run {run_id} has no {what}")
    return path


def report_file(wb: Workbench, run_id: int) -> Path:
    """The control report (xlsx) of run ``run_id``; NotFoundError when it has none."""
    return _run_file(wb, run_id, "report_path", "control report")


def notebook_html(wb: Workbench, run_id: int) -> str:
    """The executed notebook of run ``run_id`` as a standalone HTML page (nbconvert), inputs included."""
    import nbformat
    from nbconvert import HTMLExporter

    path = _run_file(wb, run_id, "notebook_path", "executed notebook")
    body, _ = HTMLExporter(template_name="classic").from_notebook_node(nbformat.read(path, as_version=4))
    return body
