"""Service lifecycle events delivered to provisioning systems by signed webhooks.

The transition that changes a service writes a :class:`~bluerocktel.db.models.ServiceEvent` in
its own transaction and nothing else: the outbox. Delivery runs apart (``bluerocktel webhooks
deliver``, the scheduler, or the server's background loop), so a slow or failing endpoint never
blocks, delays or undoes a transition.

- :func:`fan_out` gives every event one :class:`~bluerocktel.db.models.WebhookDelivery` per
  active subscription that wants its kind (events that happened after the subscription was
  created; the unique key makes it safe to run concurrently).
- :func:`deliver_due` POSTs the due deliveries: JSON body, ``Content-Type: application/json``,
  ``BlueRockTEL-Event`` (the type), ``BlueRockTEL-Delivery`` (the id, the same on every retry:
  receivers dedupe on it) and ``BlueRockTEL-Signature``. A 2xx answer delivers; anything else
  (status, refused connection, timeout) is logged on the delivery and retried after
  :data:`BACKOFF_S` (1 min, 5 min, 30 min, 2 h, 6 h, 24 h); after the last one it is ``failed``
  and waits for :func:`replay`.

Signature (receivers, verify it; :func:`verify_signature` is the reference)::

    BlueRockTEL-Signature: t=1764161400,v1=5f2b...e9

    v1 = hex(HMAC-SHA256(secret, f"{t}.{raw_body}"))

Recompute ``v1`` over the exact raw body bytes, compare in constant time, and refuse a ``t``
more than five minutes away from your clock (a replayed old request). The secret is shown once
when the subscription is created and stored encrypted (:func:`bluerocktel.security.encrypt_text`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import (Account, Service, ServiceEvent, WebhookDelivery, WebhookSubscription,
                                   utcnow)
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.security import decrypt_text, encrypt_text
from bluerocktel.vocabulary import DeliveryStatus, ServiceEventKind
from bluerocktel.workbench import Workbench

SIGNATURE_HEADER = "BlueRockTEL-Signature"
BACKOFF_S = (60, 300, 1800, 7200, 21600, 86400)   # wait after failed attempt 1, 2, ...; then failed
MAX_ATTEMPTS = len(BACKOFF_S) + 1
TOLERANCE_S = 300
TIMEOUT_S = 10.0
_LOG_KEEP = 20          # attempts kept in a delivery's log


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``BlueRockTEL-Signature`` header value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float | None = None,
                     tolerance_s: int = TOLERANCE_S) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and its timestamp is within ``tolerance_s``."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserFacingError(f"webhook URL {url!r} must be an absolute http:// or https:// URL")
    return url.strip()


def _check_events(events: Sequence[str]) -> list[str]:
    known = {kind.value for kind in ServiceEventKind}
    unknown = sorted(set(events) - known)
    if unknown:
        raise UserFacingError(f"unknown event kind(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return sorted(set(events))


def create_subscription(session: Session, key: str, name: str, url: str, *, events: Sequence[str] = (),
                        actor: str) -> tuple[WebhookSubscription, str]:
    """Subscribe ``url`` to service events (all kinds when ``events`` is empty).

    Returns the subscription and its signing secret, which is shown this once; ``key`` is the
    workbench's secret key that encrypts it at rest.
    """
    secret = "whsec_" + secrets.token_urlsafe(32)
    sub = WebhookSubscription(name=name.strip() or url, url=_check_url(url), secret=encrypt_text(key, secret),
                              events=_check_events(events), active=True, created_by=actor)
    session.add(sub)
    session.flush()
    record_audit(session, actor, "webhook.subscribe", "webhook_subscription", sub.id, url=sub.url, events=sub.events)
    return sub, secret


def event_payload(event: ServiceEvent, service: Service, account: Account) -> dict:
    """The JSON body sent for ``event``."""
    return {
        "id": event.id,
        "type": f"service.{event.kind}",
        "occurred_at": event.at.isoformat().replace("+00:00", "Z"),
        "reason": event.reason,
        "actor": event.actor,
        "service": {"id": service.id, "label": service.label, "status": service.status,
                    "product": service.product.code if service.product else None,
                    "identifiers": [{"kind": i.kind, "value": i.value} for i in service.identifiers
                                    if i.valid_to is None or i.valid_to > event.at]},
        "account": {"id": account.id, "number": account.number, "name": account.name},
        "data": event.payload or {},
    }


def fan_out(session: Session) -> int:
    """Create the missing deliveries: each event to each active subscription that wants it. Returns how many."""
    created = 0
    for sub in session.scalars(sa.select(WebhookSubscription).where(WebhookSubscription.active.is_(True))):
        delivered = sa.select(WebhookDelivery.event_id).where(WebhookDelivery.subscription_id == sub.id)
        query = sa.select(ServiceEvent.id, ServiceEvent.at).where(ServiceEvent.at >= sub.created_at,
                                                                  ServiceEvent.id.not_in(delivered))
        if sub.events:
            query = query.where(ServiceEvent.kind.in_(sub.events))
        for event_id, at in session.execute(query.order_by(ServiceEvent.id)):
            # due since the event happened
            session.add(WebhookDelivery(subscription_id=sub.id, event_id=event_id, status=DeliveryStatus.PENDING,
                                        next_attempt_at=at))
            created += 1
    session.flush()
    return created


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
    import httpx

    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def _attempt(wb: Workbench, delivery_id: int, timeout: float) -> str:
    """One attempt of one delivery; the outcome is committed before the next one starts."""
    with wb.db.session() as s:
        delivery = s.get(WebhookDelivery, delivery_id)
        sub = s.get(WebhookSubscription, delivery.subscription_id)
        event = s.get(ServiceEvent, delivery.event_id)
        service = s.get(Service, event.service_id)
        account = s.get(Account, event.account_id)
        body = json.dumps(event_payload(event, service, account), separators=(",", ":"), sort_keys=True).encode()
        url, secret = sub.url, decrypt_text(wb.secret_key, sub.secret)
        headers = {"Content-Type": "application/json", "User-Agent": "BlueRockTEL-Webhooks/1",
                   "BlueRockTEL-Event": f"service.{event.kind}", "BlueRockTEL-Delivery": str(delivery.id),
                   SIGNATURE_HEADER: sign(secret, int(time.time()), body)}
    started = time.perf_counter()
    status_code, error = _post(url, body, headers, timeout)
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    with wb.db.transaction() as s:
        delivery = s.get(WebhookDelivery, delivery_id)
        now = utcnow()
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error
        delivery.log = (list(delivery.log or []) + [{"at": now.isoformat(), "status_code": status_code,
                                                     "error": error, "ms": elapsed_ms}])[-_LOG_KEEP:]
        if error is None:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            delivery.next_attempt_at = now + dt.timedelta(seconds=BACKOFF_S[delivery.attempts - 1])
        return delivery.status


def deliver_due(wb: Workbench, *, now: dt.datetime | None = None, limit: int = 100,
                timeout: float = TIMEOUT_S) -> dict[str, int]:
    """Fan out new events, then attempt every delivery due at ``now``; counts by outcome."""
    now = now or utcnow()
    with wb.db.transaction() as s:
        fan_out(s)
    with wb.db.session() as s:
        due = list(s.scalars(
            sa.select(WebhookDelivery.id)
            .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now,
                   WebhookSubscription.active.is_(True))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)))
    counts = {"attempted": len(due), DeliveryStatus.DELIVERED.value: 0, DeliveryStatus.PENDING.value: 0,
              DeliveryStatus.FAILED.value: 0}
    for delivery_id in due:
        counts[_attempt(wb, delivery_id, timeout)] += 1
    return counts


def replay(session: Session, delivery_id: int, actor: str) -> WebhookDelivery:
    """Send a delivery again at once (a failed one, or a delivered one the receiver lost)."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFoundError(f"no webhook delivery {delivery_id}")
    delivery.status, delivery.next_attempt_at, delivery.attempts = DeliveryStatus.PENDING, utcnow(), 0
    record_audit(session, actor, "webhook.replay", "webhook_delivery", delivery.id, event_id=delivery.event_id)
    return delivery
