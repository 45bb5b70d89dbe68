"""Support requests in the portal: a customer opens a ticket, reads its conversation without the
internal notes and answers; another account's tickets, services and invoices are "not found".
Then the same in headless Chromium against the real server (SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop

from bluerocktel.db.models import Service, User
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.helpdesk import reply
from bluerocktel.portal import PortalStore

SCREENSHOTS = Path(os.environ.get("BLUEROCKTEL_SCREENSHOTS", "/tmp/bluerocktel-screenshots"))


def staff_answers(wb, ticket_id: int, answer: str, note: str) -> None:
    """A support user's public answer and internal note on a ticket."""
    with wb.db.transaction() as s:
        support = s.query(User).filter_by(email="support@bluerock.example").one_or_none()
        if support is None:
            support = User(email="support@bluerock.example", name="Sam", password_hash="-", role="support")
            s.add(support)
            s.flush()
        reply(s, ticket_id, answer, actor=support.email, author_user_id=support.id)
        reply(s, ticket_id, note, actor=support.email, author_user_id=support.id, internal=True)


def test_a_customer_opens_reads_and_answers_their_own_tickets_only(wb, sample):
    alice = PortalStore(wb, sample.user_ids["alice"])
    bob = PortalStore(wb, sample.user_ids["bob"])
    with wb.db.session() as s:
        service_id = s.query(Service.id).filter_by(account_id=sample.account_ids["martin"]).scalar()
    ticket = alice.open_ticket("No dial tone", "Since this morning.", priority="high", service_id=service_id,
                               invoice_id=sample.invoice_ids["martin"])
    assert (ticket.subject, ticket.status, ticket.priority, ticket.service, ticket.invoice) == \
        ("No dial tone", "new", "high", "SIP trunk C0001", "FA-2026-000001")
    staff_answers(wb, ticket.id, "We are on it.", "Carrier outage, ref 4711")

    thread = alice.ticket(ticket.id)
    assert thread.ticket.status == "open"                     # the first staff answer opened it
    assert [(m.author, m.from_staff, m.body) for m in thread.messages] == [
        ("Alice", False, "Since this morning."), ("Sam", True, "We are on it.")]
    alice.reply(ticket.id, "Thanks, still down.")
    assert [m.body for m in alice.ticket(ticket.id).messages][-1] == "Thanks, still down."
    assert [t.id for t in alice.tickets()] == [ticket.id]

    # Bob (Cabinet Durand) sees none of it and cannot reach it
    assert bob.tickets() == []
    with pytest.raises(NotFoundError):
        bob.ticket(ticket.id)
    with pytest.raises(NotFoundError):
        bob.reply(ticket.id, "let me in")
    for other in ({"service_id": service_id}, {"invoice_id": sample.invoice_ids["martin"]}):
        with pytest.raises(NotFoundError):
            bob.open_ticket("Not mine", "Hello", **other)
    with pytest.raises(UserFacingError, match="priority must be one of low, normal, high"):
        bob.open_ticket("Now!", "Hello", priority="urgent")
    assert len(alice.ticket(ticket.id).messages) == 3 and bob.tickets() == []


# --- in headless Chromium ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from sample_operator import PASSWORD, build_sample_operator

    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("portal-support") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)                 # the server's SQLite file, shared with the test
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    sample = build_sample_operator(wb, calls=(3, 1))
    proc, port = start_serve(data_dir, sqlite_env(data_dir))
    yield {"port": port, "password": PASSWORD, "wb": wb, "sample": sample}
    stop(proc)
    wb.close()


@needs_chromium[0]
@needs_chromium[1]
def test_customer_opens_a_ticket_and_sees_the_answer_but_not_the_internal_note(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/login")
    sign_in(page, "alice@martin.example", server["password"])
    page.get_by_text("FA-2026-000001").first.wait_for(timeout=20_000)
    page.locator(".bk-tab", has_text="Assistance").click()
    page.get_by_placeholder("Objet").wait_for(timeout=10_000)
    page.get_by_placeholder("Objet").fill("Fax line silent")
    page.get_by_placeholder("Message").fill("No fax since Monday.")
    page.get_by_role("button", name="Envoyer la demande").click()
    page.locator(".brt-ticket-thread", has_text="No fax since Monday.").wait_for(timeout=10_000)

    alice = PortalStore(server["wb"], server["sample"].user_ids["alice"])
    [ticket] = alice.tickets()
    assert (ticket.subject, ticket.priority) == ("Fax line silent", "normal")
    staff_answers(server["wb"], ticket.id, "Please restart the fax box.", "Customer on old firmware")

    page.get_by_role("button", name="Actualiser").click()
    thread = page.locator(".brt-ticket-thread")
    thread.get_by_text("Please restart the fax box.").wait_for(timeout=10_000)
    assert "Customer on old firmware" not in page.locator("body").inner_text()
    assert "Ouvert" in thread.inner_text()                     # the status, in French
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "portal-support.png"), full_page=True)
    context.close()
