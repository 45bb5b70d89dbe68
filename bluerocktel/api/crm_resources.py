"""REST API for the CRM records: accounts (create, change, status, groups, balance, statement),
contacts, sites, contracts, products, price lists and quotes.

Permissions (:data:`bluerocktel.security.PERMISSIONS`): every staff role reads (``accounts:read``;
balances and statements ``invoices:read``); ``crm:write`` (admin, sales) creates and changes
accounts, contacts, sites, contracts and quotes; ``catalog:write`` (admin) manages products and
price lists. A customer token reads its own account, contacts, sites, contracts, quotes, balance
and statement, and accepts or rejects its own sent quotes; another account's objects answer 404;
the catalog and group views answer 403.

Lists are keyset-paginated (``limit``, ``cursor``) and take ``updated_since``; every POST takes an
``Idempotency-Key``. **PATCH needs ``If-Match``** with the strong ETag the resource's GET answered
(:mod:`bluerocktel.api.etag`: the SHA-256 of the GET's JSON body, computed here the same way):
428 without it, 412 when the resource changed since (reload it and apply the change again). A
PATCH answers the resource's new ETag in its ``ETag`` header (for accounts, the ETag of
``GET /accounts/{id}``, whose body is shorter than the PATCH's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Callable, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, object_session, selectinload

from bluerocktel.api.idempotency import IdempotencyDep
from bluerocktel.api.routes import (_PROBLEMS, require, Caller, Cursor, DbSession, Limit, UpdatedSince, account_scope,
                                    changed_since, keyset_page)
from bluerocktel.api.schemas import AccountOut, Page
from bluerocktel.billing.payments import account_balance, statement
from bluerocktel.crm import accounts as crm_accounts
from bluerocktel.crm import catalog
from bluerocktel.crm.contracts import create_contract, notice_deadline, terminate_contract
from bluerocktel.crm.quotes import LineIn, accept_quote, create_quote, quote_totals, reject_quote, send_quote
from bluerocktel.db.models import Account, Contact, Contract, PriceList, Product, Quote, Site
from bluerocktel.errors import NotFoundError
from bluerocktel.security import Principal

router = APIRouter(tags=["crm"])
_CONFLICT = {**_PROBLEMS, 409: {"description": "the object's current state refuses this"}}
_PATCH = {**_CONFLICT, 412: {"description": "If-Match does not match: the resource changed since it was read"},
          428: {"description": "send If-Match with the ETag of the resource's GET"}}
_DECIMAL = r"^\d{1,12}(\.\d{1,6})?$"
ID_MAX = 2_147_483_647          # ids are 32-bit on PostgreSQL: larger ones would reach the database and fail
PathId = Annotated[int, Path(ge=1, le=ID_MAX)]
BodyId = Annotated[int, Field(ge=1, le=ID_MAX)]
QueryId = Annotated[int | None, Query(ge=1, le=ID_MAX)]


def _scope(principal: Principal) -> int | None:
    """None for staff who read every account; a customer's own account id."""
    return account_scope(principal, "accounts:read")


def _visible(session: Session, principal: Principal, model, object_id: int, what: str,
             permission: str = "accounts:read"):
    """The object if it exists and the caller may see it (its account within ``permission``'s scope), else 404."""
    scope = account_scope(principal, permission)
    obj = session.get(model, object_id)
    owner = None if obj is None else (obj.id if model is Account else obj.account_id)
    if obj is None or (scope is not None and owner != scope):
        raise NotFoundError(f"no {what} {object_id}")
    return obj


def etag_of(out: BaseModel) -> str:
    """The strong ETag :class:`~bluerocktel.api.etag.ETagMiddleware` gives a GET answering ``out``."""
    body = JSONResponse(jsonable_encoder(out)).body
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _check_if_match(request: Request, current: str) -> None:
    header = request.headers.get("if-match")
    if not header:
        raise HTTPException(428, detail="send If-Match with the ETag of the resource's GET (lost-update guard)")
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    if "*" not in candidates and current not in candidates:
        raise HTTPException(412, detail="the resource changed since you read it: GET it again, then retry")


def _post(request: Request, principal: Principal, idempotency, fn: Callable[[Session], object],
          status_code: int = 200):
    """Run ``fn`` in one transaction, once per Idempotency-Key."""
    def work():
        with request.app.state.wb.db.transaction() as s:
            return fn(s)

    return idempotency.run(request.app.state.wb, principal, work, status_code=status_code)


def _patch(request: Request, principal: Principal, load: Callable[[Session], object], apply: Callable,
           out, etag_model=None) -> JSONResponse:
    """If-Match checked against ``etag_model`` (default ``out``) of the object, ``apply`` it, answer ``out``."""
    etag_model = etag_model or out
    with request.app.state.wb.db.transaction() as s:
        obj = load(s)
        _check_if_match(request, etag_of(etag_model.of(obj)))
        apply(s, obj)
        s.flush()
        body, etag = out.of(obj), etag_of(etag_model.of(obj))
    return JSONResponse(jsonable_encoder(body), headers={"ETag": etag})


# ----------------------------------------------------------------------------------------- accounts

class AccountDetailOut(AccountOut):
    parent_id: int | None
    siren: str | None
    siret: str | None
    vat_number: str | None
    timezone: str
    billing_day: int
    payment_terms_days: int
    payment_method: str
    updated_at: dt.datetime

    @classmethod
    def of(cls, a: Account) -> "AccountDetailOut":
        return cls(**AccountOut.of(a).model_dump(), parent_id=a.parent_id, siren=a.siren, siret=a.siret,
                   vat_number=a.vat_number, timezone=a.timezone, billing_day=a.billing_day,
                   payment_terms_days=a.payment_terms_days, payment_method=a.payment_method, updated_at=a.updated_at)


class AccountChange(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    kind: Literal["business", "consumer"] | None = None
    email: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=40)
    address: str | None = Field(None, max_length=2000)
    postcode: str | None = Field(None, max_length=16)
    city: str | None = Field(None, max_length=100)
    country: str | None = Field(None, min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    siren: str | None = Field(None, max_length=11, description="9 digits, Luhn-checked; businesses only")
    siret: str | None = Field(None, max_length=17, description="14 digits starting with the SIREN, Luhn-checked")
    vat_number: str | None = Field(None, max_length=20, description="intra-EU VAT number, e.g. FR64443061841")
    vat_regime: Literal["fr", "eu_reverse_charge", "export"] | None = None
    language: Literal["fr", "en"] | None = None
    timezone: str | None = Field(None, max_length=64)
    billing_day: int | None = Field(None, ge=1, le=28)
    payment_terms_days: int | None = Field(None, ge=0, le=120)
    payment_method: Literal["transfer", "sepa_debit", "card", "cheque"] | None = None
    parent_id: BodyId | None = Field(None, description="the group's parent account (same brand)")


class AccountIn(AccountChange):
    brand_id: BodyId
    name: str = Field(min_length=1, max_length=200)
    number: str | None = Field(None, min_length=1, max_length=32, description="default: C + 6 digits")


class AccountStatusIn(BaseModel):
    status: Literal["active", "suspended", "closed"]
    reason: str = Field("", max_length=2000)


@router.post("/accounts", status_code=201, response_model=AccountDetailOut, responses=_CONFLICT)
def create_account(body: AccountIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """Create a company or person account (``crm:write``); identifiers are checked (SIREN, SIRET, VAT)."""
    require(principal, "crm:write")
    fields = body.model_dump(exclude_unset=True, exclude={"brand_id", "name", "number"})
    return _post(request, principal, idempotency, lambda s: AccountDetailOut.of(crm_accounts.create_account(
        s, brand_id=body.brand_id, name=body.name, number=body.number, actor=principal.email, **fields)), 201)


@router.patch("/accounts/{account_id}", response_model=AccountDetailOut, responses=_PATCH)
def update_account(account_id: PathId, body: AccountChange, principal: Caller, request: Request):
    """Change an account (``crm:write``); ``If-Match``: the ETag of ``GET /accounts/{id}``."""
    require(principal, "crm:write")
    return _patch(request, principal, lambda s: _visible(s, principal, Account, account_id, "account"),
                  lambda s, a: crm_accounts.update_account(s, a.id, body.model_dump(exclude_unset=True),
                                                           actor=principal.email),
                  AccountDetailOut, etag_model=AccountOut)


@router.post("/accounts/{account_id}/status", response_model=AccountDetailOut, responses=_CONFLICT)
def set_account_status(account_id: PathId, body: AccountStatusIn, principal: Caller, idempotency: IdempotencyDep,
                       request: Request):
    """Suspend, reactivate or close (409 while services are not terminated or money is due)."""
    require(principal, "crm:write")
    return _post(request, principal, idempotency, lambda s: AccountDetailOut.of(crm_accounts.set_account_status(
        s, account_id, body.status, actor=principal.email, reason=body.reason)))


@router.get("/accounts/{account_id}/children", response_model=Page[AccountDetailOut], responses=_PROBLEMS)
def list_children(account_id: PathId, principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  updated_since: UpdatedSince = None):
    """The direct children of a group account (staff)."""
    require(principal, "accounts:read")
    crm_accounts.get_account(session, account_id)
    query = changed_since(select(Account).where(Account.parent_id == account_id), Account, updated_since)
    return keyset_page(session, query, Account, AccountDetailOut, cursor, limit)


class BalanceOut(BaseModel):
    account_id: int
    account: str
    currency: str
    as_of: dt.date
    due_minor: int
    credit_minor: int
    overdue_minor: int
    open_invoices: int
    balance_minor: int = Field(description="due − credit: positive when the customer owes money")


class GroupBalanceOut(BaseModel):
    account_id: int
    members: list[BalanceOut]
    totals: dict[str, dict[str, int]] = Field(description="per currency: due, credit, overdue, balance")


@router.get("/accounts/{account_id}/balance", response_model=BalanceOut, responses=_PROBLEMS)
def get_balance(account_id: PathId, principal: Caller, session: DbSession):
    """What the account owes (open invoices) and holds (unallocated payments, credit notes)."""
    _visible(session, principal, Account, account_id, "account", "invoices:read")
    return BalanceOut(account_id=account_id, **account_balance(session, account_id))


@router.get("/accounts/{account_id}/group-balance", response_model=GroupBalanceOut, responses=_PROBLEMS)
def get_group_balance(account_id: PathId, principal: Caller, session: DbSession):
    """Balances of the account and all its descendants, with totals per currency (staff)."""
    require(principal, "invoices:read")
    return GroupBalanceOut(**crm_accounts.group_balances(session, account_id))


class StatementLineOut(BaseModel):
    date: dt.date
    kind: str = Field(description="opening, invoice, credit_note, payment, return")
    reference: str
    description: str
    debit_minor: int
    credit_minor: int
    balance_minor: int
    currency: str


@router.get("/accounts/{account_id}/statement", response_model=list[StatementLineOut], responses=_PROBLEMS)
def get_statement(account_id: PathId, principal: Caller, session: DbSession,
                  start: Annotated[dt.date, Query(description="first day")],
                  end: Annotated[dt.date, Query(description="exclusive: the statement covers [start, end)")]):
    """Movements of ``[start, end)`` after an opening balance, with a running balance."""
    _visible(session, principal, Account, account_id, "account", "invoices:read")
    return [StatementLineOut(**line) for line in statement(session, account_id, start, end)]


# ------------------------------------------------------------------------------------ contacts, sites

class ContactChange(BaseModel):
    first_name: str | None = Field(None, min_length=1, max_length=100)
    last_name: str | None = Field(None, min_length=1, max_length=100)
    email: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=40)
    role: Literal["billing", "technical", "signatory", "other"] | None = Field(
        None, description="billing: the primary billing contact, at most one per account")


class ContactIn(ContactChange):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    role: Literal["billing", "technical", "signatory", "other"] = "other"


class ContactOut(BaseModel):
    id: int
    account_id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    role: str
    updated_at: dt.datetime

    @classmethod
    def of(cls, c: Contact) -> "ContactOut":
        return cls(id=c.id, account_id=c.account_id, first_name=c.first_name, last_name=c.last_name, email=c.email,
                   phone=c.phone, role=c.role, updated_at=c.updated_at)


class SiteChange(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    address: str | None = Field(None, max_length=2000)
    postcode: str | None = Field(None, max_length=16)
    city: str | None = Field(None, max_length=100)
    country: str | None = Field(None, min_length=2, max_length=2)


class SiteIn(SiteChange):
    name: str = Field(min_length=1, max_length=200)


class SiteOut(BaseModel):
    id: int
    account_id: int
    name: str
    address: str
    postcode: str | None
    city: str | None
    country: str
    updated_at: dt.datetime

    @classmethod
    def of(cls, s: Site) -> "SiteOut":
        return cls(id=s.id, account_id=s.account_id, name=s.name, address=s.address or "", postcode=s.postcode,
                   city=s.city, country=s.country, updated_at=s.updated_at)


def _account_rows(model, out, account_id: int, principal: Principal, session: Session, limit: int,
                  cursor: str | None, updated_since: dt.datetime | None):
    _visible(session, principal, Account, account_id, "account")
    query = changed_since(select(model).where(model.account_id == account_id), model, updated_since)
    return keyset_page(session, query, model, out, cursor, limit)


@router.get("/accounts/{account_id}/contacts", response_model=Page[ContactOut], responses=_PROBLEMS)
def list_contacts(account_id: PathId, principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  updated_since: UpdatedSince = None):
    return _account_rows(Contact, ContactOut, account_id, principal, session, limit, cursor, updated_since)


@router.get("/contacts/{contact_id}", response_model=ContactOut, responses=_PROBLEMS)
def get_contact(contact_id: PathId, principal: Caller, session: DbSession):
    return ContactOut.of(_visible(session, principal, Contact, contact_id, "contact"))


@router.post("/accounts/{account_id}/contacts", status_code=201, response_model=ContactOut, responses=_CONFLICT)
def create_contact(account_id: PathId, body: ContactIn, principal: Caller, idempotency: IdempotencyDep,
                   request: Request):
    require(principal, "crm:write")
    return _post(request, principal, idempotency, lambda s: ContactOut.of(crm_accounts.create_contact(
        s, account_id, actor=principal.email, **body.model_dump(exclude_unset=True))), 201)


@router.patch("/contacts/{contact_id}", response_model=ContactOut, responses=_PATCH)
def update_contact(contact_id: PathId, body: ContactChange, principal: Caller, request: Request):
    """Change a contact (``crm:write``); ``If-Match``: the ETag of ``GET /contacts/{id}``."""
    require(principal, "crm:write")
    return _patch(request, principal, lambda s: _visible(s, principal, Contact, contact_id, "contact"),
                  lambda s, c: crm_accounts.update_contact(s, c.id, body.model_dump(exclude_unset=True),
                                                           actor=principal.email), ContactOut)


@router.delete("/contacts/{contact_id}", status_code=204, responses=_CONFLICT)
def delete_contact(contact_id: PathId, principal: Caller, request: Request):
    """Delete a contact (409 while it signed a contract or is named on a ticket or activity)."""
    require(principal, "crm:write")
    with request.app.state.wb.db.transaction() as s:
        crm_accounts.delete_contact(s, contact_id, actor=principal.email)
    return Response(status_code=204)


@router.get("/accounts/{account_id}/sites", response_model=Page[SiteOut], responses=_PROBLEMS)
def list_sites(account_id: PathId, principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
               updated_since: UpdatedSince = None):
    return _account_rows(Site, SiteOut, account_id, principal, session, limit, cursor, updated_since)


@router.get("/sites/{site_id}", response_model=SiteOut, responses=_PROBLEMS)
def get_site(site_id: PathId, principal: Caller, session: DbSession):
    return SiteOut.of(_visible(session, principal, Site, site_id, "site"))


@router.post("/accounts/{account_id}/sites", status_code=201, response_model=SiteOut, responses=_PROBLEMS)
def create_site(account_id: PathId, body: SiteIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    require(principal, "crm:write")
    return _post(request, principal, idempotency, lambda s: SiteOut.of(crm_accounts.create_site(
        s, account_id, actor=principal.email, **body.model_dump(exclude_unset=True))), 201)


@router.patch("/sites/{site_id}", response_model=SiteOut, responses=_PATCH)
def update_site(site_id: PathId, body: SiteChange, principal: Caller, request: Request):
    """Change a site (``crm:write``); ``If-Match``: the ETag of ``GET /sites/{id}``."""
    require(principal, "crm:write")
    return _patch(request, principal, lambda s: _visible(s, principal, Site, site_id, "site"),
                  lambda s, site: crm_accounts.update_site(s, site.id, body.model_dump(exclude_unset=True),
                                                           actor=principal.email), SiteOut)


# ----------------------------------------------------------------------------------------- contracts

class ContractIn(BaseModel):
    account_id: BodyId
    start_date: dt.date
    term_months: int = Field(12, ge=1, le=120)
    notice_days: int = Field(30, ge=0, le=365)
    auto_renew: bool = True
    minimum_monthly: str | None = Field(None, pattern=_DECIMAL, description="before VAT, e.g. \"50.00\"")
    signatory_contact_id: BodyId | None = None
    signed_at: dt.datetime | None = None


class ContractOut(BaseModel):
    id: int
    account_id: int
    reference: str
    status: str
    start_date: dt.date
    end_date: dt.date | None
    term_months: int
    commitment_end: dt.date | None = Field(description="start + term; moved by each tacit renewal")
    notice_days: int
    notice_deadline: dt.date | None = Field(description="commitment_end − notice_days")
    auto_renew: bool
    minimum_monthly: str | None
    signed_at: dt.datetime | None
    signatory_contact_id: int | None
    updated_at: dt.datetime

    @classmethod
    def of(cls, c: Contract) -> "ContractOut":
        return cls(id=c.id, account_id=c.account_id, reference=c.reference, status=c.status,
                   start_date=c.start_date, end_date=c.end_date, term_months=c.term_months,
                   commitment_end=c.commitment_end, notice_days=c.notice_days,
                   notice_deadline=notice_deadline(c) if c.commitment_end else None, auto_renew=c.auto_renew,
                   minimum_monthly=None if c.minimum_monthly is None else str(c.minimum_monthly),
                   signed_at=c.signed_at, signatory_contact_id=c.signatory_contact_id, updated_at=c.updated_at)


class TerminateIn(BaseModel):
    on: dt.date = Field(description="the first day no longer provided")
    reason: str = Field(min_length=1, max_length=2000)
    early: bool = Field(False, description="before the notice deadline: charges the remaining commitment")


class TerminationOut(BaseModel):
    contract: ContractOut
    fee_charge_id: int | None
    fee_amount: str | None = Field(description="remaining months × monthly commitment, before VAT")
    terminated_service_ids: list[int]


@router.get("/contracts", response_model=Page[ContractOut], responses=_PROBLEMS)
def list_contracts(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                   account_id: QueryId = None,
                   status: Annotated[Literal["draft", "active", "ended"] | None, Query()] = None,
                   updated_since: UpdatedSince = None):
    """Contracts by id; a customer token lists its own account's."""
    scope = _scope(principal)
    query = changed_since(select(Contract), Contract, updated_since)
    if scope is not None:
        query = query.where(Contract.account_id == scope)
    if account_id is not None:
        query = query.where(Contract.account_id == account_id)
    if status is not None:
        query = query.where(Contract.status == status)
    return keyset_page(session, query, Contract, ContractOut, cursor, limit)


@router.get("/contracts/{contract_id}", response_model=ContractOut, responses=_PROBLEMS)
def get_contract(contract_id: PathId, principal: Caller, session: DbSession):
    return ContractOut.of(_visible(session, principal, Contract, contract_id, "contract"))


@router.post("/contracts", status_code=201, response_model=ContractOut, responses=_CONFLICT)
def create_contract_route(body: ContractIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """A contract for an account (``crm:write``); the commitment ends ``term_months`` after the start."""
    require(principal, "crm:write")
    fields = body.model_dump(exclude={"account_id"})
    return _post(request, principal, idempotency, lambda s: ContractOut.of(create_contract(
        s, body.account_id, actor=principal.email, **fields)), 201)


@router.post("/contracts/{contract_id}/terminate", response_model=TerminationOut, responses=_CONFLICT)
def terminate_contract_route(contract_id: PathId, body: TerminateIn, principal: Caller, idempotency: IdempotencyDep,
                             request: Request):
    """End the contract and terminate its services; before the notice deadline only with ``early`` (a fee)."""
    require(principal, "crm:write")

    def fn(s):
        done = terminate_contract(s, contract_id, on=body.on, reason=body.reason, actor=principal.email,
                                  early=body.early)
        fee = done.fee
        return TerminationOut(contract=ContractOut.of(done.contract), fee_charge_id=fee.id if fee else None,
                              fee_amount=str(fee.quantity * fee.unit_price) if fee else None,
                              terminated_service_ids=done.terminated_service_ids)

    return _post(request, principal, idempotency, fn)


# -------------------------------------------------------------------------------- products, price lists

class ProductChange(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    kind: Literal["recurring", "one_off", "usage"] | None = None
    price: str | None = Field(None, pattern=_DECIMAL, description="before VAT, per period or per unit")
    billing_period_months: Literal[1, 3, 6, 12] | None = None
    billing_timing: Literal["advance", "arrears"] | None = None
    vat_rate: str | None = Field(None, pattern=r"^0(\.\d{1,4})?$", description="0.20 for 20 %")
    active: bool | None = None


class ProductIn(ProductChange):
    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["recurring", "one_off", "usage"]
    price: str = Field(pattern=_DECIMAL)
    brand_id: BodyId | None = Field(None, description="null: sold by every brand")


class ProductOut(BaseModel):
    id: int
    code: str
    brand_id: int | None
    name: str
    kind: str
    price: str
    currency: str
    billing_period_months: int
    billing_timing: str
    vat_rate: str
    active: bool
    updated_at: dt.datetime

    @classmethod
    def of(cls, p: Product) -> "ProductOut":
        return cls(id=p.id, code=p.code, brand_id=p.brand_id, name=p.name, kind=p.kind, price=str(p.price),
                   currency=p.currency, billing_period_months=p.billing_period_months,
                   billing_timing=p.billing_timing, vat_rate=str(p.vat_rate), active=p.active,
                   updated_at=p.updated_at)


@router.get("/products", response_model=Page[ProductOut], responses=_PROBLEMS)
def list_products(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  brand_id: QueryId = None,
                  active: Annotated[bool | None, Query()] = None, updated_since: UpdatedSince = None):
    """The catalog (staff); ``brand_id``: the products this brand sells (its own and every brand's)."""
    require(principal, "accounts:read")
    query = changed_since(select(Product), Product, updated_since)
    if brand_id is not None:
        query = query.where(or_(Product.brand_id.is_(None), Product.brand_id == brand_id))
    if active is not None:
        query = query.where(Product.active == active)
    return keyset_page(session, query, Product, ProductOut, cursor, limit)


@router.get("/products/{product_id}", response_model=ProductOut, responses=_PROBLEMS)
def get_product(product_id: PathId, principal: Caller, session: DbSession):
    require(principal, "accounts:read")
    return ProductOut.of(catalog.get_product(session, product_id))


@router.post("/products", status_code=201, response_model=ProductOut, responses=_CONFLICT)
def create_product(body: ProductIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    require(principal, "catalog:write")
    return _post(request, principal, idempotency, lambda s: ProductOut.of(catalog.create_product(
        s, actor=principal.email, **body.model_dump(exclude_unset=True))), 201)


@router.patch("/products/{product_id}", response_model=ProductOut, responses=_PATCH)
def update_product(product_id: PathId, body: ProductChange, principal: Caller, request: Request):
    """Change a product (``catalog:write``); ``If-Match``: the ETag of ``GET /products/{id}``."""
    require(principal, "catalog:write")
    return _patch(request, principal, lambda s: catalog.get_product(s, product_id),
                  lambda s, p: catalog.update_product(s, p.id, body.model_dump(exclude_unset=True),
                                                      actor=principal.email), ProductOut)


class PriceListIn(BaseModel):
    brand_id: BodyId
    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    currency: Literal["EUR"] = "EUR"
    valid_from: dt.date
    valid_to: dt.date | None = Field(None, description="exclusive; null: open-ended")


class PriceIn(BaseModel):
    product_id: BodyId
    price: str = Field(pattern=_DECIMAL)


class PriceItemOut(BaseModel):
    product_id: int
    price: str


class PriceListOut(BaseModel):
    id: int
    brand_id: int
    code: str
    name: str
    currency: str
    valid_from: dt.date
    valid_to: dt.date | None
    items: list[PriceItemOut]
    updated_at: dt.datetime

    @classmethod
    def of(cls, p: PriceList) -> "PriceListOut":
        from bluerocktel.db.models import PriceListItem

        items = object_session(p).scalars(select(PriceListItem).where(PriceListItem.price_list_id == p.id)
                                          .order_by(PriceListItem.product_id))
        return cls(id=p.id, brand_id=p.brand_id, code=p.code, name=p.name, currency=p.currency,
                   valid_from=p.valid_from, valid_to=p.valid_to, updated_at=p.updated_at,
                   items=[PriceItemOut(product_id=i.product_id, price=str(i.price)) for i in items])


@router.get("/price-lists", response_model=Page[PriceListOut], responses=_PROBLEMS)
def list_price_lists(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                     brand_id: QueryId = None, updated_since: UpdatedSince = None):
    """Brand price lists with their items (staff)."""
    require(principal, "accounts:read")
    query = changed_since(select(PriceList), PriceList, updated_since)
    if brand_id is not None:
        query = query.where(PriceList.brand_id == brand_id)
    return keyset_page(session, query, PriceList, PriceListOut, cursor, limit)


@router.post("/price-lists", status_code=201, response_model=PriceListOut, responses=_CONFLICT)
def create_price_list(body: PriceListIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """A brand's price list (``catalog:write``); 409 when it overlaps another of the brand."""
    require(principal, "catalog:write")
    return _post(request, principal, idempotency, lambda s: PriceListOut.of(catalog.create_price_list(
        s, actor=principal.email, **body.model_dump())), 201)


@router.post("/price-lists/{price_list_id}/items", response_model=PriceListOut, responses=_PROBLEMS)
def set_price_list_item(price_list_id: PathId, body: PriceIn, principal: Caller, idempotency: IdempotencyDep,
                        request: Request):
    """Set a product's price in the list (added or changed)."""
    require(principal, "catalog:write")

    def fn(s):
        item = catalog.set_price(s, price_list_id, body.product_id, body.price, actor=principal.email)
        return PriceListOut.of(s.get(PriceList, item.price_list_id))

    return _post(request, principal, idempotency, fn)


# -------------------------------------------------------------------------------------------- quotes

class QuoteLineIn(BaseModel):
    product_id: BodyId
    quantity: int = Field(1, ge=1, le=100_000)
    site_id: BodyId | None = None
    description: str | None = Field(None, max_length=300, description="default: the product's name")


class QuoteIn(BaseModel):
    account_id: BodyId
    valid_until: dt.date
    term_months: int = Field(12, ge=1, le=120)
    lines: list[QuoteLineIn] = Field(min_length=1, max_length=200)


class AcceptIn(BaseModel):
    signatory_contact_id: BodyId = Field(description="a signatory contact of the quote's account")


class QuoteLineOut(BaseModel):
    position: int
    product_id: int
    description: str
    quantity: int
    unit_price: str
    amount_minor: int
    site_id: int | None


class VatOut(BaseModel):
    rate: str
    base_minor: int
    vat_minor: int


class QuoteOut(BaseModel):
    id: int
    number: str
    account_id: int
    brand_id: int
    status: str
    currency: str
    valid_until: dt.date
    term_months: int
    lines: list[QuoteLineOut]
    vat: list[VatOut]
    subtotal_minor: int
    vat_minor: int
    total_minor: int
    accepted_at: dt.datetime | None
    contract_id: int | None
    updated_at: dt.datetime

    @classmethod
    def of(cls, q: Quote) -> "QuoteOut":
        totals = quote_totals(object_session(q), q)
        lines = [QuoteLineOut(position=ln.position, product_id=ln.product_id, description=ln.description,
                              quantity=ln.quantity, unit_price=str(ln.unit_price), amount_minor=amount,
                              site_id=ln.site_id) for ln, amount in zip(q.lines, totals.line_amounts_minor)]
        return cls(id=q.id, number=q.number, account_id=q.account_id, brand_id=q.brand_id, status=q.status,
                   currency=q.currency, valid_until=q.valid_until, term_months=q.term_months, lines=lines,
                   vat=[VatOut(**v) for v in totals.vat], subtotal_minor=totals.subtotal_minor,
                   vat_minor=totals.vat_minor, total_minor=totals.total_minor, accepted_at=q.accepted_at,
                   contract_id=q.contract_id, updated_at=q.updated_at)


class AcceptedOut(BaseModel):
    quote: QuoteOut
    contract: ContractOut
    service_ids: list[int]


@router.get("/quotes", response_model=Page[QuoteOut], responses=_PROBLEMS)
def list_quotes(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                account_id: QueryId = None,
                status: Annotated[Literal["draft", "sent", "accepted", "rejected", "expired"] | None, Query()] = None,
                updated_since: UpdatedSince = None):
    """Quotes, newest first; a customer token lists its own account's."""
    scope = _scope(principal)
    query = changed_since(select(Quote).options(selectinload(Quote.lines)), Quote, updated_since)
    if scope is not None:
        query = query.where(Quote.account_id == scope)
    if account_id is not None:
        query = query.where(Quote.account_id == account_id)
    if status is not None:
        query = query.where(Quote.status == status)
    return keyset_page(session, query, Quote, QuoteOut, cursor, limit, newest_first=True)


@router.get("/quotes/{quote_id}", response_model=QuoteOut, responses=_PROBLEMS)
def get_quote(quote_id: PathId, principal: Caller, session: DbSession):
    return QuoteOut.of(_visible(session, principal, Quote, quote_id, "quote"))


@router.post("/quotes", status_code=201, response_model=QuoteOut, responses=_CONFLICT)
def create_quote_route(body: QuoteIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """A draft quote (``crm:write``), priced today from the brand's price list."""
    require(principal, "crm:write")
    lines = [LineIn(**line.model_dump()) for line in body.lines]
    return _post(request, principal, idempotency, lambda s: QuoteOut.of(create_quote(
        s, body.account_id, lines, valid_until=body.valid_until, term_months=body.term_months,
        actor=principal.email)), 201)


@router.post("/quotes/{quote_id}/send", response_model=QuoteOut, responses=_CONFLICT)
def send_quote_route(quote_id: PathId, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """draft → sent (``crm:write``)."""
    require(principal, "crm:write")
    return _post(request, principal, idempotency, lambda s: QuoteOut.of(send_quote(s, quote_id,
                                                                                  actor=principal.email)))


def _may_answer_quote(session: Session, principal: Principal, quote_id: int) -> None:
    """Staff with ``crm:write``, or the customer of the quote's account (others: 403, or 404 for customers)."""
    if principal.is_staff:
        require(principal, "crm:write")
    else:
        _visible(session, principal, Quote, quote_id, "quote")


@router.post("/quotes/{quote_id}/accept", response_model=AcceptedOut, responses=_CONFLICT)
def accept_quote_route(quote_id: PathId, body: AcceptIn, principal: Caller, idempotency: IdempotencyDep,
                       request: Request):
    """sent → accepted: creates the contract and one ordered service per line; 409 when accepted already."""
    def fn(s):
        _may_answer_quote(s, principal, quote_id)
        done = accept_quote(s, quote_id, signatory_contact_id=body.signatory_contact_id, actor=principal.email)
        return AcceptedOut(quote=QuoteOut.of(done.quote), contract=ContractOut.of(s.get(Contract, done.contract_id)),
                           service_ids=done.service_ids)

    return _post(request, principal, idempotency, fn)


@router.post("/quotes/{quote_id}/reject", response_model=QuoteOut, responses=_CONFLICT)
def reject_quote_route(quote_id: PathId, principal: Caller, idempotency: IdempotencyDep, request: Request):
    def fn(s):
        _may_answer_quote(s, principal, quote_id)
        return QuoteOut.of(reject_quote(s, quote_id, actor=principal.email))

    return _post(request, principal, idempotency, fn)
