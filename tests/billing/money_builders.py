"""Builders for the money-in tests: a brand, accounts and issued invoices with exact amounts."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys
from decimal import Decimal
from types import SimpleNamespace

from bluerocktel.billing.charges import compute_vat
from bluerocktel.billing.cli_money import add_commands
from bluerocktel.db import Database
from bluerocktel.db.models import Account, Brand, Invoice, InvoiceLine
from bluerocktel.errors import UserFacingError
from bluerocktel.workbench import Workbench


def make_brand(s, code: str = "BRT") -> Brand:
    brand = Brand(code=code, name=f"{code} Telecom", legal_name=f"{code} Telecom SAS", invoice_prefix="FA")
    s.add(brand)
    s.flush()
    return brand


def make_account(s, brand: Brand, number: str = "C0001", name: str = "Boulangerie Martin",
                 currency: str = "EUR") -> Account:
    account = Account(number=number, brand_id=brand.id, name=name, currency=currency, payment_terms_days=30)
    s.add(account)
    s.flush()
    return account


def make_invoice(s, account: Account, number: str, month: int, lines: list[tuple[str, int, str]],
                 year: int = 2026) -> Invoice:
    """An issued invoice for ``month``: ``lines`` are (description, amount_minor, vat_rate[, quantity]); due 30 days
    after the issue on the 1st of the next month; VAT per rate as the cycle computes it."""
    start = dt.date(year, month, 1)
    end = dt.date(year + month // 12, month % 12 + 1, 1)
    invoice_lines = [InvoiceLine(position=i, kind="subscription", description=text, quantity=Decimal(quantity),
                                 unit="month", unit_price_precise=Decimal(minor) / 100 / quantity,
                                 amount_precise=Decimal(minor) / 100, amount_minor=minor, vat_rate=Decimal(rate))
                     for i, (text, minor, rate, quantity) in enumerate(((*ln, 1)[:4] for ln in lines), 1)]
    vat = sum(v.vat_minor for v in compute_vat((line.vat_rate, line.amount_minor) for line in invoice_lines))
    subtotal = sum(line.amount_minor for line in invoice_lines)
    invoice = Invoice(number=number, kind="invoice", status="issued", account_id=account.id,
                      brand_id=account.brand_id, currency=account.currency, period_start=start, period_end=end,
                      issue_date=end, due_date=end + dt.timedelta(days=30), subtotal_minor=subtotal,
                      vat_minor=vat, total_minor=subtotal + vat, lines=invoice_lines)
    s.add(invoice)
    s.flush()
    return invoice


def sqlite_workbench(data_dir) -> Workbench:
    """A migrated SQLite workbench, for module-scoped fixtures (tests then use their own brand/account)."""
    db = Database(f"sqlite:///{data_dir / 'bluerocktel.db'}")
    db.migrate()
    return Workbench(data_dir, db)


_codes = itertools.count(1)


def new_customer(wb, months=(1, 2), nets=(10000, 5000)) -> SimpleNamespace:
    """A fresh brand ``Bn`` and account ``Cn`` with one invoice per month (net ``nets``, VAT 20 %),
    numbered ``Bn-2026-00000m``: independent of the other tests sharing the workbench."""
    k = next(_codes)
    with wb.db.transaction() as s:
        brand = make_brand(s, f"B{k}")
        account = make_account(s, brand, number=f"C{k}")
        invoices = [make_invoice(s, account, f"B{k}-2026-{i:06d}", month, [("Trunk SIP", net, "0.20")])
                    for i, (month, net) in enumerate(zip(months, nets), 1)]
        return SimpleNamespace(brand_id=brand.id, account_id=account.id, number=account.number,
                               invoice_ids=[i.id for i in invoices], numbers=[i.number for i in invoices])


def run_money_cli(data_dir, *argv: str) -> int:
    """``bluerocktel billing ARGV`` through :func:`bluerocktel.billing.cli_money.add_commands`, errors
    printed and turned into exit code 2 as ``bluerocktel.cli.main`` does."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser(prog="bluerocktel billing")
    add_commands(parser.add_subparsers(dest="billing_command", required=True), common)
    args = parser.parse_args([*argv, "--data-dir", str(data_dir)])
    try:
        return args.func(args)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
