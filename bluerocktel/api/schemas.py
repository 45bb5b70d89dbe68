"""Response models of the REST API. Money is integer minor units plus an ISO 4217 currency;
exact unrounded Decimals (``*_precise``, quantities, VAT rates) travel as decimal strings."""

from __future__ import annotations

import datetime as dt
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from bluerocktel.db.models import Account, BillingRun, Invoice, InvoiceLine

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null on the last page.")


class AccountOut(BaseModel):
    id: int
    number: str
    brand_id: int
    name: str
    kind: str
    status: str
    email: str | None
    phone: str | None
    address: str
    postcode: str | None
    city: str | None
    country: str
    vat_regime: str
    currency: str
    language: str
    created_at: dt.datetime

    @classmethod
    def of(cls, a: Account) -> "AccountOut":
        return cls(id=a.id, number=a.number, brand_id=a.brand_id, name=a.name, kind=a.kind, status=a.status,
                   email=a.email, phone=a.phone, address=a.address or "", postcode=a.postcode, city=a.city,
                   country=a.country, vat_regime=a.vat_regime, currency=a.currency, language=a.language,
                   created_at=a.created_at)


class InvoiceOut(BaseModel):
    id: int
    number: str
    kind: str
    status: str
    account_id: int
    brand_id: int
    billing_run_id: int | None
    currency: str = Field(description="ISO 4217 code of every *_minor amount")
    period_start: dt.date
    period_end: dt.date = Field(description="exclusive: the period is [period_start, period_end)")
    issue_date: dt.date
    due_date: dt.date
    subtotal_minor: int
    vat_minor: int
    total_minor: int
    pdf_url: str | None

    @classmethod
    def fields_of(cls, inv: Invoice) -> dict:
        return dict(id=inv.id, number=inv.number, kind=inv.kind, status=inv.status, account_id=inv.account_id,
                    brand_id=inv.brand_id, billing_run_id=inv.billing_run_id, currency=inv.currency,
                    period_start=inv.period_start, period_end=inv.period_end, issue_date=inv.issue_date,
                    due_date=inv.due_date, subtotal_minor=inv.subtotal_minor, vat_minor=inv.vat_minor,
                    total_minor=inv.total_minor,
                    pdf_url=f"/api/v1/invoices/{inv.id}/pdf" if inv.pdf_path else None)

    @classmethod
    def of(cls, inv: Invoice) -> "InvoiceOut":
        return cls(**cls.fields_of(inv))


class InvoiceLineOut(BaseModel):
    position: int
    kind: str
    description: str
    zone: str | None
    quantity: str
    unit: str
    unit_price_precise: str | None
    amount_precise: str
    amount_minor: int
    vat_rate: str

    @classmethod
    def of(cls, line: InvoiceLine) -> "InvoiceLineOut":
        return cls(position=line.position, kind=line.kind, description=line.description, zone=line.zone,
                   quantity=_dec(line.quantity), unit=line.unit, unit_price_precise=_dec(line.unit_price_precise),
                   amount_precise=_dec(line.amount_precise), amount_minor=line.amount_minor,
                   vat_rate=_dec(line.vat_rate))


class InvoiceDetailOut(InvoiceOut):
    lines: list[InvoiceLineOut]

    @classmethod
    def of(cls, inv: Invoice) -> "InvoiceDetailOut":
        return cls(**cls.fields_of(inv), lines=[InvoiceLineOut.of(line) for line in inv.lines])


class BillingRunOut(BaseModel):
    id: int
    period: str
    brand_code: str | None
    dry_run: bool
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    started_by: str
    summary: dict
    error: str | None

    @classmethod
    def of(cls, r: BillingRun) -> "BillingRunOut":
        return cls(id=r.id, period=r.period, brand_code=r.brand_code, dry_run=r.dry_run, status=r.status,
                   started_at=r.started_at, finished_at=r.finished_at, started_by=r.started_by,
                   summary=r.summary or {}, error=r.error)


def _dec(value) -> str | None:
    return None if value is None else format(value, "f")
