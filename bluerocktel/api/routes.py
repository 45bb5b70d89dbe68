"""REST API v1: accounts, invoices (with lines and PDF), billing runs.

Authentication is a bearer API token (``bluerocktel token create``). Staff roles see what their
role's permissions allow (:func:`bluerocktel.security.can`); a customer's token sees only its own
account, and another account's objects answer 404 as if they did not exist. Lists are
keyset-paginated: ``limit`` and an opaque ``cursor`` taken from the previous page's ``next_cursor``.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import functools
import hashlib
import re
from types import SimpleNamespace
from typing import Annotated, AsyncIterator, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from sqlalchemy import bindparam, inspect, or_, select
from sqlalchemy.orm import Session, selectinload

from bluerocktel.api.problems import ForbiddenError
from bluerocktel.api.schemas import AccountOut, BillingRunOut, InvoiceDetailOut, InvoiceOut, Page
from bluerocktel.db import refuse_writes
from bluerocktel.db.models import Account, BillingRun, Invoice
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.portal import invoice_annex, resolve_document
from bluerocktel.security import AuthError, Principal, authenticate_token, can
from bluerocktel.vocabulary import Role

router = APIRouter(prefix="/api/v1", tags=["v1"])

_PROBLEMS = {401: {"description": "missing, invalid or revoked token"},
             403: {"description": "the token's role may not do this"},
             404: {"description": "no such object, or not visible to this token"}}


_READ_METHODS = frozenset({"GET", "HEAD"})


async def db_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request, committed when the route succeeds, else rolled back; a GET
    reads without one on a server database (:meth:`Database.read_session`). Opening it
    does no I/O (the connection is taken at the first query), so it runs on the event loop: one
    thread hop less per request. A write's commit runs in a worker thread; a read ends on the loop
    (autocommit: nothing to end; SQLite: the commit of a read-only transaction, no disk write)."""
    db = request.app.state.wb.db
    reading = request.method in _READ_METHODS
    session = db.read_session() if reading else db.session()
    transaction = session.begin()
    autocommit = reading and db.reads_autocommit
    try:
        yield session
    except BaseException:
        await _finish(session, transaction.rollback, reading, autocommit)
        raise
    await _finish(session, transaction.commit, reading, autocommit)


async def _finish(session: Session, finish, reading: bool, autocommit: bool) -> None:
    """End the request's session. In autocommit there is no transaction to end: the session is
    closed on the loop (no I/O), without SQLAlchemy's commit steps (7 % of an API worker's CPU)."""
    if autocommit:
        try:
            refuse_writes(session)
        finally:
            session.close()
    elif reading:
        _end(session, finish)
    else:
        await run_in_threadpool(_end, session, finish)


def _end(session: Session, finish) -> None:
    try:
        finish()
    finally:
        session.close()


DbSession = Annotated[Session, Depends(db_session)]


async def current_principal(request: Request, session: DbSession) -> Principal:
    """The caller of a bearer token (one query, in the request's transaction), then charged one
    request of its rate limit (:mod:`bluerocktel.api.ratelimit`). The token's ``last_used_at``,
    when a minute old, is written by ``app.state.token_usage`` in a transaction of its own, off the
    request: the write never holds a lock (or SQLite's write lock) during a request.

    It runs on the event loop, not in a worker thread: the lookup is one indexed read of well under
    a millisecond, and :class:`~bluerocktel.api.concurrency.ApiConcurrencyLimit` keeps the API's
    requests to half the connection pool, so taking a connection here does not wait. Handing work
    to anyio's worker threads cost more than the lookup (~14 % of a worker's CPU under load, py-spy)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send an API token: Authorization: Bearer <token>")
    principal, stale_token_id = authenticate_token(session, token.strip())
    if stale_token_id is not None:
        request.app.state.token_usage.touch(stale_token_id)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.take("token:" + hashlib.sha256(token.strip().encode()).hexdigest()[:24])
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


def account_scope(principal: Principal, permission: str) -> int | None:
    """None when ``principal`` may read every account's rows, else the one account it may read."""
    if can(principal, permission):
        return None
    if principal.role is Role.CUSTOMER and can(principal, "portal") and principal.account_id is not None:
        return principal.account_id
    raise ForbiddenError(f"role {principal.role.value!r} may not use this endpoint ({permission})")


def require(principal: Principal, permission: str) -> None:
    """Refuse (403) a caller whose role or token scopes lack ``permission``."""
    if not can(principal, permission):
        raise ForbiddenError(f"role {principal.role.value!r} may not use this endpoint ({permission})")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "id":
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise UserFacingError(f"invalid cursor {cursor!r}: pass the next_cursor of the previous page")


def record_columns(model) -> list:
    """Every column of ``model`` under its attribute names: selected, they give :func:`keyset_page`
    and :class:`ListQuery` plain records instead of ORM objects (a third of the CPU of a list page)."""
    return [getattr(model, attr.key) for attr in inspect(model).column_attrs]


def keyset_page(session: Session, query, model, out, cursor: str | None, limit: int,
                newest_first: bool = False, attach=None) -> Response:
    """One page of ``query`` by id (ascending, or descending when ``newest_first``), as ``Page[out]``
    JSON. ``query`` selects ``model`` objects, or columns (:func:`record_columns`: rows with the attributes
    ``out.of`` reads, no ORM objects to build; ``attach(session, records)`` then sets what else
    ``out.of`` reads, such as a child collection, in one query per page). The page is serialized here, once, by pydantic: FastAPI passes a
    ``Response`` through instead of validating the page again (in a worker thread) and encoding it
    in Python; the route's ``response_model`` still documents it."""
    last = decode_cursor(cursor)
    if last is not None:
        query = query.where(model.id < last if newest_first else model.id > last)
    query = query.order_by(model.id.desc() if newest_first else model.id).limit(limit + 1)
    if query.column_descriptions[0]["expr"] is model:
        return _page_response(session.scalars(query).all(), out, limit)
    return _records_page(session, query, {}, out, limit, attach)


def _records_page(session: Session, statement, params: dict, out, limit: int, attach) -> Response:
    """Plain records run as Core (no ORM compile step); a Row's attribute access costs 10x a named tuple's.
    Records are named tuples (built and read ~4x faster than namespaces: ~40 µs of a 50-row page), or
    namespaces when ``attach`` is to set attributes on them."""
    result = session.connection().execute(statement, params)
    keys = tuple(result.keys())
    if attach is None:
        make = _record_type(keys)._make
        return _page_response([make(row) for row in result.all()], out, limit)  # fetchall: not a fetchone per row
    rows = [SimpleNamespace(**dict(zip(keys, row))) for row in result.all()]
    attach(session, rows[:limit])
    return _page_response(rows, out, limit)


@functools.cache
def _record_type(keys: tuple[str, ...]) -> type[tuple]:
    return collections.namedtuple("Record", keys)


@functools.cache
def page_model(out) -> type[Page]:
    """``Page[out]``, parametrized once (pydantic's own lookup costs ~1 % of a list request)."""
    return Page[out]


def _page_response(rows: list, out, limit: int) -> Response:
    """``rows[:limit]`` as ``Page[out]`` JSON. A model that defines its own ``fields_of`` (``of`` is then
    ``cls(**cls.fields_of(obj))``: :class:`InvoiceOut`, ``TicketOut``) gets its items validated with the page
    in one pydantic call instead of one model construction per item (~50 µs of a 50-row page's ~900).
    A subclass inheriting ``fields_of`` while adding fields (``CreditNoteOut``) goes through its ``of``."""
    if "fields_of" in vars(out):
        items = [out.fields_of(row) for row in rows[:limit]]
        last_id = items[-1]["id"] if items else None
    else:
        items = [out.of(row) for row in rows[:limit]]
        last_id = items[-1].id if items else None
    page = page_model(out).model_validate(
        {"items": items, "limit": limit, "next_cursor": encode_cursor(last_id) if len(rows) > limit else None})
    return Response(page.__pydantic_serializer__.to_json(page), media_type="application/json")


class ListQuery:
    """A list endpoint's records (:func:`record_columns` or chosen columns of ``model``) filtered by
    ``filters``, keyset-paginated like :func:`keyset_page`: conditions on bound parameters named
    like the filters, so the statement of each combination of filters is built once and reused.
    Building a statement, its cache key and its result map for every request cost as much CPU as
    running it (0.58 ms of 1.29 ms for the invoice list, measured on PostgreSQL).
    ``updated_since`` is always a filter (:data:`UpdatedSince`).

    The list routes built on it are ``async def``: a page (at most 500 rows, by an index) is read
    on the event loop like the token (:func:`current_principal`), so such a GET makes no thread hop
    (invoice list on PostgreSQL: 3.7 → 2.1–3.2 ms of server CPU per request on the machine measured
    then; the README gives today's figures)."""

    def __init__(self, model, columns, *, newest_first: bool = False, **filters):
        self.model, self.columns, self.newest_first = model, columns, newest_first
        self.filters = {**filters, "updated_since": model.updated_at >= bindparam("updated_since")}
        self._statements: dict[frozenset, object] = {}

    def page(self, session: Session, out, cursor: str | None, limit: int, attach=None, **values) -> Response:
        """One page as ``Page[out]`` JSON; ``values`` by filter name, None for a filter not applied."""
        if values.get("updated_since") is not None and values["updated_since"].tzinfo is None:
            values["updated_since"] = values["updated_since"].replace(tzinfo=dt.timezone.utc)
        params = {name: value for name, value in values.items() if value is not None}
        last = decode_cursor(cursor)
        if last is not None:
            params["after"] = last
        params["limit"] = limit + 1
        return _records_page(session, self._statement(frozenset(params)), params, out, limit, attach)

    def _statement(self, names: frozenset):
        statement = self._statements.get(names)
        if statement is None:
            unknown = names - self.filters.keys() - {"after", "limit"}
            if unknown:
                raise TypeError(f"no filter {', '.join(sorted(unknown))} on this list")
            model_id = self.model.id
            conditions = [self.filters[name] for name in sorted(names & self.filters.keys())]
            if "after" in names:
                conditions.append(model_id < bindparam("after") if self.newest_first else model_id > bindparam("after"))
            statement = (select(*self.columns).where(*conditions)
                         .order_by(model_id.desc() if self.newest_first else model_id).limit(bindparam("limit")))
            self._statements[names] = statement
        return statement


# Ids are BIGINTs: a larger number cannot name an object (and would overflow the database driver).
MAX_ID = 2**63 - 1
ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
UpdatedSince = Annotated[dt.datetime | None, Query(
    description="only objects created or changed at or after this instant (ISO 8601 with offset): for sync jobs, "
                "pass the largest updated_at seen by the previous sync")]


def changed_since(query, model, since: dt.datetime | None):
    """``query`` restricted to rows of ``model`` updated at or after ``since`` (naive means UTC)."""
    if since is None:
        return query
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    return query.where(model.updated_at >= since)


# ``GET /accounts`` filters: children of ``parent_id``, ``status``, ``q`` in the name or number.
_ACCOUNTS = ListQuery(Account, record_columns(Account), scope=Account.id == bindparam("scope"),
                      parent_id=Account.parent_id == bindparam("parent_id"), status=Account.status == bindparam("status"),
                      q=or_(Account.name.ilike(bindparam("q"), escape="\\"),
                            Account.number.ilike(bindparam("q"), escape="\\")))


def like_pattern(text: str) -> str:
    """``%text%`` for a case-insensitive ``LIKE`` with ``\\`` as the escape character."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@router.get("/accounts", response_model=Page[AccountOut], responses=_PROBLEMS)
async def list_accounts(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  updated_since: UpdatedSince = None,
                  parent_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="children of this account")] = None,
                  status: Annotated[Literal["active", "suspended", "closed"] | None, Query()] = None,
                  q: Annotated[str | None, Query(max_length=200, description="part of the name or number, any case")]
                  = None):
    """Accounts by id; a customer token lists only its own account."""
    scope = account_scope(principal, "accounts:read")
    return _ACCOUNTS.page(session, AccountOut, cursor, limit, scope=scope, parent_id=parent_id, status=status,
                          q=like_pattern(q) if q else None, updated_since=updated_since)


@router.get("/accounts/{account_id}", response_model=AccountOut, responses=_PROBLEMS)
def get_account(account_id: ObjectId, principal: Caller, session: DbSession):
    scope = account_scope(principal, "accounts:read")
    account = session.get(Account, account_id)
    if account is None or (scope is not None and account.id != scope):
        raise NotFoundError(f"no account {account_id}")
    return AccountOut.of(account)


_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


# The list selects only the columns InvoiceOut shows, as rows (no ORM objects, no JSON party snapshots).
_INVOICES = ListQuery(Invoice, (Invoice.id, Invoice.number, Invoice.kind, Invoice.status, Invoice.account_id,
                                Invoice.brand_id, Invoice.billing_run_id, Invoice.currency, Invoice.period_start,
                                Invoice.period_end, Invoice.issue_date, Invoice.due_date, Invoice.subtotal_minor,
                                Invoice.vat_minor, Invoice.total_minor, Invoice.pdf_path),
                      newest_first=True, scope=Invoice.account_id == bindparam("scope"),
                      account_id=Invoice.account_id == bindparam("account_id"),
                      period=Invoice.period_start == bindparam("period"))


@router.get("/invoices", response_model=Page[InvoiceOut], responses=_PROBLEMS)
async def list_invoices(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  account_id: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                                          description="only this account's invoices")] = None,
                  period: Annotated[str | None, Query(description="billing period YYYY-MM (its first day)")] = None,
                  updated_since: UpdatedSince = None):
    """Invoices and credit notes, newest first."""
    scope = account_scope(principal, "invoices:read")
    period_start = None
    if period is not None:
        match = _PERIOD.match(period)
        if not match:
            raise UserFacingError(f"period {period!r} is not YYYY-MM")
        period_start = dt.date(int(match[1]), int(match[2]), 1)
    return _INVOICES.page(session, InvoiceOut, cursor, limit, scope=scope, account_id=account_id,
                          period=period_start, updated_since=updated_since)


def _visible_invoice(session: Session, principal: Principal, invoice_id: int, with_lines: bool = False) -> Invoice:
    scope = account_scope(principal, "invoices:read")
    query = select(Invoice).where(Invoice.id == invoice_id)
    if with_lines:
        query = query.options(selectinload(Invoice.lines))
    invoice = session.scalar(query)
    if invoice is None or (scope is not None and invoice.account_id != scope):
        raise NotFoundError(f"no invoice {invoice_id}")
    return invoice


@router.get("/invoices/{invoice_id}", response_model=InvoiceDetailOut, responses=_PROBLEMS)
def get_invoice(invoice_id: ObjectId, principal: Caller, session: DbSession):
    """One invoice with its lines; amounts in minor units of ``currency``."""
    return InvoiceDetailOut.of(_visible_invoice(session, principal, invoice_id, with_lines=True))


@router.get("/invoices/{invoice_id}/pdf", response_class=FileResponse, responses={
    **_PROBLEMS, 200: {"content": {"application/pdf": {}}, "description": "the invoice PDF (Factur-X)"}})
def get_invoice_pdf(invoice_id: ObjectId, principal: Caller, session: DbSession, request: Request):
    invoice = _visible_invoice(session, principal, invoice_id)
    path = resolve_document(request.app.state.wb, invoice.pdf_path, f"invoice {invoice.number}")
    return FileResponse(path, media_type="application/pdf", filename=f"{invoice.number}.pdf",
                        headers={"Cache-Control": "private, no-store"})


@router.get("/invoices/{invoice_id}/annex", response_class=FileResponse, responses={
    **_PROBLEMS, 200: {"content": {"application/pdf": {}}, "description": "the call-detail annex (PDF)"}})
def get_invoice_annex(invoice_id: ObjectId, principal: Caller, session: DbSession, request: Request):
    """The calls of the invoice's period as rated when it was issued; rendered on the first request,
    then kept. 404 for a credit note or a period without calls."""
    path, filename = invoice_annex(request.app.state.wb, _visible_invoice(session, principal, invoice_id))
    return FileResponse(path, media_type="application/pdf", filename=filename,
                        headers={"Cache-Control": "private, no-store"})


@router.get("/billing-runs", response_model=Page[BillingRunOut], responses=_PROBLEMS)
def list_billing_runs(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None):
    """Billing runs, newest first (staff with ``invoices:read``)."""
    if not can(principal, "invoices:read"):
        raise ForbiddenError(f"role {principal.role.value!r} may not list billing runs")
    return keyset_page(session, select(BillingRun), BillingRun, BillingRunOut, cursor, limit, newest_first=True)
