"""Data access for the customer portal and the staff app; no UI (DESIGN.md §4, STYLE.md "Portal").

:class:`PortalStore` is scoped to one signed-in customer: every query filters on that
customer's account, and asking for another account's invoice answers :class:`NotFoundError`
exactly as a missing one would. :class:`StaffStore` serves the staff app. The views in
``portal_app/`` only render what these return; both paginate on the server.

The CDR mediation functions at the end (sources, uploads, pushed batches, the file ledger and
the quarantine) are shared by the staff app's CDR page and the REST API (``/api/v1/cdr``), so
that both check and import exactly the same way: an upload or a push names a *configured*
source (unknown: :class:`NotFoundError`; disabled: refused), a source's URL never holds a
password and its options never hold a secret (``password_env`` names the environment variable).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from bluerocktel import helpdesk
from bluerocktel.audit import record_audit
from bluerocktel.billing.payments import account_balance, local_date, open_invoices, operator_today, statement
from bluerocktel.db.models import (
    Account,
    Allocation,
    BillingRun,
    Brand,
    CdrFile,
    CdrSource,
    CdrSourceState,
    Contract,
    Invoice,
    Payment,
    Service,
    Team,
    Ticket,
    User,
)
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.lake import connect_duckdb, scan_sql
from bluerocktel.security import AuthError, Principal, can
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import (STAFF_ROLES, Collector, InvoiceKind, InvoiceStatus, Role, TicketPriority,
                                   TicketStatus)
from bluerocktel.workbench import Workbench

if TYPE_CHECKING:
    from bluerocktel.mediation import ImportSummary

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
    open_minor: int = 0                 # still to pay (invoices only)
    standing: str = ""                  # INVOICE_STANDINGS, from the payments: what the customer is shown
    credits_number: str | None = None   # a credit note: the invoice it corrects

    @classmethod
    def of(cls, inv: Invoice, open_minor: int, today: dt.date, credits_number: str | None = None) -> "InvoiceRow":
        return cls(inv.id, inv.number, inv.kind, inv.status, inv.period_start, inv.period_end, inv.issue_date,
                   inv.due_date, inv.currency, inv.subtotal_minor, inv.vat_minor, inv.total_minor,
                   bool(inv.pdf_path), open_minor, invoice_standing(inv, open_minor, today), credits_number)


INVOICE_STANDINGS = ("credit_note", "credited", "paid", "disputed", "overdue", "partially_paid", "to_pay")


def invoice_standing(inv: Invoice, open_minor: int, today: dt.date) -> str:
    """Where an invoice stands for its customer: paid, partially paid, overdue (open past its due
    date), to pay; credit notes, invoices cancelled by credit notes and disputed ones apart."""
    if inv.kind == InvoiceKind.CREDIT_NOTE:
        return "credit_note"
    if inv.status == InvoiceStatus.CREDITED:
        return "credited"
    if open_minor <= 0:
        return "paid"
    if inv.status == InvoiceStatus.DISPUTED:
        return "disputed"
    if inv.due_date < today:
        return "overdue"
    return "partially_paid" if open_minor < inv.total_minor else "to_pay"


@dataclass(frozen=True)
class ServiceRow:
    id: int
    label: str
    product: str
    status: str
    quantity: int
    activated_on: dt.date | None
    terminated_on: dt.date | None
    contract: str | None = None          # the contract's reference


@dataclass(frozen=True)
class ContractRow:
    id: int
    reference: str
    status: str
    start_date: dt.date
    term_months: int
    commitment_end: dt.date | None
    notice_days: int
    notice_deadline: dt.date | None      # last day to give notice for the contract to end at commitment_end
    auto_renew: bool


@dataclass(frozen=True)
class PaymentRow:
    id: int
    received_on: dt.date                 # operator's local date
    amount_minor: int
    currency: str
    method: str
    reference: str
    status: str                          # received | returned
    returned_on: dt.date | None
    settled: tuple[str, ...]             # numbers of the invoices it pays (allocations not reversed)


@dataclass(frozen=True)
class TicketRow:
    id: int
    subject: str
    status: str
    priority: str
    created_at: dt.datetime
    updated_at: dt.datetime
    service: str | None                  # the service's label, when the ticket names one
    invoice: str | None                  # the invoice's number, when the ticket names one


@dataclass(frozen=True)
class MessageRow:
    id: int
    author: str
    from_staff: bool
    internal: bool
    body: str
    created_at: dt.datetime


@dataclass(frozen=True)
class TicketThread:
    ticket: TicketRow
    messages: list[MessageRow]


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
    """What one customer may see and do: their account, invoices and credit notes, balance,
    statement and payments, services and contracts, rated calls, and their support requests
    (opened, read without internal notes, answered)."""

    def __init__(self, wb: Workbench, user_id: int):
        self.wb = wb
        with wb.db.session() as s:
            user = s.get(User, user_id)
            if user is None or not user.active or user.role != Role.CUSTOMER or user.account_id is None:
                raise AuthError("the portal is for active customer users")
            self.user_id = user.id
            self.user_name = user.name
            self.user_email = user.email
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

    def invoices(self, limit: int = 100, today: dt.date | None = None) -> list[InvoiceRow]:
        """The account's invoices and credit notes, newest first, each with what is left to pay and
        its standing on ``today`` (paid, partially paid, overdue...); a credit note names the invoice
        it corrects."""
        with self.wb.db.session() as s:
            rows = s.scalars(select(Invoice).where(Invoice.account_id == self.account_id)
                             .order_by(Invoice.issue_date.desc(), Invoice.id.desc()).limit(_limit(limit))).all()
            return self._rows(s, rows, today or operator_today())

    def invoice(self, invoice_id: int, today: dt.date | None = None) -> InvoiceRow:
        with self.wb.db.session() as s:
            return self._rows(s, [self._own_invoice(s, invoice_id)], today or operator_today())[0]

    def _rows(self, s: Session, invoices: list[Invoice], today: dt.date) -> list[InvoiceRow]:
        open_minor = {inv.id: minor for inv, minor in open_invoices(s, self.account_id)}
        credited = dict(s.execute(select(Invoice.id, Invoice.number).where(
            Invoice.id.in_({inv.credits_invoice_id for inv in invoices if inv.credits_invoice_id}))).all())
        return [InvoiceRow.of(inv, open_minor.get(inv.id, 0), today, credited.get(inv.credits_invoice_id))
                for inv in invoices]

    def invoice_pdf_path(self, invoice_id: int) -> tuple[Path, str]:
        """The PDF file of one of the account's invoices and a download file name."""
        with self.wb.db.session() as s:
            inv = self._own_invoice(s, invoice_id)
            return resolve_document(self.wb, inv.pdf_path, f"invoice {inv.number}"), f"{inv.number}.pdf"

    def invoice_annex_path(self, invoice_id: int) -> tuple[Path, str]:
        """The call-detail annex of one of the account's invoices (:func:`invoice_annex`)."""
        with self.wb.db.session() as s:
            inv = self._own_invoice(s, invoice_id)
        return invoice_annex(self.wb, inv)

    def _own_invoice(self, s, invoice_id: int) -> Invoice:
        inv = s.get(Invoice, invoice_id)
        if inv is None or inv.account_id != self.account_id:
            raise NotFoundError(f"no invoice {invoice_id}")
        return inv

    def services(self) -> list[ServiceRow]:
        with self.wb.db.session() as s:
            return account_services(s, self.account_id)

    def contracts(self) -> list[ContractRow]:
        """The account's contracts, newest start first, with the last day to give notice."""
        with self.wb.db.session() as s:
            rows = s.scalars(select(Contract).where(Contract.account_id == self.account_id)
                             .order_by(Contract.start_date.desc(), Contract.id.desc())).all()
            return [ContractRow(c.id, c.reference, c.status, c.start_date, c.term_months, c.commitment_end,
                                c.notice_days,
                                c.commitment_end - dt.timedelta(days=c.notice_days) if c.commitment_end else None,
                                c.auto_renew) for c in rows]

    def balance(self, today: dt.date | None = None) -> dict:
        """What the account owes on ``today`` (:func:`bluerocktel.billing.payments.account_balance`)."""
        with self.wb.db.session() as s:
            return account_balance(s, self.account_id, today)

    def statement(self, today: dt.date | None = None, months: int = 12) -> list[dict]:
        """The statement of this month and the ``months - 1`` before, up to ``today`` included
        (:func:`bluerocktel.billing.payments.statement`: an opening line, then a running balance)."""
        today = today or operator_today()
        first = today.year * 12 + today.month - 1 - (months - 1)
        start = dt.date(first // 12, first % 12 + 1, 1)
        with self.wb.db.session() as s:
            return statement(s, self.account_id, start, today + dt.timedelta(days=1))

    def payments(self, limit: int = 100) -> list[PaymentRow]:
        """The account's payments, newest first, with the invoices each one settles."""
        with self.wb.db.session() as s:
            rows = s.scalars(select(Payment).where(Payment.account_id == self.account_id)
                             .order_by(Payment.received_at.desc(), Payment.id.desc()).limit(_limit(limit))).all()
            settled: dict[int, list[str]] = {}
            for payment_id, number in s.execute(
                    select(Allocation.payment_id, Invoice.number).join(Invoice, Invoice.id == Allocation.invoice_id)
                    .where(Allocation.payment_id.in_([p.id for p in rows]), Allocation.reversed_at.is_(None))
                    .order_by(Invoice.due_date, Invoice.id)):
                settled.setdefault(payment_id, []).append(number)
            return [PaymentRow(p.id, local_date(p.received_at), p.amount_minor, p.currency, p.method,
                               p.reference or p.bank_reference or "", p.status,
                               local_date(p.returned_at) if p.returned_at else None, tuple(settled.get(p.id, ())))
                    for p in rows]

    # --- Support requests -------------------------------------------------------------------------

    def tickets(self, limit: int = 100) -> list[TicketRow]:
        """The account's support requests, most recently updated first."""
        with self.wb.db.session() as s:
            rows = s.scalars(select(Ticket).where(Ticket.account_id == self.account_id)
                             .order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(_limit(limit))).all()
            return [ticket_row(s, t) for t in rows]

    def ticket(self, ticket_id: int) -> TicketThread:
        """One of the account's tickets and its public messages (internal notes never leave the staff side)."""
        with self.wb.db.session() as s:
            ticket = s.get(Ticket, ticket_id)
            if ticket is None or ticket.account_id != self.account_id:
                raise NotFoundError(f"no ticket {ticket_id}")
            return TicketThread(ticket_row(s, ticket), message_rows(s, helpdesk.visible_messages(ticket, staff=False)))

    def open_ticket(self, subject: str, body: str, priority: str = TicketPriority.NORMAL,
                    service_id: int | None = None, invoice_id: int | None = None) -> TicketRow:
        """Open a request on the account, about one of its services or invoices if named (another
        account's answers NotFoundError); customers choose low, normal or high priority."""
        if priority not in CUSTOMER_PRIORITIES:
            raise UserFacingError(f"priority must be one of {', '.join(CUSTOMER_PRIORITIES)}, not {priority!r}")
        with self.wb.db.transaction() as s:
            ticket = helpdesk.open_ticket(s, self.account_id, subject, body, actor=self.user_email,
                                          priority=priority, service_id=service_id, invoice_id=invoice_id,
                                          author_user_id=self.user_id, author_email=self.user_email)
            return ticket_row(s, ticket)

    def reply(self, ticket_id: int, body: str) -> MessageRow:
        """Answer on one of the account's tickets (another account's: NotFoundError)."""
        with self.wb.db.transaction() as s:
            message = helpdesk.reply(s, ticket_id, body, actor=self.user_email, author_user_id=self.user_id,
                                     author_email=self.user_email, account_id=self.account_id)
            return message_rows(s, [message])[0]

    def calls(self, offset: int = 0, limit: int = 25, months: list[str] | None = None) -> CallPage:
        """A page of the account's rated calls from the lake, newest first, with the total count."""
        limit = _limit(limit)
        offset = max(0, int(offset))
        source = scan_sql(self.wb.lake_dir, "rated", months)
        # a CDR may have been rated several times: its latest rating is the one that counts, and
        # it may have moved to another account since, so pick the latest first, then filter
        latest = f"""(SELECT r.* FROM {source} r
                      SEMI JOIN (SELECT cdr_id FROM {source} WHERE account_id = $account) mine USING (cdr_id)
                      QUALIFY row_number() OVER (PARTITION BY r.cdr_id ORDER BY r.rated_at DESC NULLS LAST) = 1)"""
        con = connect_duckdb()
        try:
            total = con.execute(f"SELECT count(*) FROM {latest} WHERE account_id = $account",
                                {"account": self.account_id}).fetchall()[0][0]
            cursor = con.execute(
                f"SELECT {', '.join(CALL_COLUMNS)} FROM {latest} WHERE account_id = $account "
                f"ORDER BY start_at DESC, cdr_id DESC LIMIT $limit OFFSET $offset",
                {"account": self.account_id, "limit": limit, "offset": offset})
            rows = [dict(zip(CALL_COLUMNS, values)) for values in cursor.fetchall()]
        finally:
            con.close()
        return CallPage(rows, int(total), offset, limit)


CUSTOMER_PRIORITIES = (TicketPriority.LOW.value, TicketPriority.NORMAL.value, TicketPriority.HIGH.value)


def account_services(s: Session, account_id: int) -> list[ServiceRow]:
    """The account's services in creation order, with their contract's reference."""
    rows = s.execute(select(Service, Contract.reference).outerjoin(Contract, Contract.id == Service.contract_id)
                     .where(Service.account_id == account_id).order_by(Service.id)).all()
    return [ServiceRow(sv.id, sv.label, sv.product.name, sv.status, sv.quantity, sv.activated_on, sv.terminated_on,
                       reference) for sv, reference in rows]


def ticket_row(s: Session, t: Ticket) -> TicketRow:
    service = s.get(Service, t.service_id) if t.service_id else None
    invoice = s.get(Invoice, t.invoice_id) if t.invoice_id else None
    return TicketRow(t.id, t.subject, t.status, t.priority, t.created_at, t.updated_at,
                     service.label if service else None, invoice.number if invoice else None)


def message_rows(s: Session, messages) -> list[MessageRow]:
    """Messages with their author's name (a user's, else the sender's address) and whether staff wrote them."""
    rows = []
    for m in messages:
        user = s.get(User, m.author_user_id) if m.author_user_id else None
        author = (user.name or user.email) if user else (m.author_email or "")
        rows.append(MessageRow(m.id, author, user is not None and user.role in STAFF_ROLES, m.internal, m.body,
                               m.created_at))
    return rows


def invoice_annex(wb: Workbench, invoice: Invoice) -> tuple[Path, str]:
    """The call-detail annex of ``invoice`` and a download file name, rendered now when it has none
    yet (then kept); NotFoundError for a credit note or a period without calls."""
    from bluerocktel.documents.batch import render_annexes

    if invoice.kind == InvoiceKind.CREDIT_NOTE:
        raise NotFoundError(f"credit note {invoice.number} has no call detail")
    path = render_annexes(wb, [invoice.id], workers=1).get(invoice.id)
    if path is None:
        raise NotFoundError(f"invoice {invoice.number} has no calls in its period")
    return resolve_document(wb, path, f"the call detail of invoice {invoice.number}"), f"{invoice.number}-annex.pdf"


def resolve_document(wb: Workbench, relative_path: str | None, what: str) -> Path:
    """The file of a document stored under the data dir; NotFoundError when missing or outside it."""
    if not relative_path:
        raise NotFoundError(f"{what} has no PDF yet")
    root = wb.data_dir.resolve()
    path = (root / relative_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFoundError(f"the PDF of {what} is missing")
    return path


@dataclass(frozen=True)
class UnratedPage:
    """A page of the unrated queue (oldest call first) and the queue's size by status and reason."""

    rows: list[dict]          # bluerocktel.rating.unrated.QUEUE_COLUMNS
    counts: list[dict]        # status, reason, calls, first_start_at, last_start_at; largest first
    total: int                # CDRs in the queue
    offset: int
    limit: int


class StaffStore:
    """What the staff app lists and does: accounts (searchable, paginated), billing runs, the
    CDR page (uploads, the file ledger, the quarantine, the CDR sources) and the Rating page
    (the unrated queue, rated CDRs and their traces, anomalies).

    The actions take the signed-in :class:`Principal` and check its permission
    (``cdrs:import``, ``cdrs:sources``; :data:`bluerocktel.security.PERMISSIONS`) whatever the
    page shows: AuthError when the role may not. So do the Rating page's reads, which show costs
    and margins (``rating:read``).
    """

    def __init__(self, wb: Workbench):
        self.wb = wb

    # --- CDR page -------------------------------------------------------------------------------

    def cdr_formats(self) -> list[str]:
        return cdr_format_names()

    def cdr_sources(self) -> list[CdrSourceRow]:
        return list_cdr_sources(self.wb)

    def cdr_files(self, limit: int = 50) -> list[CdrFileRow]:
        return latest_cdr_files(self.wb, limit)

    def cdr_quarantine(self, limit: int = 50, source: str | None = None) -> QuarantinePage:
        return latest_quarantine(self.wb, source=source, limit=limit)

    def upload_cdr_file(self, principal: Principal, *, source: str, file_name: str, data: bytes,
                        format: str | None = None) -> "ImportSummary":
        """Import a file uploaded in the staff app (collector ``manual``), as ``principal``."""
        _require(principal, "cdrs:import", "import CDR files")
        return import_cdr_upload(self.wb, source=source, file_name=file_name, data=data, format=format or None,
                                 actor=principal.email, collector=Collector.MANUAL.value)

    def add_cdr_source(self, principal: Principal, *, name: str, format: str | None = None, url: str | None = None,
                       timezone: str | None = None, country: str | None = None, options: str | Mapping | None = None,
                       mapping: str | None = None) -> CdrSourceRow:
        """Add a CDR source from the staff app's form (``options`` may be JSON text)."""
        _require(principal, "cdrs:sources", "configure CDR sources")
        return create_cdr_source(self.wb, name=name, format=format or None, url=url or None, timezone=timezone or None,
                                 country=country or None, options=_check_options(options or {}),
                                 mapping=mapping or None, actor=principal.email)

    # --- Rating page ----------------------------------------------------------------------------

    def unrated(self, principal: Principal, offset: int = 0, limit: int = 50,
                months: list[str] | None = None) -> UnratedPage:
        """A page of the unrated queue (CDRs whose latest rating is ``unrated`` or ``unassigned``),
        oldest call first, with the queue counted by status and reason."""
        from bluerocktel.rating.unrated import unrated_counts, unrated_queue

        _require(principal, "rating:read", "see the unrated queue")
        limit, offset = _limit(limit), max(0, int(offset))
        counts = unrated_counts(self.wb.lake_dir, months)
        rows = unrated_queue(self.wb.lake_dir, months, limit=limit, offset=offset)
        return UnratedPage(rows, counts, sum(int(c["calls"]) for c in counts), offset, limit)

    def rated_months(self, principal: Principal) -> list[str]:
        """The months (``YYYY-MM``) the lake has rated CDRs of, newest first."""
        from bluerocktel.rating.pending import lake_months

        _require(principal, "rating:read", "see rated CDRs")
        return sorted(lake_months(self.wb.lake_dir, "rated"), reverse=True)

    def rated_cdrs(self, principal: Principal, month: str, offset: int = 0, limit: int = 50,
                   status: str | None = None, account_id: int | None = None):
        """A page of ``month``'s rated CDRs (latest rating of each), newest call first
        (:func:`bluerocktel.rating.queries.rated_cdrs`)."""
        from bluerocktel.rating.queries import rated_cdrs

        _require(principal, "rating:read", "see rated CDRs")
        return rated_cdrs(self.wb.lake_dir, month=month, account_id=account_id, status=status or None,
                          limit=_limit(limit), offset=offset)

    def rated_cdr(self, principal: Principal, cdr_id: str, month: str | None = None) -> dict:
        """The trace of a rated CDR with its deck codes and currency, and its earlier ratings
        (:func:`bluerocktel.rating.queries.rated_cdr`); NotFoundError when the lake has none.
        ``month`` (the call's, when known) reads that month only instead of the whole lake."""
        from bluerocktel.rating.queries import add_deck_codes, check_month, rated_cdr

        _require(principal, "rating:read", "see rating traces")
        cdr_id = (cdr_id or "").strip()
        months = [check_month(month)] if month else None
        trace = rated_cdr(self.wb.lake_dir, cdr_id, months) if cdr_id else None
        if trace is None:
            raise NotFoundError(f"no rated CDR {cdr_id!r}")
        return add_deck_codes(self.wb.db, trace)

    def anomalies(self, principal: Principal, days: int = 7, now: dt.datetime | None = None) -> list:
        """Anomalies of the calls started in the ``days`` days before ``now`` (default: the
        current time), every account (:func:`bluerocktel.rating.anomalies.find_anomalies`)."""
        from bluerocktel.rating.anomalies import find_anomalies

        _require(principal, "rating:read", "see traffic anomalies")
        until = now or dt.datetime.now(dt.timezone.utc)
        return find_anomalies(self.wb, since=until - dt.timedelta(days=days), until=until)

    def anomalies_csv(self, principal: Principal, anomalies: list) -> bytes:
        """``anomalies`` as the CSV file ``bluerocktel rating anomalies --export`` writes (UTF-8)."""
        import tempfile

        from bluerocktel.rating.anomalies import export_anomalies

        _require(principal, "rating:read", "export traffic anomalies")
        with tempfile.TemporaryDirectory(prefix="brt-anomalies-") as folder:
            return export_anomalies(anomalies, Path(folder) / "anomalies.csv").read_bytes()

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

    # --- Helpdesk -----------------------------------------------------------------------------------

    def ticket_queue(self, principal: Principal, *, status: str | None = None, priority: str | None = None,
                     assigned_to_me: bool = False, team_id: int | None = None, offset: int = 0, limit: int = 50,
                     now: dt.datetime | None = None) -> TicketQueuePage:
        """A page of tickets, next SLA target first (the first response while it is unmet, else the
        resolution). ``status``: one status, ``"active"`` (default: neither resolved nor closed) or
        ``"all"``; breach flags as at ``now``."""
        _require(principal, "tickets:read", "see the helpdesk queue")
        limit, offset = _limit(limit), max(0, int(offset))
        query = select(Ticket)
        status = status or "active"
        if status == "active":
            query = query.where(Ticket.status.not_in([TicketStatus.RESOLVED.value, TicketStatus.CLOSED.value]))
        elif status != "all":
            query = query.where(Ticket.status == _choice(status, TicketStatus, "status"))
        if priority:
            query = query.where(Ticket.priority == _choice(priority, TicketPriority, "priority"))
        if assigned_to_me:
            query = query.where(Ticket.assignee_id == principal.user_id)
        if team_id is not None:
            query = query.where(Ticket.team_id == team_id)
        next_due = case((Ticket.first_response_at.is_(None), Ticket.first_response_due_at),
                        else_=Ticket.resolution_due_at)
        with self.wb.db.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery()))
            rows = s.scalars(query.order_by(next_due, Ticket.id).offset(offset).limit(limit)).all()
            return TicketQueuePage([queue_row(s, t, now) for t in rows], int(total), offset, limit)

    def tickets_due_soon(self, principal: Principal, *, within: dt.timedelta = dt.timedelta(hours=2),
                         now: dt.datetime | None = None) -> list[QueueRow]:
        """Unresolved tickets breached or due within ``within`` (:func:`bluerocktel.helpdesk.due_soon`)."""
        _require(principal, "tickets:read", "see the helpdesk queue")
        with self.wb.db.session() as s:
            return [queue_row(s, t, now) for t, _ in helpdesk.due_soon(s, within=within, now=now)]

    def helpdesk_ticket(self, principal: Principal, ticket_id: int, now: dt.datetime | None = None,
                        today: dt.date | None = None) -> StaffTicket:
        """A ticket with every message (internal notes flagged) and, beside it, its account's
        services, balance and open invoices."""
        _require(principal, "tickets:read", "read tickets")
        today = today or operator_today()
        with self.wb.db.session() as s:
            ticket = s.get(Ticket, ticket_id)
            if ticket is None:
                raise NotFoundError(f"no ticket {ticket_id}")
            invoices = [InvoiceRow.of(inv, minor, today) for inv, minor in open_invoices(s, ticket.account_id)]
            messages = message_rows(s, helpdesk.visible_messages(ticket, staff=True))
            return StaffTicket(queue_row(s, ticket, now), messages, account_services(s, ticket.account_id),
                               account_balance(s, ticket.account_id, today), invoices)

    def helpdesk_people(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """Who tickets can be assigned to: active staff users ``(id, e-mail)`` and teams ``(id, name)``."""
        with self.wb.db.session() as s:
            users = s.execute(select(User.id, User.email).where(User.active.is_(True),
                                                                User.role.in_([r.value for r in STAFF_ROLES]))
                              .order_by(User.email)).all()
            teams = s.execute(select(Team.id, Team.name).order_by(Team.name)).all()
            return [tuple(u) for u in users], [tuple(t) for t in teams]

    def answer_ticket(self, principal: Principal, ticket_id: int, body: str, *, internal: bool = False) -> MessageRow:
        """A public reply to the customer, or an internal note (``tickets:write``)."""
        _require(principal, "tickets:write", "answer tickets")
        with self.wb.db.transaction() as s:
            message = helpdesk.reply(s, ticket_id, body, actor=principal.email, author_user_id=principal.user_id,
                                     internal=internal)
            return message_rows(s, [message])[0]

    def set_ticket_status(self, principal: Principal, ticket_id: int, status: str) -> str:
        """Move a ticket to ``status`` (``tickets:write``); the new status."""
        _require(principal, "tickets:write", "change a ticket's status")
        with self.wb.db.transaction() as s:
            return helpdesk.set_status(s, ticket_id, _choice(status, TicketStatus, "status"),
                                       actor=principal.email).status

    def assign_ticket(self, principal: Principal, ticket_id: int, *, user_id: int | None = None,
                      team_id: int | None = None) -> None:
        """Assign a ticket to a staff user and/or a team, None clearing (``tickets:write``)."""
        _require(principal, "tickets:write", "assign tickets")
        with self.wb.db.transaction() as s:
            helpdesk.assign(s, ticket_id, actor=principal.email, user_id=user_id, team_id=team_id)


@dataclass(frozen=True)
class QueueRow:
    """A ticket in the staff queue with its SLA instants and breach flags."""

    id: int
    account_id: int
    account: str                          # number and name
    subject: str
    status: str
    priority: str
    assignee: str | None                  # e-mail
    team: str | None
    created_at: dt.datetime
    first_response_due_at: dt.datetime | None
    first_response_breached: bool
    resolution_due_at: dt.datetime | None
    resolution_breached: bool
    next_due_at: dt.datetime | None       # the earliest unmet target


@dataclass(frozen=True)
class TicketQueuePage:
    rows: list[QueueRow]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class StaffTicket:
    ticket: QueueRow
    messages: list[MessageRow]            # internal notes included, flagged
    services: list[ServiceRow]
    balance: dict                         # bluerocktel.billing.payments.account_balance
    open_invoices: list[InvoiceRow]       # oldest due first, open_minor still to pay


def queue_row(s: Session, t: Ticket, now: dt.datetime | None = None) -> QueueRow:
    sla = helpdesk.sla_state(t, now)
    account = s.get(Account, t.account_id)
    assignee = s.get(User, t.assignee_id) if t.assignee_id else None
    team = s.get(Team, t.team_id) if t.team_id else None
    return QueueRow(t.id, t.account_id, f"{account.number} {account.name}", t.subject, t.status, t.priority,
                    assignee.email if assignee else None, team.name if team else None, t.created_at,
                    t.first_response_due_at, sla.first_response_breached, t.resolution_due_at,
                    sla.resolution_breached, sla.next_due_at)


def _choice(value: str, enum, what: str) -> str:
    try:
        return enum(value).value
    except ValueError:
        raise UserFacingError(f"{what} must be one of {', '.join(e.value for e in enum)}, not {value!r}") from None


def _require(principal: Principal, permission: str, what: str) -> None:
    if not can(principal, permission):
        raise AuthError(f"role {principal.role.value!r} may not {what} ({permission})")


def _invoice_count(summary: dict | None) -> int | None:
    for key in ("invoices", "invoices_issued", "issued", "invoice_count"):
        value = (summary or {}).get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, list):
            return len(value)
    return None


# --- CDR mediation: sources, uploads, pushed batches, ledger, quarantine ---------------------
# Shared by the staff app (StaffStore) and the REST API (bluerocktel.api.cdr), so that both
# validate and import exactly the same way.

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Option names that would hold a secret in the database: refused (secrets live in the
# environment; a collector reads the variable named by ``password_env``).
SECRET_OPTIONS = frozenset({"password", "passwd", "pass", "secret", "token", "api_key", "apikey"})
SOURCE_FIELDS = ("format", "mapping", "url", "timezone", "country", "options", "poll_interval_s", "enabled")
MIN_POLL_INTERVAL_S = 10
CUSTOM_FORMAT = "custom"          # cdr_sources.format of a source read through its TOML mapping


class CdrSourceExistsError(UserFacingError):
    """A CDR source of that name exists already."""


@dataclass(frozen=True)
class CdrSourceRow:
    """A CDR source as shown to staff: its URL without password, its collector's last run."""

    id: int
    name: str
    format: str
    url: str | None
    country: str
    timezone: str
    options: dict
    mapping: str | None
    poll_interval_s: int
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    last_run_at: dt.datetime | None
    last_status: str | None
    last_error: str | None
    cursor: str | None

    @classmethod
    def of(cls, src: CdrSource, state: CdrSourceState | None) -> "CdrSourceRow":
        from bluerocktel.collectors import redact

        return cls(src.id, src.name, src.format, redact(src.url) if src.url else None, src.country, src.timezone,
                   dict(src.options or {}), src.mapping, src.poll_interval_s, src.enabled, src.created_at,
                   src.updated_at, state.last_run_at if state else None, state.last_status if state else None,
                   state.last_error if state else None, state.cursor if state else None)


@dataclass(frozen=True)
class CdrFileRow:
    """One row of the file ledger (``cdr_files``)."""

    id: int
    source: str
    collector: str
    file_name: str
    remote_path: str | None
    format: str
    status: str
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
    def of(cls, f: CdrFile) -> "CdrFileRow":
        return cls(f.id, f.source, f.collector, f.file_name, f.remote_path, f.format, f.status, f.size_bytes,
                   f.sha256, f.received, f.imported, f.duplicates, f.quarantined, f.received_at, f.finished_at,
                   f.duration_ms, f.error)


# Columns of a quarantined record, all from lake.QUARANTINE_SCHEMA.
QUARANTINE_COLUMNS = ("quarantine_id", "source", "format", "source_file", "source_line", "byte_offset", "reason",
                      "raw", "quarantined_at")


@dataclass(frozen=True)
class QuarantinePage:
    """Quarantined records, newest first; ``total`` counts all that match the filters."""

    rows: list[dict]
    total: int
    offset: int
    limit: int


def cdr_format_names() -> list[str]:
    """The names of the CDR formats the importer knows (built-in and registered)."""
    from bluerocktel.mediation import FORMATS

    return sorted(FORMATS)


def list_cdr_sources(wb: Workbench) -> list[CdrSourceRow]:
    with wb.db.session() as s:
        rows = s.execute(select(CdrSource, CdrSourceState)
                         .outerjoin(CdrSourceState, CdrSourceState.source_id == CdrSource.id)
                         .order_by(CdrSource.name)).all()
        return [CdrSourceRow.of(src, state) for src, state in rows]


def get_cdr_source(wb: Workbench, name: str) -> CdrSourceRow:
    with wb.db.session() as s:
        src = s.scalar(select(CdrSource).where(CdrSource.name == name))
        if src is None:
            raise NotFoundError(f"unknown CDR source {name!r}")
        return CdrSourceRow.of(src, s.get(CdrSourceState, src.id))


def create_cdr_source(wb: Workbench, *, name: str, actor: str, format: str | None = None,
                      mapping: str | None = None, url: str | None = None, timezone: str | None = None,
                      country: str | None = None, options: Mapping | None = None, poll_interval_s: int = 300,
                      enabled: bool = True) -> CdrSourceRow:
    """Add a CDR source after checking every field (:func:`check_cdr_source_fields`)."""
    name = (name or "").strip()
    if not SOURCE_NAME.match(name):
        raise UserFacingError(f"invalid CDR source name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")
    fields = check_cdr_source_fields({
        "format": format, "mapping": mapping, "url": url,
        "timezone": timezone or get_setting("default_timezone"),
        "country": country or get_setting("default_country"),
        "options": {} if options is None else options, "poll_interval_s": poll_interval_s, "enabled": enabled})
    if fields.get("mapping"):
        if format:
            raise UserFacingError("give a format or a mapping, not both")
        fields["format"] = CUSTOM_FORMAT
    elif not fields.get("format"):
        raise UserFacingError(f"CDR source {name!r} needs a format (one of {', '.join(cdr_format_names())}) "
                              "or a mapping (TOML)")
    with wb.db.transaction() as s:
        if s.scalar(select(CdrSource.id).where(CdrSource.name == name)) is not None:
            raise CdrSourceExistsError(f"CDR source {name!r} exists already")
        src = CdrSource(name=name, **fields)
        s.add(src)
        s.flush()
        record_audit(s, actor, "cdr_source.create", "cdr_source", src.id, name=name, format=src.format,
                     url=_redacted(src.url))
        source_id = src.id
    with wb.db.session() as s:
        return CdrSourceRow.of(s.get(CdrSource, source_id), None)


def update_cdr_source(wb: Workbench, name: str, changes: Mapping, actor: str) -> CdrSourceRow:
    """Change some fields of a source (:data:`SOURCE_FIELDS`; the name never changes: the ledger
    and the lake refer to it). A new format drops the mapping; a new mapping sets the format
    ``custom``."""
    unknown = sorted(set(changes) - set(SOURCE_FIELDS))
    if unknown:
        raise UserFacingError(f"cannot change {', '.join(unknown)} of a CDR source; "
                              f"changeable: {', '.join(SOURCE_FIELDS)}")
    if changes.get("format") and changes.get("mapping"):
        raise UserFacingError("give a format or a mapping, not both")
    fields = check_cdr_source_fields(changes)
    with wb.db.transaction() as s:
        src = s.scalar(select(CdrSource).where(CdrSource.name == name))
        if src is None:
            raise NotFoundError(f"unknown CDR source {name!r}")
        for key in ("url", "timezone", "country", "options", "poll_interval_s", "enabled"):
            if key in fields:
                setattr(src, key, fields[key])
        if fields.get("mapping"):
            src.mapping, src.format = fields["mapping"], CUSTOM_FORMAT
        elif fields.get("format"):
            src.format, src.mapping = fields["format"], None
        elif "mapping" in fields:                          # mapping removed, no new format
            if src.format == CUSTOM_FORMAT:
                raise UserFacingError(f"CDR source {name!r} reads its CDRs through its mapping: "
                                      "give a format to use instead")
            src.mapping = None
        s.flush()
        record_audit(s, actor, "cdr_source.update", "cdr_source", src.id, name=name, changed=sorted(changes),
                     format=src.format, url=_redacted(src.url), enabled=src.enabled)
        source_id = src.id
    with wb.db.session() as s:
        return CdrSourceRow.of(s.get(CdrSource, source_id), s.get(CdrSourceState, source_id))


def check_cdr_source_fields(fields: Mapping) -> dict:
    """The given source fields, checked and cleaned; UserFacingError naming the first bad one.

    ``format`` must be a known format; ``mapping`` must load (``bluerocktel.mediation.custom``);
    ``url`` must use a collector's scheme and hold no password (name an environment variable in
    ``options.password_env`` instead); ``timezone`` an IANA zone; ``country`` one with a national
    numbering plan; ``options`` a JSON object without secrets; ``poll_interval_s`` ≥ 10 s.
    """
    out: dict = {}
    if fields.get("format"):
        from bluerocktel.mediation import format_spec

        out["format"] = format_spec(str(fields["format"]).strip()).name
    if "mapping" in fields:
        mapping = (fields["mapping"] or "").strip() or None
        if mapping is not None:
            _load_mapping(mapping)                       # refuse a broken mapping now, not at the first file
        out["mapping"] = mapping
    if "url" in fields:
        out["url"] = _check_url((fields["url"] or "").strip() or None)
    if "timezone" in fields:
        out["timezone"] = _check_timezone(fields["timezone"])
    if "country" in fields:
        out["country"] = _check_country(fields["country"])
    if "options" in fields:
        out["options"] = _check_options(fields["options"])
    if "poll_interval_s" in fields:
        value = fields["poll_interval_s"]
        if isinstance(value, bool) or not isinstance(value, int) or value < MIN_POLL_INTERVAL_S:
            raise UserFacingError(f"poll_interval_s must be a whole number of seconds ≥ {MIN_POLL_INTERVAL_S}, "
                                  f"not {value!r}")
        out["poll_interval_s"] = value
    if "enabled" in fields:
        if not isinstance(fields["enabled"], bool):
            raise UserFacingError(f"enabled must be true or false, not {fields['enabled']!r}")
        out["enabled"] = fields["enabled"]
    return out


def _load_mapping(text: str):
    try:
        from bluerocktel.mediation.custom import load_mapping
    except ImportError:
        raise UserFacingError("custom CDR mappings are not available in this installation "
                              "(bluerocktel.mediation.custom is missing)") from None
    return load_mapping(text)


def _check_url(url: str | None) -> str | None:
    if url is None:
        return None
    from urllib.parse import urlsplit

    from bluerocktel.collectors import SCHEMES, redact

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError as exc:
        raise UserFacingError(f"unreadable CDR source URL ({exc})") from None
    scheme = parts.scheme.split("+")[0].lower()
    if scheme not in SCHEMES:
        raise UserFacingError(f"unknown collector URL scheme {scheme!r} in {redact(url)!r}; "
                              f"known: {', '.join(sorted(SCHEMES))}; leave the URL empty for a source whose "
                              "CDRs are pushed or uploaded")
    if password is not None:
        raise UserFacingError(f"the URL {redact(url)!r} holds a password: remove it and put the password in an "
                              "environment variable named by the option password_env "
                              "(e.g. options {\"password_env\": \"BLUEROCKTEL_CDR_PBX1_PASSWORD\"})")
    return url


def _check_timezone(value) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = str(value or "").strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserFacingError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris'") from None
    return name


def _check_country(value) -> str:
    from bluerocktel.mediation.numbers import NATIONAL_PLANS

    code = str(value or "").strip().upper()
    if code not in NATIONAL_PLANS:
        raise UserFacingError(f"no national numbering plan for country {code!r}; "
                              f"known: {', '.join(sorted(NATIONAL_PLANS))}")
    return code


def _check_options(value) -> dict:
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise UserFacingError(f"options are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UserFacingError(f"options must be a JSON object, not {type(value).__name__}")
    secrets = sorted(k for k in value if str(k).lower() in SECRET_OPTIONS)
    if secrets:
        raise UserFacingError(f"option(s) {', '.join(map(repr, secrets))} would keep a secret in the database: "
                              "put it in an environment variable and name that variable in password_env")
    from bluerocktel.collectors import env_name_problem

    for key in sorted(k for k in value if str(k).endswith("_env")):
        if (problem := env_name_problem(value[key], key)) is not None:
            raise UserFacingError(problem)
    return dict(value)


def _redacted(url: str | None) -> str | None:
    from bluerocktel.collectors import redact

    return redact(url) if url else None


def import_format(wb: Workbench, source: str, format: str | None = None):
    """The format to import a file of ``source`` with: ``format`` when given, else the source's
    mapping, else its configured format. The source must exist and be enabled."""
    from bluerocktel.mediation import format_spec

    with wb.db.session() as s:
        src = s.scalar(select(CdrSource).where(CdrSource.name == source))
        if src is None:
            raise NotFoundError(f"unknown CDR source {source!r}: staff configure sources first "
                                "(staff app, CDR page, or POST /api/v1/cdr/sources)")
        if not src.enabled:
            raise UserFacingError(f"CDR source {source!r} is disabled")
        mapping, configured = src.mapping, src.format
    if format:
        return format_spec(format)
    if mapping:
        return _load_mapping(mapping)
    return format_spec(configured)


def import_cdr_upload(wb: Workbench, *, source: str, file_name: str, actor: str, format: str | None = None,
                      data: bytes | None = None, path: Path | None = None,
                      collector: str = "manual") -> ImportSummary:
    """Import an uploaded file (its bytes, or a temporary file holding them) for a configured
    source; plain, gzip or zip, at most ``BLUEROCKTEL_MAX_CDR_FILE_MB`` (the importer's rules)."""
    from bluerocktel.mediation import import_cdr_bytes, import_cdr_file

    file_name = Path((file_name or "").replace("\\", "/")).name[:200] or "upload"
    size = len(data) if data is not None else path.stat().st_size
    limit = max_upload_bytes()
    if size > limit:
        raise UserFacingError(f"{file_name}: {size:,} bytes, larger than BLUEROCKTEL_MAX_CDR_FILE_MB "
                              f"({limit >> 20} MiB)")
    spec = import_format(wb, source, format)
    if data is not None:
        return import_cdr_bytes(wb, data, file_name, spec, source, actor, collector=collector)
    summary = import_cdr_file(wb, path, spec, source, actor, collector=collector, file_name=file_name)
    summary.file = file_name                             # not the temporary file's path
    return summary


def max_upload_bytes() -> int:
    return int(get_setting("max_cdr_file_mb")) << 20


def push_cdr_batch(wb: Workbench, source: str, records: list, actor: str) -> ImportSummary:
    """Import pushed JSON records (format ``json-records``) for a configured source.

    The records are written as ``{"batch": {...}, "records": [...]}`` with the push's own id and
    time in ``batch``, so that every push is one ledger entry: records pushed twice are counted
    as duplicates by the record dedup instead of the whole push being a duplicate file. The
    file name is ``api-batch-<SHA-256 of the records, 16 hex>.json``.
    """
    import hashlib
    import json
    import uuid

    from bluerocktel.mediation import import_cdr_bytes
    from bluerocktel.mediation.formats.jsonrecords import FORMAT_NAME

    import_format(wb, source)                             # the source exists and is enabled
    now = dt.datetime.now(dt.timezone.utc)
    records_json = json.dumps(records, ensure_ascii=False, separators=(",", ":"))
    batch = {"id": uuid.uuid4().hex, "received_at": now.isoformat(), "actor": actor}
    data = ('{"batch":' + json.dumps(batch) + ',"records":' + records_json + "}").encode()
    # Named by its records: a bad record pushed again has the same file, line and raw text, so
    # the quarantine keeps it once.
    file_name = f"api-batch-{hashlib.sha256(records_json.encode()).hexdigest()[:16]}.json"
    return import_cdr_bytes(wb, data, file_name, FORMAT_NAME, source, actor, collector="api")


def latest_cdr_files(wb: Workbench, limit: int = 50, source: str | None = None) -> list[CdrFileRow]:
    """The newest rows of the file ledger."""
    query = select(CdrFile)
    if source:
        query = query.where(CdrFile.source == source)
    with wb.db.session() as s:
        return [CdrFileRow.of(f) for f in s.scalars(query.order_by(CdrFile.id.desc()).limit(_limit(limit)))]


def latest_quarantine(wb: Workbench, *, source: str | None = None, file: str | None = None, offset: int = 0,
                      limit: int = 50, include_resolved: bool = False) -> QuarantinePage:
    """Quarantined records from the lake, newest first, each with ``outcome`` (its first
    resolution in the lake's ``quarantine_resolved``: imported, duplicate, consumed; None while
    unresolved); only the unresolved ones unless ``include_resolved``.

    (:func:`bluerocktel.mediation.quarantine.list_quarantine` lists oldest first without an
    offset or a file filter; pages of the newest records need this query.)
    """
    limit = _limit(limit)
    offset = max(0, int(offset))
    resolved = (f"SELECT quarantine_id, arg_min(outcome, resolved_at) AS outcome "
                f"FROM {scan_sql(wb.lake_dir, 'quarantine_resolved')} GROUP BY quarantine_id")
    where = "(CAST(? AS VARCHAR) IS NULL OR q.source = ?) AND (CAST(? AS VARCHAR) IS NULL OR q.source_file = ?)"
    if not include_resolved:
        where += " AND r.outcome IS NULL"
    body = (f"FROM {scan_sql(wb.lake_dir, 'quarantine')} AS q LEFT JOIN ({resolved}) AS r "
            f"ON r.quarantine_id = q.quarantine_id WHERE {where}")
    params: list = [source, source, file, file]
    con = connect_duckdb()
    try:
        total = con.execute(f"SELECT count(*) {body}", params).fetchall()[0][0]
        cursor = con.execute(f"SELECT {', '.join('q.' + c for c in QUARANTINE_COLUMNS)}, r.outcome {body} "
                             "ORDER BY q.quarantined_at DESC, q.source_file, q.source_line LIMIT ? OFFSET ?",
                             params + [limit, offset])
        rows = [dict(zip(QUARANTINE_COLUMNS + ("outcome",), values)) for values in cursor.fetchall()]
    finally:
        con.close()
    return QuarantinePage(rows, int(total), offset, limit)
