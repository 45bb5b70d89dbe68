"""The staff helpdesk tab: the ticket queue with its SLA columns and the due-soon list, a ticket's
conversation (internal notes marked) with reply / internal note / status / assignment actions
(``tickets:write``), and beside it the account's services, balance and open invoices.

Thin: every read and action is a :class:`~bluerocktel.portal.StaffStore` call, which checks the
permission again whatever the page shows.
"""

from __future__ import annotations

import datetime as dt
import html
from zoneinfo import ZoneInfo

import pandas as pd
import panel as pn

from bluerocktel.errors import UserFacingError
from bluerocktel.money import format_minor
from bluerocktel.portal import QueueRow, StaffStore, StaffTicket
from bluerocktel.security import AuthError, Principal, can
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import TicketPriority, TicketStatus
from portal_app.layout import section_title

QUEUE_PAGE_SIZE = 25
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
BREACHED = "⚠ breached"


def build_helpdesk_tab(wb, principal: Principal) -> pn.viewable.Viewable:
    """The Helpdesk tab of the staff app for ``principal`` (a staff role with ``tickets:read``)."""
    if not can(principal, "tickets:read"):
        return pn.pane.HTML(f"<p style='{FONT}'>Your role may not see tickets.</p>")
    return HelpdeskView(StaffStore(wb), principal).panel()


def _label(value: str) -> str:
    return value.replace("_", " ")


class HelpdeskView:
    def __init__(self, store: StaffStore, principal: Principal):
        self.store, self.principal = store, principal
        self.zone = ZoneInfo(get_setting("default_timezone"))
        self.offset = 0
        self.rows: list[QueueRow] = []
        self.current: int | None = None
        users, teams = store.helpdesk_people()
        self.status = pn.widgets.Select(label="Status", value="active", width=170, options={
            "active (not resolved)": "active", "all": "all", **{_label(s.value): s.value for s in TicketStatus}})
        self.priority = pn.widgets.Select(label="Priority", value="", width=120,
                                          options={"any": "", **{p.value: p.value for p in TicketPriority}})
        self.mine = pn.widgets.Checkbox(label="Assigned to me", margin=(28, 10))
        self.team = pn.widgets.Select(label="Team", value=0, width=160, options={"any": 0, **{n: i for i, n in teams}})
        for widget in (self.status, self.priority, self.mine, self.team):
            widget.param.watch(lambda _: self.show_queue(0), "value")
        self.table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, selectable=1,
                                          sortable=False, sizing_mode="stretch_width", layout="fit_data_stretch")
        self.table.param.watch(lambda _: self._select(), "selection")
        self.info = pn.pane.HTML("", margin=(8, 10))
        self.prev = pn.widgets.Button(label="‹ Previous", width=110)
        self.next = pn.widgets.Button(label="Next ›", width=110)
        self.prev.on_click(lambda _: self.show_queue(self.offset - QUEUE_PAGE_SIZE))
        self.next.on_click(lambda _: self.show_queue(self.offset + QUEUE_PAGE_SIZE))
        self.due = pn.pane.HTML("", sizing_mode="stretch_width")
        self.notice = pn.pane.HTML("", margin=(4, 10))
        self.thread = pn.pane.HTML(f"<p style='{FONT}'>Choose a ticket in the queue.</p>", sizing_mode="stretch_width")
        self.account = pn.pane.HTML("", width=380)
        self.writer = can(principal, "tickets:write")
        self.text = pn.widgets.TextAreaInput(placeholder="Answer or internal note", height=100,
                                             sizing_mode="stretch_width")
        self.reply_button = pn.widgets.Button(label="Reply to customer", color="primary")
        self.note_button = pn.widgets.Button(label="Add internal note", color="warning")
        self.reply_button.on_click(lambda _: self.answer(internal=False))
        self.note_button.on_click(lambda _: self.answer(internal=True))
        self.new_status = pn.widgets.Select(label="New status", width=170,
                                            options={_label(s.value): s.value for s in TicketStatus})
        self.status_button = pn.widgets.Button(label="Change status", margin=(28, 10))
        self.status_button.on_click(lambda _: self.change_status())
        self.assignee = pn.widgets.Select(label="Assignee", width=220,
                                          options={"nobody": 0, **{e: i for i, e in users}})
        self.assign_team = pn.widgets.Select(label="Team", width=160, options={"none": 0, **{n: i for i, n in teams}})
        self.assign_button = pn.widgets.Button(label="Assign", margin=(28, 10))
        self.assign_button.on_click(lambda _: self.assign())
        self.actions = pn.Column(self.text, pn.Row(self.reply_button, self.note_button),
                                 pn.Row(self.new_status, self.status_button, self.assignee, self.assign_team,
                                        self.assign_button),
                                 sizing_mode="stretch_width", visible=False)
        self.show_queue(0)

    def _at(self, moment: dt.datetime | None) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M") if moment else ""

    def show_queue(self, offset: int) -> None:
        page = self.store.ticket_queue(self.principal, status=self.status.value, priority=self.priority.value or None,
                                       assigned_to_me=self.mine.value, team_id=self.team.value or None,
                                       offset=max(0, offset), limit=QUEUE_PAGE_SIZE)
        self.offset, self.rows = page.offset, page.rows
        self.table.value = pd.DataFrame([{
            "#": r.id, "Account": r.account, "Subject": r.subject, "Status": _label(r.status),
            "Priority": r.priority, "Assignee": r.assignee or "", "Team": r.team or "",
            "First response due": self._at(r.first_response_due_at),
            "First response": BREACHED if r.first_response_breached else "",
            "Resolution due": self._at(r.resolution_due_at),
            "Resolution": BREACHED if r.resolution_breached else "",
        } for r in page.rows], columns=["#", "Account", "Subject", "Status", "Priority", "Assignee", "Team",
                                        "First response due", "First response", "Resolution due", "Resolution"])
        last = min(page.offset + page.limit, page.total)
        self.info.object = (f"<span class='brt-queue-info' style='{FONT};color:#5b6472'>"
                            f"{page.offset + 1 if page.total else 0}–{last} of {page.total:,} tickets</span>")
        self.prev.disabled = page.offset == 0
        self.next.disabled = page.offset + page.limit >= page.total
        due = self.store.tickets_due_soon(self.principal)
        items = "".join(f"<li>#{r.id} {html.escape(r.subject)} · {html.escape(r.account)} · due "
                        f"{self._at(r.next_due_at)}"
                        f"{' · ' + BREACHED if r.first_response_breached or r.resolution_breached else ''}</li>"
                        for r in due)
        self.due.object = (f"<div class='brt-due-soon' style='{FONT};font-size:13px'><b>Breached or due within 2 h: "
                           f"{len(due)}</b><ul style='margin:4px 0'>{items}</ul></div>")

    def _select(self) -> None:
        if self.table.selection:
            self.show_ticket(self.rows[self.table.selection[0]].id)

    def show_ticket(self, ticket_id: int) -> None:
        try:
            detail = self.store.helpdesk_ticket(self.principal, ticket_id)
        except (UserFacingError, AuthError) as exc:
            self._say(str(exc), ok=False)
            return
        self.current = ticket_id
        self.thread.object = self._render_thread(detail)
        self.account.object = self._render_account(detail)
        self.actions.visible = self.writer and detail.ticket.status != TicketStatus.CLOSED

    def _render_thread(self, detail: StaffTicket) -> str:
        e, t = html.escape, detail.ticket
        messages = "".join(
            f"<div class='{'brt-internal-note' if m.internal else 'brt-message'}' style='margin:8px 0;"
            f"padding:10px 14px;border-radius:8px;background:{'#fff4d6' if m.internal else '#f6f7f9'};"
            f"border-left:4px solid {'#e0a800' if m.internal else ('#0b3d91' if m.from_staff else '#9aa3b2')}'>"
            f"<div style='font-size:12px;color:#5b6472'>{'INTERNAL NOTE · ' if m.internal else ''}{e(m.author)}"
            f"{' (staff)' if m.from_staff else ''} · {self._at(m.created_at)}</div>"
            f"<div style='white-space:pre-wrap;margin-top:4px'>{e(m.body)}</div></div>" for m in detail.messages)
        sla = (f"first response due {self._at(t.first_response_due_at)}"
               f"{' ' + BREACHED if t.first_response_breached else ''} · resolution due "
               f"{self._at(t.resolution_due_at)}{' ' + BREACHED if t.resolution_breached else ''}")
        return (f"<div class='brt-staff-thread' style='{FONT}'><h3 style='margin:4px 0'>#{t.id} · {e(t.subject)}</h3>"
                f"<div style='font-size:13px;color:#5b6472'>{e(t.account)} · status "
                f"<b class='brt-ticket-status'>{e(_label(t.status))}</b> · {e(t.priority)} · "
                f"assigned to {e(t.assignee or 'nobody')}{' · team ' + e(t.team) if t.team else ''}<br>{sla}</div>"
                f"{messages}</div>")

    @staticmethod
    def _render_account(detail: StaffTicket) -> str:
        e, b = html.escape, detail.balance

        def money(minor: int) -> str:
            return e(format_minor(int(minor), b["currency"], "en"))

        services = "".join(f"<li>{e(s.label)} ({e(s.product)}) · <b>{e(s.status)}</b></li>" for s in detail.services)
        invoices = "".join(f"<li>{e(i.number)} due {i.due_date:%Y-%m-%d} · {money(i.open_minor)} open"
                           f"{' · <b>overdue</b>' if i.standing == 'overdue' else ''}</li>"
                           for i in detail.open_invoices)
        return (f"<div class='brt-ticket-account' style='{FONT};font-size:13px;background:#fff;padding:10px 14px;"
                f"border-radius:8px;box-shadow:0 1px 3px rgba(15,23,42,.08)'>"
                f"<h4 style='margin:4px 0'>Account {e(b['account'])}</h4>"
                f"<div>Balance <b class='brt-balance-due'>{money(b['balance_minor'])}</b> · due {money(b['due_minor'])}"
                f" · overdue {money(b['overdue_minor'])} · credit {money(b['credit_minor'])}</div>"
                f"<h4 style='margin:10px 0 4px'>Services</h4><ul style='margin:0'>{services or '<li>none</li>'}</ul>"
                f"<h4 style='margin:10px 0 4px'>Open invoices</h4>"
                f"<ul style='margin:0'>{invoices or '<li>none</li>'}</ul></div>")

    def _act(self, action, done: str) -> None:
        """Run an action on the current ticket, then show the result and refresh the ticket and the queue."""
        try:
            action()
        except (UserFacingError, AuthError) as exc:
            self._say(str(exc), ok=False)
            return
        self._say(done, ok=True)
        self.show_ticket(self.current)
        self.show_queue(self.offset)

    def answer(self, internal: bool) -> None:
        def action():
            self.store.answer_ticket(self.principal, self.current, self.text.value or "", internal=internal)
            self.text.value = ""
        self._act(action, "Internal note added." if internal else "Reply sent to the customer.")

    def change_status(self) -> None:
        self._act(lambda: self.store.set_ticket_status(self.principal, self.current, self.new_status.value),
                  f"Ticket #{self.current} is now {_label(self.new_status.value)}.")

    def assign(self) -> None:
        self._act(lambda: self.store.assign_ticket(self.principal, self.current, user_id=self.assignee.value or None,
                                                   team_id=self.assign_team.value or None),
                  f"Ticket #{self.current} assigned.")

    def _say(self, text: str, ok: bool) -> None:
        self.notice.object = (f"<div class='brt-helpdesk-notice' style='{FONT};color:{'#1b7a3a' if ok else '#b3261e'}'>"
                              f"{html.escape(text)}</div>")

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self.status, self.priority, self.mine, self.team),
            pn.Row(self.prev, self.next, self.info),
            self.table,
            self.due,
            self.notice,
            pn.Row(pn.Column(self.thread, self.actions, sizing_mode="stretch_width"),
                   pn.Column(section_title("Beside the ticket"), self.account), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
