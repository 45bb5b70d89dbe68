"""The ``bluerocktel`` command. Each subcommand is a thin call into the package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bluerocktel.settings import get_setting


def _workbench(args):
    from bluerocktel.workbench import Workbench

    return Workbench.open(args.data_dir)


def _print(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if getattr(args, "json", False) else text)


def cmd_migrate(args) -> int:
    wb = _workbench(args)
    print(f"schema up to date: {wb.db.url}")
    return 0


def cmd_cdr_import(args) -> int:
    from bluerocktel.mediation import import_cdr_file

    wb = _workbench(args)
    summary = import_cdr_file(wb, Path(args.file), args.format, source=args.source, actor="cli")
    _print(args, summary.as_dict(), summary.describe())
    return 0


def cmd_rate(args) -> int:
    from bluerocktel.rating import rate_pending

    wb = _workbench(args)
    summary = rate_pending(wb, months=[args.period] if args.period else None)
    _print(args, summary.as_dict(), summary.describe())
    return 0


def cmd_billing_run(args) -> int:
    from bluerocktel.billing.pipeline import run_billing_cycle

    wb = _workbench(args)
    run = run_billing_cycle(wb, args.period, dry_run=args.dry_run, brand_code=args.brand, actor="cli")
    _print(args, {"run_id": run.id, "status": run.status, "summary": run.summary,
                  "notebook": run.notebook_path},
           f"billing run {run.id} for {run.period}: {run.status}; {json.dumps(run.summary, default=str)}"
           f"\nexecuted notebook: {wb.data_dir / run.notebook_path if run.notebook_path else '-'}")
    return 0 if run.status != "failed" else 1


def cmd_demo(args) -> int:
    from bluerocktel.demo import run_demo

    wb = _workbench(args)
    run_demo(wb, accounts=args.accounts, cdrs=args.cdrs, period=args.period, seed=args.seed)
    if args.no_serve:
        return 0
    return cmd_serve(args, wb=wb, with_dashboards=True)


def cmd_serve(args, wb=None, with_dashboards: bool | None = None) -> int:
    from bluerocktel.serving import serve

    wb = wb or _workbench(args)
    with_dashboards = args.dashboards if with_dashboards is None else with_dashboards
    serve(wb, host=args.host, port=int(args.port), dashboards=with_dashboards)
    return 0


def cmd_dashboards(args) -> int:
    from bluerocktel.serving import serve_dashboards

    wb = _workbench(args)
    serve_dashboards(wb, host=args.host, port=int(args.port))
    return 0


def cmd_user_create(args) -> int:
    from bluerocktel.accounts import create_user

    wb = _workbench(args)
    password = args.password or sys.stdin.readline().rstrip("\n")
    with wb.db.transaction() as s:
        user = create_user(s, email=args.email, name=args.name or args.email, password=password,
                           role=args.role, account_number=args.account, actor="cli")
        print(f"user {user.id} {user.email} ({user.role})")
    return 0


def cmd_token_create(args) -> int:
    from sqlalchemy import select

    from bluerocktel.audit import record_audit
    from bluerocktel.db.models import User
    from bluerocktel.security import create_api_token

    wb = _workbench(args)
    with wb.db.transaction() as s:
        user = s.scalar(select(User).where(User.email == args.email.lower()))
        if user is None:
            print(f"error: no user {args.email}", file=sys.stderr)
            return 2
        token = create_api_token(s, user, args.name)
        record_audit(s, "cli", "api_token.create", "user", user.id, name=args.name)
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None,
                        help="data dir (default: BLUEROCKTEL_DATA_DIR, else ./var)")
    common.add_argument("--json", action="store_true", help="print a JSON summary")

    parser = argparse.ArgumentParser(prog="bluerocktel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", parents=[common], help="create or upgrade the schema")
    p.set_defaults(func=cmd_migrate)

    serve_opts = argparse.ArgumentParser(add_help=False)
    serve_opts.add_argument("--host", default=get_setting("host"))
    serve_opts.add_argument("--port", default=get_setting("port"))

    p = sub.add_parser("demo", parents=[common, serve_opts], help="build a demo operator, bill it and serve it")
    p.add_argument("--accounts", type=int, default=300)
    p.add_argument("--cdrs", type=int, default=200_000)
    p.add_argument("--period", default=None, help="month of demo traffic, YYYY-MM (default: last month)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-serve", action="store_true", help="stop after the billing run")
    p.set_defaults(func=cmd_demo)

    cdr = sub.add_parser("cdr", help="CDR mediation").add_subparsers(dest="cdr_command", required=True)
    p = cdr.add_parser("import", parents=[common], help="import one CDR file")
    p.add_argument("file")
    p.add_argument("--format", required=True, help="CDR format, e.g. asterisk-csv")
    p.add_argument("--source", default="default", help="CDR source (switch) name")
    p.set_defaults(func=cmd_cdr_import)

    p = sub.add_parser("rate", parents=[common], help="rate the CDRs not rated yet")
    p.add_argument("--period", default=None, help="only this month, YYYY-MM")
    p.set_defaults(func=cmd_rate)

    billing = sub.add_parser("billing", help="billing cycles").add_subparsers(dest="billing_command", required=True)
    p = billing.add_parser("run", parents=[common], help="run the billing cycle of a period")
    p.add_argument("--period", required=True, help="YYYY-MM")
    p.add_argument("--brand", default=None, help="only this brand code")
    p.add_argument("--dry-run", action="store_true", help="compute and report, issue nothing")
    p.set_defaults(func=cmd_billing_run)

    p = sub.add_parser("serve", parents=[common, serve_opts], help="serve API, portal and staff app")
    p.add_argument("--dashboards", action="store_true", help="also start the Voila dashboards")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("dashboards", parents=[common], help="serve the Voila dashboards")
    p.add_argument("--host", default=get_setting("host"))
    p.add_argument("--port", default=get_setting("dashboards_port"))
    p.set_defaults(func=cmd_dashboards)

    users = sub.add_parser("user", help="users").add_subparsers(dest="user_command", required=True)
    p = users.add_parser("create", parents=[common], help="create a user (password from --password or stdin)")
    p.add_argument("email")
    p.add_argument("--role", required=True, choices=["admin", "billing", "support", "sales", "read_only", "customer"])
    p.add_argument("--name", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--account", default=None, help="account number (customers)")
    p.set_defaults(func=cmd_user_create)

    tokens = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    p = tokens.add_parser("create", parents=[common], help="create an API token for a user; printed once")
    p.add_argument("email")
    p.add_argument("--name", default="cli")
    p.set_defaults(func=cmd_token_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bluerocktel.errors import UserFacingError

    try:
        return args.func(args)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
