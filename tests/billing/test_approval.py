"""Approving a dry run, and the approval an issuing run needs.

World: March 2026, one account with a trunk at 29.90 (arrears): 29.90 + 20 % VAT 5.98 = 35.88.
"""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.billing.approval import (ApprovalError, ApprovalPermissionError, approve_run,
                                          require_approval)
from bluerocktel.billing.cycle import build_drafts, control_report, finish_run, issue_invoices, prepare_run
from bluerocktel.db.models import Account, AuditEntry, BillingRun, Brand, Product, Service, User
from bluerocktel.errors import NotFoundError


def build_world(wb) -> None:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"),
                        billing_timing="arrears")
        s.add_all([brand, trunk])
        s.flush()
        account = Account(number="A001", brand_id=brand.id, name="Martin")
        s.add(account)
        s.flush()
        s.add(Service(account_id=account.id, product_id=trunk.id, label="Siège"))
        s.add_all([User(email=f"{role}@bluerock.example", name=role, password_hash="x", role=role)
                   for role in ("billing", "admin", "support")])
        s.add(User(email="gone@bluerock.example", name="gone", password_hash="x", role="billing", active=False))


def run(wb, dry: bool, brand: str | None = None, approved_run_id: int | None = None) -> tuple[int, dict]:
    ctx = prepare_run(wb.data_dir, "2026-03", dry, brand_code=brand, issue_date="2026-04-01")
    try:
        if approved_run_id is not None:
            with wb.db.transaction() as s:
                s.get(BillingRun, ctx.run_id).approved_run_id = approved_run_id
        drafts = build_drafts(ctx)
        control_report(ctx, drafts)
        issue_invoices(ctx, drafts)
        summary = finish_run(ctx)
    finally:
        ctx.wb.close()
    return ctx.run_id, summary


def test_only_an_active_billing_or_admin_user_approves_a_previewed_dry_run(wb):
    build_world(wb)
    dry_id, _ = run(wb, True)
    for email, why in (("support@bluerock.example", "role 'support'"), ("gone@bluerock.example", "disabled"),
                       ("nobody@bluerock.example", "no such user")):
        with pytest.raises(ApprovalPermissionError, match=why):
            approve_run(wb, dry_id, email)
    assert issubclass(ApprovalPermissionError, PermissionError)

    approved = approve_run(wb, dry_id, " Billing@BlueRock.example ")
    assert approved.approved_by == "billing@bluerock.example" and approved.approved_at is not None
    with wb.db.session() as s:
        entry = s.scalar(sa.select(AuditEntry).where(AuditEntry.action == "billing.approve"))
        assert (entry.actor, entry.target_id, entry.details["period"]) == (
            "billing@bluerock.example", str(dry_id), "2026-03")
        assert entry.details["totals"] == {"EUR": {"subtotal_minor": 2990, "vat_minor": 598, "total_minor": 3588}}
    with pytest.raises(ApprovalError, match="approved already by billing@bluerock.example"):
        approve_run(wb, dry_id, "admin@bluerock.example")
    with pytest.raises(NotFoundError, match="no billing run 999"):
        approve_run(wb, 999, "admin@bluerock.example")


def test_issuing_runs_and_running_runs_cannot_be_approved(wb):
    build_world(wb)
    ctx = prepare_run(wb.data_dir, "2026-03", True)
    with pytest.raises(ApprovalError, match=f"billing run {ctx.run_id} is running; only a previewed dry run"):
        approve_run(wb, ctx.run_id, "admin@bluerock.example")
    finish_run(ctx)
    ctx.wb.close()
    issue_id, _ = run(wb, False)
    with pytest.raises(ApprovalError, match="is an issuing run"):
        approve_run(wb, issue_id, "admin@bluerock.example")


def test_issuing_needs_the_latest_previewed_dry_run_of_the_period_and_brand_approved(wb):
    build_world(wb)
    with pytest.raises(ApprovalError, match=r"no previewed dry run for 2026-03, all brands: run `bluerocktel "
                                            r"billing run --period 2026-03 --dry-run`"):
        require_approval(wb, "2026-03", None)
    first, _ = run(wb, True)
    with pytest.raises(ApprovalError, match=f"run {first}\\) is not approved: `bluerocktel billing approve {first}"):
        require_approval(wb, "2026-03", "")
    approve_run(wb, first, "admin@bluerock.example")
    assert require_approval(wb, "2026-03", None) == first
    with pytest.raises(ApprovalError, match="no previewed dry run for 2026-03, brand BRT"):
        require_approval(wb, "2026-03", "BRT")          # another scope
    with pytest.raises(ApprovalError, match="no previewed dry run for 2026-04"):
        require_approval(wb, "2026-04", None)
    second, _ = run(wb, True)                              # a newer dry run needs its own approval
    with pytest.raises(ApprovalError, match=f"run {second}\\) is not approved"):
        require_approval(wb, "2026-03", None)
    approve_run(wb, second, "billing@bluerock.example")
    assert require_approval(wb, "2026-03", None) == second


def test_an_issue_run_that_differs_from_its_approved_dry_run_lists_the_difference(wb):
    build_world(wb)
    dry_id, dry = run(wb, True)
    approve_run(wb, dry_id, "billing@bluerock.example")
    with wb.db.transaction() as s:          # a second trunk added after the approval: 2 x 35.88 = 71.76
        s.get(Service, 1).quantity = 2
    issue_id, summary = run(wb, False, approved_run_id=require_approval(wb, "2026-03", None))
    assert dry["account_totals"] == {"A001": 3588} and summary["account_totals"] == {"A001": 7176}
    mismatches = [a for a in summary["anomalies"] if a["kind"] == "approval_mismatch"]
    assert mismatches == [{"kind": "approval_mismatch", "account_number": "A001", "account_name": None,
                           "issue": f"total 71.76 EUR differs from the approved dry run {dry_id}: 35.88 EUR"}]
    assert summary["invoices_issued"] == 1          # it still issues
    with wb.db.session() as s:
        assert s.get(BillingRun, issue_id).approved_run_id == dry_id


def cli(*argv: str) -> int:
    import argparse

    from bluerocktel.billing.cli_cycle import add_commands

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser(prog="bluerocktel billing")
    add_commands(parser.add_subparsers(dest="billing_command", required=True), common)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_billing_approve_runs_report_and_resume_commands(wb, capsys):
    build_world(wb)
    dry_id, _ = run(wb, True)
    data = ["--data-dir", str(wb.data_dir)]
    with pytest.raises(ApprovalPermissionError, match="'support@bluerock.example' may not approve"):
        cli("approve", str(dry_id), "--as", "support@bluerock.example", *data)
    assert cli("approve", str(dry_id), "--as", "admin@bluerock.example", *data) == 0
    assert capsys.readouterr().out == (f"billing run {dry_id} (2026-03, brand all) approved by "
                                       f"admin@bluerock.example\n")
    assert cli("runs", "--period", "2026-03", *data) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [str(dry_id), "2026-03", "all", "dry", "run", "previewed", "finished",
                                "admin@bluerock.example", "0", "35.88", "EUR"]
    assert cli("runs", "--period", "2026-04", *data) == 0
    assert capsys.readouterr().out == "no billing run\n"
    assert cli("report", str(dry_id), *data) == 0
    assert capsys.readouterr().out == f"{wb.data_dir / 'runs' / str(dry_id) / 'control_report.xlsx'}\n"
    with pytest.raises(NotFoundError, match="billing run 999 has no control report"):
        cli("report", "999", *data)
    from bluerocktel.errors import UserFacingError

    with pytest.raises(UserFacingError, match=f"billing run {dry_id} is previewed: there is nothing to resume"):
        cli("resume", str(dry_id), *data)
