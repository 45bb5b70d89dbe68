"""Run a billing cycle by executing ``pipelines/billing_cycle.ipynb`` with papermill.

The executed notebook is kept under ``DATA_DIR/runs/<run_id>/billing_cycle.ipynb`` as the run's
audit record (DESIGN.md §5), also when the run fails. papermill is imported inside
:func:`run_billing_cycle` only: importing :mod:`bluerocktel.billing` never loads it.
"""

from __future__ import annotations

from pathlib import Path

import bluerocktel
from bluerocktel.audit import record_audit
from bluerocktel.billing.periods import parse_period
from bluerocktel.db.models import BillingRun, Brand, utcnow
from bluerocktel.errors import NotFoundError
from bluerocktel.vocabulary import BillingRunStatus
from bluerocktel.workbench import Workbench

PIPELINES_DIR = Path(bluerocktel.__file__).resolve().parent.parent / "pipelines"
NOTEBOOK = PIPELINES_DIR / "billing_cycle.ipynb"
KERNEL_NAME = "python3"


def run_billing_cycle(wb: Workbench, period: str, dry_run: bool = False, brand_code: str | None = None,
                      actor: str = "cli") -> BillingRun:
    """Create the BillingRun, execute the billing notebook for it and return the run as it ended."""
    import sqlalchemy as sa

    parsed = parse_period(period)
    brand_code = (brand_code or "").strip() or None
    with wb.db.transaction() as s:
        if brand_code and s.scalar(sa.select(Brand.id).where(Brand.code == brand_code)) is None:
            raise NotFoundError(f"no brand with code {brand_code!r}")
        run = BillingRun(period=parsed.label, brand_code=brand_code, dry_run=dry_run,
                         status=BillingRunStatus.RUNNING, started_by=actor)
        s.add(run)
        s.flush()
        output = wb.runs_dir / str(run.id) / NOTEBOOK.name
        run.notebook_path = output.relative_to(wb.data_dir).as_posix()
        record_audit(s, actor, "billing.run", "billing_run", run.id, period=parsed.label, dry_run=dry_run,
                     brand=brand_code, notebook=run.notebook_path)
        run_id = run.id
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        import papermill

        papermill.execute_notebook(
            str(NOTEBOOK), str(output), kernel_name=KERNEL_NAME, cwd=str(output.parent), progress_bar=False,
            parameters={"data_dir": str(wb.data_dir), "period": parsed.label, "dry_run": bool(dry_run),
                        "run_id": str(run_id), "brand_code": brand_code or "", "actor": actor})
    except Exception as exc:  # noqa: BLE001 - any failure of the notebook fails the run, recorded
        with wb.db.transaction() as s:
            failed = s.get(BillingRun, run_id)
            failed.status = BillingRunStatus.FAILED
            failed.finished_at = utcnow()
            failed.error = f"{type(exc).__name__}: {exc}"[:10_000]
    with wb.db.session() as s:
        return s.get(BillingRun, run_id)
