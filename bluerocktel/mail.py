"""The e-mail outbox: messages are queued as rows with the change that causes them, sent later.

:func:`queue_email` only adds an :class:`~bluerocktel.db.models.EmailMessage` to the caller's
session, so an e-mail exists exactly when the transaction that wanted it commits.
:func:`send_queued` sends queued messages (and failed ones, up to :data:`MAX_ATTEMPTS` attempts)
through the SMTP server of the ``smtp_*`` settings, attachments read from the data dir.

Nothing is sent twice: a sender claims a message with one conditional UPDATE that raises its
``attempts`` from the value it read and leaves it ``queued`` with ``attempts`` > 0 while it is
being sent ("in flight": ``last_error`` says since when). Only a ``queued`` message never tried,
or a ``failed`` one, can be claimed, so two concurrent senders never both send it. A sender
killed in flight leaves the message in that state, unsent or not: it is not retried by itself
(staff can see it and queue it again) rather than risk a duplicate invoice e-mail.
"""

from __future__ import annotations

import mimetypes
import re
import smtplib
import ssl
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime
from pathlib import PurePosixPath
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.billing.invoices import set_invoice_status
from bluerocktel.db.models import EmailMessage, Invoice, utcnow
from bluerocktel.errors import UserFacingError
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import EmailStatus, InvoiceStatus
from bluerocktel.workbench import Workbench

MAX_ATTEMPTS = 5
SMTP_TIMEOUT_S = 30
_ADDRESS = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")


def queue_email(session: Session, to: str, subject: str, body_text: str, *, attachments: Sequence[str] = (),
                body_html: str | None = None, related: tuple[str, str | int] | None = None) -> EmailMessage:
    """Add a queued message to ``session`` (sent by :func:`send_queued` once committed).

    ``to`` is one address or several separated by commas; ``attachments`` are paths relative to
    the data dir; ``related`` names what the message is about, e.g. ``("invoice", 12)``.
    """
    addresses = [a.strip() for a in to.split(",") if a.strip()]
    if not addresses:
        raise UserFacingError("e-mail: no recipient address")
    for address in addresses:
        if not _ADDRESS.match(address):
            raise UserFacingError(f"e-mail: {address!r} is not an e-mail address")
    if not subject.strip() or "\n" in subject or "\r" in subject:
        raise UserFacingError(f"e-mail: the subject must be one non-empty line, got {subject!r}")
    for path in attachments:
        parts = PurePosixPath(path)
        if parts.is_absolute() or ".." in parts.parts or not parts.parts:
            raise UserFacingError(f"e-mail attachment {path!r}: give a path inside the data dir, relative to it")
    message = EmailMessage(
        to_addr=", ".join(addresses), subject=subject.strip(), body_text=body_text, body_html=body_html,
        attachments=list(attachments), status=EmailStatus.QUEUED, attempts=0,
        related_type=related[0] if related else None, related_id=str(related[1]) if related else None)
    session.add(message)
    session.flush()
    return message


def send_queued(wb: Workbench, *, limit: int | None = None) -> dict:
    """Send the queued messages, oldest first, and retry the failed ones with attempts left.

    Returns ``{"sent": n, "failed": n, "errors": [{"id", "to", "error"}], "stopped": error | None}``.
    When the server cannot be reached, the message being sent is marked failed and the rest wait
    for the next call (``stopped`` says why).
    """
    with wb.db.session() as s:
        query = (sa.select(EmailMessage.id, EmailMessage.attempts).where(_claimable())
                 .order_by(EmailMessage.id).limit(limit))
        candidates = s.execute(query).all()
    result = {"sent": 0, "failed": 0, "errors": [], "stopped": None}
    smtp: smtplib.SMTP | None = None
    try:
        for message_id, attempts in candidates:
            message = _claim(wb, message_id, attempts)
            if message is None:
                continue                     # another sender took it
            try:
                mime = _mime(wb, message)
            except OSError as exc:
                _mark_failed(wb, result, message, f"attachment: {exc}")
                continue
            try:
                if smtp is None:
                    smtp = _connect()
            except (OSError, smtplib.SMTPException) as exc:
                _mark_failed(wb, result, message, f"cannot reach SMTP server: {exc}")
                result["stopped"] = str(exc)
                break
            try:
                smtp.send_message(mime)
            except (OSError, smtplib.SMTPServerDisconnected) as exc:
                _mark_failed(wb, result, message, f"{type(exc).__name__}: {exc}")
                smtp = None                  # reconnect for the next message
                continue
            except smtplib.SMTPException as exc:
                _mark_failed(wb, result, message, f"{type(exc).__name__}: {exc}")
                continue
            _mark_sent(wb, message)
            result["sent"] += 1
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
    return result


def _claimable():
    """Messages a sender may take: queued and never tried, or failed with attempts left."""
    return sa.or_(sa.and_(EmailMessage.status == EmailStatus.QUEUED, EmailMessage.attempts == 0),
                  sa.and_(EmailMessage.status == EmailStatus.FAILED, EmailMessage.attempts < MAX_ATTEMPTS))


def _claim(wb: Workbench, message_id: int, attempts: int) -> EmailMessage | None:
    """Take the message for sending unless another sender did since we read it; the claimed row."""
    with wb.db.transaction() as s:
        claimed = s.execute(
            sa.update(EmailMessage)
            .where(EmailMessage.id == message_id, EmailMessage.attempts == attempts, _claimable())
            .values(attempts=attempts + 1, status=EmailStatus.QUEUED,
                    last_error=f"sending since {utcnow():%Y-%m-%d %H:%M:%S} UTC")
            .execution_options(synchronize_session=False)).rowcount
        return s.get(EmailMessage, message_id) if claimed else None


def _connect() -> smtplib.SMTP:
    smtp = smtplib.SMTP(get_setting("smtp_host"), int(get_setting("smtp_port")), timeout=SMTP_TIMEOUT_S)
    try:
        if get_setting("smtp_starttls") == "1":
            smtp.starttls(context=ssl.create_default_context())
        user = get_setting("smtp_user")
        if user:
            smtp.login(user, get_setting("smtp_password"))
    except BaseException:
        smtp.close()
        raise
    return smtp


def _mime(wb: Workbench, message: EmailMessage) -> MimeMessage:
    sender = get_setting("smtp_from")
    mime = MimeMessage()
    mime["From"] = sender
    mime["To"] = message.to_addr
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(utcnow())
    # Stable per message: a message resent after a crash keeps its identity.
    domain = sender.rpartition("@")[2] or "localhost"
    mime["Message-ID"] = f"<bluerocktel.{message.id}.{message.created_at:%Y%m%d%H%M%S}@{domain}>"
    mime.set_content(message.body_text)
    if message.body_html:
        mime.add_alternative(message.body_html, subtype="html")
    for relative in message.attachments:
        path = wb.data_dir / relative
        data = path.read_bytes()
        kind, _ = mimetypes.guess_type(path.name)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        mime.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return mime


def _mark_failed(wb: Workbench, result: dict, message: EmailMessage, error: str) -> None:
    with wb.db.transaction() as s:
        s.execute(sa.update(EmailMessage).where(EmailMessage.id == message.id)
                  .values(status=EmailStatus.FAILED, last_error=error))
    result["failed"] += 1
    result["errors"].append({"id": message.id, "to": message.to_addr, "error": error})


def _mark_sent(wb: Workbench, message: EmailMessage) -> None:
    """Mark the message sent; an invoice e-mailed for the first time becomes ``sent``."""
    with wb.db.transaction() as s:
        s.execute(sa.update(EmailMessage).where(EmailMessage.id == message.id)
                  .values(status=EmailStatus.SENT, sent_at=utcnow(), last_error=None))
        if message.related_type == "invoice":
            invoice = s.get(Invoice, int(message.related_id))
            if invoice is not None and invoice.sent_at is None and invoice.status != InvoiceStatus.DISPUTED:
                set_invoice_status(s, invoice.id, InvoiceStatus.SENT, actor="mail")
