"""change_plan and the CLI of what is billed: the old service ends, a new one starts, identifiers
and bundles move at local midnight; charges and discounts are recorded with an audit entry.

Story: Boulangerie Martin (Europe/Paris) has BASIC 20.00/month in advance since 1 January 2026,
number +33140000001 and a 100-minute bundle. On 17 March 2026 it moves to PRO 35.00/month.
Paris is UTC+1 on 17 March, so the move happens at 2026-03-16 23:00 UTC.
"""

import argparse
import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.billing.charges import build_subscription_lines
from bluerocktel.billing.cli_charges import add_commands
from bluerocktel.billing.periods import parse_period
from bluerocktel.billing.services import change_plan
from bluerocktel.db.models import (Account, AuditEntry, Brand, Bundle, Discount, OneOffCharge, Product, Service,
                                   ServiceBundle, ServiceEvent, ServiceIdentifier)
from bluerocktel.errors import NotFoundError, UserFacingError

UTC = dt.timezone.utc
JAN = dt.datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
MOVED = dt.datetime(2026, 3, 16, 23, 0, tzinfo=UTC)


def build_world(wb) -> dict:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        basic = Product(code="BASIC", name="Basic", kind="recurring", price=Decimal("20.00"))
        pro = Product(code="PRO", name="Pro", kind="recurring", price=Decimal("35.00"))
        setup = Product(code="SETUP", name="Mise en service", kind="one_off", price=Decimal("50.00"))
        bundle = Bundle(code="B100", name="100 min", call_type="voice", zones=["France fixe"], allowance=6000)
        account = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin", timezone="Europe/Paris")
        s.add_all([basic, pro, setup, bundle, account])
        s.flush()
        svc = Service(account_id=account.id, product_id=basic.id, label="Siège", quantity=1,
                      activated_on=dt.date(2026, 1, 1))
        s.add(svc)
        s.flush()
        s.add_all([ServiceIdentifier(service_id=svc.id, kind="number", value="+33140000001", valid_from=JAN),
                   ServiceIdentifier(service_id=svc.id, kind="did", value="+33140000099", valid_from=JAN,
                                     valid_to=dt.datetime(2026, 2, 1, tzinfo=UTC)),     # ended: stays
                   ServiceBundle(service_id=svc.id, bundle_id=bundle.id, valid_from=JAN)])
        return {"service": svc.id, "basic": basic.id, "pro": pro.id, "setup": setup.id}


def test_a_plan_change_splits_the_service_its_identifiers_and_bundles_and_bills_both_prorated(wb):
    ids = build_world(wb)
    with wb.db.transaction() as s:
        new = change_plan(s, ids["service"], ids["pro"], dt.date(2026, 3, 17), actor="alice")
        new_id = new.id
    with wb.db.session() as s:
        old, new = s.get(Service, ids["service"]), s.get(Service, new_id)
        assert (old.status, old.terminated_on) == ("terminated", dt.date(2026, 3, 17))
        assert (new.status, new.product_id, new.label, new.quantity, new.activated_on, new.terminated_on) == (
            "active", ids["pro"], "Siège", 1, dt.date(2026, 3, 17), None)
        rows = s.execute(sa.select(ServiceIdentifier.service_id, ServiceIdentifier.value,
                                   ServiceIdentifier.valid_from, ServiceIdentifier.valid_to)
                         .order_by(ServiceIdentifier.id)).all()
        assert [tuple(r) for r in rows] == [
            (old.id, "+33140000001", JAN, MOVED), (old.id, "+33140000099", JAN, dt.datetime(2026, 2, 1, tzinfo=UTC)),
            (new.id, "+33140000001", MOVED, None)]
        grants = s.execute(sa.select(ServiceBundle.service_id, ServiceBundle.valid_from, ServiceBundle.valid_to)
                           .order_by(ServiceBundle.id)).all()
        assert [tuple(g) for g in grants] == [(old.id, JAN, MOVED), (new.id, MOVED, None)]
        events = s.scalars(sa.select(ServiceEvent).order_by(ServiceEvent.id)).all()
        assert [(e.service_id, e.kind, e.reason, e.actor, e.at) for e in events] == [
            (old.id, "terminated", "plan change", "alice", MOVED), (new.id, "activated", "plan change", "alice", MOVED)]
        assert events[0].payload["new_service_id"] == new.id
        audit = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "service.change_plan")).one()
        assert (audit.actor, audit.target_id, audit.details["new_product_id"]) == ("alice", str(old.id), ids["pro"])

        # The March cycle (advance): February's cycle billed March on BASIC; now
        # BASIC 17..31 March refunded: -(2000 - round(2000 x 16/31 = 1032.26 -> 1032)) = -968
        # PRO 17..31 March: 3500 - round(3500 x 16/31 = 1806.45 -> 1806) = 1694, and PRO April 3500
        account = s.get(Account, old.account_id)
        lines, anomalies = build_subscription_lines(account, [old, new], parse_period("2026-03"), Decimal("0.20"))
        assert anomalies == []
        assert [(l.description, l.amount_minor) for l in lines] == [
            ("Remboursement Basic — Siège, du 17/03/2026 au 31/03/2026 (prorata 15/31 jours)", -968),
            ("Pro — Siège, du 17/03/2026 au 31/03/2026 (prorata 15/31 jours)", 1694),
            ("Pro — Siège, du 01/04/2026 au 30/04/2026", 3500)]
        # so March costs 16 days of BASIC (2000 - 968 = 1032) and 15 days of PRO (1694)


def test_refused_plan_changes_write_nothing(wb):
    ids = build_world(wb)
    cases = [
        (dict(service_id=999, new_product_id=ids["pro"], on=dt.date(2026, 3, 17)), NotFoundError, "no service 999"),
        (dict(service_id=ids["service"], new_product_id=999, on=dt.date(2026, 3, 17)), NotFoundError, "no product"),
        (dict(service_id=ids["service"], new_product_id=ids["basic"], on=dt.date(2026, 3, 17)), UserFacingError,
         "on product BASIC already"),
        (dict(service_id=ids["service"], new_product_id=ids["setup"], on=dt.date(2026, 3, 17)), UserFacingError,
         "SETUP is one_off"),
        (dict(service_id=ids["service"], new_product_id=ids["pro"], on=dt.date(2026, 1, 1)), UserFacingError,
         "must be after the service's activation on 2026-01-01"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            with wb.db.transaction() as s:
                change_plan(s, actor="alice", **kwargs)
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Service)) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(ServiceEvent)) == 0


def run_cli(wb, *argv: str) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(required=True), common)
    args = parser.parse_args([*argv, "--data-dir", str(wb.data_dir)])
    return args.func(args)


def test_the_cli_changes_plans_and_adds_charges_and_discounts(wb, capsys):
    ids = build_world(wb)
    assert run_cli(wb, "change-plan", "--service", str(ids["service"]), "--product", "PRO", "--on", "2026-03-17",
                   "--actor", "bob") == 0
    assert "moves to PRO on 2026-03-17" in capsys.readouterr().out
    assert run_cli(wb, "charge", "--account", "C001", "--description", "Installation", "--unit-price", "49.90",
                   "--quantity", "2", "--date", "2026-03-20", "--vat-rate", "0.055") == 0
    assert run_cli(wb, "discount", "--account", "C001", "--kind", "percent", "--value", "0.10", "--description",
                   "Bienvenue", "--from", "2026-04-01", "--to", "2026-07-01", "--applies-to", "subscription") == 0
    with wb.db.session() as s:
        charge = s.scalars(sa.select(OneOffCharge)).one()
        assert (charge.kind, charge.quantity, charge.unit_price, charge.vat_rate, charge.charge_date,
                charge.invoice_id) == ("one_off", Decimal("2"), Decimal("49.90"), Decimal("0.055"),
                                       dt.date(2026, 3, 20), None)
        discount = s.scalars(sa.select(Discount)).one()
        assert (discount.kind, discount.value, discount.applies_to, discount.valid_from, discount.valid_to) == (
            "percent", Decimal("0.10"), "subscription", dt.date(2026, 4, 1), dt.date(2026, 7, 1))
        assert sorted(s.scalars(sa.select(AuditEntry.action))) == ["charge.add", "discount.add",
                                                                  "service.change_plan"]
    capsys.readouterr()
    assert run_cli(wb, "vat-check", "fr40 303 265 045") == 0
    assert capsys.readouterr().out == "FR40303265045: well-formed\n"
    assert run_cli(wb, "vat-check", "FR41303265045") == 1
    for argv, message in [
        (["discount", "--account", "C001", "--kind", "percent", "--value", "15", "--description", "x", "--from",
          "2026-04-01"], "value 15 is out of range"),
        (["discount", "--account", "C001", "--kind", "amount", "--value", "5", "--description", "x", "--from",
          "2026-04-01", "--to", "2026-04-01"], "not after it starts"),
        (["charge", "--account", "C404", "--description", "x", "--unit-price", "1"], "no account 'C404'"),
        (["charge", "--account", "C001", "--description", "x", "--unit-price", "1,2,3"], "unit price: not a decimal"),
        (["charge", "--account", "C001", "--description", "x", "--unit-price", "1", "--service", "999"],
         "account C001 has no service 999"),
    ]:
        with pytest.raises(UserFacingError, match=message):
            run_cli(wb, *argv)
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OneOffCharge)) == 1
