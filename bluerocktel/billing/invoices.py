"""Issued invoices are immutable; their status moves only along allowed transitions.

Once an invoice or credit note is committed, the ORM refuses to change its number, amounts,
dates, parties or lines, and refuses to delete it or its lines: only ``status``, ``sent_at``,
``paid_at``, ``pdf_path`` and ``annex_path`` (and the ``updated_at`` stamp) may change. A
correction is a credit note (:mod:`bluerocktel.billing.credit_notes`). Objects created in the
current transaction may still be completed before commit (the cycle adds lines after a flush).

Statuses: ``issued`` → ``sent`` → ``partially_paid`` → ``paid`` follow the money
(:func:`bluerocktel.billing.payments.refresh_invoice_status`); ``credited`` follows credit notes;
staff and the API only mark an invoice ``sent``, put it in ``disputed`` and take it back out
(:func:`set_invoice_status`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Invoice, InvoiceLine, utcnow
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.vocabulary import InvoiceKind, InvoiceStatus

MUTABLE_INVOICE_FIELDS = frozenset({"status", "sent_at", "paid_at", "pdf_path", "annex_path", "updated_at"})
_CREATED_KEY = "bluerocktel.invoices_created"     # session.info: ids of invoices inserted in this transaction


class ImmutableInvoiceError(UserFacingError):
    """An issued invoice (or one of its lines) was about to be changed or deleted."""


def _created_here(session: Session | None, invoice_id: int | None) -> bool:
    return session is not None and invoice_id in session.info.get(_CREATED_KEY, ())


@event.listens_for(Session, "after_flush")
def _remember_created(session, flush_context):
    created = session.info.setdefault(_CREATED_KEY, set())
    created.update(obj.id for obj in session.new if isinstance(obj, Invoice))


@event.listens_for(Session, "after_transaction_end")
def _forget_created(session, transaction):
    if transaction.parent is None:
        session.info.pop(_CREATED_KEY, None)


@event.listens_for(Invoice, "before_update")
def _refuse_invoice_change(mapper, connection, target):
    if _created_here(sa.orm.object_session(target), target.id):
        return
    state = sa.inspect(target)
    changed = sorted(attr.key for attr in state.attrs
                     if attr.key not in MUTABLE_INVOICE_FIELDS and attr.history.has_changes()
                     and attr.key in mapper.column_attrs.keys())
    if changed:
        raise ImmutableInvoiceError(f"invoice {target.number} is issued: {', '.join(changed)} cannot change "
                                    f"(issue a credit note instead)")


@event.listens_for(InvoiceLine, "before_update")
def _refuse_line_change(mapper, connection, target):
    if not _created_here(sa.orm.object_session(target), target.invoice_id):
        raise ImmutableInvoiceError(f"line {target.position} of an issued invoice cannot change or be removed "
                                    f"(issue a credit note instead)")


@event.listens_for(Invoice, "before_delete")
@event.listens_for(InvoiceLine, "before_delete")
def _refuse_delete(mapper, connection, target):
    what = f"invoice {target.number}" if isinstance(target, Invoice) else f"line {target.position} of an invoice"
    raise ImmutableInvoiceError(f"{what} cannot be deleted: issued invoices are kept (credit it instead)")


@event.listens_for(InvoiceLine, "before_insert")
def _refuse_line_added(mapper, connection, target):
    session = sa.orm.object_session(target)
    invoice = target.invoice
    if invoice is not None and sa.inspect(invoice).pending:
        return
    if not _created_here(session, target.invoice_id if invoice is None else invoice.id):
        raise ImmutableInvoiceError(f"issued invoice {target.invoice_id}: lines cannot be added")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_change(state):
    if not (state.is_update or state.is_delete):
        return
    if not any(m.class_ in (Invoice, InvoiceLine) for m in state.all_mappers):
        return
    table = state.bind_mapper.class_.__name__
    if state.is_delete:
        raise ImmutableInvoiceError(f"{table} rows cannot be deleted: issued invoices are kept")
    columns = {getattr(key, "key", key) for key in state.statement._values or {}}
    if state.bind_mapper.class_ is InvoiceLine or not columns <= MUTABLE_INVOICE_FIELDS:
        raise ImmutableInvoiceError(f"{table} update refused: only {', '.join(sorted(MUTABLE_INVOICE_FIELDS))} "
                                    f"of an issued invoice can change, not {', '.join(sorted(columns))}")


# Staff/API transitions; paid, partially_paid and credited come from payments and credit notes.
_TRANSITIONS = {
    InvoiceStatus.ISSUED: {InvoiceStatus.SENT, InvoiceStatus.DISPUTED},
    InvoiceStatus.SENT: {InvoiceStatus.DISPUTED},
    InvoiceStatus.PARTIALLY_PAID: {InvoiceStatus.DISPUTED},
    InvoiceStatus.DISPUTED: {InvoiceStatus.ISSUED, InvoiceStatus.SENT, InvoiceStatus.PARTIALLY_PAID},
}


def set_invoice_status(session: Session, invoice_id: int, status: str, actor: str) -> Invoice:
    """Mark an invoice ``sent``, ``disputed``, or take it out of dispute; audited.

    Marking ``sent`` always records ``sent_at`` (the first time) and moves only an ``issued``
    invoice to ``sent``: a partly paid invoice stays partly paid. Leaving ``disputed`` returns the
    status the money says (``issued``/``sent``/``partially_paid``); asking for another is refused.
    """
    from bluerocktel.billing.payments import derived_status

    try:
        status = InvoiceStatus(status)
    except ValueError:
        raise UserFacingError(f"unknown invoice status {status!r}; use one of "
                              f"{', '.join(s.value for s in InvoiceStatus)}") from None
    invoice = session.get(Invoice, invoice_id, with_for_update=True)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id}")
    before = invoice.status
    if status == InvoiceStatus.SENT and (invoice.status != InvoiceStatus.DISPUTED
                                         or invoice.kind == InvoiceKind.CREDIT_NOTE):
        invoice.sent_at = invoice.sent_at or utcnow()
        if invoice.status == InvoiceStatus.ISSUED:
            invoice.status = InvoiceStatus.SENT
    elif invoice.kind == InvoiceKind.CREDIT_NOTE or status not in _TRANSITIONS.get(invoice.status, ()):
        raise UserFacingError(f"invoice {invoice.number} is {invoice.status}: it cannot be set to {status} "
                              f"(paid, partially paid and credited follow payments and credit notes)")
    elif invoice.status == InvoiceStatus.DISPUTED:
        settled = derived_status(session, invoice)
        if settled != status:
            raise UserFacingError(f"invoice {invoice.number} leaves dispute as {settled}, not {status}")
        invoice.status = settled
    else:
        invoice.status = status
    record_audit(session, actor, "invoice.status", "invoice", invoice.id, number=invoice.number,
                 before=str(before), after=str(invoice.status))
    session.flush()
    return invoice
