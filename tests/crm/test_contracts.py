"""Contracts: commitment end from the term, tacit renewal, notice list, termination with an early-termination fee."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.crm.contracts import (create_contract, remaining_months, renewals, shift_months,
                                       terminate_contract)
from bluerocktel.db.models import Account, AuditEntry, Brand, OneOffCharge, Product, Service, ServiceEvent
from bluerocktel.errors import ConflictError


@pytest.fixture
def account_id(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        account = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
        s.add(account)
        s.flush()
        return account.id


def test_month_arithmetic():
    assert shift_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert shift_months(dt.date(2028, 1, 31), 1) == dt.date(2028, 2, 29)
    assert shift_months(dt.date(2026, 3, 15), 24) == dt.date(2028, 3, 15)
    # 15 Mar 2026 -> 1 Jan 2027: +9 months is 15 Dec 2026 (before), +10 is 15 Jan 2027: 10 started months
    assert remaining_months(dt.date(2026, 3, 15), dt.date(2027, 1, 1)) == 10
    assert remaining_months(dt.date(2026, 3, 1), dt.date(2027, 3, 1)) == 12
    assert remaining_months(dt.date(2027, 3, 1), dt.date(2027, 3, 1)) == 0


def test_renewal_at_term_and_notice_list(wb, account_id):
    with wb.db.transaction() as s:
        renewing = create_contract(s, account_id, start_date=dt.date(2025, 11, 20), term_months=12, notice_days=30,
                                   actor="sales@x")
        assert (renewing.reference, renewing.commitment_end) == ("CT-C0001-001", dt.date(2026, 11, 20))
        fixed = create_contract(s, account_id, start_date=dt.date(2026, 1, 15), term_months=12, notice_days=60,
                                auto_renew=False, actor="sales@x")
        later = create_contract(s, account_id, start_date=dt.date(2026, 6, 1), term_months=36, actor="sales@x")
        ids = renewing.id, fixed.id, later.id
    with wb.db.transaction() as s:
        report = renewals(s, dt.date(2026, 11, 26), within_days=30, actor="scheduler")
        assert [(r.reference, r.previous_end, r.commitment_end) for r in report.renewed] == [
            ("CT-C0001-001", dt.date(2026, 11, 20), dt.date(2027, 11, 20))]
        # fixed: 15 Jan 2027 - 60 days = 16 Nov 2026, already passed; renewing: 20 Nov 2027 - 30 days = 21 Oct
        # 2027, far; later (36 months): 1 Jun 2029, far. Nothing within 30 days of 26 Nov 2026.
        assert report.notice_due == []
        report = renewals(s, dt.date(2026, 11, 10), within_days=30)
        assert report.renewed == []
        assert [(n.contract_id, n.notice_deadline) for n in report.notice_due] == [(ids[1], dt.date(2026, 11, 16))]
    with wb.db.session() as s:
        audit = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "contract.renew")).all()
        assert [(a.actor, a.target_id, a.details["commitment_end"]) for a in audit] == [
            ("scheduler", str(ids[0]), "2027-11-20")]


def _contract_with_services(wb, account_id):
    with wb.db.transaction() as s:
        contract = create_contract(s, account_id, start_date=dt.date(2026, 1, 1), term_months=24, notice_days=30,
                                   minimum_monthly="50", actor="sales@x")
        sip = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        box = Product(code="BOX", name="Router, yearly", kind="recurring", price=Decimal("120.00"),
                      billing_period_months=12)
        setup = Product(code="SETUP", name="Installation", kind="one_off", price=Decimal("99.00"))
        s.add_all([sip, box, setup])
        s.flush()
        for product, quantity, price in ((sip, 2, Decimal("25.50")), (box, 1, None), (setup, 1, None)):
            s.add(Service(account_id=account_id, contract_id=contract.id, product_id=product.id, label=product.name,
                          quantity=quantity, unit_price=price, status="active", activated_on=dt.date(2026, 1, 1)))
        return contract.id


def test_early_termination_is_refused_without_early_then_charged(wb, account_id):
    contract_id = _contract_with_services(wb, account_id)
    with pytest.raises(ConflictError, match="before the notice deadline 2027-12-02 is an early termination"):
        with wb.db.transaction() as s:
            terminate_contract(s, contract_id, on=dt.date(2026, 3, 15), reason="moving", actor="sales@x")
    with wb.db.transaction() as s:
        result = terminate_contract(s, contract_id, on=dt.date(2026, 3, 15), reason="moving", actor="sales@x",
                                    early=True)
        # commitment end 1 Jan 2028; from 15 Mar 2026: 22 started months (+21 = 15 Dec 2027, +22 = 15 Jan 2028).
        # monthly = 2 × 25.50 + 120.00 / 12 = 51.00 + 10.00 = 61.00 (one-off excluded), above the 50 minimum.
        fee = result.fee
        assert (fee.kind, fee.quantity, fee.unit_price, fee.charge_date) == (
            "fee", Decimal(22), Decimal("61.00"), dt.date(2026, 3, 15))
        assert fee.quantity * fee.unit_price == Decimal("1342.00")   # 22 × 61.00
        assert len(result.terminated_service_ids) == 3
    with wb.db.session() as s:
        assert {sv.status for sv in s.scalars(sa.select(Service))} == {"terminated"}
        assert {sv.terminated_on for sv in s.scalars(sa.select(Service))} == {dt.date(2026, 3, 15)}
        events = s.scalars(sa.select(ServiceEvent)).all()
        assert [e.kind for e in events] == ["terminated"] * 3
        assert events[0].reason == "contract CT-C0001-001 terminated: moving"
        audit = s.scalar(sa.select(AuditEntry).where(AuditEntry.action == "contract.terminate"))
        assert (audit.details["early"], audit.details["fee"], audit.details["notice_deadline"]) == (
            True, "1342.00", "2027-12-02")
    with pytest.raises(ConflictError, match="is ended: it cannot be terminated"):
        with wb.db.transaction() as s:
            terminate_contract(s, contract_id, on=dt.date(2026, 4, 1), reason="again", actor="t", early=True)


def test_termination_after_the_notice_deadline_has_no_fee(wb, account_id):
    contract_id = _contract_with_services(wb, account_id)
    with wb.db.transaction() as s:
        result = terminate_contract(s, contract_id, on=dt.date(2027, 12, 2), reason="end of term", actor="t")
        assert result.fee is None and result.contract.status == "ended"
        assert result.contract.end_date == dt.date(2027, 12, 2)
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count(OneOffCharge.id))) == 0


def test_a_contract_without_commitment_ends_any_day_without_fee(wb, account_id):
    """Contracts entered without a commitment end (older data, month-to-month): no notice, no fee."""
    from bluerocktel.db.models import Contract

    with wb.db.transaction() as s:
        contract = Contract(account_id=account_id, reference="CT-FREE", start_date=dt.date(2026, 1, 1),
                            term_months=0, commitment_end=None)
        s.add(contract)
        s.flush()
        report = renewals(s, dt.date(2026, 1, 15))               # nothing to renew, no notice to give
        assert (report.renewed, report.notice_due) == ([], [])
        result = terminate_contract(s, contract.id, on=dt.date(2026, 2, 10), reason="moving", actor="t")
        assert (result.fee, result.contract.status, result.contract.end_date) == (None, "ended",
                                                                                  dt.date(2026, 2, 10))
