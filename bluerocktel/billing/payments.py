"""Money in: payments, their allocation to invoices, account credit, balances and statements.

- An **allocation** settles part of an invoice from a payment (``payment_id``) or from a credit
  note (``credit_note_id``). The open amount of an invoice is its total minus its allocations not
  reversed; the credit of an account is what its received payments and its credit notes have not
  allocated yet. Allocations never exceed either side, so both stay ≥ 0.
- Payments are allocated to the oldest open invoice first (due date, then issue date, then id),
  or to the invoice(s) named; what is left is credit, applied by :func:`apply_account_credit`
  when the next invoice is issued.
- Every money movement of an account first locks the account row (``SELECT … FOR UPDATE`` on
  PostgreSQL; on SQLite a first write takes the database write lock), so two payments arriving
  together never allocate the same open amount twice.
- A returned payment (SEPA reject, bounced transfer) keeps its row; its allocations are reversed
  (``reversed_at``) and its invoices reopen.

Amounts are integer minor units (``*_minor``) of the account's currency.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Account, Allocation, Invoice, Payment, UTCDateTime, utcnow
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.money import D, MoneyError, from_minor, minor_digits, to_minor
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import InvoiceKind, InvoiceStatus, PaymentMethod, PaymentSource, PaymentStatus


class DuplicatePaymentError(UserFacingError):
    """A payment with this bank reference was recorded already."""


def operator_today() -> dt.date:
    """Today in the operator's time zone (due dates and statements are local dates)."""
    return dt.datetime.now(ZoneInfo(get_setting("default_timezone"))).date()


def local_date(moment: dt.datetime) -> dt.date:
    """The operator's calendar date of a UTC datetime (statements are dated in local time)."""
    return moment.astimezone(ZoneInfo(get_setting("default_timezone"))).date()


def lock_accounts(session: Session, account_ids: Iterable[int]) -> None:
    """Lock the accounts ``account_ids`` against concurrent money movements until the transaction ends."""
    ids = sorted(set(account_ids))
    if not ids:
        return
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks: a first write takes the single write lock for the transaction.
        session.execute(sa.text("UPDATE accounts SET id = id WHERE id IN :ids")
                        .bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids})
    else:
        session.execute(sa.select(Account.id).where(Account.id.in_(ids)).order_by(Account.id).with_for_update())


def lock_account(session: Session, account_id: int) -> Account:
    """Lock ``account_id`` against concurrent money movements until the transaction ends."""
    lock_accounts(session, [account_id])
    account = session.get(Account, account_id, populate_existing=True)
    if account is None:
        raise NotFoundError(f"no account with id {account_id}")
    return account


def _allocated_sums(session: Session, column, ids: Iterable[int]) -> dict[int, int]:
    """Σ active allocations grouped by ``column`` (invoice, payment or credit note) for ``ids``."""
    ids = list(ids)
    if not ids:
        return {}
    rows = session.execute(sa.select(column, sa.func.sum(Allocation.amount_minor))
                           .where(column.in_(ids), Allocation.reversed_at.is_(None)).group_by(column))
    return {key: int(total) for key, total in rows}


def open_amount_minor(session: Session, invoice_id: int) -> int:
    """What is still to pay on an invoice: total minus active allocations (never below 0)."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id}")
    if invoice.kind != InvoiceKind.INVOICE:
        return 0
    allocated = _allocated_sums(session, Allocation.invoice_id, [invoice_id]).get(invoice_id, 0)
    return max(invoice.total_minor - allocated, 0)


def open_invoices(session: Session, account_id: int, only: Sequence[int] | None = None
                   ) -> list[tuple[Invoice, int]]:
    """``(invoice, open_minor)`` of the account's invoices still open, oldest due first."""
    query = (sa.select(Invoice).where(Invoice.account_id == account_id, Invoice.kind == InvoiceKind.INVOICE,
                                      Invoice.status != InvoiceStatus.CREDITED)
             .order_by(Invoice.due_date, Invoice.issue_date, Invoice.id))
    if only is not None:
        query = query.where(Invoice.id.in_(list(only)))
    invoices = session.scalars(query).all()
    allocated = _allocated_sums(session, Allocation.invoice_id, [i.id for i in invoices])
    pairs = [(inv, inv.total_minor - allocated.get(inv.id, 0)) for inv in invoices]
    return [(inv, open_minor) for inv, open_minor in pairs if open_minor > 0]


def _credit_sources(session: Session, account_id: int) -> list[tuple[dict, int, dt.date]]:
    """Unallocated credit of the account, oldest first: ``({payment_id|credit_note_id: id}, minor, date)``."""
    payments = session.scalars(sa.select(Payment).where(
        Payment.account_id == account_id, Payment.status == PaymentStatus.RECEIVED)).all()
    notes = session.scalars(sa.select(Invoice).where(
        Invoice.account_id == account_id, Invoice.kind == InvoiceKind.CREDIT_NOTE)).all()
    by_payment = _allocated_sums(session, Allocation.payment_id, [p.id for p in payments])
    by_note = _allocated_sums(session, Allocation.credit_note_id, [n.id for n in notes])
    sources = [({"payment_id": p.id}, p.amount_minor - by_payment.get(p.id, 0), local_date(p.received_at))
               for p in payments]
    sources += [({"credit_note_id": n.id}, n.total_minor - by_note.get(n.id, 0), n.issue_date) for n in notes]
    sources = [s for s in sources if s[1] > 0]
    return sorted(sources, key=lambda s: (s[2], "credit_note_id" in s[0], next(iter(s[0].values()))))


def _spread(session: Session, source: dict, available: int, invoices: list[tuple[Invoice, int]]) -> int:
    """Allocate up to ``available`` from ``source`` over ``invoices`` in order; returns the amount used.

    ``invoices`` is updated in place with what stays open.
    """
    used = 0
    for i, (invoice, open_minor) in enumerate(invoices):
        part = min(open_minor, available - used)
        if part <= 0:
            continue
        session.add(Allocation(invoice_id=invoice.id, amount_minor=part, **source))
        invoices[i] = (invoice, open_minor - part)
        used += part
    session.flush()
    return used


def derived_status(session: Session, invoice: Invoice) -> InvoiceStatus:
    """The status the allocations give an invoice, dispute aside: issued/sent, partially_paid or paid."""
    if invoice.status == InvoiceStatus.CREDITED:
        return InvoiceStatus.CREDITED
    allocated = _allocated_sums(session, Allocation.invoice_id, [invoice.id]).get(invoice.id, 0)
    if allocated >= invoice.total_minor:
        return InvoiceStatus.PAID
    if allocated > 0:
        return InvoiceStatus.PARTIALLY_PAID
    return InvoiceStatus.SENT if invoice.sent_at is not None else InvoiceStatus.ISSUED


def _settled_at(session: Session, invoice_id: int) -> dt.datetime | None:
    """When the last active allocation's money came in: the payment's receipt, else the allocation."""
    return session.scalar(sa.select(sa.type_coerce(
        sa.func.max(sa.func.coalesce(Payment.received_at, Allocation.created_at)), UTCDateTime))
        .select_from(Allocation).outerjoin(Payment, Payment.id == Allocation.payment_id)
        .where(Allocation.invoice_id == invoice_id, Allocation.reversed_at.is_(None)))


def refresh_invoice_status(session: Session, invoice_id: int) -> Invoice:
    """Set partially_paid / paid (+ ``paid_at``) from the allocations; reopen when they were reversed.

    A disputed invoice stays disputed until it is settled; a credited one stays credited.
    """
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id}")
    if invoice.kind != InvoiceKind.INVOICE:
        return invoice
    status = derived_status(session, invoice)
    if invoice.status == InvoiceStatus.DISPUTED and status != InvoiceStatus.PAID:
        status = InvoiceStatus.DISPUTED
    invoice.status = status
    if status == InvoiceStatus.PAID:
        invoice.paid_at = _settled_at(session, invoice.id)
    elif status != InvoiceStatus.CREDITED:
        invoice.paid_at = None
    session.flush()
    return invoice


def parse_amount_minor(amount: Decimal | str | int, currency: str, what: str) -> int:
    """Minor units of a positive amount given in currency units (``"12.34"``); more decimals than the
    currency has are refused, never rounded."""
    try:
        value = D(amount)
    except MoneyError as exc:
        raise UserFacingError(f"{what}: {exc}") from None
    minor = to_minor(value, currency)
    if value <= 0 or from_minor(minor, currency) != value:
        raise UserFacingError(f"{what}: {amount} is not a positive amount with at most "
                              f"{minor_digits(currency)} decimals")
    return minor


def _positive_minor(amount_minor: int, what: str) -> int:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise UserFacingError(f"{what} must be an integer number of minor units (cents), "
                              f"not {type(amount_minor).__name__} {amount_minor!r}")
    if amount_minor <= 0:
        raise UserFacingError(f"{what} must be positive, got {amount_minor}")
    return amount_minor


def _account_invoices(session: Session, account: Account, ids: Sequence[int]) -> list[int]:
    """``ids`` checked: invoices (not credit notes) of ``account``."""
    found = {i.id: i for i in session.scalars(sa.select(Invoice).where(Invoice.id.in_(list(ids))))}
    for invoice_id in ids:
        invoice = found.get(invoice_id)
        if invoice is None:
            raise NotFoundError(f"no invoice {invoice_id}")
        if invoice.account_id != account.id:
            raise UserFacingError(f"invoice {invoice.number} belongs to another account than {account.number}")
        if invoice.kind != InvoiceKind.INVOICE:
            raise UserFacingError(f"{invoice.number} is a credit note: payments settle invoices")
    return list(ids)


def record_payment(session: Session, account_id: int, amount_minor: int, *, method: str,
                   reference: str | None = None, received_at: dt.datetime | None = None,
                   source: str = PaymentSource.MANUAL, bank_reference: str | None = None, actor: str,
                   invoice_id: int | Sequence[int] | None = None, currency: str | None = None) -> Payment:
    """Record a payment received and allocate it; what is left stays as account credit.

    Allocated to the oldest open invoices of the account, or only to ``invoice_id`` (an id, or
    several ids settled oldest due first). ``currency``, when given, must be the account's.
    A second payment with the same ``(source, bank_reference)`` is refused.
    """
    amount_minor = _positive_minor(amount_minor, "payment amount")
    try:
        method, source = PaymentMethod(method).value, PaymentSource(source).value
    except ValueError as exc:
        raise UserFacingError(f"payment: {exc}; methods: {', '.join(m.value for m in PaymentMethod)}") from None
    account = lock_account(session, account_id)
    if currency is not None and currency != account.currency:
        raise UserFacingError(f"payment in {currency} refused: account {account.number} is billed in "
                              f"{account.currency}")
    if bank_reference is not None and session.scalar(sa.select(Payment.id).where(
            Payment.source == source, Payment.bank_reference == bank_reference)) is not None:
        raise DuplicatePaymentError(f"a {source} payment with bank reference {bank_reference!r} exists already")
    targets = None
    if invoice_id is not None:
        targets = _account_invoices(session, account, [invoice_id] if isinstance(invoice_id, int) else invoice_id)
    payment = Payment(account_id=account.id, invoice_id=targets[0] if targets else None, amount_minor=amount_minor,
                      currency=account.currency, method=method, reference=reference,
                      received_at=received_at or utcnow(), status=PaymentStatus.RECEIVED, source=source,
                      bank_reference=bank_reference, created_by=actor)
    session.add(payment)
    session.flush()
    invoices = open_invoices(session, account.id, only=targets)
    used = _spread(session, {"payment_id": payment.id}, amount_minor, invoices)
    for invoice, _ in invoices:
        refresh_invoice_status(session, invoice.id)
    record_audit(session, actor, "payment.record", "payment", payment.id, account=account.number,
                 amount_minor=amount_minor, currency=account.currency, method=method, source=source,
                 reference=reference, bank_reference=bank_reference, allocated_minor=used,
                 credit_minor=amount_minor - used)
    return payment


def _unallocated(session: Session, account: Account, source: dict) -> int:
    """What a payment or credit note of ``account`` has not allocated yet."""
    (key, source_id), = source.items()
    row = session.get(Payment if key == "payment_id" else Invoice, source_id)
    if row is None or row.account_id != account.id:
        raise NotFoundError(f"no {key[:-3].replace('_', ' ')} {source_id} on account {account.number}")
    if key == "payment_id" and row.status != PaymentStatus.RECEIVED:
        raise UserFacingError(f"payment {source_id} was returned: it cannot be allocated")
    if key == "credit_note_id" and row.kind != InvoiceKind.CREDIT_NOTE:
        raise UserFacingError(f"{row.number} is not a credit note")
    column = Allocation.payment_id if key == "payment_id" else Allocation.credit_note_id
    total = row.amount_minor if key == "payment_id" else row.total_minor
    return total - _allocated_sums(session, column, [source_id]).get(source_id, 0)


def allocate(session: Session, invoice_id: int, *, payment_id: int | None = None,
             credit_note_id: int | None = None, amount_minor: int | None = None, actor: str) -> Allocation:
    """Allocate a payment's or a credit note's unallocated amount (or ``amount_minor`` of it) to an invoice.

    Refused beyond the invoice's open amount or the source's unallocated amount.
    """
    if (payment_id is None) == (credit_note_id is None):
        raise UserFacingError("allocate: give either payment_id or credit_note_id")
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id}")
    account = lock_account(session, invoice.account_id)
    _account_invoices(session, account, [invoice_id])
    source = {"payment_id": payment_id} if payment_id is not None else {"credit_note_id": credit_note_id}
    available = _unallocated(session, account, source)
    open_minor = sum(m for _, m in open_invoices(session, account.id, only=[invoice_id]))
    amount = min(available, open_minor) if amount_minor is None else _positive_minor(amount_minor,
                                                                                      "allocation amount")
    if amount <= 0 or amount > min(available, open_minor):
        raise UserFacingError(f"cannot allocate {amount} to invoice {invoice.number}: it has {open_minor} open "
                              f"and the source has {available} unallocated (minor units)")
    allocation = Allocation(invoice_id=invoice_id, amount_minor=amount, **source)
    session.add(allocation)
    session.flush()
    refresh_invoice_status(session, invoice_id)
    record_audit(session, actor, "payment.allocate", "invoice", invoice_id, number=invoice.number,
                 amount_minor=amount, **source)
    return allocation


def accounts_with_credit(session: Session, account_ids: Iterable[int]) -> set[int]:
    """The accounts among ``account_ids`` (locked first) with an unallocated payment or credit note, in one query.

    The cycle issues invoices in batches and calls :func:`apply_account_credit` only for these: most
    accounts have no credit, and for them it would change nothing.
    """
    ids = sorted(set(account_ids))
    if not ids:
        return set()
    lock_accounts(session, ids)
    active = Allocation.reversed_at.is_(None)
    paid = (sa.select(sa.func.coalesce(sa.func.sum(Allocation.amount_minor), 0))
            .where(Allocation.payment_id == Payment.id, active).scalar_subquery())
    used = (sa.select(sa.func.coalesce(sa.func.sum(Allocation.amount_minor), 0))
            .where(Allocation.credit_note_id == Invoice.id, active).scalar_subquery())
    payments = sa.select(Payment.account_id).where(Payment.account_id.in_(ids),
                                                   Payment.status == PaymentStatus.RECEIVED, Payment.amount_minor > paid)
    notes = sa.select(Invoice.account_id).where(Invoice.account_id.in_(ids), Invoice.kind == InvoiceKind.CREDIT_NOTE,
                                                Invoice.total_minor > used)
    return set(session.scalars(sa.union(payments, notes)))


def apply_account_credit(session: Session, account_id: int, actor: str = "system") -> int:
    """Allocate the account's unallocated payments and credit notes to its open invoices; the minor amount applied.

    The cycle calls it after issuing an invoice to an account with credit (:func:`accounts_with_credit`),
    so an overpayment settles the next invoice.
    """
    lock_account(session, account_id)
    invoices = open_invoices(session, account_id)
    applied = 0
    for source, available, _ in _credit_sources(session, account_id) if invoices else ():
        applied += _spread(session, source, available, invoices)
    for invoice, _ in invoices:
        refresh_invoice_status(session, invoice.id)
    if applied:
        record_audit(session, actor, "payment.apply_credit", "account", account_id, amount_minor=applied)
    return applied


def return_payment(session: Session, payment_id: int, reason: str, actor: str,
                   returned_at: dt.datetime | None = None) -> Payment:
    """Mark a payment returned: its allocations are reversed and the invoices it settled reopen."""
    payment = session.get(Payment, payment_id)
    if payment is None:
        raise NotFoundError(f"no payment {payment_id}")
    lock_account(session, payment.account_id)
    session.refresh(payment)
    if payment.status == PaymentStatus.RETURNED:
        raise UserFacingError(f"payment {payment_id} was returned already ({payment.return_reason})")
    when = returned_at or utcnow()
    payment.status, payment.returned_at, payment.return_reason = PaymentStatus.RETURNED, when, reason[:100]
    allocations = session.scalars(sa.select(Allocation).where(Allocation.payment_id == payment_id,
                                                              Allocation.reversed_at.is_(None))).all()
    for allocation in allocations:
        allocation.reversed_at = when
    session.flush()
    for invoice_id in sorted({a.invoice_id for a in allocations}):
        refresh_invoice_status(session, invoice_id)
    record_audit(session, actor, "payment.return", "payment", payment_id, reason=reason,
                 amount_minor=payment.amount_minor, reopened=sorted({a.invoice_id for a in allocations}))
    return payment


def account_balance(session: Session, account_id: int, today: dt.date | None = None) -> dict:
    """``due_minor`` (open invoices), ``credit_minor`` (unallocated payments and credit notes),
    ``overdue_minor`` (open past the due date) and ``balance_minor`` = due − credit."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"no account with id {account_id}")
    today = today or operator_today()
    invoices = open_invoices(session, account_id)
    due = sum(m for _, m in invoices)
    credit = sum(m for _, m, _ in _credit_sources(session, account_id))
    return {"account": account.number, "currency": account.currency, "as_of": today.isoformat(),
            "due_minor": due, "credit_minor": credit,
            "overdue_minor": sum(m for inv, m in invoices if inv.due_date < today),
            "open_invoices": len(invoices), "balance_minor": due - credit}


_ORDER = {"invoice": 0, "credit_note": 1, "payment": 2, "return": 3}


def _movements(session: Session, account_id: int, end: dt.date) -> list[dict]:
    """Every movement of the account dated before ``end``: debits raise what the customer owes."""
    rows = []
    for doc in session.scalars(sa.select(Invoice).where(Invoice.account_id == account_id,
                                                        Invoice.issue_date < end)):
        is_note = doc.kind == InvoiceKind.CREDIT_NOTE
        rows.append({"date": doc.issue_date, "kind": doc.kind, "id": doc.id, "reference": doc.number,
                     "description": (doc.reason or "") if is_note else
                     f"{doc.period_start.isoformat()} – {doc.period_end.isoformat()}",
                     "debit_minor": 0 if is_note else doc.total_minor,
                     "credit_minor": doc.total_minor if is_note else 0})
    for p in session.scalars(sa.select(Payment).where(Payment.account_id == account_id)):
        rows.append({"date": local_date(p.received_at), "kind": "payment", "id": p.id,
                     "reference": p.reference or p.bank_reference or f"#{p.id}", "description": p.method,
                     "debit_minor": 0, "credit_minor": p.amount_minor})
        if p.status == PaymentStatus.RETURNED and p.returned_at is not None:
            rows.append({"date": local_date(p.returned_at), "kind": "return", "id": p.id,
                         "reference": p.reference or p.bank_reference or f"#{p.id}",
                         "description": p.return_reason or "", "debit_minor": p.amount_minor, "credit_minor": 0})
    rows = [r for r in rows if r["date"] < end]
    return sorted(rows, key=lambda r: (r["date"], _ORDER[r["kind"]], r["id"]))


def statement(session: Session, account_id: int, start: dt.date, end: dt.date) -> list[dict]:
    """The account's movements in ``[start, end)`` with a running balance, after an opening line.

    Lines: ``date, kind (opening|invoice|credit_note|payment|return), reference, description,
    debit_minor, credit_minor, balance_minor`` — a positive balance is owed by the customer.
    """
    if end <= start:
        raise UserFacingError(f"statement: the end {end} must be after the start {start} (the end is exclusive)")
    account = session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"no account with id {account_id}")
    balance = 0
    lines = [{"date": start, "kind": "opening", "reference": "", "description": "", "debit_minor": 0,
              "credit_minor": 0, "balance_minor": 0, "currency": account.currency}]
    for row in _movements(session, account_id, end):
        balance += row["debit_minor"] - row["credit_minor"]
        if row["date"] < start:
            lines[0]["balance_minor"] = balance
            continue
        row.pop("id")
        lines.append({**row, "balance_minor": balance, "currency": account.currency})
    return lines
