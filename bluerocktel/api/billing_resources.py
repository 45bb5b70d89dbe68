"""REST API, billing side: Factur-X XML and status of invoices, credit notes, payments, usage, audit log.

==================================================  ==============  ======================================
route                                               permission      what
==================================================  ==============  ======================================
``GET /api/v1/invoices/{id}/facturx.xml``           invoices:read   the EN 16931 CII XML of the invoice
``POST /api/v1/invoices/{id}/status``               billing:issue   sent, disputed, or out of dispute;
                                                                    paid/partially_paid/credited: 409
``GET /api/v1/credit-notes``                        invoices:read   credit notes, newest first
``POST /api/v1/invoices/{id}/credit-notes``         billing:issue   a full or partial (by line) credit note
``GET /api/v1/payments``                            invoices:read   payments, newest first
``POST /api/v1/payments``                           billing:issue   record a payment (allocated oldest first)
``POST /api/v1/payments/{id}/return``               billing:issue   a returned payment: allocations reversed
``GET /api/v1/accounts/{id}/usage``                 rating:read     the account's rated CDRs of a month
``GET /api/v1/accounts/{id}/usage.csv``             rating:read     the same, every row, as streamed CSV
``GET /api/v1/audit-log``                           audit:read      the audit log, newest first
==================================================  ==============  ======================================

A customer token reads its own account's invoices, credit notes, payments and usage (another
account's answer 404), usage without the buy side (no cost, margin). Refusals by the object's
state (a status move the invoice's status refuses, a returned payment returned again, an invoice
fully credited already, a duplicate bank reference) answer 409; other refusals 400.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import re
from typing import Annotated, Iterator, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from bluerocktel.api.crm import _CONFLICT
from bluerocktel.api.idempotency import IdempotencyDep
from bluerocktel.api.rating import RatedCdrRowOut
from bluerocktel.api.routes import (_PROBLEMS, require, MAX_ID, Caller, Cursor, DbSession, Limit, ObjectId, UpdatedSince,
                                    _visible_invoice, account_scope, changed_since, keyset_page)
from bluerocktel.api.schemas import InvoiceLineOut, InvoiceOut, Page
from bluerocktel.billing.credit_notes import CreditQuantity, issue_credit_note
from bluerocktel.billing.invoices import set_invoice_status
from bluerocktel.billing.payments import DuplicatePaymentError, record_payment, return_payment
from bluerocktel.db.models import Account, AuditEntry, Invoice, Payment
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.lake import connect_duckdb, scan_sql
from bluerocktel.rating.queries import LIST_COLUMNS, check_month, hide_buy_side, list_row, rated_cdrs
from bluerocktel.security import Principal
from bluerocktel.vocabulary import InvoiceKind, InvoiceStatus, PaymentMethod, PaymentStatus

router = APIRouter(tags=["billing"])      # under /api/v1

ISSUE = "billing:issue"
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="only this account's")]


def _as_conflict(work):
    """``work()``, with its refusals other than 404 answered as 409: once the request is valid, what
    a status move or a payment return refuses is the object's state (a move not allowed from its
    status, a payment returned already)."""
    try:
        return work()
    except NotFoundError:
        raise
    except UserFacingError as exc:
        raise ConflictError(str(exc)) from exc


# ------------------------------------------------------------------------------------------ invoices

@router.get("/invoices/{invoice_id}/facturx.xml", response_class=Response, responses={
    **_PROBLEMS, 200: {"content": {"application/xml": {}}, "description": "the CII XML (EN 16931 profile)"}})
def get_invoice_facturx(invoice_id: ObjectId, principal: Caller, session: DbSession):
    """The Factur-X XML of an invoice or credit note, as embedded in its PDF."""
    from bluerocktel.documents.facturx import facturx_xml

    invoice = _visible_invoice(session, principal, invoice_id, with_lines=True)
    return Response(facturx_xml(invoice), media_type="application/xml", headers={
        "Content-Disposition": f'attachment; filename="{invoice.number}.xml"'})


class InvoiceStatusIn(BaseModel):
    status: Literal["sent", "disputed", "issued", "partially_paid", "paid", "credited"] = Field(
        description="sent; disputed; out of dispute: issued, sent or partially_paid (as the money says). "
                    "paid and credited are refused (409): payments and credit notes set them")


@router.post("/invoices/{invoice_id}/status", response_model=InvoiceOut, responses=_CONFLICT)
def change_invoice_status(invoice_id: ObjectId, body: InvoiceStatusIn, principal: Caller, idempotency: IdempotencyDep,
                          request: Request):
    """Mark an invoice sent, disputed, or take it out of dispute (audited)."""
    require(principal, ISSUE)
    if body.status in ("paid", "credited"):
        raise ConflictError(f"an invoice becomes {body.status} only when payments (POST /api/v1/payments) or "
                            f"credit notes (POST /api/v1/invoices/{invoice_id}/credit-notes) settle it")

    def work():
        with request.app.state.wb.db.transaction() as s:
            return InvoiceOut.of(_as_conflict(lambda: set_invoice_status(s, invoice_id, body.status,
                                                                         actor=principal.email)))

    return idempotency.run(request.app.state.wb, principal, work)


# -------------------------------------------------------------------------------------- credit notes

class CreditNoteOut(InvoiceOut):
    credits_invoice_id: int | None = Field(description="the invoice this credit note corrects")
    reason: str | None

    @classmethod
    def of(cls, inv: Invoice) -> "CreditNoteOut":
        return cls(**cls.fields_of(inv), credits_invoice_id=inv.credits_invoice_id, reason=inv.reason)


class CreditNoteDetailOut(CreditNoteOut):
    lines: list[InvoiceLineOut]

    @classmethod
    def of(cls, inv: Invoice) -> "CreditNoteDetailOut":
        return cls(**CreditNoteOut.of(inv).model_dump(), lines=[InvoiceLineOut.of(line) for line in inv.lines])


_DECIMAL = r"^\d{1,12}(\.\d{1,12})?$"


class CreditLineIn(BaseModel):
    position: int = Field(ge=1, le=10_000, description="the line of the invoice to credit")
    amount: str | None = Field(None, pattern=_DECIMAL, description="net amount to credit, in currency units "
                                                                   "(\"12.50\")")
    quantity: str | None = Field(None, pattern=_DECIMAL, description="or a quantity of the line's units")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.amount is None) == (self.quantity is None):
            raise ValueError("give either amount or quantity")
        return self


class CreditNoteIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    lines: list[CreditLineIn] | None = Field(None, description="omit to credit all that is left of the invoice")
    issue_date: dt.date | None = Field(None, description="default: today in the operator's time zone")


@router.get("/credit-notes", response_model=Page[CreditNoteOut], responses=_PROBLEMS)
def list_credit_notes(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                      account_id: IdFilter = None,
                      invoice_id: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                                              description="only those crediting this invoice")] = None,
                      updated_since: UpdatedSince = None):
    """Credit notes, newest first; a customer token lists its own account's."""
    scope = account_scope(principal, "invoices:read")
    query = changed_since(select(Invoice).where(Invoice.kind == InvoiceKind.CREDIT_NOTE), Invoice, updated_since)
    if scope is not None:
        query = query.where(Invoice.account_id == scope)
    if account_id is not None:
        query = query.where(Invoice.account_id == account_id)
    if invoice_id is not None:
        query = query.where(Invoice.credits_invoice_id == invoice_id)
    return keyset_page(session, query, Invoice, CreditNoteOut, cursor, limit, newest_first=True)


@router.post("/invoices/{invoice_id}/credit-notes", status_code=201, response_model=CreditNoteDetailOut,
             responses=_CONFLICT)
def create_credit_note(invoice_id: ObjectId, body: CreditNoteIn, principal: Caller, idempotency: IdempotencyDep,
                       request: Request):
    """Credit an invoice: all that is left of it, or amounts or quantities of some lines."""
    require(principal, ISSUE)
    lines = None if body.lines is None else {
        line.position: line.amount if line.amount is not None else CreditQuantity(line.quantity) for line in body.lines}
    if lines is not None and len(lines) != len(body.lines):
        raise UserFacingError("each line position may be credited once per credit note")

    def work():
        with request.app.state.wb.db.transaction() as s:
            invoice = s.get(Invoice, invoice_id)
            if invoice is not None and invoice.status == InvoiceStatus.CREDITED:
                raise ConflictError(f"invoice {invoice.number} is fully credited already")
            return CreditNoteDetailOut.of(issue_credit_note(s, invoice_id, lines=lines, reason=body.reason,
                                                            actor=principal.email, issue_date=body.issue_date))

    return idempotency.run(request.app.state.wb, principal, work, status_code=201)


# ------------------------------------------------------------------------------------------ payments

class PaymentOut(BaseModel):
    id: int
    account_id: int
    invoice_id: int | None = Field(description="the invoice it was sent for, if any")
    amount_minor: int
    currency: str
    method: str
    reference: str | None
    received_at: dt.datetime
    status: str = Field(description="received or returned")
    source: str = Field(description="manual, camt053 or sepa")
    bank_reference: str | None
    returned_at: dt.datetime | None
    return_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, p: Payment) -> "PaymentOut":
        return cls(**{name: getattr(p, name) for name in cls.model_fields})


class PaymentIn(BaseModel):
    account_id: int = Field(ge=1, le=MAX_ID)
    amount_minor: int = Field(gt=0, description="minor units of the account's currency")
    method: PaymentMethod = PaymentMethod.TRANSFER
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="when given, must be the account's")
    reference: str | None = Field(None, max_length=100)
    bank_reference: str | None = Field(None, max_length=100, description="recorded once: a second one is a 409")
    received_at: dt.datetime | None = Field(None, description="default: now")
    invoice_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        None, description="settle only these invoices (oldest due first); default: the account's oldest open invoices")


class PaymentReturnIn(BaseModel):
    reason: str = Field(min_length=1, max_length=100)
    returned_at: dt.datetime | None = None


@router.get("/payments", response_model=Page[PaymentOut], responses=_PROBLEMS)
def list_payments(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  account_id: IdFilter = None,
                  status: Annotated[PaymentStatus | None, Query()] = None, updated_since: UpdatedSince = None):
    """Payments, newest first; a customer token lists its own account's."""
    scope = account_scope(principal, "invoices:read")
    query = changed_since(select(Payment), Payment, updated_since)
    if scope is not None:
        query = query.where(Payment.account_id == scope)
    if account_id is not None:
        query = query.where(Payment.account_id == account_id)
    if status is not None:
        query = query.where(Payment.status == status.value)
    return keyset_page(session, query, Payment, PaymentOut, cursor, limit, newest_first=True)


@router.post("/payments", status_code=201, response_model=PaymentOut, responses=_CONFLICT)
def create_payment(body: PaymentIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """Record a payment received; it settles the oldest open invoices, the rest is account credit."""
    require(principal, ISSUE)

    def work():
        with request.app.state.wb.db.transaction() as s:
            if s.get(Account, body.account_id) is None:
                raise NotFoundError(f"no account {body.account_id}")
            try:
                payment = record_payment(s, body.account_id, body.amount_minor, method=body.method.value,
                                         reference=body.reference, received_at=body.received_at,
                                         bank_reference=body.bank_reference, actor=principal.email,
                                         invoice_id=body.invoice_ids or None, currency=body.currency)
            except DuplicatePaymentError as exc:
                raise ConflictError(str(exc)) from exc
            return PaymentOut.of(payment)

    return idempotency.run(request.app.state.wb, principal, work, status_code=201)


@router.post("/payments/{payment_id}/return", response_model=PaymentOut, responses=_CONFLICT)
def return_payment_route(payment_id: ObjectId, body: PaymentReturnIn, principal: Caller, idempotency: IdempotencyDep,
                         request: Request):
    """The payment came back (a direct debit returned, a cheque bounced): the invoices it settled reopen."""
    require(principal, ISSUE)

    def work():
        with request.app.state.wb.db.transaction() as s:
            return PaymentOut.of(_as_conflict(lambda: return_payment(s, payment_id, body.reason, principal.email,
                                                                     returned_at=body.returned_at)))

    return idempotency.run(request.app.state.wb, principal, work)


# --------------------------------------------------------------------------------------------- usage

Period = Annotated[str, Query(description="UTC month of the calls, YYYY-MM")]
_OFFSET_CURSOR = re.compile(r"^off:(\d{1,12})$")


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"off:{offset}".encode()).decode().rstrip("=")


def _decode_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        match = _OFFSET_CURSOR.match(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        match = None
    if match is None:
        raise UserFacingError(f"invalid cursor {cursor!r}: pass the next_cursor of the previous page")
    return int(match[1])


def _usage_scope(session, principal: Principal, account_id: int) -> bool:
    """True when the caller sees the buy side; 404 for an account it may not read (or none)."""
    scope = account_scope(principal, "rating:read")
    if (scope is not None and scope != account_id) or session.get(Account, account_id) is None:
        raise NotFoundError(f"no account {account_id}")
    return scope is None


@router.get("/accounts/{account_id}/usage", response_model=Page[RatedCdrRowOut],
            responses={**_PROBLEMS, 400: {"description": "period not YYYY-MM, or an invalid cursor"}})
def get_usage(account_id: ObjectId, period: Period, principal: Caller, session: DbSession, request: Request,
              limit: Limit = 100, cursor: Cursor = None):
    """The account's rated calls of a month (the latest rating of each), newest call first;
    customers see their own, without cost and margin."""
    staff = _usage_scope(session, principal, account_id)
    offset = _decode_offset(cursor)
    page = rated_cdrs(request.app.state.wb.lake_dir, month=check_month(period), account_id=account_id,
                      limit=limit, offset=offset)
    rows = page.rows if staff else [hide_buy_side(r) for r in page.rows]
    return Page[RatedCdrRowOut](items=[RatedCdrRowOut(**r) for r in rows], limit=limit,
                                next_cursor=_encode_offset(offset + limit) if page.has_more else None)


CUSTOMER_HIDDEN = ("cost", "margin")


def usage_rows(lake_dir, month: str, account_id: int, batch_rows: int = 10_000) -> Iterator[dict]:
    """Every rated call of ``account_id`` in ``month`` (latest rating of each, as :func:`list_row`
    rows), newest first, read from DuckDB in Arrow batches so memory stays bounded."""
    source = scan_sql(lake_dir, "rated", [month])
    sql = f"""SELECT {', '.join(LIST_COLUMNS)} FROM (
                  SELECT * FROM {source} WHERE cdr_id IN (SELECT cdr_id FROM {source} WHERE account_id = ?)
                  QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1)
              WHERE account_id = ? ORDER BY start_at DESC, cdr_id"""
    con = connect_duckdb()
    try:
        reader = con.sql(sql, params=[account_id, account_id]).to_arrow_reader(batch_rows)
        for batch in reader:
            yield from (list_row(row) for row in batch.to_pylist())
    finally:
        con.close()


def _csv_value(value) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return "" if value is None else str(value)


def usage_csv(rows: Iterator[dict], columns: list[str], chunk_rows: int = 1000) -> Iterator[str]:
    """``rows`` as CSV text in chunks: a header, then ``columns`` of each row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow([_csv_value(row[name]) for name in columns])
        if count % chunk_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get("/accounts/{account_id}/usage.csv", response_class=StreamingResponse, responses={
    **_PROBLEMS, 200: {"content": {"text/csv": {}}, "description": "one row per rated call, newest first"}})
def get_usage_csv(account_id: ObjectId, period: Period, principal: Caller, session: DbSession, request: Request):
    """Every rated call of the account in the month, as CSV (the columns of the usage list)."""
    staff = _usage_scope(session, principal, account_id)
    month = check_month(period)
    columns = [name for name in RatedCdrRowOut.model_fields if staff or name not in CUSTOMER_HIDDEN]
    body = usage_csv(usage_rows(request.app.state.wb.lake_dir, month, account_id), columns)
    return StreamingResponse(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="usage-{account_id}-{month}.csv"'})


# ----------------------------------------------------------------------------------------- audit log

class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str = Field(description="what was done, e.g. invoice.status, payment.record, service.suspend")
    target_type: str | None
    target_id: str | None
    details: dict

    @classmethod
    def of(cls, e: AuditEntry) -> "AuditEntryOut":
        return cls(id=e.id, at=e.at, actor=e.actor, action=e.action, target_type=e.target_type,
                   target_id=e.target_id, details=e.details or {})


@router.get("/audit-log", response_model=Page[AuditEntryOut], responses=_PROBLEMS)
def list_audit_log(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                   actor: Annotated[str | None, Query(max_length=200)] = None,
                   action: Annotated[str | None, Query(max_length=64, description="exact, or a prefix "
                                                                                  "ending in '.' (payment.)")] = None,
                   target_type: Annotated[str | None, Query(max_length=64)] = None,
                   target_id: Annotated[str | None, Query(max_length=64)] = None,
                   since: Annotated[dt.datetime | None, Query(description="entries at or after this instant")] = None):
    """The append-only audit log, newest first (admin)."""
    require(principal, "audit:read")
    query = select(AuditEntry)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True) if action.endswith(".")
                            else AuditEntry.action == action)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    if since is not None:
        query = query.where(AuditEntry.at >= (since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)))
    return keyset_page(session, query, AuditEntry, AuditEntryOut, cursor, limit, newest_first=True)
