"""CLI of what is billed: ``billing change-plan``, ``billing charge``, ``billing discount`` and
``billing vat-check`` (subcommands of ``bluerocktel billing``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json

import sqlalchemy as sa

from bluerocktel.errors import NotFoundError, UserFacingError


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date written YYYY-MM-DD") from None


def _today() -> dt.date:
    from zoneinfo import ZoneInfo

    from bluerocktel.settings import get_setting

    return dt.datetime.now(ZoneInfo(get_setting("default_timezone"))).date()


def _print(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if getattr(args, "json", False) else text)


def _account_id(session, number: str) -> int:
    from bluerocktel.db.models import Account

    account_id = session.scalar(sa.select(Account.id).where(Account.number == number))
    if account_id is None:
        raise NotFoundError(f"no account {number!r}")
    return account_id


def _workbench(args):
    from bluerocktel.workbench import Workbench

    return Workbench.open(args.data_dir)


def cmd_change_plan(args) -> int:
    from bluerocktel.billing.services import change_plan
    from bluerocktel.db.models import Product

    with _workbench(args).db.transaction() as s:
        product_id = s.scalar(sa.select(Product.id).where(Product.code == args.product))
        if product_id is None:
            raise NotFoundError(f"no product with code {args.product!r}")
        new = change_plan(s, args.service, product_id, args.on, actor=args.actor)
        payload = {"old_service_id": args.service, "new_service_id": new.id, "product": args.product,
                   "on": args.on.isoformat()}
    _print(args, payload, f"service {args.service} moves to {args.product} on {args.on}: "
                          f"new service {payload['new_service_id']}")
    return 0


def cmd_charge(args) -> int:
    from bluerocktel.billing.services import add_charge

    with _workbench(args).db.transaction() as s:
        charge = add_charge(s, _account_id(s, args.account), args.description, args.unit_price,
                            charge_date=args.date or _today(), quantity=args.quantity, kind=args.kind,
                            vat_rate=args.vat_rate, service_id=args.service, actor=args.actor)
        payload = {"charge_id": charge.id, "account": args.account, "kind": charge.kind,
                   "quantity": charge.quantity, "unit_price": charge.unit_price, "charge_date": charge.charge_date}
    _print(args, payload, f"charge {payload['charge_id']} for {args.account}: {args.quantity} x {args.unit_price} "
                          f"({payload['kind']}, {payload['charge_date']}), billed by the next cycle")
    return 0


def cmd_discount(args) -> int:
    from bluerocktel.billing.services import add_discount

    with _workbench(args).db.transaction() as s:
        discount = add_discount(s, _account_id(s, args.account), args.kind, args.value, args.description,
                                valid_from=args.valid_from, valid_to=args.valid_to, applies_to=args.applies_to,
                                service_id=args.service, actor=args.actor)
        payload = {"discount_id": discount.id, "account": args.account, "kind": args.kind, "value": args.value,
                   "applies_to": args.applies_to, "valid_from": args.valid_from, "valid_to": args.valid_to}
    _print(args, payload, f"discount {payload['discount_id']} for {args.account}: {args.kind} {args.value} on "
                          f"{args.applies_to} from {args.valid_from} to {args.valid_to or 'no end'}")
    return 0


def cmd_vat_check(args) -> int:
    from bluerocktel.billing.vat import validate_vat_number

    try:
        number = validate_vat_number(args.number)
    except UserFacingError as exc:
        _print(args, {"number": args.number, "valid": False, "error": str(exc)}, f"invalid: {exc}")
        return 1
    _print(args, {"number": number, "valid": True}, f"{number}: well-formed")
    return 0


def add_commands(sub, common) -> None:
    """Add ``change-plan``, ``charge``, ``discount`` and ``vat-check`` to ``sub`` (the subparsers of
    ``bluerocktel billing``); ``common`` gives ``--data-dir`` and ``--json``."""
    p = sub.add_parser("change-plan", parents=[common], help="move a service to another product from a day")
    p.add_argument("--service", type=int, required=True, help="service id")
    p.add_argument("--product", required=True, help="code of the new product")
    p.add_argument("--on", type=_date, required=True, help="first day on the new product, YYYY-MM-DD")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_change_plan)

    p = sub.add_parser("charge", parents=[common], help="add a one-off charge or fee to the next invoice")
    p.add_argument("--account", required=True, help="account number")
    p.add_argument("--description", required=True)
    p.add_argument("--unit-price", required=True, help="before VAT, e.g. 49.90")
    p.add_argument("--quantity", default="1")
    p.add_argument("--kind", default="one_off", choices=["one_off", "fee"])
    p.add_argument("--vat-rate", default=None, help="e.g. 0.055 (default: the account's rate)")
    p.add_argument("--date", type=_date, default=None, help="charge date, YYYY-MM-DD (default: today)")
    p.add_argument("--service", type=int, default=None, help="service id it concerns")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_charge)

    p = sub.add_parser("discount", parents=[common], help="add a percent or monthly amount discount")
    p.add_argument("--account", required=True, help="account number")
    p.add_argument("--kind", required=True, choices=["percent", "amount"])
    p.add_argument("--value", required=True, help="0.10 for 10 %%, or an amount per month before VAT")
    p.add_argument("--description", required=True)
    p.add_argument("--from", dest="valid_from", type=_date, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="valid_to", type=_date, default=None, help="end day (excluded), YYYY-MM-DD")
    p.add_argument("--applies-to", default="all", choices=["subscription", "usage", "all"])
    p.add_argument("--service", type=int, default=None, help="only this service's lines")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_discount)

    p = sub.add_parser("vat-check", parents=[common], help="check the format of an EU VAT number")
    p.add_argument("number")
    p.set_defaults(func=cmd_vat_check)
