"""The staff helpdesk: the queue (filters, SLA columns, due soon), a ticket with its notes and the
account beside it (StaffStore), and the tab in headless Chromium where a support user answers.

SLA defaults (bluerocktel.helpdesk.DEFAULT_SLA): high 2 h to first response and 24 h to
resolution, normal 8 h and 72 h. T0 = 2026-11-02 09:00 UTC.
- ticket A, Boulangerie Martin, high, opened at T0: first response due T0+2h; answered at T0+3h
  (late: breached); next due then the resolution, T0+24h.
- ticket B, Cabinet Durand, normal, opened at T0+1h: first response due T0+1h+8h = T0+9h.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
from browser_support import free_port, needs_chromium

from bluerocktel.db.models import Team, TeamMember, User
from bluerocktel.errors import UserFacingError
from bluerocktel.helpdesk import open_ticket, reply
from bluerocktel.portal import PortalStore, StaffStore
from bluerocktel.security import AuthError, Principal
from bluerocktel.vocabulary import Role

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def hours(n: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=n)


def build_desk(wb, sample) -> dict:
    """The support user, the Voice team and tickets A and B of the module docstring."""
    with wb.db.transaction() as s:
        support = User(email="support@bluerock.example", name="Sam", password_hash="-", role="support")
        team = Team(name="Voice", email="voice@bluerock.example")
        s.add_all([support, team])
        s.flush()
        s.add(TeamMember(team_id=team.id, user_id=support.id))
        a = open_ticket(s, sample.account_ids["martin"], "No dial tone", "Since 8 this morning.", actor="alice",
                        priority="high", author_user_id=sample.user_ids["alice"], now=T0)
        b = open_ticket(s, sample.account_ids["durand"], "Wrong invoice address", "Please fix it.", actor="bob",
                        author_user_id=sample.user_ids["bob"], now=hours(1))
        reply(s, a.id, "A technician is on it.", actor=support.email, author_user_id=support.id, now=hours(3))
        reply(s, a.id, "Carrier outage, ref 4711", actor=support.email, author_user_id=support.id, internal=True,
              now=hours(3.5))
        return {"support": Principal(support.id, support.email, Role.SUPPORT, None), "team": team.id,
                "a": a.id, "b": b.id}


def test_queue_sla_filters_and_due_soon(wb, sample):
    desk = build_desk(wb, sample)
    store, support = StaffStore(wb), desk["support"]
    page = store.ticket_queue(support, now=hours(5))
    assert page.total == 2
    assert [(r.id, r.status, r.first_response_breached, r.resolution_breached, r.next_due_at) for r in page.rows] == [
        (desk["b"], "new", False, False, hours(9)),             # next due first: T0+9h before T0+24h
        (desk["a"], "open", True, False, hours(24)),
    ]
    assert page.rows[1].account == "C0001 Boulangerie Martin"
    assert [r.id for r in store.tickets_due_soon(support, now=hours(8))] == [desk["b"]]     # due within 2 h
    assert store.tickets_due_soon(support, now=hours(5)) == []
    assert [r.id for r in store.tickets_due_soon(support, now=hours(23))] == [desk["b"], desk["a"]]  # B breached

    assert [r.id for r in store.ticket_queue(support, priority="high").rows] == [desk["a"]]
    assert [r.id for r in store.ticket_queue(support, status="open").rows] == [desk["a"]]
    store.assign_ticket(support, desk["a"], user_id=support.user_id)
    store.assign_ticket(support, desk["b"], team_id=desk["team"])
    assert [r.id for r in store.ticket_queue(support, assigned_to_me=True).rows] == [desk["a"]]
    assert [(r.id, r.team) for r in store.ticket_queue(support, team_id=desk["team"]).rows] == [(desk["b"], "Voice")]
    assert store.set_ticket_status(support, desk["a"], "resolved") == "resolved"
    assert [r.id for r in store.ticket_queue(support).rows] == [desk["b"]]               # active only
    assert store.ticket_queue(support, status="all").total == 2
    assert store.ticket_queue(support, offset=1, limit=1).rows == []
    with pytest.raises(UserFacingError, match="status must be one of"):
        store.ticket_queue(support, status="done")


def test_ticket_with_notes_and_the_account_beside_it_and_permissions(wb, sample):
    desk = build_desk(wb, sample)
    store, support = StaffStore(wb), desk["support"]
    detail = store.helpdesk_ticket(support, desk["a"], now=hours(5), today=dt.date(2026, 12, 2))
    assert [(m.author, m.from_staff, m.internal, m.body) for m in detail.messages] == [
        ("Alice", False, False, "Since 8 this morning."), ("Sam", True, False, "A technician is on it."),
        ("Sam", True, True, "Carrier outage, ref 4711")]
    assert [(s.label, s.status) for s in detail.services] == [("SIP trunk C0001", "active")]
    assert (detail.balance["due_minor"], detail.balance["overdue_minor"], detail.balance["credit_minor"]) == \
        (3600, 3600, 0)                                          # due 2026-12-01, nothing paid
    assert [(i.number, i.open_minor, i.standing) for i in detail.open_invoices] == \
        [("FA-2026-000001", 3600, "overdue")]
    # the customer sees the answer, never the note
    assert [m.body for m in PortalStore(wb, sample.user_ids["alice"]).ticket(desk["a"]).messages] == \
        ["Since 8 this morning.", "A technician is on it."]

    sales = Principal(sample.user_ids["sales"], "sales@bluerock.example", Role.SALES, None)
    assert store.ticket_queue(sales).total == 2                  # tickets:read
    with pytest.raises(AuthError, match="tickets:write"):
        store.answer_ticket(sales, desk["a"], "hello")
    with pytest.raises(AuthError, match="tickets:write"):
        store.set_ticket_status(sales, desk["a"], "closed")
    alice = Principal(sample.user_ids["alice"], "alice@martin.example", Role.CUSTOMER, sample.account_ids["martin"])
    with pytest.raises(AuthError):
        store.ticket_queue(alice)
    with pytest.raises(AuthError):
        store.helpdesk_ticket(alice, desk["a"])


# --- the tab in headless Chromium, mounted in a tiny Panel app (SQLite) ----------------------------

@pytest.fixture(scope="module")
def helpdesk_app(tmp_path_factory):
    """``build_helpdesk_tab`` for the support user, served by Panel on a free port in this process."""
    import panel as pn
    from sample_operator import build_sample_operator

    from bluerocktel.workbench import Workbench
    from portal_app.helpdesk import build_helpdesk_tab
    from portal_app.layout import load_extensions

    data_dir = tmp_path_factory.mktemp("helpdesk") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    sample = build_sample_operator(wb, calls=(1, 1))
    desk = build_desk(wb, sample)

    def app():
        load_extensions()
        return build_helpdesk_tab(wb, desk["support"])

    port = free_port()
    server = pn.serve({"/helpdesk": app}, port=port, address="127.0.0.1", show=False, threaded=True,
                      websocket_origin=[f"127.0.0.1:{port}"])
    yield {"url": f"http://127.0.0.1:{port}/helpdesk", "wb": wb, "sample": sample, "desk": desk}
    server.stop()
    wb.close()


@needs_chromium[0]
@needs_chromium[1]
def test_support_answers_from_the_helpdesk_view(helpdesk_app, browser):
    desk, wb = helpdesk_app["desk"], helpdesk_app["wb"]
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(helpdesk_app["url"])
    page.locator(".brt-queue-info", has_text="1–2 of 2 tickets").wait_for(timeout=20_000)
    assert "⚠ breached" in page.locator(".tabulator-row", has_text="No dial tone").inner_text()
    page.locator(".tabulator-cell", has_text="No dial tone").click()
    thread = page.locator(".brt-staff-thread")
    thread.wait_for(timeout=10_000)
    assert "INTERNAL NOTE · Sam" in page.locator(".brt-internal-note").inner_text()
    beside = page.locator(".brt-ticket-account").inner_text()
    assert "€36.00" in beside and "SIP trunk C0001" in beside and "FA-2026-000001" in beside

    page.get_by_placeholder("Answer or internal note").fill("Fixed: please try again.")
    page.get_by_role("button", name="Reply to customer").click()
    thread.get_by_text("Fixed: please try again.").wait_for(timeout=10_000)
    page.get_by_placeholder("Answer or internal note").fill("Closed carrier ticket 4711")
    page.get_by_role("button", name="Add internal note").click()
    page.locator(".brt-internal-note", has_text="Closed carrier ticket 4711").wait_for(timeout=10_000)
    page.locator("select").filter(has_text="pending customer").filter(has_not_text="active").select_option(
        "resolved")                                                  # the "New status" select
    page.get_by_role("button", name="Change status").click()
    page.locator(".brt-ticket-status", has_text="resolved").wait_for(timeout=10_000)
    page.close()

    thread = PortalStore(wb, helpdesk_app["sample"].user_ids["alice"]).ticket(desk["a"])
    assert thread.ticket.status == "resolved"
    assert [m.body for m in thread.messages] == ["Since 8 this morning.", "A technician is on it.",
                                                 "Fixed: please try again."]
