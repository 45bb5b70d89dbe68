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
    from bluerocktel.errors import FormatError
    from bluerocktel.mediation import import_cdr_file

    if bool(args.format) == bool(args.mapping):
        raise FormatError("give either --format NAME or --mapping MAPPING.toml")
    if args.mapping:
        from bluerocktel.mediation.custom import load_mapping

        fmt = load_mapping(Path(args.mapping))
    else:
        fmt = args.format
    wb = _workbench(args)
    summary = import_cdr_file(wb, Path(args.file), fmt, source=args.source, actor="cli",
                              timezone=args.timezone, country=args.country)
    _print(args, summary.as_dict(), summary.describe())
    return 0


def cmd_cdr_formats(args) -> int:
    from bluerocktel.mediation import FORMATS

    specs = [FORMATS[name] for name in sorted(FORMATS)]
    text = "\n".join(f"{s.name:16} {s.description}\n{'':16} record id: {s.fingerprint}" for s in specs)
    text += "\n\ncustom formats: bluerocktel cdr import FILE --mapping MAPPING.toml (see the README)"
    _print(args, {"formats": [s.as_dict() for s in specs]}, text)
    return 0


def cmd_quarantine_list(args) -> int:
    from bluerocktel.mediation.quarantine import list_quarantine

    wb = _workbench(args)
    table = list_quarantine(wb, source=args.source, include_resolved=args.all, limit=args.limit)
    rows = table.to_pylist()
    text = "\n".join(f"{r['quarantine_id'][:12]} {r['source']} {r['source_file']}:{r['source_line']}: "
                     f"{r['reason']}" + (f" [{r['outcome']}]" if r.get("outcome") else "") for r in rows)
    _print(args, {"records": rows}, text or "the quarantine is empty")
    return 0


def cmd_quarantine_reprocess(args) -> int:
    from bluerocktel.mediation.quarantine import reprocess_quarantine

    wb = _workbench(args)
    mapping = None
    if args.mapping:
        from bluerocktel.mediation.custom import load_mapping

        mapping = load_mapping(Path(args.mapping))
    summary = reprocess_quarantine(wb, source=args.source, format=mapping, actor="cli")
    _print(args, summary.as_dict(), summary.describe())
    return 0


def _options(pairs: list[str]) -> dict:
    from bluerocktel.errors import FormatError

    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FormatError(f"--option wants KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def cmd_source_add(args) -> int:
    from bluerocktel.portal import create_cdr_source

    mapping = Path(args.mapping).read_text() if args.mapping else None
    wb = _workbench(args)
    row = create_cdr_source(wb, name=args.name, actor="cli", format=args.format, mapping=mapping, url=args.url,
                            timezone=args.timezone, country=args.country, options=_options(args.option),
                            poll_interval_s=args.poll_interval)
    _print(args, {"name": row.name, "format": row.format}, f"CDR source {row.name} added")
    return 0


def cmd_source_list(args) -> int:
    from sqlalchemy import select

    from bluerocktel.collectors import redact
    from bluerocktel.db.models import CdrSource, CdrSourceState

    wb = _workbench(args)
    with wb.db.session() as s:
        rows = []
        for src in s.scalars(select(CdrSource).order_by(CdrSource.name)):
            state = s.get(CdrSourceState, src.id)
            rows.append({"name": src.name, "format": src.format, "url": redact(src.url) if src.url else None,
                         "enabled": src.enabled, "timezone": src.timezone, "country": src.country,
                         "cursor": state.cursor if state else None,
                         "last_status": state.last_status if state else None,
                         "last_run_at": state.last_run_at.isoformat() if state and state.last_run_at else None})
    text = "\n".join(f"{r['name']:16} {r['format']:14} {r['url'] or '(push/manual)'}  "
                     f"last run: {r['last_status'] or '-'}" for r in rows)
    _print(args, {"sources": rows}, text or "no CDR sources")
    return 0


def cmd_collect(args) -> int:
    from bluerocktel.collectors import collect, watch

    wb = _workbench(args)
    if args.watch:
        def show(result):
            _print(args, result.as_dict(), result.describe())
            sys.stdout.flush()

        watch(wb, [args.source] if args.source else None, interval_s=args.interval, rounds=args.rounds,
              on_result=show)
        return 0
    if not args.source:
        from bluerocktel.errors import FormatError

        raise FormatError("name the CDR source to collect, or use --watch to poll all of them")
    summary = collect(wb, args.source, actor="cli")
    _print(args, summary.as_dict(), summary.describe())
    return 0 if summary.status == "ok" else 1


def cmd_rate(args) -> int:
    from bluerocktel.rating import rate_pending

    wb = _workbench(args)
    summary = rate_pending(wb, months=[args.period] if args.period else None, engine=args.engine,
                           scheduler=args.scheduler)
    _print(args, summary.as_dict(), summary.describe())
    return 0


def cmd_billing_run(args) -> int:
    from bluerocktel.billing.approval import require_approval
    from bluerocktel.billing.pipeline import run_billing_cycle

    wb = _workbench(args)
    approved = None if args.dry_run else require_approval(wb, args.period, args.brand)
    run = run_billing_cycle(wb, args.period, dry_run=args.dry_run, brand_code=args.brand, actor="cli",
                            approved_run_id=approved)
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
    serve(wb, host=args.host, port=int(args.port), dashboards=with_dashboards, workers=getattr(args, "workers", None))
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
        scopes = [x.strip() for x in (args.scopes or "").split(",") if x.strip()]
        token = create_api_token(s, user, args.name, scopes)
        record_audit(s, "cli", "api_token.create", "user", user.id, name=args.name, scopes=scopes or ["*"])
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
    serve_opts.add_argument("--workers", type=int, default=None,
                            help="processes serving the port (default: the web_workers setting, 1)")

    p = sub.add_parser("demo", parents=[common, serve_opts], help="build a demo operator, bill it and serve it")
    p.add_argument("--accounts", type=int, default=300)
    p.add_argument("--cdrs", type=int, default=200_000)
    p.add_argument("--period", default=None, help="month of demo traffic, YYYY-MM (default: last month)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-serve", action="store_true", help="stop after the billing run")
    p.set_defaults(func=cmd_demo)

    cdr = sub.add_parser("cdr", help="CDR mediation").add_subparsers(dest="cdr_command", required=True)
    p = cdr.add_parser("import", parents=[common], help="import one CDR file (plain, gzip or zip)")
    p.add_argument("file")
    p.add_argument("--format", default=None, help="CDR format, e.g. asterisk-csv (see `cdr formats`)")
    p.add_argument("--mapping", default=None, help="a custom format's mapping file (TOML)")
    p.add_argument("--source", default="default", help="CDR source (switch) name")
    p.add_argument("--timezone", default=None, help="time zone of the file's local times")
    p.add_argument("--country", default=None, help="national numbering plan, e.g. FR")
    p.set_defaults(func=cmd_cdr_import)
    p = cdr.add_parser("formats", parents=[common], help="list the CDR formats")
    p.set_defaults(func=cmd_cdr_formats)
    quarantine = cdr.add_parser("quarantine", help="records that could not be imported").add_subparsers(
        dest="quarantine_command", required=True)
    p = quarantine.add_parser("list", parents=[common], help="list quarantined records")
    p.add_argument("--source", default=None)
    p.add_argument("--all", action="store_true", help="include records reprocessed since")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_quarantine_list)
    p = quarantine.add_parser("reprocess", parents=[common], help="import quarantined records again")
    p.add_argument("--source", default=None)
    p.add_argument("--mapping", default=None, help="read them with this mapping instead of their format")
    p.set_defaults(func=cmd_quarantine_reprocess)

    sources = sub.add_parser("source", help="CDR sources").add_subparsers(dest="source_command", required=True)
    p = sources.add_parser("add", parents=[common], help="add a CDR source")
    p.add_argument("name")
    p.add_argument("--format", default=None, help="CDR format (or --mapping)")
    p.add_argument("--mapping", default=None, help="custom format mapping file (TOML)")
    p.add_argument("--url", default=None, help="sftp://user@host:port/dir, mysql://…, postgresql://…")
    p.add_argument("--timezone", default=None)
    p.add_argument("--country", default=None)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="collector option (repeatable; VALUE may be JSON)")
    p.add_argument("--poll-interval", type=int, default=300, help="seconds between polls (--watch)")
    p.set_defaults(func=cmd_source_add)
    p = sources.add_parser("list", parents=[common], help="list CDR sources and their last run")
    p.set_defaults(func=cmd_source_list)

    p = sub.add_parser("collect", parents=[common], help="collect CDRs from a source (once, or --watch)")
    p.add_argument("source", nargs="?", default=None)
    p.add_argument("--watch", action="store_true", help="poll every enabled source until stopped")
    p.add_argument("--interval", type=float, default=None, help="seconds between polls (default: per source)")
    p.add_argument("--rounds", type=int, default=None, help="stop after this many polling rounds")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("rate", parents=[common], help="rate the CDRs not rated yet")
    p.add_argument("--period", default=None, help="only this month, YYYY-MM")
    p.add_argument("--engine", choices=["local", "dask"], default="local",
                   help="rate in this process (local) or on a Dask cluster (dask); the same result")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address tcp://HOST:PORT (default with --engine dask: a LocalCluster "
                        "of 2 workers)")
    p.set_defaults(func=cmd_rate)

    from bluerocktel.rating.cgrates_cli import add_rating_quote_parser

    rating = sub.add_parser("rating", help="rating plans and quotes").add_subparsers(dest="rating_command",
                                                                                      required=True)
    add_rating_quote_parser(rating, common)
    from bluerocktel.rating.cgrates_cli import add_rating_import_cgrates_parser

    add_rating_import_cgrates_parser(rating, common)
    from bluerocktel.rating.deckimport import add_rating_import_parser

    add_rating_import_parser(rating, common)
    from bluerocktel.rating.rerate import add_rating_rerate_parser

    add_rating_rerate_parser(rating, common)
    from bluerocktel.rating.anomalies import add_rating_anomalies_parser

    add_rating_anomalies_parser(rating, common)

    billing = sub.add_parser("billing", help="billing cycles").add_subparsers(dest="billing_command", required=True)
    p = billing.add_parser("run", parents=[common], help="run the billing cycle of a period")
    p.add_argument("--period", required=True, help="YYYY-MM")
    p.add_argument("--brand", default=None, help="only this brand code")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="compute and write the control report, issue nothing")
    mode.add_argument("--issue", action="store_true",
                      help="issue the invoices; needs the period's latest dry run approved (`billing approve`)")
    p.set_defaults(func=cmd_billing_run)
    from bluerocktel.billing.cli_cycle import add_commands as add_cycle_commands
    from bluerocktel.billing.cli_cycle import add_top_level_commands as add_scheduler_commands

    add_cycle_commands(billing, common)
    add_scheduler_commands(sub, common)
    from bluerocktel.billing.cli_money import add_commands as add_money_commands

    add_money_commands(billing, common)
    from bluerocktel.billing.cli_collect import add_commands as add_collect_commands

    add_collect_commands(billing, common)
    from bluerocktel.billing.cli_charges import add_commands as add_charges_commands

    add_charges_commands(billing, common)
    from bluerocktel.billing.cli_documents import add_commands as add_documents_commands

    add_documents_commands(billing, common)

    from bluerocktel.webhooks_cli import add_webhooks_parser

    add_webhooks_parser(sub, common)

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
    p.add_argument("--scopes", default=None,
                   help="comma-separated permissions the token is limited to (e.g. invoices:read,accounts:read); "
                        "default: all its user's role may do")
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
