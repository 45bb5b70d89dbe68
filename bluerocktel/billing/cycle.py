"""The steps of a billing run, each a plain function; ``pipelines/billing_cycle.ipynb`` calls them.

::

    ctx = prepare_run(data_dir, "2026-03", dry_run=False)   # opens the workbench, the BillingRun row
    rate_usage(ctx)                                         # rate what the lake has not rated yet
    drafts = build_drafts(ctx)                              # pure: lines, VAT, totals per account
    control_report(ctx, drafts)                             # the Excel control report (report.py)
    issue_invoices(ctx, drafts)                             # numbers + invoices, 100 per transaction
    render_documents(ctx)                                   # one branded PDF per invoice without one
    email_invoices(ctx)                                     # one e-mail per invoice of the run, sent
    finish_run(ctx)                                         # status and summary on the BillingRun

A dry run computes and reports but issues, renders and e-mails nothing. An account already
invoiced for the period is skipped (unique ``account + period_start + kind``), so a run can be
repeated. Re-rating adjustments and one-off charges not billed yet become lines; issuing the
invoice marks them billed (``invoice_id``) in the same transaction.

**Resuming.** ``BillingRun.step`` records the last step finished (:data:`STEPS`) and the run's
summary keeps what a resumed run must reuse (the issue date, the report's totals). Each step is
idempotent: issuing skips the accounts this run invoiced already, rendering takes the invoices
without a PDF, e-mailing those without an e-mail. So a run killed at any point, resumed with
the same ``run_id``, ends as it would have: same invoices, same numbers. The process running a
run holds a shared lock on ``DATA_DIR/runs/<id>/run.lock``; a resume takes it exclusively first,
so a run whose process is gone never blocks its resume and a live one is never resumed twice.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.audit import record_audit
from bluerocktel.billing.charges import DraftInvoice, active_days, build_draft_invoice
from bluerocktel.billing.numbering import allocate_invoice_numbers
from bluerocktel.billing.periods import Period, parse_period
from bluerocktel.billing.usage import PeriodUsage, read_period_usage, read_unbilled_adjustments
from bluerocktel.db.models import (Account, AuditEntry, BillingRun, Brand, Contract, Discount, EmailMessage,
                                   Invoice, InvoiceLine, OneOffCharge, RatingAdjustment, Service, utcnow)
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.money import D, format_minor
from bluerocktel.rating import rate_pending
from bluerocktel.rating.pending import rating_lock
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import BillingRunStatus, ContactRole, InvoiceKind, InvoiceStatus
from bluerocktel.workbench import Workbench

if TYPE_CHECKING:
    from bluerocktel.billing.report import ControlReport
    from bluerocktel.documents.batch import DocumentPipeline

STEPS = ("rated", "drafted", "reported", "issued", "rendered", "emailed", "finished")
KILL_ENV = "BLUEROCKTEL_TEST_KILL_AFTER"


@dataclass(frozen=True)
class BillingIssue:
    """A problem found while billing, reported in the control report and the run summary."""

    account_number: str | None
    account_name: str | None
    issue: str
    kind: str = "not_billed"


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
    step: str | None = None                                      # last step finished before this process
    rating: dict | None = None
    drafts: list[DraftInvoice] = field(default_factory=list)
    issues: list[BillingIssue] = field(default_factory=list)
    # rated usage of the period left off every draft, and why: {"account_id", "calls", "price_micro", "reason"}
    carried_over: list[dict] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)              # invoice numbers issued by this process
    skipped: list[dict] = field(default_factory=list)           # {"account", "reason"}
    documents: list[str] = field(default_factory=list)          # PDF paths relative to data_dir
    report: "ControlReport | None" = None
    documents_pipeline: "DocumentPipeline | None" = None         # rendering while issuing, issue → render
    rating_hold: ExitStack = field(default_factory=ExitStack)   # the rating lock, rate_usage → issue_invoices
    run_hold: ExitStack = field(default_factory=ExitStack)      # the run lock, prepare_run → finish_run

    def done(self, step: str) -> bool:
        """Whether ``step`` was finished before this process took the run over (a resumed run)."""
        return self.step is not None and STEPS.index(self.step) >= STEPS.index(step)


def parse_bool(value: bool | str) -> bool:
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


def run_lock_path(wb: Workbench, run_id: int) -> Path:
    folder = wb.runs_dir / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "run.lock"


def hold_run_lock(wb: Workbench, run_id: int, *, exclusive: bool = False) -> IO | None:
    """Lock run ``run_id`` for this process: shared (any number of processes working on the run),
    or exclusive without waiting (a resume: None when a live process still holds the run).
    The lock lasts while the returned file is open; the kernel drops it when the process dies."""
    fh = open(run_lock_path(wb, run_id), "a")
    try:
        fcntl.flock(fh, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def prepare_run(data_dir: str | os.PathLike, period: str, dry_run: bool | str = False,
                run_id: int | str | None = None, brand_code: str | None = None, *,
                issue_date: str | dt.date | None = None, actor: str = "billing") -> RunContext:
    """Open the workbench and the run: parse the parameters; create the BillingRun if ``run_id`` is empty.

    A run created or continued here keeps its issue date in its summary, so that a resumed run
    issues on the date it started with.
    """
    parsed = parse_period(period)
    dry = parse_bool(dry_run)
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
                                 status=BillingRunStatus.RUNNING, started_by=actor, summary={})
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
            stored = (run.summary or {}).get("issue_date")
            issue_date = dt.date.fromisoformat(stored) if stored else (issue_date or _today())
            if not stored:
                run.summary = {**(run.summary or {}), "issue_date": issue_date.isoformat()}
            ctx = RunContext(wb=wb, period=parsed, dry_run=dry, run_id=run.id, brand_code=brand_code,
                             brand_id=brand_id, issue_date=issue_date, actor=actor, step=run.step)
        ctx.run_hold.enter_context(hold_run_lock(wb, ctx.run_id))
    except BaseException:
        wb.close()
        raise
    return ctx


def _record_step(ctx: RunContext, step: str, **values) -> None:
    """Record ``step`` as finished (never moving back) and merge ``values`` into the run's summary."""
    with ctx.wb.db.transaction() as s:
        run = s.get(BillingRun, ctx.run_id)
        if run.step is None or STEPS.index(run.step) < STEPS.index(step):
            run.step = step
        if values:
            run.summary = {**(run.summary or {}), **values}
    _kill_point("step", step)


def _kill_point(stage: str, count: int | str) -> None:
    """Test hook: ``BLUEROCKTEL_TEST_KILL_AFTER=issue:3`` ends the process at once after its 3rd
    invoice is committed (``step:rendered``: once that step is recorded), as ``kill -9`` would."""
    if os.environ.get(KILL_ENV) == f"{stage}:{count}":
        os._exit(137)


def _kill_count(stage: str) -> int | None:
    """The count of the test hook for ``stage`` (``issue:3`` → 3), if set."""
    name, _, count = os.environ.get(KILL_ENV, "").partition(":")
    return int(count) if name == stage and count.isdigit() else None


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
    _record_step(ctx, "rated")
    return ctx.rating


def _by_account(rows) -> dict[int, list]:
    grouped: dict[int, list] = defaultdict(list)
    for row in rows:
        grouped[row.account_id].append(row)
    return grouped


def _carried(account_id: int, totals: list, reason: str) -> dict:
    return {"account_id": account_id, "calls": sum(u.calls for u in totals),
            "price_micro": sum(u.price_micro for u in totals), "reason": reason}


def build_drafts(ctx: RunContext) -> list[DraftInvoice]:
    """Draft invoices of every account with something to bill in the period (nothing written).

    Rated usage of the period is either on a draft's usage lines or in ``ctx.carried_over``
    with its reason (an account with no active service, an unknown account), never lost.
    """
    usage: PeriodUsage = read_period_usage(ctx.wb.lake_dir, ctx.period)
    rated = usage.rated_by_account()
    default_vat = D(get_setting("vat_rate"))
    drafts: list[DraftInvoice] = []
    issues: list[BillingIssue] = []
    carried: list[dict] = []
    with ctx.wb.db.session() as s:
        query = (sa.select(Account).options(selectinload(Account.services).selectinload(Service.product))
                 .order_by(Account.number))
        if ctx.brand_id is not None:
            query = query.where(Account.brand_id == ctx.brand_id)
        accounts = s.scalars(query).all()
        adjustments = read_unbilled_adjustments(s, ctx.period)
        charges = _by_account(s.scalars(sa.select(OneOffCharge).where(
            OneOffCharge.invoice_id.is_(None), OneOffCharge.charge_date < ctx.period.period_end)
            .order_by(OneOffCharge.charge_date, OneOffCharge.id)))
        discounts = _by_account(s.scalars(sa.select(Discount).order_by(Discount.id)))
        contracts = _by_account(s.scalars(sa.select(Contract).order_by(Contract.id)))
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
                                           f"not billed", "usage_without_service"))
                carried.append(_carried(account.id, account_usage, "usage_without_service"))
                account_usage = []
            draft = build_draft_invoice(account, account.services, account_usage, ctx.period, default_vat,
                                        anomalies, adjustments.pop(account.id, []),
                                        charges=charges.get(account.id, ()), discounts=discounts.get(account.id, ()),
                                        contracts=contracts.get(account.id, ()))
            if draft.lines:
                drafts.append(draft)
            issues.extend(BillingIssue(account.number, account.name, a) for a in draft.anomalies
                          if not draft.lines)
        if ctx.brand_id is None:
            # With a brand filter, what is left belongs to other brands; without, to no account at all.
            for account_id, totals in rated.items():
                issues.append(BillingIssue(None, None, f"{sum(u.calls for u in totals)} rated call(s) for "
                                                       f"unknown account id {account_id}; not billed"))
                carried.append(_carried(account_id, totals, "unknown_account"))
            for account_id, calls in usage.unrated_calls.items():
                issues.append(BillingIssue(None, None, f"{calls} unrated call(s) for unknown account id "
                                                       f"{account_id}"))
            if usage.unassigned_calls:
                issues.append(BillingIssue(None, None, f"{usage.unassigned_calls} call(s) matched no service "
                                                       f"(unassigned); not billed"))
    ctx.drafts = drafts
    ctx.issues = issues
    ctx.carried_over = carried
    _record_step(ctx, "drafted")
    return drafts


def control_report(ctx: RunContext, drafts: list[DraftInvoice]) -> "ControlReport":
    """The control report (:mod:`bluerocktel.billing.report`), written to
    ``DATA_DIR/runs/<id>/control_report.xlsx`` and recorded on the run with its totals.

    A resumed run that had written it already reads it back instead: drafting again after some
    invoices were issued would no longer show what was approved and issued.
    """
    from bluerocktel.billing.report import build_control_report, read_xlsx, write_xlsx

    path = ctx.wb.runs_dir / str(ctx.run_id) / "control_report.xlsx"
    if ctx.done("reported") and path.is_file():
        ctx.report = read_xlsx(path)
        return ctx.report
    ctx.report = build_control_report(ctx, drafts)
    write_xlsx(ctx.report, path)
    with ctx.wb.db.transaction() as s:
        s.get(BillingRun, ctx.run_id).report_path = path.relative_to(ctx.wb.data_dir).as_posix()
    _record_step(ctx, "reported", **ctx.report.summary_values())
    return ctx.report


ISSUE_BATCH = 100       # invoices per issuing transaction


def issue_invoices(ctx: RunContext, drafts: list[DraftInvoice]) -> list[str]:
    """Issue the drafts in account order, :data:`ISSUE_BATCH` per transaction (numbers, invoices,
    lines, audit, billed adjustments and charges, account credit); nothing in a dry run.

    A transaction commits all of its invoices or none, numbers included, so the numbering stays
    gapless and a run killed at any point, run again, issues the same invoices with the same numbers.
    An account already invoiced for the period (by an earlier or a concurrent run) is skipped; an
    account this run invoiced before it was interrupted is neither issued again nor reported as
    skipped. From :data:`~bluerocktel.documents.batch.PIPELINE_FROM` invoices on, worker processes
    start rendering the documents of each committed batch while the next ones are issued
    (:func:`render_documents` waits for them).
    """
    if ctx.dry_run:
        return []
    with ctx.rating_hold:     # released at the end, however issuing ends
        issued = _issue_all(ctx, drafts)
    _record_step(ctx, "issued")
    return issued


def _issue_all(ctx: RunContext, drafts: list[DraftInvoice]) -> list[str]:
    from bluerocktel.documents.batch import PIPELINE_FROM, DocumentPipeline, default_workers

    with ctx.wb.db.session() as s:
        mine = set(s.scalars(sa.select(Invoice.account_id).where(
            Invoice.billing_run_id == ctx.run_id, Invoice.kind == InvoiceKind.INVOICE)))
    todo = sorted((d for d in drafts if d.account_id not in mine), key=lambda d: d.account_number)
    if len(todo) >= PIPELINE_FROM and ctx.documents_pipeline is None and default_workers(len(todo)) > 1:
        ctx.documents_pipeline = DocumentPipeline(ctx.wb, default_workers(len(todo)), annex=False)
    issued: list[str] = []
    for batch in _batches(todo, ISSUE_BATCH, _kill_count("issue")):
        try:
            numbers = _issue_batch(ctx, batch)
        except sa.exc.IntegrityError:
            # a concurrent run inserted one of these invoices first: one transaction per draft finds which
            numbers = {}
            for draft in batch:
                try:
                    numbers.update(_issue_batch(ctx, [draft]))
                except sa.exc.IntegrityError:
                    ctx.skipped.append({"account": draft.account_number, "reason": ALREADY_INVOICED})
        issued.extend(numbers.values())
        if ctx.documents_pipeline is not None:
            ctx.documents_pipeline.submit(list(numbers))
        _kill_point("issue", len(issued))
    ctx.issued.extend(issued)
    return issued


def _batches(drafts: list[DraftInvoice], size: int, cut: int | None) -> list[list[DraftInvoice]]:
    """``drafts`` in slices of ``size``; with the test hook's count ``cut``, a slice also ends there."""
    bounds = sorted({*range(0, len(drafts), size), *([cut] if cut and cut < len(drafts) else [])})
    return [drafts[a:b] for a, b in zip(bounds, [*bounds[1:], len(drafts)])]


ALREADY_INVOICED = "already invoiced for this period"
_BILLED_ONCE = ((RatingAdjustment, "adjustment_ids", "re-rating adjustments"),
                (OneOffCharge, "charge_ids", "one-off charges"))


def _issue_batch(ctx: RunContext, drafts: list[DraftInvoice]) -> dict[int, str]:
    """Issue ``drafts`` in one transaction; ``{invoice id: number}`` of those issued, in order.

    The sequence rows of the drafts' brands are locked first (PostgreSQL row locks, SQLite's write
    lock), so the checks below see every invoice a concurrent run committed: a draft whose account
    is invoiced already, or whose adjustments or charges another run billed meanwhile, is skipped
    (``ctx.skipped`` once committed) before any number is taken. Then a few bulk statements write
    the invoices, their lines and audit entries; the account credit is applied where there is some.
    """
    from bluerocktel.billing.payments import accounts_with_credit, apply_account_credit
    from bluerocktel.documents.parties import party_snapshot_buyer, party_snapshot_seller

    with ctx.wb.db.transaction() as s:
        brands = {b.id: b for b in s.scalars(sa.select(Brand).where(Brand.id.in_({d.brand_id for d in drafts})))}
        for brand_id in sorted(brands):
            allocate_invoice_numbers(s, brands[brand_id], ctx.issue_date.year, 0)       # lock, no number yet
        drafts, skipped = _issuable(s, drafts)
        accounts = {a.id: a for a in s.scalars(sa.select(Account).where(
            Account.id.in_([d.account_id for d in drafts])))}
        numbers = {brand_id: iter(allocate_invoice_numbers(s, brands[brand_id], ctx.issue_date.year,
                                                           sum(1 for d in drafts if d.brand_id == brand_id)))
                   for brand_id in sorted(brands)}
        sellers = {brand_id: party_snapshot_seller(brand) for brand_id, brand in brands.items()}
        rows = [dict(
            number=next(numbers[draft.brand_id]), kind=InvoiceKind.INVOICE, status=InvoiceStatus.ISSUED,
            account_id=draft.account_id, brand_id=draft.brand_id, billing_run_id=ctx.run_id, currency=draft.currency,
            period_start=draft.period_start, period_end=draft.period_end, issue_date=ctx.issue_date,
            due_date=ctx.issue_date + dt.timedelta(days=int(accounts[draft.account_id].payment_terms_days)),
            subtotal_minor=draft.subtotal_minor, vat_minor=draft.vat_minor, total_minor=draft.total_minor,
            language=draft.language, vat_regime=draft.vat_regime, seller=sellers[draft.brand_id],
            buyer=party_snapshot_buyer(accounts[draft.account_id])) for draft in drafts]
        ids = list(s.scalars(sa.insert(Invoice).returning(Invoice.id, sort_by_parameter_order=True), rows)
                   ) if rows else []
        lines = [dict(invoice_id=invoice_id, position=i, kind=line.kind, description=line.description,
                      product_id=line.product_id, service_id=line.service_id, zone=line.zone, quantity=line.quantity,
                      unit=line.unit, unit_price_precise=line.unit_price_precise, amount_precise=line.amount_precise,
                      amount_minor=line.amount_minor, vat_rate=line.vat_rate)
                 for invoice_id, draft in zip(ids, drafts) for i, line in enumerate(draft.lines, 1)]
        if lines:
            s.execute(sa.insert(InvoiceLine), lines)
        for invoice_id, draft in zip(ids, drafts):
            for model, attr, _ in _BILLED_ONCE:
                _mark_billed(s, model, getattr(draft, attr), invoice_id)
        if rows:
            s.execute(sa.insert(AuditEntry), [dict(
                actor=ctx.actor, action="invoice.issue", target_type="invoice", target_id=str(invoice_id),
                details=dict(number=row["number"], account=draft.account_number, period=ctx.period.label,
                             total_minor=draft.total_minor, currency=draft.currency, billing_run_id=ctx.run_id))
                for invoice_id, row, draft in zip(ids, rows, drafts)])
        for account_id in sorted(accounts_with_credit(s, list(accounts))):
            apply_account_credit(s, account_id)
    ctx.skipped.extend(skipped)
    return {invoice_id: row["number"] for invoice_id, row in zip(ids, rows)}


def _issuable(s, drafts: list[DraftInvoice]) -> tuple[list[DraftInvoice], list[dict]]:
    """``drafts`` less those of accounts invoiced for the period already and those whose adjustments or
    one-off charges were billed meanwhile; and those left out, with why (``{"account", "reason"}``)."""
    invoiced = set(s.execute(sa.select(Invoice.account_id, Invoice.period_start).where(
        Invoice.account_id.in_([d.account_id for d in drafts]), Invoice.kind == InvoiceKind.INVOICE,
        Invoice.period_start.in_({d.period_start for d in drafts}))).all())
    billed = {}
    for model, attr, _ in _BILLED_ONCE:
        ids = [i for d in drafts for i in getattr(d, attr)]
        billed[attr] = set(s.scalars(sa.select(model.id).where(model.id.in_(ids), model.invoice_id.is_not(None)))
                           ) if ids else set()
    keep, skipped = [], []
    for draft in drafts:
        taken = next((what for _, attr, what in _BILLED_ONCE if billed[attr].intersection(getattr(draft, attr))),
                     None)
        if (draft.account_id, draft.period_start) in invoiced:
            skipped.append({"account": draft.account_number, "reason": ALREADY_INVOICED})
        elif taken:
            skipped.append({"account": draft.account_number,
                            "reason": f"its {taken} were billed by another run meanwhile; run again"})
        else:
            keep.append(draft)
    return keep, skipped


def _mark_billed(s, model, ids, invoice_id: int) -> None:
    """Set ``invoice_id`` on the rows ``ids`` of ``model`` (none billed yet: :func:`_issuable` checked)."""
    if not ids:
        return
    marked = s.execute(sa.update(model).where(model.id.in_(ids), model.invoice_id.is_(None))
                       .values(invoice_id=invoice_id).execution_options(synchronize_session=False)).rowcount
    if marked != len(ids):
        raise RuntimeError(f"{model.__tablename__} {ids}: some were billed meanwhile, under the issuing lock")


def render_documents(ctx: RunContext, workers: int | None = None) -> list[str]:
    """The Factur-X PDF of each invoice of the period that has none yet (parallel, atomic writes:
    :mod:`bluerocktel.documents.batch`), in number order; waits for those :func:`issue_invoices`
    started rendering. An interrupted run re-renders only what has no ``pdf_path``. The call-detail
    annex is rendered on demand (:func:`email_invoices`). Nothing in a dry run."""
    if ctx.dry_run:
        return []
    from bluerocktel.documents.batch import DocumentPipeline, default_workers

    with ctx.wb.db.session() as s:
        query = (sa.select(Invoice.id).where(Invoice.period_start == ctx.period.period_start,
                                             Invoice.pdf_path.is_(None)).order_by(Invoice.number))
        if ctx.brand_id is not None:
            query = query.where(Invoice.brand_id == ctx.brand_id)
        pending = list(s.scalars(query))
    pipeline, ctx.documents_pipeline = ctx.documents_pipeline, None
    if pipeline is None:
        pipeline = DocumentPipeline(ctx.wb, default_workers(len(pending)) if workers is None else workers,
                                    annex=False)
    try:
        pipeline.submit(pending)
        rendered = sorted(pdf for _, pdf, _ in pipeline.finish())
    finally:
        pipeline.close()
    ctx.documents.extend(rendered)
    _record_step(ctx, "rendered")
    return rendered


_EMAIL_TEXT = {
    "fr": ("Votre facture {number}",
           "Bonjour,\n\nVeuillez trouver ci-joint votre facture {number} du {issue_date} d'un montant de {total}, "
           "à régler avant le {due_date}.\n\nCordialement,\n{brand}\n"),
    "en": ("Your invoice {number}",
           "Hello,\n\nPlease find attached your invoice {number} of {issue_date} for {total}, due by {due_date}."
           "\n\nKind regards,\n{brand}\n"),
}


def invoice_recipients(account: Account) -> list[str]:
    """Who receives the account's invoices: its billing contacts with an e-mail, else the account's e-mail."""
    billing = [c.email for c in sorted(account.contacts, key=lambda c: c.id)
               if c.role == ContactRole.BILLING and c.email]
    return billing or ([account.email] if account.email else [])


def email_invoices(ctx: RunContext) -> dict:
    """Queue one e-mail per invoice of this run (PDF and annex attached) to the account's billing
    contacts and send the outbox (:mod:`bluerocktel.mail` stamps ``sent_at`` on the invoices whose
    e-mail went out). The annexes are rendered here, those of the invoices to queue only (kept for
    later downloads). An invoice queued before (a resumed run) is not queued again; nothing in a dry run."""
    from bluerocktel.documents.batch import render_annexes
    from bluerocktel.mail import queue_email, send_queued

    if ctx.dry_run:
        return {}
    with ctx.wb.db.session() as s:
        ids = list(s.scalars(sa.select(Invoice.id).where(Invoice.billing_run_id == ctx.run_id)
                             .order_by(Invoice.number)))
        queued = _queued(s, ids)
    render_annexes(ctx.wb, [i for i in ids if i not in queued])
    no_recipient: list[str] = []
    with ctx.wb.db.transaction() as s:
        invoices = s.scalars(sa.select(Invoice).where(Invoice.billing_run_id == ctx.run_id)
                             .options(selectinload(Invoice.account).selectinload(Account.contacts),
                                      selectinload(Invoice.brand))
                             .order_by(Invoice.number)).all()
        queued = _queued(s, [i.id for i in invoices])
        for invoice in invoices:
            if invoice.id in queued:
                continue
            recipients = invoice_recipients(invoice.account)
            if not recipients:
                no_recipient.append(invoice.number)
                continue
            subject, body = _EMAIL_TEXT.get(invoice.language, _EMAIL_TEXT["fr"])
            fields = {"number": invoice.number, "issue_date": invoice.issue_date.isoformat(),
                      "due_date": invoice.due_date.isoformat(), "brand": invoice.brand.name,
                      "total": format_minor(invoice.total_minor, invoice.currency, invoice.language)}
            queue_email(s, ", ".join(recipients), subject.format(**fields), body.format(**fields),
                        attachments=[p for p in (invoice.pdf_path, invoice.annex_path) if p],
                        related=("invoice", invoice.id))
    sent = send_queued(ctx.wb)        # marks each invoice e-mailed ``sent`` with its ``sent_at``
    result = {"outbox": sent, "no_recipient": no_recipient}
    _record_step(ctx, "emailed", emails_without_recipient=no_recipient)
    return result


def _queued(s, invoice_ids) -> set[int]:
    """Those of ``invoice_ids`` with an e-mail queued already."""
    return {int(i) for i in s.scalars(sa.select(EmailMessage.related_id).where(
        EmailMessage.related_type == "invoice", EmailMessage.related_id.in_([str(i) for i in invoice_ids])))}


def _totals(invoices: list[tuple[str, int, int, int]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"subtotal_minor": 0, "vat_minor": 0, "total_minor": 0})
    for currency, subtotal, vat, total in invoices:
        totals[currency]["subtotal_minor"] += subtotal
        totals[currency]["vat_minor"] += vat
        totals[currency]["total_minor"] += total
    return dict(totals)


def draft_summary(ctx: RunContext) -> dict:
    """What the drafts add up to: accounts, totals per currency and the anomalies (the report's when written)."""
    return {
        "accounts": len(ctx.drafts),
        "totals": _totals([(d.currency, d.subtotal_minor, d.vat_minor, d.total_minor) for d in ctx.drafts]),
        "account_totals": {d.account_number: d.total_minor for d in ctx.drafts},
        "carried_over": ctx.carried_over,
        "anomalies": [asdict(i) for i in ctx.issues]
                     + [{"account_number": d.account_number, "account_name": d.account_name, "issue": a,
                         "kind": "draft"} for d in ctx.drafts for a in d.anomalies],
    }


def finish_run(ctx: RunContext) -> dict:
    """Mark the run completed (previewed for a dry run) and store its summary; the summary is returned.

    What was issued is read from the invoices of the run, so a resumed run reports all of them.
    """
    try:
        with ctx.wb.db.transaction() as s:
            run = s.get(BillingRun, ctx.run_id)
            issued = s.execute(sa.select(Invoice.number, Invoice.currency, Invoice.subtotal_minor, Invoice.vat_minor,
                                         Invoice.total_minor, Invoice.pdf_path)
                               .where(Invoice.billing_run_id == ctx.run_id).order_by(Invoice.number)).all()
            summary = {
                "period": ctx.period.label, "brand": ctx.brand_code, "dry_run": ctx.dry_run,
                **draft_summary(ctx), **(run.summary or {}),
                "issue_date": ctx.issue_date.isoformat(),
                "invoices_issued": len(issued),
                "numbers": [issued[0].number, issued[-1].number] if issued else [],
                "issued_totals": _totals([tuple(row[1:5]) for row in issued]),
                "documents": sum(1 for row in issued if row.pdf_path),
                "skipped": ctx.skipped,
                "rating": ctx.rating,
            }
            run.status = BillingRunStatus.PREVIEWED if ctx.dry_run else BillingRunStatus.COMPLETED
            run.finished_at = utcnow()
            run.step = "finished"
            run.summary = summary
    finally:
        if ctx.documents_pipeline is not None:      # render_documents was not called
            ctx.documents_pipeline.close()
            ctx.documents_pipeline = None
        ctx.run_hold.close()
    return summary
