"""Service lifecycle: ordered → active → suspended → terminated, each move dated, reasoned and audited.

::

    ordered ──activate──► active ──suspend──► suspended ──reactivate──► active
       │                    │                    │
       └──────────────── terminate ──────────────┘──────► terminated (final)

Every move is one call of :func:`transition` inside the caller's transaction: it checks the
move is allowed, changes the service, writes the audit entry and a
:class:`~bluerocktel.db.models.ServiceEvent` (the outbox :mod:`bluerocktel.webhooks` delivers),
all or nothing. Dates are calendar days in the account's time zone: ``activated_on`` is the first
billed day, ``terminated_on`` the first day no longer billed (as :mod:`bluerocktel.billing.charges`
reads them). Terminating also closes the service's identifiers at the start of that day, so later
CDRs of its numbers are no longer billed to it.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Account, Service, ServiceEvent
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.vocabulary import ServiceEventKind, ServiceStatus

# action -> (states it may start from, state it leads to, event kind)
TRANSITIONS: dict[str, tuple[frozenset[str], str, str]] = {
    "activate": (frozenset({ServiceStatus.ORDERED}), ServiceStatus.ACTIVE, ServiceEventKind.ACTIVATED),
    "suspend": (frozenset({ServiceStatus.ACTIVE}), ServiceStatus.SUSPENDED, ServiceEventKind.SUSPENDED),
    "reactivate": (frozenset({ServiceStatus.SUSPENDED}), ServiceStatus.ACTIVE, ServiceEventKind.REACTIVATED),
    "terminate": (frozenset({ServiceStatus.ORDERED, ServiceStatus.ACTIVE, ServiceStatus.SUSPENDED}),
                  ServiceStatus.TERMINATED, ServiceEventKind.TERMINATED),
}


class TransitionError(ConflictError):
    """A move the lifecycle does not allow (409 in the API)."""


def _start_of_day(day: dt.date, timezone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), ZoneInfo(timezone)).astimezone(dt.timezone.utc)


def transition(session: Session, service_id: int, action: str, *, reason: str, actor: str,
               on: dt.date | None = None) -> ServiceEvent:
    """Apply ``action`` (activate, suspend, reactivate, terminate) to the service; returns its event.

    ``on`` is the effective day (default: today in the account's time zone). A reason is required:
    it travels with the event to the provisioning systems.
    """
    if action not in TRANSITIONS:
        raise UserFacingError(f"unknown service action {action!r}; use one of {', '.join(TRANSITIONS)}")
    if not reason or not reason.strip():
        raise UserFacingError(f"{action} needs a reason")
    service = session.get(Service, service_id, with_for_update=True)
    if service is None:
        raise NotFoundError(f"no service {service_id}")
    allowed_from, target, kind = TRANSITIONS[action]
    if service.status not in allowed_from:
        raise TransitionError(f"service {service.id} is {service.status}: cannot {action} it "
                              f"(allowed from {', '.join(sorted(allowed_from))})")
    account = session.get(Account, service.account_id)
    today = dt.datetime.now(ZoneInfo(account.timezone)).date()
    on = on or today
    previous = service.status
    if action == "activate":
        service.activated_on = on
    elif action == "terminate":
        if service.activated_on and on < service.activated_on:
            raise TransitionError(f"service {service.id} was activated on {service.activated_on}: "
                                  f"it cannot be terminated on {on}")
        service.terminated_on = on
        closed_at = _start_of_day(on, account.timezone)
        for identifier in service.identifiers:
            if identifier.valid_to is None or identifier.valid_to > closed_at:
                identifier.valid_to = max(closed_at, identifier.valid_from)
    service.status = target
    event = ServiceEvent(service_id=service.id, account_id=service.account_id, kind=kind, reason=reason.strip(),
                         actor=actor, at=dt.datetime.now(dt.timezone.utc),
                         payload={"from": previous, "to": target, "effective_on": on.isoformat()})
    session.add(event)
    session.flush()
    record_audit(session, actor, f"service.{action}", "service", service.id, reason=reason.strip(),
                 previous=previous, status=target, effective_on=on.isoformat(), event_id=event.id)
    return event
