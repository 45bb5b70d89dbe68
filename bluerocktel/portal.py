"""Data access for the customer portal and the staff app; no UI (DESIGN.md §4, STYLE.md "Portal").

:class:`PortalStore` is scoped to one signed-in customer: every query filters on that
customer's account, and asking for another account's invoice answers :class:`NotFoundError`
exactly as a missing one would. :class:`StaffStore` serves the staff app. The views in
``portal_app/`` only render what these return; both paginate on the server.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, or_, select

from bluerocktel.db.models import Account, BillingRun, Brand, Invoice, Service, User
from bluerocktel.errors import NotFoundError
from bluerocktel.lake import connect_duckdb, scan_sql
from bluerocktel.security import AuthError
from bluerocktel.vocabulary import InvoiceKind, InvoiceStatus, Role
from bluerocktel.workbench import Workbench

UNPAID_STATUSES = (InvoiceStatus.ISSUED.value, InvoiceStatus.SENT.value, InvoiceStatus.DISPUTED.value)


@dataclass(frozen=True)
class AccountSummary:
    account_id: int
    number: str
    name: str
    status: str
    email: str | None
    address: str
    postcode: str | None
    city: str | None
    currency: str
    language: str
    timezone: str
    brand_id: int
    unpaid_invoices: int
    unpaid_total_minor: int


@dataclass(frozen=True)
class InvoiceRow:
    id: int
    number: str
    kind: str
    status: str
    period_start: dt.date
    period_end: dt.date          # exclusive
    issue_date: dt.date
    due_date: dt.date
    currency: str
    subtotal_minor: int
    vat_minor: int
    total_minor: int
    has_pdf: bool

    @classmethod
    def of(cls, inv: Invoice) -> "InvoiceRow":
        return cls(inv.id, inv.number, inv.kind, inv.status, inv.period_start, inv.period_end, inv.issue_date,
                   inv.due_date, inv.currency, inv.subtotal_minor, inv.vat_minor, inv.total_minor,
                   bool(inv.pdf_path))


@dataclass(frozen=True)
class ServiceRow:
    id: int
    label: str
    product: str
    status: str
    quantity: int
    activated_on: dt.date | None
    terminated_on: dt.date | None


# Columns of the call log, all from lake.RATED_SCHEMA.
CALL_COLUMNS = ("start_at", "caller", "callee", "destination", "zone", "direction", "call_type",
                "disposition", "billsec_s", "billable_s", "price_micro", "rating_status")


@dataclass(frozen=True)
class CallPage:
    """One page of the call log, newest first; ``total`` counts all the account's rated calls."""

    rows: list[dict]
    total: int
    offset: int
    limit: int

    @property
    def page(self) -> int:
        return self.offset // self.limit + 1 if self.limit else 1

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit)) if self.limit else 1


@dataclass(frozen=True)
class AccountListRow:
    id: int
    number: str
    name: str
    brand: str
    kind: str
    status: str
    city: str | None
    email: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class AccountPage:
    rows: list[AccountListRow]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class BillingRunRow:
    id: int
    period: str
    brand_code: str | None
    dry_run: bool
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    started_by: str
    invoices: int | None
    error: str | None


def _limit(limit: int, maximum: int = 500) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return min(limit, maximum)


class PortalStore:
    """What one customer may see: their account, invoices, services and rated calls."""

    def __init__(self, wb: Workbench, user_id: int):
        self.wb = wb
        with wb.db.session() as s:
            user = s.get(User, user_id)
            if user is None or not user.active or user.role != Role.CUSTOMER or user.account_id is None:
                raise AuthError("the portal is for active customer users")
            self.user_id = user.id
            self.user_name = user.name
            self.account_id = user.account_id

    def account_summary(self) -> AccountSummary:
        with self.wb.db.session() as s:
            acc = s.get(Account, self.account_id)
            unpaid_count, unpaid_total = s.execute(
                select(func.count(Invoice.id), func.coalesce(func.sum(Invoice.total_minor), 0))
                .where(Invoice.account_id == self.account_id, Invoice.kind == InvoiceKind.INVOICE.value,
                       Invoice.status.in_(UNPAID_STATUSES))).one()
            return AccountSummary(acc.id, acc.number, acc.name, acc.status, acc.email, acc.address, acc.postcode,
                                  acc.city, acc.currency, acc.language, acc.timezone, acc.brand_id,
                                  int(unpaid_count), int(unpaid_total))

    def brand_id(self) -> int:
        with self.wb.db.session() as s:
            return s.scalar(select(Account.brand_id).where(Account.id == self.account_id))

    def invoices(self, limit: int = 100) -> list[InvoiceRow]:
        """The account's invoices and credit notes, newest first."""
        with self.wb.db.session() as s:
            rows = s.scalars(select(Invoice).where(Invoice.account_id == self.account_id)
                             .order_by(Invoice.issue_date.desc(), Invoice.id.desc()).limit(_limit(limit))).all()
            return [InvoiceRow.of(inv) for inv in rows]

    def invoice(self, invoice_id: int) -> InvoiceRow:
        with self.wb.db.session() as s:
            return InvoiceRow.of(self._own_invoice(s, invoice_id))

    def invoice_pdf_path(self, invoice_id: int) -> tuple[Path, str]:
        """The PDF file of one of the account's invoices and a download file name."""
        with self.wb.db.session() as s:
            inv = self._own_invoice(s, invoice_id)
            return resolve_document(self.wb, inv.pdf_path, f"invoice {inv.number}"), f"{inv.number}.pdf"

    def _own_invoice(self, s, invoice_id: int) -> Invoice:
        inv = s.get(Invoice, invoice_id)
        if inv is None or inv.account_id != self.account_id:
            raise NotFoundError(f"no invoice {invoice_id}")
        return inv

    def services(self) -> list[ServiceRow]:
        with self.wb.db.session() as s:
            rows = s.scalars(select(Service).where(Service.account_id == self.account_id)
                             .order_by(Service.id)).all()
            return [ServiceRow(sv.id, sv.label, sv.product.name, sv.status, sv.quantity, sv.activated_on,
                               sv.terminated_on) for sv in rows]

    def calls(self, offset: int = 0, limit: int = 25, months: list[str] | None = None) -> CallPage:
        """A page of the account's rated calls from the lake, newest first, with the total count."""
        limit = _limit(limit)
        offset = max(0, int(offset))
        source = scan_sql(self.wb.lake_dir, "rated", months)
        con = connect_duckdb()
        try:
            total = con.execute(f"SELECT count(*) FROM {source} WHERE account_id = ?",
                                [self.account_id]).fetchall()[0][0]
            cursor = con.execute(
                f"SELECT {', '.join(CALL_COLUMNS)} FROM {source} WHERE account_id = ? "
                f"ORDER BY start_at DESC, cdr_id DESC LIMIT ? OFFSET ?", [self.account_id, limit, offset])
            rows = [dict(zip(CALL_COLUMNS, values)) for values in cursor.fetchall()]
        finally:
            con.close()
        return CallPage(rows, int(total), offset, limit)


def resolve_document(wb: Workbench, relative_path: str | None, what: str) -> Path:
    """The file of a document stored under the data dir; NotFoundError when missing or outside it."""
    if not relative_path:
        raise NotFoundError(f"{what} has no PDF yet")
    root = wb.data_dir.resolve()
    path = (root / relative_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFoundError(f"the PDF of {what} is missing")
    return path


class StaffStore:
    """What the staff app lists: accounts (searchable, paginated) and billing runs."""

    def __init__(self, wb: Workbench):
        self.wb = wb

    def accounts(self, search: str = "", offset: int = 0, limit: int = 50) -> AccountPage:
        limit = _limit(limit)
        offset = max(0, int(offset))
        query = select(Account, Brand.code).join(Brand, Brand.id == Account.brand_id)
        text = search.strip()
        if text:
            like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(or_(func.lower(Account.name).like(like, escape="\\"),
                                    func.lower(Account.number).like(like, escape="\\"),
                                    func.lower(func.coalesce(Account.email, "")).like(like, escape="\\"),
                                    func.lower(func.coalesce(Account.city, "")).like(like, escape="\\")))
        with self.wb.db.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            rows = s.execute(query.order_by(Account.number, Account.id).offset(offset).limit(limit)).all()
            return AccountPage([AccountListRow(a.id, a.number, a.name, code, a.kind, a.status, a.city, a.email,
                                               a.created_at) for a, code in rows], int(total), offset, limit)

    def billing_runs(self, limit: int = 50) -> list[BillingRunRow]:
        with self.wb.db.session() as s:
            runs = s.scalars(select(BillingRun).order_by(BillingRun.started_at.desc(), BillingRun.id.desc())
                             .limit(_limit(limit))).all()
            return [BillingRunRow(r.id, r.period, r.brand_code, r.dry_run, r.status, r.started_at, r.finished_at,
                                  r.started_by, _invoice_count(r.summary), r.error) for r in runs]


def _invoice_count(summary: dict | None) -> int | None:
    for key in ("invoices", "invoices_issued", "issued", "invoice_count"):
        value = (summary or {}).get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, list):
            return len(value)
    return None
