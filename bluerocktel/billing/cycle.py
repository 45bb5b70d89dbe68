"""The steps of a billing run, each a plain function; ``pipelines/billing_cycle.ipynb`` calls them.

::

    ctx = prepare_run(data_dir, "2026-03", dry_run=False)   # opens the workbench, the BillingRun row
    rate_usage(ctx)                                         # rate what the lake has not rated yet
    drafts = build_drafts(ctx)                              # pure: lines, VAT, totals per account
    control_report(ctx, drafts)                             # one row per account, for a human
    issue_invoices(ctx, drafts)                             # numbers + invoices, one transaction each
    render_documents(ctx)                                   # one branded PDF per invoice without one
    finish_run(ctx)                                         # status and summary on the BillingRun

A dry run computes and reports but issues and renders nothing. An account already invoiced for
the period is skipped (unique ``account + period_start + kind``), so a run can be repeated.
Re-rating adjustments of earlier months not billed yet become ``adjustment`` lines; issuing the
invoice marks them billed (``invoice_id``) in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.audit import record_audit
from bluerocktel.billing.charges import DraftInvoice, active_days, build_draft_invoice
from bluerocktel.billing.numbering import allocate_invoice_number
from bluerocktel.billing.periods import Period, parse_period
from bluerocktel.billing.usage import PeriodUsage, read_period_usage, read_unbilled_adjustments
from bluerocktel.db.models import (Account, BillingRun, Brand, Invoice, InvoiceLine, RatingAdjustment, Service,
                                   utcnow)
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.money import D
from bluerocktel.rating import rate_pending
from bluerocktel.rating.pending import rating_lock
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import BillingRunStatus, InvoiceKind, InvoiceStatus
from bluerocktel.workbench import Workbench

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class BillingIssue:
    """A problem found while billing, reported in the control report and the run summary."""

    account_number: str | None
    account_name: str | None
    issue: str


@dataclass
class RunContext:
    """One billing run: the opened workbench, its parameters and what the steps did so far."""

    wb: Workbench
    period: Period
    dry_run: bool
    run_id: int
    brand_code: str | None
    brand_id: int | None
    issue_date: dt.date
    actor: str = "billing"
    rating: dict | None = None
    drafts: list[DraftInvoice] = field(default_factory=list)
    issues: list[BillingIssue] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)              # invoice numbers, in order
    issued_amounts: list[tuple[str, int, int, int]] = field(default_factory=list)  # currency, subtotal, vat, total
    skipped: list[dict] = field(default_factory=list)           # {"account", "reason"}
    documents: list[str] = field(default_factory=list)          # PDF paths relative to data_dir
    rating_hold: ExitStack = field(default_factory=ExitStack)   # the rating lock, rate_usage → issue_invoices


def _parse_bool(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y"):
        return True
    if text in ("0", "false", "no", "n", ""):
        return False
    raise UserFacingError(f"dry_run must be true or false, got {value!r}")


def _today() -> dt.date:
    return dt.datetime.now(ZoneInfo(get_setting("default_timezone"))).date()


def prepare_run(data_dir: str | os.PathLike, period: str, dry_run: bool | str = False,
                run_id: int | str | None = None, brand_code: str | None = None, *,
                issue_date: str | dt.date | None = None, actor: str = "billing") -> RunContext:
    """Open the workbench and the run: parse the parameters; create the BillingRun if ``run_id`` is empty."""
    parsed = parse_period(period)
    dry = _parse_bool(dry_run)
    brand_code = (brand_code or "").strip() or None
    if isinstance(issue_date, str):
        issue_date = dt.date.fromisoformat(issue_date) if issue_date.strip() else None
    wb = Workbench.open(data_dir)
    try:
        with wb.db.transaction() as s:
            brand_id = None
            if brand_code:
                brand_id = s.scalar(sa.select(Brand.id).where(Brand.code == brand_code))
                if brand_id is None:
                    raise NotFoundError(f"no brand with code {brand_code!r}")
            if run_id in (None, ""):
                run = BillingRun(period=parsed.label, brand_code=brand_code, dry_run=dry,
                                 status=BillingRunStatus.RUNNING, started_by=actor)
                s.add(run)
                s.flush()
                record_audit(s, actor, "billing.run", "billing_run", run.id, period=parsed.label,
                             dry_run=dry, brand=brand_code)
            else:
                run = s.get(BillingRun, int(run_id))
                if run is None:
                    raise NotFoundError(f"no billing run {run_id}")
                if (run.period, run.dry_run, run.brand_code) != (parsed.label, dry, brand_code):
                    raise UserFacingError(f"billing run {run.id} is for {run.period} (dry run: {run.dry_run}, "
                                          f"brand: {run.brand_code}), not for these parameters")
                if run.status != BillingRunStatus.RUNNING:
                    raise UserFacingError(f"billing run {run.id} is {run.status} already")
            run_pk = run.id
    except BaseException:
        wb.close()
        raise
    return RunContext(wb=wb, period=parsed, dry_run=dry, run_id=run_pk, brand_code=brand_code,
                      brand_id=brand_id, issue_date=issue_date or _today(), actor=actor)


def rate_usage(ctx: RunContext) -> dict:
    """Rate the period's CDRs not rated yet.

    Unless this is a dry run, the rating lock is then held until :func:`issue_invoices` ends:
    a ``rate`` or ``rating rerate`` meanwhile waits, then finds the invoices issued and turns
    what it prices into adjustments, instead of landing between the drafts and the invoices,
    where nothing would bill it.
    """
    ctx.rating = rate_pending(ctx.wb, months=[ctx.period.label]).as_dict()
    if not ctx.dry_run:
        ctx.rating_hold.enter_context(rating_lock(ctx.wb.lake_dir))
    return ctx.rating


def build_drafts(ctx: RunContext) -> list[DraftInvoice]:
    """Draft invoices of every account with something to bill in the period (nothing written)."""
    usage: PeriodUsage = read_period_usage(ctx.wb.lake_dir, ctx.period)
    rated = usage.rated_by_account()
    default_vat = D(get_setting("vat_rate"))
    drafts: list[DraftInvoice] = []
    issues: list[BillingIssue] = []
    with ctx.wb.db.session() as s:
        query = (sa.select(Account).options(selectinload(Account.services).selectinload(Service.product))
                 .order_by(Account.number))
        if ctx.brand_id is not None:
            query = query.where(Account.brand_id == ctx.brand_id)
        accounts = s.scalars(query).all()
        adjustments = read_unbilled_adjustments(s, ctx.period)
        for account in accounts:
            account_usage = rated.pop(account.id, [])
            anomalies = []
            unrated = usage.unrated_calls.pop(account.id, 0)
            if unrated:
                anomalies.append(f"{unrated} call(s) without a rate, not billed")
            if account_usage and not any(active_days(sv, ctx.period) for sv in account.services):
                calls = sum(u.calls for u in account_usage)
                issues.append(BillingIssue(account.number, account.name,
                                           f"{calls} rated call(s) but no service active in {ctx.period.label}; "
                                           f"not billed"))
                account_usage = []
            draft = build_draft_invoice(account, account.services, account_usage, ctx.period, default_vat,
                                        anomalies, adjustments.pop(account.id, []))
            if draft.lines:
                drafts.append(draft)
            issues.extend(BillingIssue(account.number, account.name, a) for a in draft.anomalies
                          if not draft.lines)
        if ctx.brand_id is None:
            # With a brand filter, what is left belongs to other brands; without, to no account at all.
            for account_id, totals in rated.items():
                issues.append(BillingIssue(None, None, f"{sum(u.calls for u in totals)} rated call(s) for "
                                                       f"unknown account id {account_id}; not billed"))
            for account_id, calls in usage.unrated_calls.items():
                issues.append(BillingIssue(None, None, f"{calls} unrated call(s) for unknown account id "
                                                       f"{account_id}"))
            if usage.unassigned_calls:
                issues.append(BillingIssue(None, None, f"{usage.unassigned_calls} call(s) matched no service "
                                                       f"(unassigned); not billed"))
    ctx.drafts = drafts
    ctx.issues = issues
    return drafts


def control_report(ctx: RunContext, drafts: list[DraftInvoice]) -> "pd.DataFrame":
    """A pandas DataFrame, one row per account: lines, subtotal, VAT, total (minor units), anomalies."""
    import pandas as pd

    rows = [{
        "account": d.account_number, "name": d.account_name, "currency": d.currency, "lines": len(d.lines),
        "subtotal_minor": d.subtotal_minor, "vat_minor": d.vat_minor, "total_minor": d.total_minor,
        "anomalies": "; ".join(d.anomalies),
    } for d in drafts]
    for issue in ctx.issues:
        rows.append({"account": issue.account_number, "name": issue.account_name, "currency": None, "lines": 0,
                     "subtotal_minor": 0, "vat_minor": 0, "total_minor": 0, "anomalies": issue.issue})
    columns = ["account", "name", "currency", "lines", "subtotal_minor", "vat_minor", "total_minor", "anomalies"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"lines": "int64", "subtotal_minor": "int64", "vat_minor": "int64", "total_minor": "int64"})


class _AlreadyInvoiced(Exception):
    """Internal: roll back an issuing transaction whose account is invoiced already."""


class _AdjustmentsBilled(Exception):
    """Internal: roll back an issuing transaction whose adjustments another run billed meanwhile."""


def issue_invoices(ctx: RunContext, drafts: list[DraftInvoice]) -> list[str]:
    """Issue each draft in its own transaction (number, invoice, lines, audit); nothing in a dry run.

    An account already invoiced for the period (by an earlier or a concurrent run) is skipped;
    its transaction rolls back, number included, so the numbering stays gapless.
    """
    if ctx.dry_run:
        return []
    with ctx.rating_hold:     # released at the end, however issuing ends
        return _issue_all(ctx, drafts)


def _issue_all(ctx: RunContext, drafts: list[DraftInvoice]) -> list[str]:
    issued: list[str] = []
    for draft in sorted(drafts, key=lambda d: d.account_number):
        try:
            number = _issue_one(ctx, draft)
        except (_AlreadyInvoiced, sa.exc.IntegrityError):
            ctx.skipped.append({"account": draft.account_number, "reason": "already invoiced for this period"})
            continue
        except _AdjustmentsBilled:
            ctx.skipped.append({"account": draft.account_number,
                                "reason": "its re-rating adjustments were billed by another run meanwhile; run again"})
            continue
        issued.append(number)
        ctx.issued_amounts.append((draft.currency, draft.subtotal_minor, draft.vat_minor, draft.total_minor))
    ctx.issued.extend(issued)
    return issued


def _issue_one(ctx: RunContext, draft: DraftInvoice) -> str:
    with ctx.wb.db.transaction() as s:
        brand = s.get(Brand, draft.brand_id)
        # The number first: its row lock (PostgreSQL) or the write lock (SQLite) serializes the
        # check below with any concurrent run, and a rollback returns the number.
        number = allocate_invoice_number(s, brand, ctx.issue_date.year)
        already = s.scalar(sa.select(Invoice.id).where(
            Invoice.account_id == draft.account_id, Invoice.period_start == draft.period_start,
            Invoice.kind == InvoiceKind.INVOICE))
        if already is not None:
            raise _AlreadyInvoiced(draft.account_number)
        account = s.get(Account, draft.account_id)
        invoice = Invoice(
            number=number, kind=InvoiceKind.INVOICE, status=InvoiceStatus.ISSUED, account_id=account.id,
            brand_id=brand.id, billing_run_id=ctx.run_id, currency=draft.currency,
            period_start=draft.period_start, period_end=draft.period_end, issue_date=ctx.issue_date,
            due_date=ctx.issue_date + dt.timedelta(days=int(account.payment_terms_days)),
            subtotal_minor=draft.subtotal_minor, vat_minor=draft.vat_minor, total_minor=draft.total_minor)
        invoice.lines = [InvoiceLine(
            position=i, kind=line.kind, description=line.description, product_id=line.product_id,
            service_id=line.service_id, zone=line.zone, quantity=line.quantity, unit=line.unit,
            unit_price_precise=line.unit_price_precise, amount_precise=line.amount_precise,
            amount_minor=line.amount_minor, vat_rate=line.vat_rate) for i, line in enumerate(draft.lines, 1)]
        s.add(invoice)
        s.flush()
        if draft.adjustment_ids:
            marked = s.execute(
                sa.update(RatingAdjustment)
                .where(RatingAdjustment.id.in_(draft.adjustment_ids), RatingAdjustment.invoice_id.is_(None))
                .values(invoice_id=invoice.id).execution_options(synchronize_session=False)).rowcount
            if marked != len(draft.adjustment_ids):
                raise _AdjustmentsBilled(draft.account_number)
        record_audit(s, ctx.actor, "invoice.issue", "invoice", invoice.id, number=number,
                     account=account.number, period=ctx.period.label, total_minor=draft.total_minor,
                     currency=draft.currency, billing_run_id=ctx.run_id)
        return number


PARALLEL_RENDER_FROM = 32   # invoices; fewer are rendered in-process (a worker costs ~1 s to start)
RENDER_BATCH = 200


def render_documents(ctx: RunContext, workers: int | None = None) -> list[str]:
    """A PDF for each invoice of the period that has none yet: ``DATA_DIR/documents/invoices/<number>.pdf``.

    HTML is built here; WeasyPrint (the slow part) runs in ``workers`` processes, by default one
    per core (at most 4) when there are at least :data:`PARALLEL_RENDER_FROM` invoices. Files are
    written atomically, then ``pdf_path`` is set batch by batch; an interrupted run re-renders
    only what has no ``pdf_path``.
    """
    if ctx.dry_run:
        return []
    from bluerocktel.documents.invoice import html_to_pdf, render_invoice_html

    folder = ctx.wb.documents_dir / "invoices"
    folder.mkdir(parents=True, exist_ok=True)
    with ctx.wb.db.session() as s:
        query = (sa.select(Invoice.id).where(Invoice.period_start == ctx.period.period_start,
                                             Invoice.pdf_path.is_(None)).order_by(Invoice.number))
        if ctx.brand_id is not None:
            query = query.where(Invoice.brand_id == ctx.brand_id)
        pending = list(s.scalars(query))
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(pending) >= PARALLEL_RENDER_FROM else 1
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    rendered: list[str] = []
    try:
        for i in range(0, len(pending), RENDER_BATCH):
            with ctx.wb.db.session() as s:
                invoices = s.scalars(
                    sa.select(Invoice).where(Invoice.id.in_(pending[i:i + RENDER_BATCH]))
                    .options(selectinload(Invoice.lines), selectinload(Invoice.account),
                             selectinload(Invoice.brand))
                    .order_by(Invoice.number)).all()
                pages = [(invoice.id, invoice.number, render_invoice_html(invoice)) for invoice in invoices]
            htmls = [html for _, _, html in pages]
            pdfs = pool.map(html_to_pdf, htmls, chunksize=8) if pool else map(html_to_pdf, htmls)
            done = []
            for (invoice_id, number, _), pdf in zip(pages, pdfs):
                path = folder / f"{number}.pdf"
                _write_atomically(path, pdf)
                done.append((invoice_id, path.relative_to(ctx.wb.data_dir).as_posix()))
            with ctx.wb.db.transaction() as s:
                for invoice_id, relative in done:
                    s.execute(sa.update(Invoice).where(Invoice.id == invoice_id).values(pdf_path=relative))
            rendered.extend(relative for _, relative in done)
    finally:
        if pool is not None:
            pool.shutdown()
    ctx.documents.extend(rendered)
    return rendered


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _totals(invoices: list[tuple[str, int, int, int]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"subtotal_minor": 0, "vat_minor": 0, "total_minor": 0})
    for currency, subtotal, vat, total in invoices:
        totals[currency]["subtotal_minor"] += subtotal
        totals[currency]["vat_minor"] += vat
        totals[currency]["total_minor"] += total
    return dict(totals)


def finish_run(ctx: RunContext) -> dict:
    """Mark the run completed (previewed for a dry run) and store its summary; the summary is returned."""
    with ctx.wb.db.transaction() as s:
        summary = {
            "period": ctx.period.label, "brand": ctx.brand_code, "dry_run": ctx.dry_run,
            "issue_date": ctx.issue_date.isoformat(),
            "accounts": len(ctx.drafts),
            "invoices_issued": len(ctx.issued),
            "numbers": [ctx.issued[0], ctx.issued[-1]] if ctx.issued else [],
            "totals": _totals([(d.currency, d.subtotal_minor, d.vat_minor, d.total_minor) for d in ctx.drafts]),
            "issued_totals": _totals(ctx.issued_amounts),
            "documents": len(ctx.documents),
            "skipped": ctx.skipped,
            "anomalies": [asdict(i) for i in ctx.issues]
                         + [{"account_number": d.account_number, "account_name": d.account_name, "issue": a}
                            for d in ctx.drafts for a in d.anomalies],
            "rating": ctx.rating,
        }
        run = s.get(BillingRun, ctx.run_id)
        run.status = BillingRunStatus.PREVIEWED if ctx.dry_run else BillingRunStatus.COMPLETED
        run.finished_at = utcnow()
        run.summary = summary
    return summary
