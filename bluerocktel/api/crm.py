"""REST API: services and their lifecycle, helpdesk tickets, webhook subscriptions and deliveries.

Permissions (:data:`bluerocktel.security.PERMISSIONS`): ``accounts:read`` lists services,
``services:write`` moves them (activate, suspend, reactivate, terminate: 409 when the lifecycle
refuses); ``tickets:read`` / ``tickets:write`` for staff; a customer token reads its own
account's services and tickets (never internal notes), opens tickets and replies on its own
account only; ``webhooks:write`` (admin) manages subscriptions, reads deliveries and replays them.
Every POST accepts an ``Idempotency-Key`` (:mod:`bluerocktel.api.idempotency`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select
from sqlalchemy.orm import selectinload

from bluerocktel.api.idempotency import IdempotencyDep
from bluerocktel.api.schemas import Page
from bluerocktel.api.routes import (_PROBLEMS, require, MAX_ID, Caller, Cursor, DbSession, Limit, ObjectId, UpdatedSince,
                                    ListQuery, account_scope, keyset_page, record_columns)
from bluerocktel.crm.lifecycle import transition
from bluerocktel.db.models import Service, ServiceIdentifier, Ticket, WebhookDelivery, WebhookSubscription
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.helpdesk import open_ticket, reply, set_status, sla_state, visible_messages
from bluerocktel.security import Principal
from bluerocktel.vocabulary import TicketPriority, TicketStatus

router = APIRouter(tags=["crm"])
_CONFLICT = {**_PROBLEMS, 409: {"description": "the object's current state refuses this"}}


# ----------------------------------------------------------------------------------------- services

class IdentifierOut(BaseModel):
    kind: str
    value: str
    valid_from: dt.datetime
    valid_to: dt.datetime | None


class ServiceOut(BaseModel):
    id: int
    account_id: int
    contract_id: int | None
    product_id: int
    label: str
    status: str
    quantity: int
    activated_on: dt.date | None
    terminated_on: dt.date | None = Field(description="first day no longer billed")
    identifiers: list[IdentifierOut]
    updated_at: dt.datetime

    @classmethod
    def of(cls, s: Service) -> "ServiceOut":
        return cls(id=s.id, account_id=s.account_id, contract_id=s.contract_id, product_id=s.product_id,
                   label=s.label, status=s.status, quantity=s.quantity, activated_on=s.activated_on,
                   terminated_on=s.terminated_on, updated_at=s.updated_at,
                   identifiers=[IdentifierOut(kind=i.kind, value=i.value, valid_from=i.valid_from,
                                              valid_to=i.valid_to) for i in s.identifiers])


class TransitionIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="why; sent with the event to provisioning")
    effective_on: dt.date | None = Field(None, description="default: today in the account's time zone")


class TransitionOut(BaseModel):
    service: ServiceOut
    event_id: int
    event: str


def _visible_service(session, principal: Principal, service_id: int) -> Service:
    scope = account_scope(principal, "accounts:read")
    service = session.get(Service, service_id)
    if service is None or (scope is not None and service.account_id != scope):
        raise NotFoundError(f"no service {service_id}")
    return service


def _attach_identifiers(session, services: list) -> None:
    """Set ``identifiers`` on each service record of a page (one query for the page)."""
    by_service = {s.id: [] for s in services}
    for row in session.execute(select(ServiceIdentifier.service_id, ServiceIdentifier.kind, ServiceIdentifier.value,
                                      ServiceIdentifier.valid_from, ServiceIdentifier.valid_to)
                               .where(ServiceIdentifier.service_id.in_(list(by_service)))
                               .order_by(ServiceIdentifier.service_id, ServiceIdentifier.id)):
        by_service[row.service_id].append(row)
    for service in services:
        service.identifiers = by_service[service.id]


_SERVICES = ListQuery(Service, record_columns(Service), scope=Service.account_id == bindparam("scope"),
                      account_id=Service.account_id == bindparam("account_id"),
                      status=Service.status == bindparam("status"))


@router.get("/services", response_model=Page[ServiceOut],
            responses=_PROBLEMS)
async def list_services(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                  account_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                  status: Annotated[str | None, Query(description="ordered, active, suspended, terminated")] = None,
                  updated_since: UpdatedSince = None):
    """Services by id; a customer token lists its own account's."""
    scope = account_scope(principal, "accounts:read")
    return _SERVICES.page(session, ServiceOut, cursor, limit, attach=_attach_identifiers, scope=scope,
                          account_id=account_id, status=status, updated_since=updated_since)


@router.get("/services/{service_id}", response_model=ServiceOut, responses=_PROBLEMS)
def get_service(service_id: ObjectId, principal: Caller, session: DbSession):
    return ServiceOut.of(_visible_service(session, principal, service_id))


def _transition_route(action: str):
    def move(service_id: ObjectId, body: TransitionIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
        require(principal, "services:write")

        def work():
            with request.app.state.wb.db.transaction() as s:
                event = transition(s, service_id, action, reason=body.reason, actor=principal.email,
                                   on=body.effective_on)
                service = s.get(Service, service_id)
                return TransitionOut(service=ServiceOut.of(service), event_id=event.id, event=event.kind)

        return idempotency.run(request.app.state.wb, principal, work)

    move.__name__ = f"{action}_service"
    move.__doc__ = f"{action.capitalize()} the service (dated, reasoned, audited; emits a service event)."
    return move


for _action in ("activate", "suspend", "reactivate", "terminate"):
    router.add_api_route(f"/services/{{service_id}}/{_action}", _transition_route(_action), methods=["POST"],
                         response_model=TransitionOut, responses=_CONFLICT)


# ------------------------------------------------------------------------------------------ tickets

class MessageOut(BaseModel):
    id: int
    author_user_id: int | None
    author_email: str | None
    body: str
    internal: bool
    created_at: dt.datetime


class TicketOut(BaseModel):
    id: int
    account_id: int
    service_id: int | None
    invoice_id: int | None
    subject: str
    status: str
    priority: str
    category: str
    assignee_id: int | None
    team_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    first_response_due_at: dt.datetime | None
    resolution_due_at: dt.datetime | None
    first_response_at: dt.datetime | None
    resolved_at: dt.datetime | None
    first_response_breached: bool
    resolution_breached: bool

    @classmethod
    def fields_of(cls, t: Ticket) -> dict:
        state = sla_state(t)
        return dict(id=t.id, account_id=t.account_id, service_id=t.service_id, invoice_id=t.invoice_id,
                    subject=t.subject, status=t.status, priority=t.priority, category=t.category,
                    assignee_id=t.assignee_id, team_id=t.team_id, created_at=t.created_at, updated_at=t.updated_at,
                    first_response_due_at=t.first_response_due_at, resolution_due_at=t.resolution_due_at,
                    first_response_at=t.first_response_at, resolved_at=t.resolved_at,
                    first_response_breached=state.first_response_breached,
                    resolution_breached=state.resolution_breached)

    @classmethod
    def of(cls, t: Ticket) -> "TicketOut":
        return cls(**cls.fields_of(t))


class TicketDetailOut(TicketOut):
    messages: list[MessageOut]


class TicketIn(BaseModel):
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=50_000)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    category: str = Field("general", max_length=64)
    account_id: int | None = Field(None, description="staff: the account; customers: their own (may be omitted)")
    service_id: int | None = None
    invoice_id: int | None = None


class ReplyIn(BaseModel):
    body: str = Field(min_length=1, max_length=50_000)
    internal: bool = Field(False, description="staff only: an internal note customers never see")


class StatusIn(BaseModel):
    status: Literal["open", "pending_customer", "resolved", "closed"]


def _ticket_scope(principal: Principal) -> int | None:
    return account_scope(principal, "tickets:read")


def _detail(ticket: Ticket, principal: Principal) -> TicketDetailOut:
    messages = visible_messages(ticket, staff=principal.is_staff)
    return TicketDetailOut(**TicketOut.fields_of(ticket), messages=[
        MessageOut(id=m.id, author_user_id=m.author_user_id, author_email=m.author_email, body=m.body,
                   internal=m.internal, created_at=m.created_at) for m in messages])


def _visible_ticket(session, principal: Principal, ticket_id: int) -> Ticket:
    scope = _ticket_scope(principal)
    ticket = session.scalar(select(Ticket).where(Ticket.id == ticket_id).options(selectinload(Ticket.messages)))
    if ticket is None or (scope is not None and ticket.account_id != scope):
        raise NotFoundError(f"no ticket {ticket_id}")
    return ticket


_TICKETS = ListQuery(Ticket, record_columns(Ticket), newest_first=True, scope=Ticket.account_id == bindparam("scope"),
                     account_id=Ticket.account_id == bindparam("account_id"), status=Ticket.status == bindparam("status"))


@router.get("/tickets", response_model=Page[TicketOut],
            responses=_PROBLEMS)
async def list_tickets(principal: Caller, session: DbSession, limit: Limit = 50, cursor: Cursor = None,
                 account_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 status: Annotated[TicketStatus | None, Query()] = None, updated_since: UpdatedSince = None):
    """Tickets, newest first; a customer token lists its own account's."""
    scope = _ticket_scope(principal)
    return _TICKETS.page(session, TicketOut, cursor, limit, scope=scope, account_id=account_id,
                         status=status.value if status is not None else None, updated_since=updated_since)


@router.get("/tickets/{ticket_id}", response_model=TicketDetailOut, responses=_PROBLEMS)
def get_ticket(ticket_id: ObjectId, principal: Caller, session: DbSession):
    """A ticket with the messages the caller may read (customers: no internal notes)."""
    return _detail(_visible_ticket(session, principal, ticket_id), principal)


@router.post("/tickets", status_code=201, response_model=TicketDetailOut, responses=_PROBLEMS)
def create_ticket(body: TicketIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """Open a ticket: a customer on its own account, staff (``tickets:write``) on any."""
    if principal.is_staff:
        require(principal, "tickets:write")
        if body.account_id is None:
            raise UserFacingError("account_id is required")
        account_id = body.account_id
    else:
        account_id = _ticket_scope(principal)
        if body.account_id not in (None, account_id):
            raise NotFoundError(f"no account {body.account_id}")

    def work():
        with request.app.state.wb.db.transaction() as s:
            ticket = open_ticket(s, account_id, body.subject, body.body, actor=principal.email,
                                 priority=TicketPriority(body.priority), category=body.category,
                                 service_id=body.service_id, invoice_id=body.invoice_id,
                                 author_user_id=principal.user_id)
            return _detail(_visible_ticket(s, principal, ticket.id), principal)

    return idempotency.run(request.app.state.wb, principal, work, status_code=201)


@router.post("/tickets/{ticket_id}/replies", status_code=201, response_model=MessageOut, responses=_CONFLICT)
def reply_ticket(ticket_id: ObjectId, body: ReplyIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """A public reply, or (staff) an internal note."""
    scope = _ticket_scope(principal)
    if principal.is_staff:
        require(principal, "tickets:write")

    def work():
        with request.app.state.wb.db.transaction() as s:
            m = reply(s, ticket_id, body.body, actor=principal.email, author_user_id=principal.user_id,
                      internal=body.internal, account_id=scope)
            return MessageOut(id=m.id, author_user_id=m.author_user_id, author_email=m.author_email, body=m.body,
                              internal=m.internal, created_at=m.created_at)

    return idempotency.run(request.app.state.wb, principal, work, status_code=201)


@router.post("/tickets/{ticket_id}/status", response_model=TicketOut, responses=_CONFLICT)
def change_ticket_status(ticket_id: ObjectId, body: StatusIn, principal: Caller, idempotency: IdempotencyDep,
                         request: Request):
    """Move the ticket (staff with ``tickets:write``)."""
    require(principal, "tickets:write")

    def work():
        with request.app.state.wb.db.transaction() as s:
            return TicketOut.of(set_status(s, ticket_id, body.status, actor=principal.email))

    return idempotency.run(request.app.state.wb, principal, work)


# ----------------------------------------------------------------------------------------- webhooks

class WebhookIn(BaseModel):
    name: str = Field("", max_length=100)
    url: str = Field(min_length=1, max_length=1000)
    events: list[str] = Field(default_factory=list, description="service event kinds; empty: all")


class WebhookOut(BaseModel):
    id: int
    name: str
    url: str
    events: list[str]
    active: bool
    created_at: dt.datetime

    @classmethod
    def of(cls, w: WebhookSubscription) -> "WebhookOut":
        return cls(id=w.id, name=w.name, url=w.url, events=list(w.events or []), active=w.active,
                   created_at=w.created_at)


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="the signing secret, shown this once")


class DeliveryOut(BaseModel):
    id: int
    subscription_id: int
    event_id: int
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: dt.datetime | None
    log: list[dict]

    @classmethod
    def of(cls, d: WebhookDelivery) -> "DeliveryOut":
        return cls(id=d.id, subscription_id=d.subscription_id, event_id=d.event_id, status=d.status,
                   attempts=d.attempts, next_attempt_at=d.next_attempt_at, last_status_code=d.last_status_code,
                   last_error=d.last_error, delivered_at=d.delivered_at, log=list(d.log or []))


@router.get("/webhooks", response_model=list[WebhookOut], responses=_PROBLEMS)
def list_webhooks(principal: Caller, session: DbSession):
    require(principal, "webhooks:write")
    return [WebhookOut.of(w) for w in session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id))]


@router.post("/webhooks", status_code=201, response_model=WebhookCreatedOut, responses=_PROBLEMS)
def create_webhook(body: WebhookIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """Subscribe an endpoint; the response carries its signing secret once (replays return it again)."""
    require(principal, "webhooks:write")
    from bluerocktel.webhooks import create_subscription

    def work():
        wb = request.app.state.wb
        with wb.db.transaction() as s:
            sub, secret = create_subscription(s, wb.secret_key, body.name, body.url, events=body.events,
                                              actor=principal.email)
            return WebhookCreatedOut(**WebhookOut.of(sub).model_dump(), secret=secret)

    return idempotency.run(request.app.state.wb, principal, work, status_code=201)


@router.get("/webhooks/{subscription_id}/deliveries",
            response_model=Page[DeliveryOut],
            responses=_PROBLEMS)
def list_deliveries(subscription_id: ObjectId, principal: Caller, session: DbSession, limit: Limit = 50,
                    cursor: Cursor = None):
    """The delivery log of a subscription, newest first."""
    require(principal, "webhooks:write")
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    return keyset_page(session, query, WebhookDelivery, DeliveryOut, cursor, limit, newest_first=True)


@router.post("/webhook-deliveries/{delivery_id}/replay", response_model=DeliveryOut, responses=_PROBLEMS)
def replay_delivery(delivery_id: ObjectId, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """Queue a delivery again (sent by the next delivery pass)."""
    require(principal, "webhooks:write")
    from bluerocktel.webhooks import replay

    def work():
        with request.app.state.wb.db.transaction() as s:
            return DeliveryOut.of(replay(s, delivery_id, actor=principal.email))

    return idempotency.run(request.app.state.wb, principal, work)
