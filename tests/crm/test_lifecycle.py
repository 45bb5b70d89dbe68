"""Service lifecycle: allowed moves, dates, identifiers closed at termination, events and audit in one go."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.crm.lifecycle import TransitionError, transition
from bluerocktel.db.models import (Account, AuditEntry, Brand, Product, Service, ServiceEvent, ServiceIdentifier)
from bluerocktel.errors import NotFoundError, UserFacingError

UTC = dt.timezone.utc


@pytest.fixture
def service_id(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        account = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin", timezone="Europe/Paris")
        product = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        s.add_all([account, product])
        s.flush()
        service = Service(account_id=account.id, product_id=product.id, label="SIP trunk", status="ordered")
        s.add(service)
        s.flush()
        s.add(ServiceIdentifier(service_id=service.id, kind="number", value="+33472000001",
                                valid_from=dt.datetime(2026, 3, 1, tzinfo=UTC)))
        return service.id


def _move(wb, service_id, action, on, reason="customer request"):
    with wb.db.transaction() as s:
        return transition(s, service_id, action, reason=reason, actor="alice@bluerock.example", on=on).id


def test_full_life_is_dated_evented_and_audited(wb, service_id):
    _move(wb, service_id, "activate", dt.date(2026, 3, 17), reason="installed on site")
    _move(wb, service_id, "suspend", dt.date(2026, 5, 2), reason="dunning: FA-2026-000012 overdue 30 days")
    _move(wb, service_id, "reactivate", dt.date(2026, 5, 4), reason="paid")
    _move(wb, service_id, "terminate", dt.date(2026, 7, 1), reason="moved to a competitor")
    with wb.db.session() as s:
        service = s.get(Service, service_id)
        assert (service.status, service.activated_on, service.terminated_on) == (
            "terminated", dt.date(2026, 3, 17), dt.date(2026, 7, 1))
        # the number stops at midnight Paris time on 1 July = 22:00 UTC on 30 June (CEST)
        assert service.identifiers[0].valid_to == dt.datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
        events = s.scalars(sa.select(ServiceEvent).order_by(ServiceEvent.id)).all()
        assert [(e.kind, e.payload["from"], e.payload["to"], e.payload["effective_on"]) for e in events] == [
            ("activated", "ordered", "active", "2026-03-17"),
            ("suspended", "active", "suspended", "2026-05-02"),
            ("reactivated", "suspended", "active", "2026-05-04"),
            ("terminated", "active", "terminated", "2026-07-01")]
        assert events[1].reason == "dunning: FA-2026-000012 overdue 30 days"
        audit = s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [a.action for a in audit] == ["service.activate", "service.suspend", "service.reactivate",
                                             "service.terminate"]
        assert {a.actor for a in audit} == {"alice@bluerock.example"}
        assert [a.details["event_id"] for a in audit] == [e.id for e in events]


@pytest.mark.parametrize("action", ["activate", "suspend", "reactivate", "terminate"])
def test_terminated_is_final(wb, service_id, action):
    _move(wb, service_id, "terminate", dt.date(2026, 3, 1), reason="cancelled before installation")
    with pytest.raises(TransitionError, match="is terminated: cannot"):
        _move(wb, service_id, action, dt.date(2026, 4, 1))


def test_refused_moves_change_nothing(wb, service_id):
    with pytest.raises(TransitionError, match="is ordered: cannot suspend it"):
        _move(wb, service_id, "suspend", dt.date(2026, 3, 1))
    _move(wb, service_id, "activate", dt.date(2026, 3, 17))
    with pytest.raises(TransitionError, match="cannot be terminated on 2026-03-16"):
        _move(wb, service_id, "terminate", dt.date(2026, 3, 16))
    with pytest.raises(UserFacingError, match="needs a reason"):
        _move(wb, service_id, "suspend", dt.date(2026, 4, 1), reason="  ")
    with pytest.raises(UserFacingError, match="unknown service action 'pause'"):
        _move(wb, service_id, "pause", dt.date(2026, 4, 1))
    with pytest.raises(NotFoundError):
        _move(wb, 999, "suspend", dt.date(2026, 4, 1))
    with wb.db.session() as s:
        assert s.get(Service, service_id).status == "active"
        assert s.scalar(sa.select(sa.func.count()).select_from(ServiceEvent)) == 1   # the activation only
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 1


def test_events_reach_subscribed_provisioning_systems(wb, service_id):
    """The lifecycle's events are what the webhooks deliver (fan-out picks them up)."""
    from bluerocktel.db.models import WebhookDelivery
    from bluerocktel.webhooks import create_subscription, fan_out

    with wb.db.transaction() as s:
        create_subscription(s, wb.secret_key, "prov", "https://prov.example/hook", events=["activated"], actor="t")
    _move(wb, service_id, "activate", dt.date(2026, 3, 17))
    _move(wb, service_id, "suspend", dt.date(2026, 4, 17))
    with wb.db.transaction() as s:
        assert fan_out(s) == 1
        event = s.get(ServiceEvent, s.scalar(sa.select(WebhookDelivery.event_id)))
        assert event.kind == "activated"
