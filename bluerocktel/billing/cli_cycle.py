"""CLI of the billing cycle: ``billing approve|resume|runs|report`` and the top-level ``scheduler``
and ``schedule add|list|remove``. ``billing run`` itself stays in :mod:`bluerocktel.cli`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

from bluerocktel.errors import UserFacingError
from bluerocktel.vocabulary import ScheduleJob


def _workbench(args):
    from bluerocktel.workbench import Workbench

    return Workbench.open(args.data_dir)


def _print(args, payload, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if getattr(args, "json", False) else text)


def cmd_billing_approve(args) -> int:
    from bluerocktel.billing.approval import approve_run

    run = approve_run(_workbench(args), args.run_id, args.actor)
    _print(args, {"run_id": run.id, "approved_by": run.approved_by, "approved_at": run.approved_at},
           f"billing run {run.id} ({run.period}, brand {run.brand_code or 'all'}) approved by {run.approved_by}")
    return 0


def cmd_billing_resume(args) -> int:
    from bluerocktel.billing.pipeline import resume_run

    wb = _workbench(args)
    run = resume_run(wb, args.run_id, actor="cli")
    _print(args, {"run_id": run.id, "status": run.status, "step": run.step, "summary": run.summary},
           f"billing run {run.id} for {run.period}: {run.status} (last step {run.step or '-'})"
           + (f"; {run.error}" if run.error else ""))
    return 0 if run.status != "failed" else 1


def cmd_billing_runs(args) -> int:
    from bluerocktel.billing.report import billing_run_rows

    rows = [r for r in billing_run_rows(_workbench(args), limit=args.limit)
            if not args.period or r["period"] == args.period]
    lines = [f"{'run':>5}  {'period':7}  {'brand':8}  {'kind':7}  {'status':9}  {'step':9}  {'approved by':24}  "
             f"{'anom.':>5}  totals"]
    lines += [f"{r['id']:>5}  {r['period']:7}  {r['brand']:8}  {'dry run' if r['dry_run'] else 'issue':7}  "
              f"{r['status']:9}  {r['step']:9}  {r['approved_by']:24}  {r['anomalies']:>5}  {r['totals']}"
              for r in rows]
    _print(args, rows, "\n".join(lines) if rows else "no billing run")
    return 0


def cmd_billing_report(args) -> int:
    from bluerocktel.billing.report import report_file

    path = report_file(_workbench(args), args.run_id)
    print(path)
    if args.open:
        subprocess.Popen(["xdg-open", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def _describe(result) -> str:
    return (f"{result.slot:%Y-%m-%d %H:%M} UTC  {result.schedule} ({result.job}): {result.status}"
            + (f" — {result.error}" if result.error else ""))


def cmd_scheduler(args) -> int:
    from bluerocktel.billing.scheduler import parse_now, run_scheduler

    now = parse_now(args.now) if args.now else None
    results = run_scheduler(_workbench(args), once=args.once, now=now,
                            on_result=None if args.json else lambda r: (print(_describe(r)), sys.stdout.flush()))
    if args.json:
        _print(args, [dataclasses.asdict(r) for r in results], "")
    elif args.once and not results:
        print("nothing due")
    return 0 if all(r.status == "ok" for r in results) else 1


def cmd_schedule_add(args) -> int:
    from bluerocktel.billing.scheduler import add_schedule, parse_now

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"--params is not JSON: {exc}") from None
    schedule = add_schedule(_workbench(args), args.name, args.cron, args.job, params, enabled=not args.disabled,
                            now=parse_now(args.now) if args.now else None)
    _print(args, {"id": schedule.id, "name": schedule.name, "next_run_at": schedule.next_run_at},
           f"schedule {schedule.name!r} ({schedule.job}, {schedule.cron}): next run "
           f"{schedule.next_run_at:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_schedule_list(args) -> int:
    from bluerocktel.billing.scheduler import list_schedules

    schedules = list_schedules(_workbench(args))
    rows = [{"name": s.name, "cron": s.cron, "job": s.job, "params": s.params, "enabled": s.enabled,
             "next_run_at": s.next_run_at, "last_run_at": s.last_run_at, "last_status": s.last_status,
             "last_error": s.last_error} for s in schedules]
    lines = [f"{r['name']:20}  {r['cron']:15}  {r['job']:12}  {'on' if r['enabled'] else 'off':3}  "
             f"next {r['next_run_at']:%Y-%m-%d %H:%M} UTC  last {r['last_status'] or '-'}"
             + (f" ({r['last_error']})" if r["last_error"] else "") + f"  {json.dumps(r['params'])}"
             for r in rows]
    _print(args, rows, "\n".join(lines) if rows else "no schedule")
    return 0


def cmd_schedule_remove(args) -> int:
    from bluerocktel.billing.scheduler import remove_schedule

    remove_schedule(_workbench(args), args.name)
    print(f"schedule {args.name!r} removed")
    return 0


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    """The ``billing`` subcommands of this module, added to ``sub`` (the ``billing`` subparsers)."""
    p = sub.add_parser("approve", parents=[common], help="approve a previewed dry run for issuing")
    p.add_argument("run_id", type=int)
    p.add_argument("--as", dest="actor", required=True, metavar="EMAIL", help="the approver (role billing or admin)")
    p.set_defaults(func=cmd_billing_approve)
    p = sub.add_parser("resume", parents=[common], help="resume a billing run that did not finish")
    p.add_argument("run_id", type=int)
    p.set_defaults(func=cmd_billing_resume)
    p = sub.add_parser("runs", parents=[common], help="list billing runs, newest first")
    p.add_argument("--period", default=None, help="only this period (YYYY-MM)")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_billing_runs)
    p = sub.add_parser("report", parents=[common], help="print the path of a run's control report (xlsx)")
    p.add_argument("run_id", type=int)
    p.add_argument("--open", action="store_true", help="also open it (xdg-open)")
    p.set_defaults(func=cmd_billing_report)


def add_top_level_commands(sub, common: argparse.ArgumentParser) -> None:
    """``scheduler`` and ``schedule add|list|remove``, added to ``sub`` (the top-level subparsers)."""
    p = sub.add_parser("scheduler", parents=[common], help="run the scheduled jobs (forever, or --once)")
    p.add_argument("--once", action="store_true", help="one pass: run what is due, then exit")
    p.add_argument("--now", default=None, help="pretend it is this ISO 8601 time (local time without an offset)")
    p.set_defaults(func=cmd_scheduler)
    schedule = sub.add_parser("schedule", help="scheduled jobs").add_subparsers(dest="schedule_command",
                                                                              required=True)
    p = schedule.add_parser("add", parents=[common], help="add a scheduled job")
    p.add_argument("name")
    p.add_argument("--cron", required=True, help="five fields in the operator's time zone, e.g. '0 6 1 * *'")
    p.add_argument("--job", required=True, choices=[job.value for job in ScheduleJob])
    p.add_argument("--params", default="{}", help='JSON object, e.g. \'{"dry_run": true, "brand": "BRT"}\'')
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--now", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_schedule_add)
    p = schedule.add_parser("list", parents=[common], help="list scheduled jobs")
    p.set_defaults(func=cmd_schedule_list)
    p = schedule.add_parser("remove", parents=[common], help="remove a scheduled job")
    p.add_argument("name")
    p.set_defaults(func=cmd_schedule_remove)
