"""CLI of collections, under ``bluerocktel billing``: ``mandate add|revoke|list``, ``sepa batch|collected|returns``,
``dunning run`` and ``emails send``.

Wiring (in :mod:`bluerocktel.cli`, after the ``billing`` subparsers are made)::

    from bluerocktel.billing.cli_collect import add_commands
    add_commands(billing, common)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import sqlalchemy as sa

from bluerocktel.errors import NotFoundError
from bluerocktel.money import from_minor


def _workbench(args):
    from bluerocktel.workbench import Workbench

    return Workbench.open(args.data_dir)


def _print(args, payload, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if getattr(args, "json", False) else text)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def cmd_mandate_add(args) -> int:
    from bluerocktel.billing.sepa import create_mandate
    from bluerocktel.db.models import Account

    with _workbench(args).db.transaction() as s:
        account_id = s.scalar(sa.select(Account.id).where(Account.number == args.account))
        if account_id is None:
            raise NotFoundError(f"no account {args.account!r}")
        mandate = create_mandate(s, account_id, args.umr, args.signed_on, args.iban, args.bic, args.name, "cli",
                                 one_off=args.one_off)
        payload = {"umr": mandate.umr, "account": args.account, "sequence_type": mandate.sequence_type}
    _print(args, payload, f"mandate {payload['umr']} recorded for {args.account} (next: {payload['sequence_type']})")
    return 0


def cmd_mandate_revoke(args) -> int:
    from bluerocktel.billing.payments import operator_today
    from bluerocktel.billing.sepa import revoke_mandate

    with _workbench(args).db.transaction() as s:
        mandate = revoke_mandate(s, args.umr, args.date or operator_today(), "cli", reason=args.reason)
        payload = {"umr": mandate.umr, "revoked_on": mandate.revoked_on}
    _print(args, payload, f"mandate {payload['umr']} revoked on {payload['revoked_on']}")
    return 0


def cmd_mandate_list(args) -> int:
    from bluerocktel.db.models import Account, SepaMandate

    with _workbench(args).db.session() as s:
        query = (sa.select(SepaMandate, Account.number).join(Account, Account.id == SepaMandate.account_id)
                 .order_by(Account.number, SepaMandate.signed_on))
        if args.account:
            query = query.where(Account.number == args.account)
        rows = [{"account": number, "umr": m.umr, "signed_on": m.signed_on, "debtor": m.debtor_name,
                 "iban": m.iban, "bic": m.bic, "sequence_type": m.sequence_type, "status": m.status,
                 "revoked_on": m.revoked_on, "last_collected_on": m.last_collected_on}
                for m, number in s.execute(query)]
    text = "\n".join(f"{r['account']:10} {r['umr']:35} {r['iban']:34} {r['sequence_type']:4} {r['status']}"
                     for r in rows)
    _print(args, rows, text or "no mandate")
    return 0


def cmd_sepa_batch(args) -> int:
    from bluerocktel.billing.sepa import create_due_batches

    result = create_due_batches(_workbench(args), collection_date=args.date, brand=args.brand, actor="cli")
    lines = [f"{b['message_id']}: {b['transactions']} debit(s), {from_minor(b['total_minor'])} EUR -> {b['file']}"
             for b in result["batches"]]
    _print(args, result, "\n".join(lines) or f"nothing to collect on {result['collection_date']}")
    return 0


def cmd_sepa_collected(args) -> int:
    from bluerocktel.billing.sepa import mark_collected
    from bluerocktel.db.models import SepaBatch

    wb = _workbench(args)
    with wb.db.session() as s:
        by = SepaBatch.id == int(args.batch) if args.batch.isdigit() else SepaBatch.message_id == args.batch
        batch_id = s.scalar(sa.select(SepaBatch.id).where(by))
    if batch_id is None:
        raise NotFoundError(f"no SEPA batch {args.batch!r} (give its id or message id)")
    result = mark_collected(wb, batch_id, args.date, actor="cli")
    _print(args, result, f"{result['batch']}: {result['collected']} debit(s) collected")
    return 0


def cmd_sepa_returns(args) -> int:
    from bluerocktel.billing.sepa import import_sepa_returns

    result = import_sepa_returns(_workbench(args), args.file, actor="cli")
    _print(args, result, "\n".join(f"{key.replace('_', ' ')}: {', '.join(ids) or '-'}" for key, ids in result.items()))
    return 0


def cmd_dunning_run(args) -> int:
    from bluerocktel.billing.dunning import run_dunning

    result = run_dunning(_workbench(args), args.date, actor="cli")
    lines = [f"{e['invoice']}: {e['stage']} ({e['days_late']} days late)" for e in result["events"]]
    if result["no_address"]:
        lines.append(f"no e-mail address for: {', '.join(result['no_address'])}")
    if result["reactivated"]:
        lines.append(f"reactivated: {', '.join(result['reactivated'])}")
    _print(args, result, "\n".join(lines) or f"nothing to do on {result['as_of']}")
    return 0


def cmd_emails_send(args) -> int:
    from bluerocktel.mail import send_queued

    result = send_queued(_workbench(args), limit=args.limit)
    text = f"{result['sent']} sent, {result['failed']} failed" + "".join(
        f"\n  #{e['id']} {e['to']}: {e['error']}" for e in result["errors"])
    _print(args, result, text)
    return 0 if not result["failed"] else 1


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    """Add ``mandate``, ``sepa``, ``dunning`` and ``emails`` to the ``billing`` subparsers ``sub``."""
    mandate = sub.add_parser("mandate", help="SEPA direct-debit mandates").add_subparsers(
        dest="mandate_command", required=True)
    p = mandate.add_parser("add", parents=[common], help="record a signed mandate (revokes the account's active one)")
    p.add_argument("account", help="account number")
    p.add_argument("--umr", required=True, help="unique mandate reference")
    p.add_argument("--signed-on", required=True, type=_date, help="signature date YYYY-MM-DD")
    p.add_argument("--iban", required=True)
    p.add_argument("--bic", default=None)
    p.add_argument("--name", required=True, help="debtor (account holder) name")
    p.add_argument("--one-off", action="store_true", help="a one-off mandate (OOFF): one collection only")
    p.set_defaults(func=cmd_mandate_add)
    p = mandate.add_parser("revoke", parents=[common], help="revoke a mandate")
    p.add_argument("umr")
    p.add_argument("--date", type=_date, default=None, help="revocation date (default: today)")
    p.add_argument("--reason", default="revoked")
    p.set_defaults(func=cmd_mandate_revoke)
    p = mandate.add_parser("list", parents=[common], help="list mandates")
    p.add_argument("--account", default=None)
    p.set_defaults(func=cmd_mandate_list)

    sepa = sub.add_parser("sepa", help="SEPA direct-debit batches").add_subparsers(dest="sepa_command", required=True)
    p = sepa.add_parser("batch", parents=[common], help="write the pain.008 batch(es) of a collection date")
    p.add_argument("--date", required=True, type=_date, help="requested collection date YYYY-MM-DD")
    p.add_argument("--brand", default=None, help="only this brand code")
    p.set_defaults(func=cmd_sepa_batch)
    p = sepa.add_parser("collected", parents=[common], help="record a batch as settled: payments allocated")
    p.add_argument("batch", help="batch id or message id")
    p.add_argument("--date", required=True, type=_date, help="settlement date YYYY-MM-DD")
    p.set_defaults(func=cmd_sepa_collected)
    p = sepa.add_parser("returns", parents=[common], help="import rejects/returns (pain.002, camt.053, camt.054)")
    p.add_argument("file")
    p.set_defaults(func=cmd_sepa_returns)

    dunning = sub.add_parser("dunning", help="reminders, late fees, suspension").add_subparsers(
        dest="dunning_command", required=True)
    p = dunning.add_parser("run", parents=[common], help="apply the dunning stages due")
    p.add_argument("--date", type=_date, default=None, help="as of this date (default: today)")
    p.set_defaults(func=cmd_dunning_run)

    emails = sub.add_parser("emails", help="the e-mail outbox").add_subparsers(dest="emails_command", required=True)
    p = emails.add_parser("send", parents=[common], help="send queued e-mails (and retry failed ones)")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_emails_send)

