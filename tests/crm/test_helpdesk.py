"""Tickets: statuses, first response and resolution against SLA targets, notes, attachments, assignment."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.db.models import (Account, Brand, Product, Service, SlaTarget, Team, Ticket, TicketAttachment,
                                   User)
from bluerocktel.errors import ConflictError, NotFoundError, UserFacingError
from bluerocktel.helpdesk import (MAX_ATTACHMENT_BYTES, add_attachment, assign, due_soon, open_ticket, reply,
                                  set_priority, set_status, sla_state, visible_messages)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)   # Monday 09:00 UTC


def minutes(n: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


@pytest.fixture
def desk(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        martin = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
        durand = Account(number="C0002", brand_id=brand.id, name="Cabinet Durand")
        product = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        s.add_all([martin, durand, product])
        s.flush()
        service = Service(account_id=durand.id, product_id=product.id, label="SIP Durand")
        s.add(service)
        # users without a real password hash: these tests never log in (argon2 would cost seconds)
        alice = User(email="alice@martin.example", name="Alice", password_hash="-", role="customer",
                     account_id=martin.id)
        sam = User(email="sam@bluerock.example", name="Sam", password_hash="-", role="support")
        team = Team(name="Level 2")
        s.add_all([alice, sam, team])
        s.flush()
        return {"martin": martin.id, "durand": durand.id, "durand_service": service.id, "alice": alice.id,
                "sam": sam.id, "team": team.id}


def _open(wb, desk, priority="high", **kw):
    with wb.db.transaction() as s:
        ticket = open_ticket(s, desk["martin"], "No dial tone", "Since this morning, no line.", actor="alice",
                             priority=priority, author_user_id=desk["alice"], now=T0, **kw)
        return ticket.id


def test_sla_targets_default_and_configured(wb, desk):
    ticket_id = _open(wb, desk, priority="high")            # default high: 2 h first response, 24 h resolution
    with wb.db.transaction() as s:
        s.add(SlaTarget(priority="urgent", first_response_minutes=15, resolution_minutes=120))
    with wb.db.transaction() as s:
        t = s.get(Ticket, ticket_id)
        assert (t.status, t.first_response_due_at, t.resolution_due_at) == ("new", minutes(120), minutes(24 * 60))
        set_priority(s, ticket_id, "urgent", actor="sam")
        assert (t.first_response_due_at, t.resolution_due_at) == (minutes(15), minutes(120))


def test_first_response_is_the_first_public_staff_reply(wb, desk):
    ticket_id = _open(wb, desk)
    with wb.db.transaction() as s:
        reply(s, ticket_id, "Checked the trunk registration.", actor="sam", author_user_id=desk["sam"],
              internal=True, now=minutes(30))
        reply(s, ticket_id, "Any news?", actor="alice", author_user_id=desk["alice"], now=minutes(60))
        t = s.get(Ticket, ticket_id)
        assert (t.status, t.first_response_at) == ("new", None)     # a note and the customer: no response yet
        assert sla_state(t, minutes(119)).first_response_breached is False
        assert sla_state(t, minutes(121)).first_response_breached is True
        reply(s, ticket_id, "We are on it.", actor="sam", author_user_id=desk["sam"], now=minutes(130))
        assert (t.status, t.first_response_at) == ("open", minutes(130))
        state = sla_state(t, minutes(140))
        assert state.first_response_breached is True and state.resolution_breached is False   # met, but late
        assert state.next_due_at == minutes(24 * 60)


def test_status_flow_reopen_and_close(wb, desk):
    ticket_id = _open(wb, desk)
    with wb.db.transaction() as s:
        reply(s, ticket_id, "Please reboot the router.", actor="sam", author_user_id=desk["sam"], now=minutes(10))
        set_status(s, ticket_id, "pending_customer", actor="sam", now=minutes(11))
        reply(s, ticket_id, "Rebooted, still nothing.", actor="alice", author_user_id=desk["alice"], now=minutes(40))
        t = s.get(Ticket, ticket_id)
        assert t.status == "open"                                    # the customer's answer reopens it
        set_status(s, ticket_id, "resolved", actor="sam", now=minutes(300))
        assert t.resolved_at == minutes(300) and not sla_state(t, minutes(5000)).resolution_breached
        reply(s, ticket_id, "It is down again.", actor="alice", author_user_id=desk["alice"], now=minutes(400))
        assert (t.status, t.resolved_at) == ("open", None)
        set_status(s, ticket_id, "closed", actor="sam", now=minutes(2000))
        assert (t.closed_at, t.resolved_at) == (minutes(2000), minutes(2000))
        assert sla_state(t, minutes(3000)).resolution_breached is True        # resolved after 24 h
    with wb.db.transaction() as s:
        with pytest.raises(ConflictError, match="closed; open a new ticket"):
            reply(s, ticket_id, "hello?", actor="alice", author_user_id=desk["alice"])
        with pytest.raises(ConflictError, match="is closed: it cannot become open"):
            set_status(s, ticket_id, "open", actor="sam")


def test_customers_never_see_internal_notes_nor_write_them(wb, desk):
    ticket_id = _open(wb, desk)
    with wb.db.transaction() as s:
        reply(s, ticket_id, "Customer is on the old firmware.", actor="sam", author_user_id=desk["sam"],
              internal=True, now=minutes(5))
        reply(s, ticket_id, "Can you update the firmware?", actor="sam", author_user_id=desk["sam"], now=minutes(6))
        with pytest.raises(UserFacingError, match="only staff"):
            reply(s, ticket_id, "sneaky", actor="alice", author_user_id=desk["alice"], internal=True)
        t = s.get(Ticket, ticket_id)
        assert [m.body for m in visible_messages(t, staff=False)] == ["Since this morning, no line.",
                                                                      "Can you update the firmware?"]
        assert len(visible_messages(t, staff=True)) == 3
        # another account's ticket is not found through the customer's scope
        with pytest.raises(NotFoundError):
            reply(s, ticket_id, "hi", actor="x", account_id=desk["durand"])


def test_ticket_links_must_belong_to_the_account(wb, desk):
    with wb.db.transaction() as s:
        with pytest.raises(NotFoundError, match="no service"):
            open_ticket(s, desk["martin"], "x", "y", actor="a", service_id=desk["durand_service"])
        with pytest.raises(UserFacingError, match="priority must be one of"):
            open_ticket(s, desk["martin"], "x", "y", actor="a", priority="whenever")


def test_due_soon_lists_breached_and_imminent_targets_earliest_first(wb, desk):
    urgent = _open(wb, desk, priority="urgent")   # first response due +30 min
    high = _open(wb, desk, priority="high")       # +120 min
    low = _open(wb, desk, priority="low")         # +24 h
    with wb.db.session() as s:
        assert [t.id for t, _ in due_soon(s, within=dt.timedelta(hours=1), now=minutes(0))] == [urgent]
        rows = due_soon(s, within=dt.timedelta(hours=2), now=minutes(45))
        assert [t.id for t, _ in rows] == [urgent, high]
        assert rows[0][1].first_response_breached and not rows[1][1].first_response_breached
        assert low not in [t.id for t, _ in rows]


def test_assignment_to_staff_and_teams_only(wb, desk):
    ticket_id = _open(wb, desk)
    with wb.db.transaction() as s:
        assign(s, ticket_id, actor="lead", user_id=desk["sam"], team_id=desk["team"])
        assert (s.get(Ticket, ticket_id).assignee_id, s.get(Ticket, ticket_id).team_id) == (desk["sam"], desk["team"])
        with pytest.raises(UserFacingError, match="not an active staff user"):
            assign(s, ticket_id, actor="lead", user_id=desk["alice"])
        with pytest.raises(NotFoundError, match="no team 99"):
            assign(s, ticket_id, actor="lead", team_id=99)


def test_attachments_are_limited_by_size_and_real_type(wb, desk):
    ticket_id = _open(wb, desk)
    with wb.db.transaction() as s:
        message_id = s.get(Ticket, ticket_id).messages[0].id
        pdf = b"%PDF-1.7\n" + b"x" * 100
        att = add_attachment(s, wb.data_dir, message_id, "../../etc/bill scan.pdf", "application/pdf", pdf)
        assert (wb.data_dir / att.path).read_bytes() == pdf
        assert att.path.startswith(f"documents/tickets/{ticket_id}/") and ".." not in att.path
        assert att.file_name == "bill scan.pdf" and att.size_bytes == len(pdf)
        with pytest.raises(UserFacingError, match="declared application/pdf but its content is not"):
            add_attachment(s, wb.data_dir, message_id, "evil.pdf", "application/pdf", b"MZ\x90\x00")
        with pytest.raises(UserFacingError, match="type application/x-msdownload is not accepted"):
            add_attachment(s, wb.data_dir, message_id, "a.exe", "application/x-msdownload", b"MZ")
        with pytest.raises(UserFacingError, match="over the 10,485,760-byte limit"):
            add_attachment(s, wb.data_dir, message_id, "big.txt", "text/plain", b"a" * (MAX_ATTACHMENT_BYTES + 1))
        with pytest.raises(UserFacingError, match="not UTF-8 text"):
            add_attachment(s, wb.data_dir, message_id, "log.txt", "text/plain", b"\xff\xfe\x00")
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(TicketAttachment)) == 1


def test_ticket_events_are_mailed_to_the_right_people(wb, desk, smtp):
    import email
    from email import policy

    from bluerocktel.mail import send_queued

    ticket_id = _open(wb, desk)                              # by the customer: acknowledgement + desk notice
    with wb.db.transaction() as s:
        reply(s, ticket_id, "Internal: check the SBC logs", actor="sam", author_user_id=desk["sam"], internal=True)
        reply(s, ticket_id, "We restarted your trunk.", actor="sam", author_user_id=desk["sam"])
        assign(s, ticket_id, actor="lead", user_id=desk["sam"])
        reply(s, ticket_id, "Works now, thanks!", actor="alice", author_user_id=desk["alice"])
        set_status(s, ticket_id, "resolved", actor="sam")
    assert send_queued(wb)["sent"] == 5
    received = [(env.rcpt_tos, email.message_from_bytes(env.content, policy=policy.default))
                for env in smtp.envelopes]
    assert [(to, m["Subject"]) for to, m in received] == [
        (["alice@martin.example"], f"[Ticket #{ticket_id}] Demande reçue : No dial tone"),
        (["support@localhost"], f"[Ticket #{ticket_id}] No dial tone"),
        (["alice@martin.example"], f"[Ticket #{ticket_id}] Réponse : No dial tone"),
        (["sam@bluerock.example"], f"[Ticket #{ticket_id}] No dial tone"),
        (["alice@martin.example"], f"[Ticket #{ticket_id}] Résolu : No dial tone"),
    ]
    bodies = [m.get_body(("plain",)).get_content() for _, m in received]
    assert "We restarted your trunk." in bodies[2] and "Works now, thanks!" in bodies[3]
    assert not any("SBC logs" in body for body in bodies)    # internal notes never leave the desk
