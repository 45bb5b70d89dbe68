"""Contracts: term, commitment end, notice period, tacit renewal and termination.

A contract starts on ``start_date`` for ``term_months``: ``commitment_end`` = start + term (the
same day of the month, the month's last day when it is shorter: 31 Jan + 1 month = 28/29 Feb).
The customer must give notice ``notice_days`` before it: the **notice deadline** is
``commitment_end - notice_days``.

- :func:`renewals` (run daily): an ``auto_renew`` contract whose commitment end has come is
  renewed for another ``term_months`` (audited); it also lists the contracts whose notice deadline
  falls within the next ``within_days`` days, for the account managers.
- :func:`terminate_contract`: terminating before the notice deadline is refused unless
  ``early=True``. An early termination charges the rest of the commitment as one fee
  (a :class:`~bluerocktel.db.models.OneOffCharge` of kind ``fee``, billed with the next invoice)::

      remaining_months = the number of whole or started months from the termination day to
                         the commitment end (0 when it is not before it)
      monthly          = max(Σ over the contract's services not yet terminated, recurring products only,
                               of quantity × unit price (the service's, else the product's)
                               ÷ billing_period_months,
                             minimum_monthly or 0)
      fee              = remaining_months × monthly (quantity × unit price of the charge), rounded
                         to cents ROUND_HALF_UP when invoiced

  Every service of the contract not yet terminated is then terminated on that day through
  :func:`bluerocktel.crm.lifecycle.transition` (events for provisioning), in the same transaction.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.payments import lock_account
from bluerocktel.crm.catalog import parse_price
from bluerocktel.crm.lifecycle import transition
from bluerocktel.db.models import Contact, Contract, OneOffCharge, Product, Service
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.money import D
from bluerocktel.vocabulary import AccountStatus, ChargeKind, ContractStatus, ProductKind, ServiceStatus


def shift_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by ``months``, kept on the same day of the month or the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def notice_deadline(contract: Contract) -> dt.date:
    """The last day to give notice for the contract to end at its commitment end."""
    return contract.commitment_end - dt.timedelta(days=contract.notice_days)


def remaining_months(on: dt.date, end: dt.date) -> int:
    """Whole or started months from ``on`` to ``end``: the smallest m with on + m months >= end."""
    months = 0
    while shift_months(on, months) < end:
        months += 1
    return months


def _check_terms(term_months: int, notice_days: int) -> None:
    if not isinstance(term_months, int) or term_months < 1:
        raise UserFacingError(f"term_months {term_months!r}: a whole number of months, at least 1")
    if not isinstance(notice_days, int) or notice_days < 0:
        raise UserFacingError(f"notice_days {notice_days!r}: a whole number of days, 0 or more")


def create_contract(session: Session, account_id: int, *, start_date: dt.date, actor: str, term_months: int = 12,
                    notice_days: int = 30, auto_renew: bool = True, minimum_monthly: Decimal | str | None = None,
                    signed_at: dt.datetime | None = None, signatory_contact_id: int | None = None,
                    reference: str | None = None) -> Contract:
    """A new active contract; ``reference`` defaults to ``CT-<account number>-<n:03d>`` (n-th of the account)."""
    account = lock_account(session, account_id)
    if account.status == AccountStatus.CLOSED:
        raise ConflictError(f"account {account.number} is closed: no new contract")
    _check_terms(term_months, notice_days)
    minimum = None if minimum_monthly is None else parse_price(minimum_monthly, "minimum_monthly")
    if signatory_contact_id is not None:
        contact = session.get(Contact, signatory_contact_id)
        if contact is None or contact.account_id != account.id:
            raise UserFacingError(f"signatory_contact_id {signatory_contact_id}: not a contact of account "
                                  f"{account.number}")
    if reference is None:
        count = session.scalar(select(func.count(Contract.id)).where(Contract.account_id == account.id))
        reference = f"CT-{account.number}-{count + 1:03d}"
    if session.scalar(select(Contract.id).where(Contract.reference == reference)) is not None:
        raise ConflictError(f"reference {reference!r}: a contract has this reference already")
    contract = Contract(account_id=account.id, reference=reference, status=ContractStatus.ACTIVE,
                        start_date=start_date, term_months=term_months,
                        commitment_end=shift_months(start_date, term_months), notice_days=notice_days,
                        auto_renew=auto_renew, minimum_monthly=minimum, signed_at=signed_at,
                        signatory_contact_id=signatory_contact_id)
    session.add(contract)
    session.flush()
    record_audit(session, actor, "contract.create", "contract", contract.id, reference=reference,
                 account_id=account.id, start_date=start_date.isoformat(), term_months=term_months,
                 commitment_end=contract.commitment_end.isoformat(), notice_days=notice_days, auto_renew=auto_renew)
    return contract


def get_contract(session: Session, contract_id: int, *, lock: bool = False) -> Contract:
    contract = session.get(Contract, contract_id, with_for_update=lock or None)
    if contract is None:
        raise NotFoundError(f"no contract {contract_id}")
    return contract


@dataclass(frozen=True)
class Renewal:
    contract_id: int
    reference: str
    previous_end: dt.date
    commitment_end: dt.date


@dataclass(frozen=True)
class NoticeDue:
    contract_id: int
    reference: str
    account_id: int
    notice_deadline: dt.date
    commitment_end: dt.date
    auto_renew: bool


@dataclass(frozen=True)
class RenewalReport:
    renewed: list[Renewal]
    notice_due: list[NoticeDue]


def renewals(session: Session, today: dt.date, *, within_days: int = 30, actor: str = "system") -> RenewalReport:
    """Renew auto-renewing contracts at term, then list those whose notice deadline is in [today, today + N days]."""
    active = session.scalars(select(Contract).where(Contract.status == ContractStatus.ACTIVE,
                                                    Contract.commitment_end.is_not(None))
                             .order_by(Contract.id).with_for_update()).all()
    renewed = []
    for c in active:
        if not c.auto_renew or c.commitment_end > today:
            continue
        previous = c.commitment_end
        while c.commitment_end <= today:
            c.commitment_end = shift_months(c.commitment_end, c.term_months)
        renewed.append(Renewal(c.id, c.reference, previous, c.commitment_end))
        record_audit(session, actor, "contract.renew", "contract", c.id, previous_end=previous.isoformat(),
                     commitment_end=c.commitment_end.isoformat(), term_months=c.term_months)
    session.flush()
    horizon = today + dt.timedelta(days=within_days)
    due = [NoticeDue(c.id, c.reference, c.account_id, notice_deadline(c), c.commitment_end, c.auto_renew)
           for c in active if today <= notice_deadline(c) <= horizon]
    return RenewalReport(renewed, sorted(due, key=lambda n: (n.notice_deadline, n.contract_id)))


def monthly_commitment(session: Session, contract: Contract) -> Decimal:
    """What the contract is worth per month (see the module docstring)."""
    total = Decimal(0)
    rows = session.execute(select(Service, Product).join(Product, Product.id == Service.product_id).where(
        Service.contract_id == contract.id, Service.status != ServiceStatus.TERMINATED))
    for service, product in rows:
        if product.kind != ProductKind.RECURRING:
            continue
        price = D(service.unit_price if service.unit_price is not None else product.price)
        total += price * service.quantity / (product.billing_period_months or 1)
    return max(total, D(contract.minimum_monthly) if contract.minimum_monthly is not None else Decimal(0))


@dataclass(frozen=True)
class Termination:
    contract: Contract
    fee: OneOffCharge | None
    terminated_service_ids: list[int]


def terminate_contract(session: Session, contract_id: int, *, on: dt.date, reason: str, actor: str,
                       early: bool = False) -> Termination:
    """End the contract on ``on`` and terminate its services; before the notice deadline only when ``early``."""
    if not reason or not reason.strip():
        raise UserFacingError("reason is required to terminate a contract")
    contract = get_contract(session, contract_id, lock=True)
    if contract.status != ContractStatus.ACTIVE:
        raise ConflictError(f"contract {contract.reference} is {contract.status}: it cannot be terminated")
    if on < contract.start_date:
        raise UserFacingError(f"on {on}: before the contract's start {contract.start_date}")
    deadline = notice_deadline(contract) if contract.commitment_end else None   # no commitment: no notice
    fee = None
    if deadline is not None and on < deadline:
        if not early:
            raise ConflictError(f"contract {contract.reference} is committed until {contract.commitment_end}: "
                                f"terminating it before the notice deadline {deadline} is an early termination "
                                f"(early=true, with a fee for the remaining months)")
        months = remaining_months(on, contract.commitment_end)
        monthly = monthly_commitment(session, contract)
        if months and monthly:
            fee = OneOffCharge(account_id=contract.account_id, kind=ChargeKind.FEE, quantity=Decimal(months),
                               unit_price=monthly, charge_date=on, created_by=actor,
                               description=f"Early termination of {contract.reference}: {months} month(s) "
                                           f"remaining until {contract.commitment_end}")
            session.add(fee)
    ended = []
    services = session.scalars(select(Service.id).where(Service.contract_id == contract.id,
                                                        Service.status != ServiceStatus.TERMINATED)
                               .order_by(Service.id)).all()
    for service_id in services:
        transition(session, service_id, "terminate", reason=f"contract {contract.reference} terminated: {reason}",
                   actor=actor, on=on)
        ended.append(service_id)
    contract.status, contract.end_date = ContractStatus.ENDED, on
    session.flush()
    record_audit(session, actor, "contract.terminate", "contract", contract.id, on=on.isoformat(),
                 reason=reason.strip(), early=deadline is not None and on < deadline,
                 notice_deadline=deadline.isoformat() if deadline else None,
                 fee_charge_id=fee.id if fee else None,
                 fee=str(fee.quantity * fee.unit_price) if fee else None, services=ended)
    return Termination(contract, fee, ended)
