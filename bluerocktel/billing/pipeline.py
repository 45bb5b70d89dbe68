"""Run a billing cycle by executing ``pipelines/billing_cycle.ipynb`` with papermill.

The executed notebook is kept under ``DATA_DIR/runs/<run_id>/billing_cycle.ipynb`` as the run's
audit record (DESIGN.md §5), also when the run fails. papermill is imported inside
:func:`execute_run` only: importing :mod:`bluerocktel.billing` never loads it.

A run that did not finish (its notebook failed, or its process was killed) is taken up again by
:func:`resume_run`, which executes the notebook once more for the same run; the steps skip what
was done (see :mod:`bluerocktel.billing.cycle`). Starting an issuing run of a period whose last
issuing run did not finish resumes that run instead of starting another.
"""

from __future__ import annotations

import datetime as dt
import fcntl
from pathlib import Path

import sqlalchemy as sa

import bluerocktel
from bluerocktel.audit import record_audit
from bluerocktel.billing.cycle import hold_run_lock
from bluerocktel.billing.periods import parse_period
from bluerocktel.db.models import BillingRun, Brand, utcnow
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.vocabulary import BillingRunStatus
from bluerocktel.workbench import Workbench

PIPELINES_DIR = Path(bluerocktel.__file__).resolve().parent.parent / "pipelines"
NOTEBOOK = PIPELINES_DIR / "billing_cycle.ipynb"
KERNEL_NAME = "python3"
UNFINISHED = (BillingRunStatus.RUNNING, BillingRunStatus.FAILED)


def run_billing_cycle(wb: Workbench, period: str, dry_run: bool = False, brand_code: str | None = None,
                      actor: str = "cli", *, approved_run_id: int | None = None,
                      issue_date: dt.date | None = None) -> BillingRun:
    """Create the BillingRun, execute the billing notebook for it and return the run as it ended.

    ``approved_run_id`` is the approved dry run an issuing run relies on (see
    :func:`bluerocktel.billing.approval.require_approval`, which the callers check first).
    """
    parsed = parse_period(period)
    brand_code = (brand_code or "").strip() or None
    if not dry_run:
        unfinished = _last_unfinished_issue_run(wb, parsed.label, brand_code)
        if unfinished is not None:
            return resume_run(wb, unfinished, actor=actor)
    with wb.db.transaction() as s:
        if brand_code and s.scalar(sa.select(Brand.id).where(Brand.code == brand_code)) is None:
            raise NotFoundError(f"no brand with code {brand_code!r}")
        run = BillingRun(period=parsed.label, brand_code=brand_code, dry_run=dry_run, approved_run_id=approved_run_id,
                         status=BillingRunStatus.RUNNING, started_by=actor,
                         summary={"issue_date": issue_date.isoformat()} if issue_date else {})
        s.add(run)
        s.flush()
        run.notebook_path = f"runs/{run.id}/{NOTEBOOK.name}"
        record_audit(s, actor, "billing.run", "billing_run", run.id, period=parsed.label, dry_run=dry_run,
                     brand=brand_code, notebook=run.notebook_path, approved_run_id=approved_run_id)
        run_id = run.id
    with hold_run_lock(wb, run_id):        # shared with the notebook's kernel; see resume_run
        return execute_run(wb, run_id, actor)


def _last_unfinished_issue_run(wb: Workbench, period: str, brand_code: str | None) -> int | None:
    """The id of the latest issuing run of ``period`` and brand if it did not finish."""
    with wb.db.session() as s:
        last = s.scalar(sa.select(BillingRun).where(
            BillingRun.period == period, BillingRun.dry_run.is_(False),
            BillingRun.brand_code.is_(None) if brand_code is None else BillingRun.brand_code == brand_code)
            .order_by(BillingRun.id.desc()).limit(1))
    return last.id if last is not None and last.status in UNFINISHED else None


def resume_run(wb: Workbench, run_id: int, actor: str = "cli") -> BillingRun:
    """Execute the notebook of the unfinished run ``run_id`` again, to the end; the run is returned.

    Refused while a live process still holds the run; a run whose process is gone (killed) or
    whose notebook failed is resumed. The notebook of each earlier attempt is kept beside the new one.
    """
    lock = hold_run_lock(wb, int(run_id), exclusive=True)
    if lock is None:
        raise UserFacingError(f"billing run {run_id} is still running in another process; wait for it to end")
    with lock:
        with wb.db.transaction() as s:
            run = s.get(BillingRun, int(run_id))
            if run is None:
                raise NotFoundError(f"no billing run {run_id}")
            if run.status not in UNFINISHED:
                raise UserFacingError(f"billing run {run.id} is {run.status}: there is nothing to resume")
            run.notebook_path = f"runs/{run.id}/{NOTEBOOK.name}"
            record_audit(s, actor, "billing.resume", "billing_run", run.id, period=run.period,
                         dry_run=run.dry_run, brand=run.brand_code, step=run.step, status=run.status)
            run.status, run.error, run.finished_at = BillingRunStatus.RUNNING, None, None
        _keep_earlier_attempt(wb.data_dir / run.notebook_path)
        fcntl.flock(lock, fcntl.LOCK_SH)        # the notebook's kernel shares the run with this process
        return execute_run(wb, run.id, actor)


def _keep_earlier_attempt(notebook: Path) -> None:
    if notebook.is_file():
        attempt = 1
        while (kept := notebook.with_name(f"{notebook.stem}.attempt-{attempt}{notebook.suffix}")).exists():
            attempt += 1
        notebook.rename(kept)


def execute_run(wb: Workbench, run_id: int, actor: str) -> BillingRun:
    """Execute the billing notebook for the running run ``run_id``; a failure fails the run, recorded."""
    with wb.db.session() as s:
        run = s.get(BillingRun, run_id)
        output = wb.data_dir / run.notebook_path
        parameters = {"data_dir": str(wb.data_dir), "period": run.period, "dry_run": bool(run.dry_run),
                      "run_id": str(run.id), "brand_code": run.brand_code or "", "actor": actor}
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        import papermill

        papermill.execute_notebook(str(NOTEBOOK), str(output), kernel_name=KERNEL_NAME, cwd=str(output.parent),
                                   progress_bar=False, parameters=parameters)
    except Exception as exc:  # noqa: BLE001 - any failure of the notebook fails the run, recorded
        with wb.db.transaction() as s:
            failed = s.get(BillingRun, run_id)
            failed.status = BillingRunStatus.FAILED
            failed.finished_at = utcnow()
            failed.error = f"{type(exc).__name__}: {exc}"[:10_000]
    with wb.db.session() as s:
        return s.get(BillingRun, run_id)
