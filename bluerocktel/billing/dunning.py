"""Dunning: reminders, late fees and suspension for invoices left unpaid after their due date.

The ladder is the :class:`~bluerocktel.db.models.DunningStage` rows of the invoice's brand, or the
rows of no brand (:func:`ensure_default_stages` creates those when there is no stage at all:
reminder at due + 7 days, second reminder with a late fee at + 15, suspension at + 30).
:func:`run_dunning` applies to every invoice still open after its due date (open amount > 0,
not disputed) each stage whose day has come and that it has not had yet, in order, each in its
own transaction with its :class:`~bluerocktel.db.models.DunningEvent` (unique per invoice and
stage, so a stage is applied once even by two concurrent runs):

- ``reminder``: an e-mail (FR/EN templates in ``billing/templates``) to the account's billing
  contacts, else its e-mail address, with the invoice's PDF;
- ``late_fee``: the same with the second-reminder text, and the stage's fee as a ``fee``
  one-off charge billed by the next invoice;
- ``suspend``: the account's active services are suspended, one ``suspended`` service event each
  (reason ``dunning: invoice X overdue N days``, the outbox of provisioning webhooks), and the
  account too.

A payment that settles the invoice stops the ladder. Once nothing of the account is overdue,
:func:`reactivate_after_payment` (also called by each run) restores what dunning suspended.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import jinja2
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.cycle import invoice_recipients
from bluerocktel.billing.payments import open_amount_minor, open_invoices, operator_today
from bluerocktel.db.models import (Account, AuditEntry, DunningEvent, DunningStage, Invoice, OneOffCharge, Service,
                                   ServiceEvent, utcnow)
from bluerocktel.mail import queue_email
from bluerocktel.money import format_minor, to_minor
from bluerocktel.vocabulary import (AccountStatus, ChargeKind, DunningAction, InvoiceKind, InvoiceStatus,
                                    ServiceEventKind, ServiceStatus)
from bluerocktel.workbench import Workbench

DEFAULT_STAGES = (
    (1, "Reminder", 7, DunningAction.REMINDER, None),
    (2, "Second reminder with late fee", 15, DunningAction.LATE_FEE, Decimal("10.00")),
    (3, "Suspension", 30, DunningAction.SUSPEND, None),
)
REASON_PREFIX = "dunning:"
_FEE_TEXT = {"fr": "Frais de relance, facture {number}", "en": "Late fee, invoice {number}"}
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def ensure_default_stages(session: Session) -> list[DunningStage]:
    """Create the default ladder (for every brand) when no stage exists at all; the stages created."""
    if session.scalar(sa.select(sa.func.count()).select_from(DunningStage)):
        return []
    stages = [DunningStage(brand_id=None, position=position, name=name, days_after_due=days, action=action, fee=fee)
              for position, name, days, action, fee in DEFAULT_STAGES]
    session.add_all(stages)
    session.flush()
    return stages


def _ladder(stages: list[DunningStage], brand_id: int) -> list[DunningStage]:
    own = [s for s in stages if s.brand_id == brand_id]
    return own or [s for s in stages if s.brand_id is None]


def run_dunning(wb: Workbench, today: dt.date | str | None = None, *, actor: str = "dunning") -> dict:
    """Apply the stages due on ``today`` (default: the operator's today); running twice changes nothing."""
    today = dt.date.fromisoformat(today) if isinstance(today, str) else today or operator_today()
    with wb.db.transaction() as s:
        ensure_default_stages(s)
    with wb.db.session() as s:
        stages = list(s.scalars(sa.select(DunningStage).order_by(DunningStage.position)))
        overdue = s.execute(sa.select(Invoice.id, Invoice.brand_id, Invoice.due_date).where(
            Invoice.kind == InvoiceKind.INVOICE, Invoice.due_date < today,
            Invoice.status.not_in([InvoiceStatus.PAID, InvoiceStatus.CREDITED, InvoiceStatus.DISPUTED]))
            .order_by(Invoice.due_date, Invoice.number)).all()
        applied = set(s.execute(sa.select(DunningEvent.invoice_id, DunningEvent.stage_id)
                                .join(Invoice, Invoice.id == DunningEvent.invoice_id)
                                .where(Invoice.due_date < today)).all())
    result = {"as_of": today.isoformat(), "events": [], "no_address": [], "reactivated": []}
    for invoice_id, brand_id, due_date in overdue:
        for stage in _ladder(stages, brand_id):
            if stage.days_after_due > (today - due_date).days or (invoice_id, stage.id) in applied:
                continue
            try:
                event = _apply_stage(wb, invoice_id, stage.id, today, actor)
            except sa.exc.IntegrityError:
                continue                # another run applied this stage meanwhile
            if event is None:
                break                   # settled or disputed meanwhile
            result["events"].append(event)
            if event["action"] != DunningAction.SUSPEND and not event["email"]:
                result["no_address"].append(event["invoice"])
    with wb.db.session() as s:
        suspended = set(s.scalars(sa.select(Account.id).where(Account.status == AccountStatus.SUSPENDED)))
        suspended |= set(s.scalars(sa.select(Service.account_id).where(Service.status == ServiceStatus.SUSPENDED)))
    for account_id in sorted(suspended):
        with wb.db.transaction() as s:
            if reactivate_after_payment(s, account_id, actor, today=today):
                result["reactivated"].append(s.get(Account, account_id).number)
    return result


def _apply_stage(wb: Workbench, invoice_id: int, stage_id: int, today: dt.date, actor: str) -> dict | None:
    """One stage on one invoice, in one transaction; None when the invoice needs no dunning any more."""
    with wb.db.transaction() as s:
        invoice, stage = s.get(Invoice, invoice_id), s.get(DunningStage, stage_id)
        due_minor = open_amount_minor(s, invoice.id)
        if invoice.status == InvoiceStatus.DISPUTED or due_minor <= 0:
            return None
        days_late = (today - invoice.due_date).days
        event = DunningEvent(invoice_id=invoice.id, stage_id=stage.id, action=stage.action, at=utcnow())
        s.add(event)
        s.flush()
        account = s.get(Account, invoice.account_id)
        if stage.action == DunningAction.SUSPEND:
            _suspend(s, account, invoice, days_late, actor)
        else:
            if stage.action == DunningAction.LATE_FEE and stage.fee:
                event.charge_id = _late_fee(s, account, invoice, stage.fee, today, actor).id
            recipients = invoice_recipients(account)
            if recipients:
                event.email_id = _queue_letter(s, stage, invoice, account, recipients, due_minor, days_late,
                                               event.id).id
        record_audit(s, actor, "dunning.stage", "invoice", invoice.id, number=invoice.number, stage=stage.name,
                     stage_action=stage.action, days_late=days_late, open_minor=due_minor)
        return {"invoice": invoice.number, "stage": stage.name, "action": str(stage.action),
                "days_late": days_late, "email": event.email_id is not None}


def _late_fee(session: Session, account: Account, invoice: Invoice, fee: Decimal, today: dt.date,
              actor: str) -> OneOffCharge:
    text = _FEE_TEXT.get(account.language, _FEE_TEXT["fr"])
    charge = OneOffCharge(account_id=account.id, kind=ChargeKind.FEE, description=text.format(number=invoice.number),
                          quantity=Decimal(1), unit_price=fee, charge_date=today, created_by=actor)
    session.add(charge)
    session.flush()
    return charge


def _format_date(day: dt.date, language: str) -> str:
    return f"{day:%d/%m/%Y}" if language == "fr" else f"{day.day} {day:%B %Y}"


def _queue_letter(session: Session, stage: DunningStage, invoice: Invoice, account: Account, recipients: list[str],
                  due_minor: int, days_late: int, event_id: int):
    language = account.language if account.language in _FEE_TEXT else "fr"
    fee = format_minor(to_minor(stage.fee, invoice.currency), invoice.currency, language) if stage.fee else ""
    text = _TEMPLATES.get_template(f"dunning_{stage.action}.{language}.txt").render(
        number=invoice.number, due_date=_format_date(invoice.due_date, language), days_late=days_late,
        amount_due=format_minor(due_minor, invoice.currency, language), fee=fee, brand=invoice.brand.name)
    subject, _, body = text.partition("\n")
    return queue_email(session, ", ".join(recipients), subject, body,
                       attachments=[invoice.pdf_path] if invoice.pdf_path else [],
                       related=("dunning_event", event_id))


def _suspend(session: Session, account: Account, invoice: Invoice, days_late: int, actor: str) -> None:
    reason = f"{REASON_PREFIX} invoice {invoice.number} overdue {days_late} days"
    services = session.scalars(sa.select(Service).where(Service.account_id == account.id,
                                                        Service.status == ServiceStatus.ACTIVE)
                               .order_by(Service.id)).all()
    for service in services:
        service.status = ServiceStatus.SUSPENDED
        session.add(ServiceEvent(service_id=service.id, account_id=account.id, kind=ServiceEventKind.SUSPENDED,
                                 reason=reason, actor=actor,
                                 payload={"invoice": invoice.number, "days_overdue": days_late}))
    if account.status == AccountStatus.ACTIVE:
        account.status = AccountStatus.SUSPENDED
        record_audit(session, actor, "dunning.suspend_account", "account", account.id, reason=reason,
                     services=[s.id for s in services])
    session.flush()


def reactivate_after_payment(session: Session, account_id: int, actor: str, *, today: dt.date | None = None
                             ) -> list[int]:
    """Restore the services (and the account) dunning suspended, once no invoice of the account is
    overdue (disputed ones aside); the ids of the services restored."""
    today = today or operator_today()
    if any(inv.due_date < today and inv.status != InvoiceStatus.DISPUTED
           for inv, _ in open_invoices(session, account_id)):
        return []
    restored = []
    for service in session.scalars(sa.select(Service).where(Service.account_id == account_id,
                                                            Service.status == ServiceStatus.SUSPENDED)
                                   .order_by(Service.id)):
        last = session.scalar(sa.select(ServiceEvent).where(ServiceEvent.service_id == service.id)
                              .order_by(ServiceEvent.at.desc(), ServiceEvent.id.desc()).limit(1))
        if last is not None and last.kind == ServiceEventKind.SUSPENDED and last.reason.startswith(REASON_PREFIX):
            service.status = ServiceStatus.ACTIVE
            session.add(ServiceEvent(service_id=service.id, account_id=account_id,
                                     kind=ServiceEventKind.REACTIVATED, actor=actor,
                                     reason=f"{REASON_PREFIX} nothing overdue any more"))
            restored.append(service.id)
    account = session.get(Account, account_id)
    last_dunning = session.scalar(sa.select(AuditEntry.action).where(
        AuditEntry.target_type == "account", AuditEntry.target_id == str(account_id),
        AuditEntry.action.in_(["dunning.suspend_account", "dunning.reactivate_account"]))
        .order_by(AuditEntry.id.desc()).limit(1))
    if account.status == AccountStatus.SUSPENDED and last_dunning == "dunning.suspend_account":
        account.status = AccountStatus.ACTIVE
        record_audit(session, actor, "dunning.reactivate_account", "account", account_id, services=restored)
    session.flush()
    return restored
