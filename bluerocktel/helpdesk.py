"""Helpdesk tickets: statuses, replies and internal notes, attachments, assignment and SLA targets.

Statuses (``TicketStatus``)::

    new ──► open ──► pending_customer ──► resolved ──► closed (final)
     └────────┴──────────┴───────────────────┘  a customer reply reopens a pending or resolved ticket

SLA: when a ticket is opened its ``first_response_due_at`` and ``resolution_due_at`` are fixed
from the :class:`~bluerocktel.db.models.SlaTarget` of its priority (else :data:`DEFAULT_SLA`),
in elapsed minutes. The first *public staff* reply meets the first-response target (internal
notes do not); resolving meets the resolution target. A target is breached when it was met late
or is still unmet after its due instant; :func:`due_soon` lists what is breached or due within
a window, most urgent first. Changing the priority recomputes the due instants from the opening.

Customers see their own account's tickets and public messages only; internal notes never leave
the staff side (:func:`visible_messages`).

E-mail notifications are queued in the outbox (:mod:`bluerocktel.mail`) with the change that
causes them: a ticket opened (acknowledgement to the customer, notice to the desk), a public
staff reply or a resolution (to the customer), a customer reply (to the assignee, else the team,
else the ``support_email`` inbox). Internal notes notify nobody. Texts follow the account's
language (FR/EN).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import (Account, Invoice, Service, SlaTarget, Team, Ticket, TicketAttachment, TicketMessage,
                                   User, utcnow)
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.mail import queue_email
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import STAFF_ROLES, TicketPriority, TicketStatus

# priority -> (first response, resolution), minutes of elapsed time
DEFAULT_SLA: dict[str, tuple[int, int]] = {
    TicketPriority.URGENT: (30, 4 * 60),
    TicketPriority.HIGH: (2 * 60, 24 * 60),
    TicketPriority.NORMAL: (8 * 60, 3 * 24 * 60),
    TicketPriority.LOW: (24 * 60, 7 * 24 * 60),
}

NEXT_STATUSES: dict[str, frozenset[str]] = {
    TicketStatus.NEW: frozenset({TicketStatus.OPEN, TicketStatus.PENDING_CUSTOMER, TicketStatus.RESOLVED,
                                 TicketStatus.CLOSED}),
    TicketStatus.OPEN: frozenset({TicketStatus.PENDING_CUSTOMER, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.PENDING_CUSTOMER: frozenset({TicketStatus.OPEN, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.RESOLVED: frozenset({TicketStatus.OPEN, TicketStatus.CLOSED}),
    TicketStatus.CLOSED: frozenset(),
}

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# declared type -> the magic bytes its content must start with (None: text, checked as UTF-8)
ALLOWED_TYPES: dict[str, tuple[bytes, ...] | None] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "text/plain": None,
    "text/csv": None,
    "audio/wav": (b"RIFF",),
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# event -> language -> (subject, body); formatted with ticket id, subject and the message text
_NOTICES = {
    "opened": {"fr": ("[Ticket #{id}] Demande reçue : {subject}",
                      "Bonjour,\n\nNous avons bien reçu votre demande n° {id} « {subject} ».\n"
                      "Notre équipe vous répond au plus vite.\n\n{body}"),
               "en": ("[Ticket #{id}] Request received: {subject}",
                      "Hello,\n\nWe have received your request #{id} \"{subject}\".\n"
                      "Our team will answer shortly.\n\n{body}")},
    "desk": {"fr": ("[Ticket #{id}] {subject}", "Ticket n° {id} ({priority}) sur le compte {account} :\n\n{body}"),
             "en": ("[Ticket #{id}] {subject}", "Ticket #{id} ({priority}) on account {account}:\n\n{body}")},
    "replied": {"fr": ("[Ticket #{id}] Réponse : {subject}", "Bonjour,\n\n{body}\n\nRépondez depuis votre espace client."),
                "en": ("[Ticket #{id}] Reply: {subject}", "Hello,\n\n{body}\n\nAnswer from your customer area.")},
    "resolved": {"fr": ("[Ticket #{id}] Résolu : {subject}",
                        "Bonjour,\n\nNous considérons votre demande n° {id} comme résolue. "
                        "Répondez depuis votre espace client si ce n'est pas le cas."),
                 "en": ("[Ticket #{id}] Resolved: {subject}",
                        "Hello,\n\nWe consider your request #{id} resolved. "
                        "Answer from your customer area if it is not.")},
}


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or utcnow()


def _priority(value: str) -> str:
    try:
        return TicketPriority(value).value
    except ValueError:
        raise UserFacingError(f"priority must be one of {', '.join(p.value for p in TicketPriority)}, "
                              f"not {value!r}") from None


def sla_minutes(session: Session, priority: str) -> tuple[int, int]:
    """(first response, resolution) minutes for ``priority``: its SlaTarget row, else the default."""
    row = session.get(SlaTarget, priority)
    return (row.first_response_minutes, row.resolution_minutes) if row else DEFAULT_SLA[TicketPriority(priority)]


def _set_due(session: Session, ticket: Ticket) -> None:
    first, resolution = sla_minutes(session, ticket.priority)
    ticket.first_response_due_at = ticket.created_at + dt.timedelta(minutes=first)
    ticket.resolution_due_at = ticket.created_at + dt.timedelta(minutes=resolution)


def _ticket(session: Session, ticket_id: int, account_id: int | None = None) -> Ticket:
    ticket = session.get(Ticket, ticket_id, with_for_update=True)
    if ticket is None or (account_id is not None and ticket.account_id != account_id):
        raise NotFoundError(f"no ticket {ticket_id}")
    return ticket


def _is_staff(session: Session, user_id: int | None) -> bool:
    user = session.get(User, user_id) if user_id else None
    return user is not None and user.active and user.role in STAFF_ROLES


def _customer_address(session: Session, ticket: Ticket) -> str | None:
    """Who hears from the desk: the user who opened the ticket, else the first message's sender, else the account."""
    opener = session.get(User, ticket.opened_by_user_id) if ticket.opened_by_user_id else None
    if opener is not None and opener.role not in STAFF_ROLES:
        return opener.email
    first = ticket.messages[0] if ticket.messages else None
    if first is not None and first.author_email:
        return first.author_email
    return session.get(Account, ticket.account_id).email


def _desk_address(session: Session, ticket: Ticket) -> str:
    """Who hears from the customer: the assignee, else the team, else the support inbox."""
    assignee = session.get(User, ticket.assignee_id) if ticket.assignee_id else None
    if assignee is not None and assignee.active:
        return assignee.email
    team = session.get(Team, ticket.team_id) if ticket.team_id else None
    return team.email if team is not None and team.email else get_setting("support_email")


def _notify(session: Session, ticket: Ticket, event: str, to: str | None, body: str = "") -> None:
    if not to:
        return
    account = session.get(Account, ticket.account_id)
    subject, text = _NOTICES[event]["en" if account.language == "en" else "fr"]
    values = {"id": ticket.id, "subject": ticket.subject, "body": body, "priority": ticket.priority,
              "account": account.number}
    queue_email(session, to, subject.format(**values), text.format(**values), related=("ticket", ticket.id))


def open_ticket(session: Session, account_id: int, subject: str, body: str, *, actor: str,
                priority: str = TicketPriority.NORMAL, category: str = "general", service_id: int | None = None,
                invoice_id: int | None = None, author_user_id: int | None = None, author_email: str | None = None,
                now: dt.datetime | None = None) -> Ticket:
    """Open a ticket on ``account_id`` with its first (public) message; the SLA clock starts now."""
    if not subject.strip() or not body.strip():
        raise UserFacingError("a ticket needs a subject and a message")
    priority = _priority(priority)
    if session.get(Account, account_id) is None:
        raise NotFoundError(f"no account {account_id}")
    for model, object_id, label in ((Service, service_id, "service"), (Invoice, invoice_id, "invoice")):
        if object_id is not None:
            row = session.get(model, object_id)
            if row is None or row.account_id != account_id:
                raise NotFoundError(f"no {label} {object_id} on this account")
    at = _now(now)
    ticket = Ticket(account_id=account_id, subject=subject.strip()[:300], status=TicketStatus.NEW, priority=priority,
                    category=category, service_id=service_id, invoice_id=invoice_id, opened_by_user_id=author_user_id,
                    created_at=at, updated_at=at)
    session.add(ticket)
    session.flush()
    _set_due(session, ticket)
    session.add(TicketMessage(ticket_id=ticket.id, author_user_id=author_user_id, author_email=author_email,
                              body=body.strip(), internal=False, created_at=at))
    record_audit(session, actor, "ticket.open", "ticket", ticket.id, account_id=account_id, priority=priority)
    session.flush()
    session.refresh(ticket, ["messages"])
    if not _is_staff(session, author_user_id):
        _notify(session, ticket, "opened", _customer_address(session, ticket), body.strip())
    _notify(session, ticket, "desk", _desk_address(session, ticket), body.strip())
    return ticket


def reply(session: Session, ticket_id: int, body: str, *, actor: str, author_user_id: int | None = None,
          author_email: str | None = None, internal: bool = False, account_id: int | None = None,
          now: dt.datetime | None = None) -> TicketMessage:
    """Add a public reply or (staff only) an internal note.

    ``account_id`` restricts to that account's tickets (a customer's). The first public staff
    reply is the first response; a staff reply to a new ticket opens it; a customer reply reopens
    a ticket pending on them or resolved. A closed ticket takes no more messages.
    """
    if not body.strip():
        raise UserFacingError("the message is empty")
    ticket = _ticket(session, ticket_id, account_id)
    if ticket.status == TicketStatus.CLOSED:
        raise ConflictError(f"ticket {ticket.id} is closed; open a new ticket")
    staff = _is_staff(session, author_user_id)
    if internal and not staff:
        raise UserFacingError("only staff can write internal notes")
    at = _now(now)
    message = TicketMessage(ticket_id=ticket.id, author_user_id=author_user_id, author_email=author_email,
                            body=body.strip(), internal=internal, created_at=at)
    session.add(message)
    if not internal:
        if staff:
            if ticket.first_response_at is None:
                ticket.first_response_at = at
            if ticket.status == TicketStatus.NEW:
                ticket.status = TicketStatus.OPEN
        elif ticket.status in (TicketStatus.PENDING_CUSTOMER, TicketStatus.RESOLVED):
            ticket.status, ticket.resolved_at = TicketStatus.OPEN, None
    ticket.updated_at = at
    session.flush()
    record_audit(session, actor, "ticket.note" if internal else "ticket.reply", "ticket", ticket.id,
                 message_id=message.id)
    if not internal:
        if staff:
            _notify(session, ticket, "replied", _customer_address(session, ticket), message.body)
        else:
            _notify(session, ticket, "desk", _desk_address(session, ticket), message.body)
    return message


def set_status(session: Session, ticket_id: int, status: str, *, actor: str, now: dt.datetime | None = None
               ) -> Ticket:
    """Move a ticket along :data:`NEXT_STATUSES`; resolving and closing are timestamped."""
    ticket = _ticket(session, ticket_id)
    if status not in NEXT_STATUSES.get(ticket.status, ()):
        raise ConflictError(f"ticket {ticket.id} is {ticket.status}: it cannot become {status}")
    at = _now(now)
    previous, ticket.status, ticket.updated_at = ticket.status, status, at
    if status == TicketStatus.RESOLVED:
        ticket.resolved_at = at
    elif status == TicketStatus.CLOSED:
        ticket.closed_at = at
        ticket.resolved_at = ticket.resolved_at or at
    elif status == TicketStatus.OPEN:
        ticket.resolved_at = None
    record_audit(session, actor, "ticket.status", "ticket", ticket.id, previous=previous, status=status)
    if status == TicketStatus.RESOLVED:
        _notify(session, ticket, "resolved", _customer_address(session, ticket))
    return ticket


def set_priority(session: Session, ticket_id: int, priority: str, *, actor: str) -> Ticket:
    """Change the priority; the SLA due instants are recomputed from the opening."""
    ticket = _ticket(session, ticket_id)
    ticket.priority = _priority(priority)
    _set_due(session, ticket)
    record_audit(session, actor, "ticket.priority", "ticket", ticket.id, priority=ticket.priority)
    return ticket


def assign(session: Session, ticket_id: int, *, actor: str, user_id: int | None = None,
           team_id: int | None = None) -> Ticket:
    """Assign to a staff user and/or a team (None clears)."""
    ticket = _ticket(session, ticket_id)
    if user_id is not None and not _is_staff(session, user_id):
        raise UserFacingError(f"user {user_id} is not an active staff user")
    if team_id is not None and session.get(Team, team_id) is None:
        raise NotFoundError(f"no team {team_id}")
    ticket.assignee_id, ticket.team_id = user_id, team_id
    record_audit(session, actor, "ticket.assign", "ticket", ticket.id, user_id=user_id, team_id=team_id)
    return ticket


def add_attachment(session: Session, data_dir: Path, message_id: int, file_name: str, content_type: str,
                   data: bytes) -> TicketAttachment:
    """Store a file with a message: at most :data:`MAX_ATTACHMENT_BYTES`, of an allowed type whose
    content matches it (a ``.pdf`` that is not a PDF is refused). Written atomically, then recorded."""
    message = session.get(TicketMessage, message_id)
    if message is None:
        raise NotFoundError(f"no ticket message {message_id}")
    content_type = content_type.split(";")[0].strip().lower()
    if content_type not in ALLOWED_TYPES:
        raise UserFacingError(f"{file_name}: type {content_type} is not accepted; send "
                              f"{', '.join(sorted(ALLOWED_TYPES))}")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise UserFacingError(f"{file_name}: {len(data):,} bytes is over the {MAX_ATTACHMENT_BYTES:,}-byte limit")
    magic = ALLOWED_TYPES[content_type]
    if magic is None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserFacingError(f"{file_name}: declared {content_type} but is not UTF-8 text") from exc
    elif not data.startswith(magic):
        raise UserFacingError(f"{file_name}: declared {content_type} but its content is not")
    digest = hashlib.sha256(data).hexdigest()
    safe = _SAFE_NAME.sub("_", Path(file_name).name).strip("._") or "file"
    relative = Path("documents") / "tickets" / str(message.ticket_id) / f"{digest[:16]}-{safe[:100]}"
    target = data_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    attachment = TicketAttachment(message_id=message.id, file_name=Path(file_name).name[:255],
                                  content_type=content_type, size_bytes=len(data), sha256=digest,
                                  path=relative.as_posix())
    session.add(attachment)
    session.flush()
    return attachment


@dataclass(frozen=True)
class SlaState:
    first_response_breached: bool
    resolution_breached: bool
    next_due_at: dt.datetime | None      # the earliest unmet target, None when both are met


def sla_state(ticket: Ticket, now: dt.datetime | None = None) -> SlaState:
    """Breach flags of ``ticket`` at ``now``."""
    at = _now(now)

    def breached(due, met):
        return due is not None and ((met or at) > due)

    unmet = [due for due, met in ((ticket.first_response_due_at, ticket.first_response_at),
                                  (ticket.resolution_due_at, ticket.resolved_at)) if due is not None and met is None]
    return SlaState(breached(ticket.first_response_due_at, ticket.first_response_at),
                    breached(ticket.resolution_due_at, ticket.resolved_at), min(unmet) if unmet else None)


def due_soon(session: Session, *, within: dt.timedelta = dt.timedelta(hours=2), now: dt.datetime | None = None
             ) -> list[tuple[Ticket, SlaState]]:
    """Unresolved tickets whose next unmet target is breached or due within ``within``, earliest first."""
    at = _now(now)
    horizon = at + within
    query = sa.select(Ticket).where(
        Ticket.status.not_in([TicketStatus.RESOLVED, TicketStatus.CLOSED]),
        sa.or_(sa.and_(Ticket.first_response_at.is_(None), Ticket.first_response_due_at <= horizon),
               Ticket.resolution_due_at <= horizon))
    rows = [(t, sla_state(t, at)) for t in session.scalars(query)]
    return sorted((r for r in rows if r[1].next_due_at is not None), key=lambda r: (r[1].next_due_at, r[0].id))


def visible_messages(ticket: Ticket, *, staff: bool) -> list[TicketMessage]:
    """The messages ``staff`` or the customer may read: customers never see internal notes."""
    return [m for m in ticket.messages if staff or not m.internal]
