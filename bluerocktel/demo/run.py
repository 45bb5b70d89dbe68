"""``bluerocktel demo``: build the demo operator, then import, rate and bill its month of CDRs."""

from __future__ import annotations

from typing import Callable

from sqlalchemy import func, select

from bluerocktel.billing.approval import approve_run
from bluerocktel.billing.pipeline import run_billing_cycle
from bluerocktel.db.models import BillingRun, Brand, CdrFile, Invoice
from bluerocktel.demo.build import (
    DEMO_SOURCE, DemoSummary, build_demo, find_demo, period_bounds, previous_month, write_demo_cdrs,
)
from bluerocktel.demo.cdrs import MALFORMED_LINES
from bluerocktel.demo.data import DEMO_PASSWORD, STAFF_DOMAIN
from bluerocktel.errors import UserFacingError
from bluerocktel.mediation import import_cdr_file
from bluerocktel.money import format_minor
from bluerocktel.rating import rate_pending
from bluerocktel.settings import get_setting


def _brief(result) -> str:
    describe = getattr(result, "describe", None)
    return describe() if callable(describe) else str(result)


def run_demo(wb, accounts: int = 300, cdrs: int = 200_000, period: str | None = None, seed: int = 7,
             out: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the demo in ``wb``, import, rate and bill ``period``; print a summary.

    ``period`` defaults to the previous calendar month (or the period of the demo already in
    the data dir). A data dir holding brands that were not made by the demo is refused.
    """
    with wb.db.session() as s:
        previous = find_demo(s)
        has_brands = bool(s.scalar(select(func.count()).select_from(Brand)))
    if has_brands and previous is None:
        raise UserFacingError(f"the data dir {wb.data_dir} holds an operator's data already: "
                              "run the demo with an empty --data-dir")
    csv_path = wb.data_dir / "incoming" / "Master.csv"
    if previous is not None:
        if period and period != previous["period"]:
            raise UserFacingError(f"the demo in {wb.data_dir} is for {previous['period']}: use --period "
                                  f"{previous['period']} or an empty --data-dir")
        period = previous["period"]
        out(f"reusing the demo built in {wb.data_dir} for {period} (seed {previous['seed']})")
        summary = DemoSummary(**{k: v for k, v in previous.items() if k in DemoSummary.__dataclass_fields__})
        summary.users = _demo_users(wb)
    else:
        period = period or previous_month()
        period_bounds(period)
        out(f"building the demo operator for {period}: {accounts} accounts, {cdrs} CDRs (seed {seed})")
        summary = build_demo(wb, accounts=accounts, cdrs=0, period=period, seed=seed)

    with wb.db.session() as s:
        imported_before = s.scalar(select(func.count()).select_from(CdrFile)
                                   .where(CdrFile.source == DEMO_SOURCE, CdrFile.status == "imported"))
    if not imported_before:
        written = write_demo_cdrs(wb, csv_path, period, cdrs, summary.seed, MALFORMED_LINES)
        out(f"wrote {written.cdrs} CDRs and {written.malformed} deliberately malformed lines to {csv_path}")
        imported = import_cdr_file(wb, csv_path, "asterisk-csv", source=DEMO_SOURCE, actor="demo")
        out(_brief(imported))
    rated = rate_pending(wb)
    out(_brief(rated))

    start, _end = period_bounds(period)
    with wb.db.session() as s:
        billed = s.scalar(select(func.count()).select_from(BillingRun).where(
            BillingRun.period == period, BillingRun.dry_run.is_(False), BillingRun.status == "completed"))
    if not billed:
        # as an operator does it: a dry run, its approval by the billing user, then the issue
        dry = run_billing_cycle(wb, period, dry_run=True, actor="demo")
        out(f"dry run {dry.id} for {period}: {dry.status}; control report {dry.report_path}")
        approve_run(wb, dry.id, f"demo-billing@{STAFF_DOMAIN}")
        run = run_billing_cycle(wb, period, dry_run=False, actor="demo", approved_run_id=dry.id)
        out(f"billing run {run.id} for {period}: {run.status}")
    with wb.db.session() as s:
        rows = s.execute(select(Brand.name, Invoice.currency, func.count(Invoice.id), func.sum(Invoice.subtotal_minor),
                                func.sum(Invoice.total_minor))
                         .join(Brand, Brand.id == Invoice.brand_id)
                         .where(Invoice.period_start == start, Invoice.kind == "invoice")
                         .group_by(Brand.name, Invoice.currency).order_by(Brand.name)).all()
        files = s.execute(select(func.sum(CdrFile.imported), func.sum(CdrFile.quarantined))
                          .where(CdrFile.source == DEMO_SOURCE)).one()

    host, port, dash_port = get_setting("host"), get_setting("port"), get_setting("dashboards_port")
    text = [
        "",
        f"BlueRockTEL demo — {period}",
        f"  accounts: {summary.accounts} ({summary.business_accounts} business, {summary.consumer_accounts} consumer)",
        f"  CDRs: {int(files[0] or 0)} imported, {int(files[1] or 0)} quarantined "
        f"({MALFORMED_LINES} lines are malformed on purpose)",
    ]
    for brand, currency, count, subtotal, total in rows:
        text.append(f"  {brand}: {count} invoices, {format_minor(int(subtotal or 0), currency)} excl. VAT, "
                    f"{format_minor(int(total or 0), currency)} incl. VAT")
    if not rows:
        text.append("  no invoice issued for the period")
    text.append(f"  sign in with (password {DEMO_PASSWORD}):")
    text += [f"    {email:<40} {role}" for email, role in summary.users]
    text += [
        f"  staff app and portal: http://{host}:{port}/  (Azur Connect: http://espace.azur.localhost:{port}/)",
        f"  finance dashboard:    http://{host}:{dash_port}/voila/render/revenue.ipynb",
    ]
    out("\n".join(text))
    return {"period": period, "summary": summary.as_dict(), "cdrs_imported": int(files[0] or 0),
            "cdrs_quarantined": int(files[1] or 0),
            "invoices": [dict(brand=b, currency=c, count=n, subtotal_minor=int(st or 0), total_minor=int(t or 0))
                         for b, c, n, st, t in rows]}


def _demo_users(wb) -> list[tuple[str, str]]:
    from bluerocktel.db.models import User

    with wb.db.session() as s:
        return [(e, r) for e, r in s.execute(select(User.email, User.role).order_by(User.id))]
