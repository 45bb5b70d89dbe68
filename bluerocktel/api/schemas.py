"""Request and response models of the REST API. Money is integer minor units plus an ISO 4217
currency; exact unrounded Decimals (``*_precise``, quantities, VAT rates) travel as decimal strings."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from bluerocktel.db.models import Account, BillingRun, CdrFile, Invoice, InvoiceLine

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


# --- CDR mediation (/api/v1/cdr) --------------------------------------------------------------

class CdrBatchIn(BaseModel):
    """A pushed batch of CDRs, in the ``json-records`` format (its fields in the API docs)."""

    source: str = Field(min_length=1, max_length=64, description="name of a configured CDR source")
    records: list[Any] = Field(description="CDR objects: start, answer, end (ISO-8601), duration, billsec, "
                                           "caller, callee, account_code, channel, dst_channel, disposition, "
                                           "direction, call_type, units, unique_id; at most 10,000")


class CdrIssueOut(BaseModel):
    file: str
    line: int = Field(description="1-based line of the file, or record number of a pushed batch")
    reason: str
    raw: str = Field(description="the record as received (a line, a JSON record, or base64 of a binary one)")
    offset: int | None = Field(None, description="byte offset of a binary record")


class ImportSummaryOut(BaseModel):
    file: str
    format: str
    source: str
    status: str = Field(description="imported, or duplicate when the same bytes were imported before")
    received: int
    imported: int
    duplicates: int = Field(description="records already in the lake (or twice in this input)")
    quarantined: int
    sha256: str
    cdr_file_id: int | None = Field(description="the ledger row (GET /api/v1/cdr/files/{id}); null for a zip "
                                                "archive, whose members each have theirs")
    months: list[str]
    duration_ms: int
    issues: list[CdrIssueOut] = Field(description="the first 20 quarantined records; all of them are in "
                                                  "GET /api/v1/cdr/quarantine")
    members: list["ImportSummaryOut"] = Field(default_factory=list, description="one summary per zip member")

    @classmethod
    def of(cls, summary) -> "ImportSummaryOut":
        data = summary.as_dict()
        data["members"] = [cls.of(m) for m in summary.members]
        return cls(**data)


class CdrFileOut(BaseModel):
    id: int
    source: str
    collector: str = Field(description="manual, sftp, database or api")
    file_name: str
    remote_path: str | None
    format: str
    status: str = Field(description="importing, imported, duplicate, failed or interrupted")
    size_bytes: int
    sha256: str
    received: int
    imported: int
    duplicates: int
    quarantined: int
    received_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: int | None
    error: str | None

    @classmethod
    def of(cls, f: CdrFile) -> "CdrFileOut":
        return cls(id=f.id, source=f.source, collector=f.collector, file_name=f.file_name,
                   remote_path=f.remote_path, format=f.format, status=f.status, size_bytes=f.size_bytes,
                   sha256=f.sha256, received=f.received, imported=f.imported, duplicates=f.duplicates,
                   quarantined=f.quarantined, received_at=f.received_at, finished_at=f.finished_at,
                   duration_ms=f.duration_ms, error=f.error)


class QuarantinedRecordOut(BaseModel):
    quarantine_id: str
    source: str
    format: str
    source_file: str
    source_line: int
    byte_offset: int | None
    reason: str
    raw: str
    quarantined_at: dt.datetime
    outcome: str | None = Field(None, description="once reprocessed: imported, duplicate or consumed")


class QuarantinePageOut(BaseModel):
    items: list[QuarantinedRecordOut]
    total: int = Field(description="records matching the filters")
    offset: int
    limit: int


class CdrSourceOut(BaseModel):
    id: int
    name: str
    format: str = Field(description="a CDR format name, or custom (read through the mapping)")
    url: str | None = Field(description="collector URL (sftp://, mysql://, postgresql://…) without password; "
                                        "null when CDRs are pushed or uploaded")
    country: str
    timezone: str
    options: dict
    mapping: str | None = Field(description="TOML mapping of a custom format")
    poll_interval_s: int
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    last_run_at: dt.datetime | None = Field(description="the collector's last run")
    last_status: str | None
    last_error: str | None
    cursor: str | None = Field(description="the collector's high-water mark")

    @classmethod
    def of(cls, row) -> "CdrSourceOut":
        return cls(**{name: getattr(row, name) for name in cls.model_fields})


class CdrSourceIn(BaseModel):
    name: str = Field(description="1 to 64 letters, digits, '.', '_' or '-'")
    format: str | None = Field(None, description="a CDR format (GET /api/v1/cdr/formats); or give mapping")
    mapping: str | None = Field(None, description="TOML mapping of a custom format; or give format")
    url: str | None = Field(None, description="collector URL; no password in it: name an environment variable "
                                              "in options.password_env")
    timezone: str | None = Field(None, description="IANA zone of the switch's local times (default: the setting)")
    country: str | None = Field(None, description="national numbering plan (default: the setting)")
    options: dict = Field(default_factory=dict, description="collector settings; no secrets")
    poll_interval_s: int = 300
    enabled: bool = True


class CdrSourcePatch(BaseModel):
    """The fields to change; those not sent stay as they are."""

    format: str | None = None
    mapping: str | None = None
    url: str | None = None
    timezone: str | None = None
    country: str | None = None
    options: dict | None = None
    poll_interval_s: int | None = None
    enabled: bool | None = None


class CdrFormatOut(BaseModel):
    name: str
    description: str
    fingerprint: str = Field(description="which fields make the record id (the dedup key)")
    line_based: bool
    header_lines: int
    extensions: list[str]
    raw_kind: str = Field(description="what a quarantined record's raw holds: line, document or binary")


def _dec(value) -> str | None:
    return None if value is None else format(value, "f")
