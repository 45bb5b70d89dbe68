"""Approving a dry run, and the rule an issuing run obeys.

The rule, simple enough to explain to an auditor: **to issue the invoices of a period (and
brand), the latest previewed dry run of that period and brand must be approved** by an active
user with the role billing or admin. Approving records who and when on the dry run and an audit
entry ``billing.approve``; the issuing run records the dry run it relies on
(``approved_run_id``). A newer dry run needs its own approval. If the issuing run's totals differ
from the approved dry run's (usage rated meanwhile), it still issues and its control report lists
each difference as an ``approval_mismatch`` anomaly. There is no way around the approval.
"""

from __future__ import annotations

import sqlalchemy as sa

from bluerocktel.audit import record_audit
from bluerocktel.billing.periods import parse_period
from bluerocktel.db.models import BillingRun, User, utcnow
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.vocabulary import BillingRunStatus, Role
from bluerocktel.workbench import Workbench

APPROVER_ROLES = frozenset({Role.BILLING.value, Role.ADMIN.value})


class ApprovalError(UserFacingError):
    """An approval refused, or an issuing run without the approval it needs."""


class ApprovalPermissionError(ApprovalError, PermissionError):
    """The would-be approver is not an active billing or admin user."""


def approve_run(wb: Workbench, run_id: int, actor_email: str) -> BillingRun:
    """Approve the previewed dry run ``run_id`` for issuing, as ``actor_email``; the run is returned."""
    email = (actor_email or "").strip().lower()
    with wb.db.transaction() as s:
        user = s.scalar(sa.select(User).where(sa.func.lower(User.email) == email)) if email else None
        if user is None or not user.active or user.role not in APPROVER_ROLES:
            why = ("no such user" if user is None else "the user is disabled" if not user.active
                   else f"role {user.role!r}")
            raise ApprovalPermissionError(f"{actor_email!r} may not approve billing runs ({why}); "
                                          f"only an active billing or admin user may")
        run = s.get(BillingRun, int(run_id), with_for_update=True)
        if run is None:
            raise NotFoundError(f"no billing run {run_id}")
        if not run.dry_run:
            raise ApprovalError(f"billing run {run.id} is an issuing run; only a previewed dry run can be approved")
        if run.status != BillingRunStatus.PREVIEWED:
            raise ApprovalError(f"billing run {run.id} is {run.status}; only a previewed dry run can be approved")
        if run.approved_at is not None:
            raise ApprovalError(f"billing run {run.id} was approved already by {run.approved_by} "
                                f"at {run.approved_at:%Y-%m-%d %H:%M} UTC")
        run.approved_by = user.email
        run.approved_at = utcnow()
        record_audit(s, user.email, "billing.approve", "billing_run", run.id, period=run.period,
                     brand=run.brand_code, totals=(run.summary or {}).get("totals", {}),
                     anomalies=len((run.summary or {}).get("anomalies") or []))
    return run


def require_approval(wb: Workbench, period: str, brand_code: str | None) -> int:
    """The id of the approved dry run an issuing run of ``period`` (and ``brand_code``) relies on:
    the latest previewed dry run of that period and brand; ApprovalError if there is none or it
    is not approved."""
    label = parse_period(period).label
    brand_code = (brand_code or "").strip() or None
    with wb.db.session() as s:
        latest = s.scalar(sa.select(BillingRun).where(
            BillingRun.period == label, BillingRun.dry_run.is_(True), BillingRun.status == BillingRunStatus.PREVIEWED,
            BillingRun.brand_code.is_(None) if brand_code is None else BillingRun.brand_code == brand_code)
            .order_by(BillingRun.id.desc()).limit(1))
    scope = f"{label}" + (f", brand {brand_code}" if brand_code else ", all brands")
    brand_option = f" --brand {brand_code}" if brand_code else ""
    if latest is None:
        raise ApprovalError(f"no previewed dry run for {scope}: run `bluerocktel billing run --period {label}"
                            f"{brand_option} --dry-run`, check its control report and have it approved")
    if latest.approved_at is None:
        raise ApprovalError(f"the latest dry run for {scope} (run {latest.id}) is not approved: "
                            f"`bluerocktel billing approve {latest.id} --as EMAIL` (role billing or admin)")
    return latest.id
