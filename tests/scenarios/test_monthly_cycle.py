"""A month billed end to end: ``run_billing_cycle`` executes the real papermill notebook.

Story: BlueRock bills March 2026. Boulangerie Martin has a trunk (2 × 29.90) and made two calls
to French fixed lines (0.123456 + 0.010000) → 59.93 + 20 % VAT 11.99 = 71.92. Acme Ltd (English)
has a line at 10.00 → 12.00. The executed notebook is kept as the run's record.
"""

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal

import nbformat
import pyarrow as pa
import sqlalchemy as sa

from bluerocktel import lake
from bluerocktel.billing import pipeline
from bluerocktel.billing.pipeline import run_billing_cycle
from bluerocktel.db.models import Account, AuditEntry, BillingRun, Brand, Invoice, Product, Service

UTC = dt.timezone.utc


def _call(n: int, account_id: int, price_micro: int) -> dict:
    start = dt.datetime(2026, 3, 5, 10, n, tzinfo=UTC)
    return {"cdr_id": f"c{n}", "source": "pbx", "source_file": "Master.csv", "source_line": n, "start_at": start,
            "answer_at": start, "end_at": start + dt.timedelta(seconds=90), "duration_s": 90, "billsec_s": 90,
            "caller": "+33140000000", "callee": "+33145000000", "account_code": "", "channel": "SIP/a",
            "dst_channel": "SIP/b", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
            "unique_id": str(n), "account_id": account_id, "service_id": None, "rate_deck_id": 1, "rate_id": 1,
            "prefix": "331", "destination": "Paris", "zone": "France fixe", "billable_s": 120,
            "price_micro": price_micro, "rating_status": "rated", "rated_at": dt.datetime(2026, 4, 1, tzinfo=UTC)}


def test_the_pipeline_bills_the_month_and_keeps_the_executed_notebook(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS", invoice_prefix="FA")
        s.add(brand)
        s.flush()
        trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"))
        line = Product(code="LINE", name="Ligne", kind="recurring", price=Decimal("10.00"))
        martin = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin")
        acme = Account(number="C002", brand_id=brand.id, name="Acme Ltd", language="en")
        s.add_all([trunk, line, martin, acme])
        s.flush()
        s.add_all([Service(account_id=martin.id, product_id=trunk.id, label="Siège", quantity=2),
                   Service(account_id=acme.id, product_id=line.id, label="Ligne")])
        martin_id = martin.id
    lake.write_partition(wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(
        [_call(1, martin_id, 123_456), _call(2, martin_id, 10_000)], schema=lake.RATED_SCHEMA))

    run = run_billing_cycle(wb, "2026-03", actor="scenario")

    assert run.status == "completed", run.error
    assert run.notebook_path == f"runs/{run.id}/billing_cycle.ipynb"
    executed = nbformat.read(wb.data_dir / run.notebook_path, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert all(c.get("outputs") is not None for c in executed.cells if c.cell_type == "code")
    assert run.summary["invoices_issued"] == 2 and run.summary["numbers"] == ["FA-2026-000001", "FA-2026-000002"]
    with wb.db.session() as s:
        issued = s.scalars(sa.select(Invoice).order_by(Invoice.number)).all()
        assert [(i.number, i.total_minor, i.billing_run_id) for i in issued] == [
            ("FA-2026-000001", 7192, run.id), ("FA-2026-000002", 1200, run.id)]
        assert all((wb.data_dir / i.pdf_path).is_file() for i in issued)
        actions = s.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == ["billing.run", "invoice.issue", "invoice.issue"]


def test_a_failing_notebook_fails_the_run_and_keeps_the_partial_notebook(wb, tmp_path, monkeypatch):
    broken = nbformat.v4.new_notebook()
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    broken.cells = [nbformat.v4.new_code_cell('period = ""', metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell('print("started", period)'),
                    nbformat.v4.new_code_cell('raise RuntimeError("tariff table missing")')]
    path = tmp_path / "billing_cycle.ipynb"
    nbformat.write(broken, path)
    monkeypatch.setattr(pipeline, "NOTEBOOK", path)

    run = run_billing_cycle(wb, "2026-03", dry_run=True)

    assert run.status == "failed" and "tariff table missing" in run.error and run.finished_at is not None
    kept = nbformat.read(wb.data_dir / run.notebook_path, as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in kept.cells])
    assert "started 2026-03" in outputs and "tariff table missing" in outputs
    with wb.db.session() as s:
        assert s.get(BillingRun, run.id).status == "failed"


def test_importing_the_billing_package_does_not_load_papermill():
    code = ("import sys, bluerocktel.billing.pipeline, bluerocktel.billing.cycle, bluerocktel.documents.invoice;"
            "print(sorted({'papermill', 'IPython', 'panel', 'weasyprint', 'reportlab', 'pikepdf'}"
            " & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
