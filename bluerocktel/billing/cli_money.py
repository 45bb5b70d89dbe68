"""``bluerocktel billing payment|credit-note|balance|statement``: money in from the command line.

Amounts are typed in currency units (``12.34``) and stored in minor units; accounts and invoices
are named by their numbers (``C0001``, ``FA-2026-000123``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys

import sqlalchemy as sa

from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.money import format_minor, from_minor

ACTOR = "cli"


def _workbench(args):
    from bluerocktel.workbench import Workbench

    return Workbench.open(args.data_dir)


def _account(session, number: str):
    from bluerocktel.db.models import Account

    account = session.scalar(sa.select(Account).where(Account.number == number))
    if account is None:
        raise NotFoundError(f"no account {number!r}")
    return account


def _invoice(session, number: str):
    from bluerocktel.db.models import Invoice

    invoice = session.scalar(sa.select(Invoice).where(Invoice.number == number))
    if invoice is None:
        raise NotFoundError(f"no invoice {number!r}")
    return invoice


def _date(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserFacingError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None


def _emit(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def cmd_payment_add(args) -> int:
    from bluerocktel.billing.payments import open_amount_minor, parse_amount_minor, record_payment

    wb = _workbench(args)
    with wb.db.transaction() as s:
        account = _account(s, args.account)
        invoice_id = _invoice(s, args.invoice).id if args.invoice else None
        amount = parse_amount_minor(args.amount, account.currency, "--amount")
        payment = record_payment(s, account.id, amount, method=args.method, reference=args.reference,
                                 actor=ACTOR, invoice_id=invoice_id)
        left = open_amount_minor(s, invoice_id) if invoice_id else None
        payload = {"payment_id": payment.id, "account": account.number, "amount_minor": amount,
                   "currency": account.currency, "invoice_open_minor": left}
    text = f"payment {payload['payment_id']}: {format_minor(amount, account.currency)} from {account.number}"
    if left is not None:
        text += f"; {args.invoice} still open: {format_minor(left, account.currency)}"
    _emit(args, payload, text)
    return 0


def cmd_payment_import_camt(args) -> int:
    from bluerocktel.billing.camt import import_camt053

    summary = import_camt053(_workbench(args), args.file, actor=ACTOR)
    lines = [f"{summary['file']}: {len(summary['recorded'])} payment(s) recorded "
             f"({from_minor(summary['recorded_minor'])}), {len(summary['duplicates'])} already imported, "
             f"{len(summary['unmatched'])} unmatched, {summary['debits_ignored']} debit(s) ignored"]
    lines += [f"  recorded {r['reference']}: {from_minor(r['amount_minor'])} {r['currency']} → {r['account']} "
              f"by {r['matched_by']} {' '.join(r['invoices'])}".rstrip() for r in summary["recorded"]]
    lines += [f"  UNMATCHED {u['reference']}: {from_minor(u['amount_minor'])} {u['currency']} "
              f"{u['debtor_name'] or ''} {u['text']!r} ({u['reason']})" for u in summary["unmatched"]]
    _emit(args, summary, "\n".join(lines))
    return 0


def _parse_line(text: str):
    """``2:10.50`` → (2, "10.50"); ``2:qty=3`` → (2, CreditQuantity("3"))."""
    from bluerocktel.billing.credit_notes import CreditQuantity

    position, sep, amount = text.partition(":")
    if not sep or not position.strip().isdigit():
        raise UserFacingError(f"--line must be POSITION:AMOUNT or POSITION:qty=N (e.g. 2:10.50), got {text!r}")
    amount = amount.strip()
    return int(position), CreditQuantity(amount[4:]) if amount.startswith("qty=") else amount


def cmd_credit_note(args) -> int:
    from bluerocktel.billing.credit_notes import issue_credit_note

    lines = dict(_parse_line(text) for text in args.line) if args.line else None
    wb = _workbench(args)
    with wb.db.transaction() as s:
        invoice = _invoice(s, args.invoice)
        note = issue_credit_note(s, invoice.id, lines=lines, reason=args.reason, actor=ACTOR)
        payload = {"number": note.number, "invoice": invoice.number, "subtotal_minor": note.subtotal_minor,
                   "vat_minor": note.vat_minor, "total_minor": note.total_minor, "currency": note.currency,
                   "invoice_status": str(invoice.status)}
        note_id = note.id
    from bluerocktel.documents.batch import render_invoice_documents

    payload["pdf"] = (render_invoice_documents(wb, [note_id], workers=1) or [None])[0]   # its Factur-X PDF
    _emit(args, payload, f"credit note {payload['number']} for {payload['invoice']}: "
                         f"{format_minor(payload['total_minor'], payload['currency'])} incl. VAT; "
                         f"invoice now {payload['invoice_status']}")
    return 0


def cmd_balance(args) -> int:
    from bluerocktel.billing.payments import account_balance

    wb = _workbench(args)
    with wb.db.session() as s:
        balance = account_balance(s, _account(s, args.account).id)
    money = {k: format_minor(balance[f"{k}_minor"], balance["currency"]) for k in ("due", "overdue", "credit",
                                                                                  "balance")}
    _emit(args, balance, f"{balance['account']} on {balance['as_of']}: due {money['due']} "
                         f"({balance['open_invoices']} open invoice(s), overdue {money['overdue']}), "
                         f"credit {money['credit']}, balance {money['balance']}")
    return 0


def cmd_statement(args) -> int:
    from bluerocktel.billing.payments import statement

    start, end = _date(args.start, "--from"), _date(args.end, "--to")
    wb = _workbench(args)
    with wb.db.session() as s:
        lines = statement(s, _account(s, args.account).id, start, end)
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["date", "kind", "reference", "description", "debit", "credit", "balance", "currency"])
        for ln in lines:
            writer.writerow([ln["date"].isoformat(), ln["kind"], ln["reference"], ln["description"],
                             from_minor(ln["debit_minor"], ln["currency"]),
                             from_minor(ln["credit_minor"], ln["currency"]),
                             from_minor(ln["balance_minor"], ln["currency"]), ln["currency"]])
        return 0
    text = "\n".join(f"{ln['date']} {ln['kind']:<11} {ln['reference']:<20} "
                     f"{from_minor(ln['debit_minor'], ln['currency']) if ln['debit_minor'] else '':>12} "
                     f"{from_minor(ln['credit_minor'], ln['currency']) if ln['credit_minor'] else '':>12} "
                     f"{from_minor(ln['balance_minor'], ln['currency']):>12}" for ln in lines)
    _emit(args, {"account": args.account, "lines": lines}, text)
    return 0


def add_commands(sub, common) -> None:
    """Add ``payment add|import-camt``, ``credit-note``, ``balance`` and ``statement`` to ``sub``
    (the subparsers of ``bluerocktel billing``); ``common`` gives ``--data-dir`` and ``--json``."""
    payment = sub.add_parser("payment", help="payments received").add_subparsers(dest="payment_command",
                                                                                  required=True)
    p = payment.add_parser("add", parents=[common], help="record a payment and allocate it")
    p.add_argument("--account", required=True, help="account number")
    p.add_argument("--amount", required=True, help="amount in currency units, e.g. 12.34")
    p.add_argument("--invoice", default=None, help="invoice number it pays (default: oldest open invoices)")
    p.add_argument("--method", default="transfer", help="transfer, sepa_debit, card or cheque")
    p.add_argument("--reference", default=None)
    p.set_defaults(func=cmd_payment_add)
    p = payment.add_parser("import-camt", parents=[common], help="reconcile a camt.053 bank statement")
    p.add_argument("file")
    p.set_defaults(func=cmd_payment_import_camt)

    p = sub.add_parser("credit-note", parents=[common], help="credit an invoice, fully or by line")
    p.add_argument("--invoice", required=True, help="invoice number")
    p.add_argument("--line", action="append", default=[], metavar="POS:AMOUNT",
                   help="credit AMOUNT (before VAT) of line POS, or POS:qty=N units of it; repeat; "
                        "none = all that is left of the invoice")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_credit_note)

    p = sub.add_parser("balance", parents=[common], help="what an account owes and its credit")
    p.add_argument("--account", required=True, help="account number")
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("statement", parents=[common], help="an account's movements with a running balance")
    p.add_argument("--account", required=True, help="account number")
    p.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, help="day after the last, YYYY-MM-DD (exclusive)")
    p.add_argument("--csv", action="store_true", help="CSV on stdout")
    p.set_defaults(func=cmd_statement)
