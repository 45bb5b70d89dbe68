"""The customer portal (``/portal``): the signed-in customer's invoices and credit notes, balance,
statement and payments, calls, services and contracts, and support requests.

A thin view: every number comes from :class:`bluerocktel.portal.PortalStore`, which is scoped to
the customer's account; the call log is fetched one page at a time from the lake. Labels follow
the account's language (:data:`TEXTS`, French or English).
"""

from __future__ import annotations

import datetime as dt
import html
from zoneinfo import ZoneInfo

import pandas as pd
import panel as pn

from bluerocktel.errors import UserFacingError
from bluerocktel.money import format_minor
from bluerocktel.portal import CUSTOMER_PRIORITIES, PortalStore, TicketThread
from bluerocktel.security import AuthError
from bluerocktel.vocabulary import Role
from portal_app.identity import page_brand, refused_page, signed_in
from portal_app.layout import card, header, lazy_tabs, load_extensions, section_title

CALLS_PAGE_SIZE = 25
CUSTOMER = frozenset({Role.CUSTOMER})

TEXTS = {
    "fr": {
        "account": "Compte", "due": "Reste à payer", "due_note": "TTC · {n} facture(s) ouverte(s)",
        "overdue": "En retard", "overdue_note": "échéance dépassée", "credit": "Avoir disponible",
        "credit_note_label": "paiements et avoirs non imputés",
        "invoice": "Facture", "credit_note": "Avoir", "number": "Numéro", "type": "Type", "corrects": "Corrige",
        "period": "Période", "issued": "Émise le", "due_date": "Échéance", "total": "Total", "to_pay": "Reste dû",
        "status": "Statut", "no_invoice": "Aucune facture pour l'instant.",
        "call_detail": "Détail des appels", "call_detail_link": "Télécharger",
        "standing": {"credit_note": "Avoir", "credited": "Annulée par avoir", "paid": "Payée",
                     "disputed": "Contestée", "overdue": "En retard", "partially_paid": "Partiellement payée",
                     "to_pay": "À payer"},
        "account_tab": "Relevé et paiements", "statement": "Relevé de compte depuis le {start}", "date": "Date",
        "reference": "Référence", "description": "Libellé", "debit": "Débit", "credit_col": "Crédit",
        "balance": "Solde",
        "movement": {"opening": "Solde d'ouverture", "invoice": "Facture", "credit_note": "Avoir",
                     "payment": "Paiement", "return": "Paiement rejeté"},
        "payments": "Paiements", "amount": "Montant", "method": "Moyen", "settles": "Factures réglées",
        "no_payment": "Aucun paiement enregistré.",
        "payment_status": {"received": "Reçu", "returned": "Rejeté"},
        "methods": {"transfer": "Virement", "sepa_debit": "Prélèvement SEPA", "card": "Carte", "cheque": "Chèque"},
        "service": "Service", "product": "Produit", "quantity": "Quantité", "since": "Depuis", "contract": "Contrat",
        "no_service": "Aucun service sur ce compte.", "contracts": "Contrats", "start": "Début",
        "commitment_end": "Fin d'engagement", "notice_deadline": "Préavis avant le", "auto_renew": "Reconduction",
        "yes": "Oui", "no": "Non", "no_contract": "Aucun contrat.",
        "service_status": {"ordered": "Commandé", "active": "Actif", "suspended": "Suspendu",
                           "terminated": "Résilié"},
        "support_tab": "Assistance", "new_request": "Nouvelle demande", "subject": "Objet", "message": "Message",
        "priority": "Priorité", "about": "Concerne", "nothing": "—", "send_request": "Envoyer la demande",
        "priorities": {"low": "Basse", "normal": "Normale", "high": "Haute", "urgent": "Urgente"},
        "requests": "Vos demandes", "no_request": "Aucune demande.", "updated": "Mise à jour",
        "reply": "Répondre", "refresh": "Actualiser", "your_answer": "Votre réponse",
        "choose": "Choisissez une demande dans la liste.", "support_team": "Assistance",
        "ticket_status": {"new": "Nouveau", "open": "Ouvert", "pending_customer": "En attente de votre réponse",
                          "resolved": "Résolu", "closed": "Fermé"},
        "sent": "Demande n° {id} envoyée.", "replied": "Réponse envoyée.",
    },
    "en": {
        "account": "Account", "due": "Amount due", "due_note": "incl. VAT · {n} open invoice(s)",
        "overdue": "Overdue", "overdue_note": "past the due date", "credit": "Credit",
        "credit_note_label": "payments and credit notes not yet applied",
        "invoice": "Invoice", "credit_note": "Credit note", "number": "Number", "type": "Type",
        "corrects": "Corrects", "period": "Period", "issued": "Issued", "due_date": "Due", "total": "Total",
        "to_pay": "To pay", "status": "Status", "no_invoice": "No invoice yet.",
        "call_detail": "Call detail", "call_detail_link": "Download",
        "standing": {"credit_note": "Credit note", "credited": "Cancelled by credit note", "paid": "Paid",
                     "disputed": "Disputed", "overdue": "Overdue", "partially_paid": "Partially paid",
                     "to_pay": "To pay"},
        "account_tab": "Statement and payments", "statement": "Statement since {start}", "date": "Date",
        "reference": "Reference", "description": "Description", "debit": "Debit", "credit_col": "Credit",
        "balance": "Balance",
        "movement": {"opening": "Opening balance", "invoice": "Invoice", "credit_note": "Credit note",
                     "payment": "Payment", "return": "Payment returned"},
        "payments": "Payments", "amount": "Amount", "method": "Method", "settles": "Invoices settled",
        "no_payment": "No payment recorded.",
        "payment_status": {"received": "Received", "returned": "Returned"},
        "methods": {"transfer": "Transfer", "sepa_debit": "SEPA direct debit", "card": "Card", "cheque": "Cheque"},
        "service": "Service", "product": "Product", "quantity": "Quantity", "since": "Since", "contract": "Contract",
        "no_service": "No service on this account.", "contracts": "Contracts", "start": "Start",
        "commitment_end": "Commitment end", "notice_deadline": "Notice by", "auto_renew": "Auto-renew",
        "yes": "Yes", "no": "No", "no_contract": "No contract.",
        "service_status": {"ordered": "Ordered", "active": "Active", "suspended": "Suspended",
                           "terminated": "Terminated"},
        "support_tab": "Support", "new_request": "New request", "subject": "Subject", "message": "Message",
        "priority": "Priority", "about": "About", "nothing": "—", "send_request": "Send the request",
        "priorities": {"low": "Low", "normal": "Normal", "high": "High", "urgent": "Urgent"},
        "requests": "Your requests", "no_request": "No request.", "updated": "Updated",
        "reply": "Reply", "refresh": "Refresh", "your_answer": "Your answer",
        "choose": "Choose a request in the list.", "support_team": "Support",
        "ticket_status": {"new": "New", "open": "Open", "pending_customer": "Waiting for your answer",
                          "resolved": "Resolved", "closed": "Closed"},
        "sent": "Request #{id} sent.", "replied": "Answer sent.",
    },
}
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def build_portal(wb):
    """The Panel app function of one portal session."""
    load_extensions()
    try:
        principal = signed_in(wb, CUSTOMER)
        store = PortalStore(wb, principal.user_id)
    except AuthError:
        return refused_page("Your session has ended.")
    summary = store.account_summary()
    brand = page_brand(wb, summary.brand_id)
    pn.state.curdoc.title = f"{brand.name} · Customer area"
    locale = "fr" if summary.language == "fr" else "en"

    texts = TEXTS[locale]
    zone = ZoneInfo(summary.timezone or "UTC")

    def money(minor: int, currency: str = summary.currency) -> str:
        return format_minor(int(minor), currency, locale)

    # Each tab is built when first opened: a page view costs only what the customer looks at.
    builders = []
    if "invoices" in brand.sections or not brand.sections:
        builders.append(("Invoices", lambda: invoices_view(store, money, texts)))
        builders.append((texts["account_tab"], lambda: account_view(store, money, texts)))
    if "calls" in brand.sections:
        builders.append(("Call log", lambda: CallLogView(store, summary.timezone, locale, summary.currency).panel()))
    if "services" in brand.sections:
        builders.append(("Services", lambda: services_view(store, texts)))
    builders.append((texts["support_tab"], lambda: SupportView(store, texts, zone).panel()))

    balance = store.balance()
    cards = pn.pane.HTML(
        "<div class='brt-balance' style='display:flex;flex-wrap:wrap'>" + "".join(
            card(*args, brand.accent_color).object for args in (
            (texts["account"], summary.number, summary.name),
            (texts["due"], money(balance["due_minor"]), texts["due_note"].format(n=balance["open_invoices"])),
            (texts["overdue"], money(balance["overdue_minor"]), texts["overdue_note"]),
            (texts["credit"], money(balance["credit_minor"]), texts["credit_note_label"]),
        )) + "</div>", margin=(10, 18), sizing_mode="stretch_width")
    return pn.Column(
        header(brand, "Customer area", principal.email),
        cards,
        lazy_tabs(builders),
        sizing_mode="stretch_width", margin=0,
    )


def invoices_view(store: PortalStore, money, texts: dict) -> pn.viewable.Viewable:
    """Invoices and credit notes ("Avoir" naming the invoice it corrects), what is left to pay and
    where each stands (paid, partially paid, overdue), with the PDF download."""
    rows = store.invoices()
    if not rows:
        return pn.pane.HTML(f"<p style='padding:16px'>{texts['no_invoice']}</p>")
    columns = [texts[k] for k in ("number", "type", "corrects", "period", "issued", "due_date", "total", "to_pay",
                                  "status")] + ["PDF", texts["call_detail"]]
    is_note = {inv.id: inv.kind == "credit_note" for inv in rows}
    frame = pd.DataFrame([[
        inv.number,
        texts["credit_note" if is_note[inv.id] else "invoice"],
        inv.credits_number or "",
        f"{inv.period_start:%Y-%m-%d} → {inv.period_end - dt.timedelta(days=1):%Y-%m-%d}",
        f"{inv.issue_date:%Y-%m-%d}",
        "" if is_note[inv.id] else f"{inv.due_date:%Y-%m-%d}",
        money(inv.total_minor, inv.currency),
        "" if is_note[inv.id] else money(inv.open_minor, inv.currency),
        texts["standing"][inv.standing],
        f"/portal/invoices/{inv.id}.pdf" if inv.has_pdf else "",
        "" if is_note[inv.id] or not inv.has_pdf else f"/portal/invoices/{inv.id}-annex.pdf",
    ] for inv in rows], columns=columns)
    return pn.Column(
        section_title(f"{len(rows)} document{'s' if len(rows) != 1 else ''}"),
        pn.widgets.Tabulator(
            frame, show_index=False, disabled=True, sizing_mode="stretch_width", layout="fit_data_stretch",
            pagination="local", page_size=12, selectable=False,
            formatters={"PDF": {"type": "link", "label": "Download PDF"},
                        texts["call_detail"]: {"type": "link", "label": texts["call_detail_link"]}},
            text_align={texts["total"]: "right", texts["to_pay"]: "right"},
        ),
        sizing_mode="stretch_width",
    )


def account_view(store: PortalStore, money, texts: dict) -> pn.viewable.Viewable:
    """The statement of the last 12 months (running balance) and the payments."""
    lines = store.statement()
    statement = html_table("brt-statement", [texts[k] for k in ("date", "type", "reference", "description", "debit",
                                                                "credit_col", "balance")], [[
        f"{ln['date']:%Y-%m-%d}", texts["movement"][ln["kind"]], ln["reference"],
        texts["methods"].get(ln["description"], ln["description"]) if ln["kind"] == "payment" else ln["description"],
        money(ln["debit_minor"]) if ln["debit_minor"] else "", money(ln["credit_minor"]) if ln["credit_minor"] else "",
        money(ln["balance_minor"])] for ln in lines], right=(4, 5, 6))
    payments = store.payments()
    payment_table = html_table("brt-payments", [texts[k] for k in ("date", "amount", "method", "reference", "status",
                                                                   "settles")], [[
        f"{p.received_on:%Y-%m-%d}", money(p.amount_minor, p.currency), texts["methods"].get(p.method, p.method),
        p.reference,
        texts["payment_status"].get(p.status, p.status) + (f" {p.returned_on:%Y-%m-%d}" if p.returned_on else ""),
        ", ".join(p.settled)] for p in payments], right=(1,)) if payments else \
        f"<p class='brt-payments' style='{FONT}'>{texts['no_payment']}</p>"
    return pn.Column(
        section_title(texts["statement"].format(start=f"{lines[0]['date']:%Y-%m-%d}")),
        pn.pane.HTML(statement, sizing_mode="stretch_width"),
        section_title(texts["payments"]),
        pn.pane.HTML(payment_table, sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )


def html_table(css_class: str, columns: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> str:
    """A small static table (a statement, a payment list): lighter than a Tabulator; text escaped."""
    def cell(tag: str, i: int, value: str) -> str:
        align = "right" if i in right else "left"
        return (f"<{tag} style='text-align:{align};padding:6px 10px;border-bottom:1px solid #e3e7ee'>"
                f"{html.escape(str(value))}</{tag}>")

    head = "".join(cell("th", i, c) for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return (f"<table class='{css_class}' style='border-collapse:collapse;{FONT};font-size:14px;background:#fff;"
            f"width:100%'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


class CallLogView:
    """The call log, paginated on the server: one DuckDB query per page, newest calls first."""

    def __init__(self, store: PortalStore, timezone: str, locale: str, currency: str):
        self.store = store
        self.price_column = f"Price ({currency})"
        self.zone = ZoneInfo(timezone or "UTC")
        self.locale = locale
        self.offset = 0
        # Not sortable: a click would sort only the page on screen, not the call log.
        self.table = pn.widgets.Tabulator(self._frame([]), show_index=False, disabled=True, sortable=False,
                                          sizing_mode="stretch_width", layout="fit_data_stretch", selectable=False,
                                          text_align={"Duration": "right", self.price_column: "right"})
        self.info = pn.pane.HTML("", margin=(8, 10))
        self.prev = pn.widgets.Button(label="‹ Newer", width=100, disabled=True)
        self.next = pn.widgets.Button(label="Older ›", width=100, disabled=True)
        self.prev.on_click(lambda _: self.show(self.offset - CALLS_PAGE_SIZE))
        self.next.on_click(lambda _: self.show(self.offset + CALLS_PAGE_SIZE))
        self.show(0)

    def show(self, offset: int) -> None:
        page = self.store.calls(offset=max(0, offset), limit=CALLS_PAGE_SIZE)
        self.offset = page.offset
        self.table.value = self._frame(page.rows)
        self.info.object = (f"<span class='brt-calls-info' style='font-family:system-ui,sans-serif;color:#5b6472'>"
                            f"Page {page.page} of {page.pages} · {page.total:,} calls</span>")
        self.prev.disabled = page.offset == 0
        self.next.disabled = page.offset + page.limit >= page.total

    def _frame(self, rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame([{
            "Date": r["start_at"].astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S") if r["start_at"] else "",
            "From": r["caller"],
            "To": r["callee"],
            "Destination": r["destination"] or "",
            "Type": r["call_type"],
            "Result": (r["disposition"] or "").capitalize(),
            "Duration": _duration(r["billsec_s"]),
            self.price_column: _micro(r["price_micro"], self.locale),
        } for r in rows], columns=["Date", "From", "To", "Destination", "Type", "Result", "Duration",
                                   self.price_column])

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.prev, self.next, self.info), self.table, sizing_mode="stretch_width")


def services_view(store: PortalStore, texts: dict) -> pn.viewable.Viewable:
    """The services (status, contract) and beside them the contracts with their notice deadline."""
    rows = store.services()
    services = html_table("brt-services", [texts[k] for k in ("service", "product", "quantity", "status", "since",
                                                              "contract")], [[
        s.label, s.product, s.quantity, texts["service_status"].get(s.status, s.status),
        f"{s.activated_on:%Y-%m-%d}" if s.activated_on else "", s.contract or ""] for s in rows], right=(2,)) \
        if rows else f"<p style='{FONT}'>{texts['no_service']}</p>"
    contracts = store.contracts()
    contract_table = html_table("brt-contracts", [texts[k] for k in ("contract", "start", "commitment_end",
                                                                     "notice_deadline", "auto_renew")], [[
        c.reference, f"{c.start_date:%Y-%m-%d}", f"{c.commitment_end:%Y-%m-%d}" if c.commitment_end else "",
        f"{c.notice_deadline:%Y-%m-%d}" if c.notice_deadline else "", texts["yes" if c.auto_renew else "no"]]
        for c in contracts]) if contracts else f"<p style='{FONT}'>{texts['no_contract']}</p>"
    return pn.Row(
        pn.Column(section_title(texts["service"] + "s"), pn.pane.HTML(services, sizing_mode="stretch_width"),
                  sizing_mode="stretch_width"),
        pn.Column(section_title(texts["contracts"]), pn.pane.HTML(contract_table, sizing_mode="stretch_width"),
                  sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )


class SupportView:
    """The customer's support requests: open one, read a conversation (never the internal notes)
    and answer it. Every read and write goes through the account-scoped PortalStore."""

    def __init__(self, store: PortalStore, texts: dict, zone: ZoneInfo):
        self.store, self.texts, self.zone = store, texts, zone
        self.current: int | None = None
        self.subject = pn.widgets.TextInput(placeholder=texts["subject"], sizing_mode="stretch_width")
        self.body = pn.widgets.TextAreaInput(placeholder=texts["message"], height=120, sizing_mode="stretch_width")
        self.priority = pn.widgets.Select(label=texts["priority"], value="normal",
                                          options={texts["priorities"][p]: p for p in CUSTOMER_PRIORITIES})
        self.about = pn.widgets.Select(label=texts["about"], options=self._about_options())
        self.send = pn.widgets.Button(label=texts["send_request"], color="primary")
        self.send.on_click(lambda _: self.open_ticket())
        self.notice = pn.pane.HTML("", margin=(4, 10))
        self.table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, selectable=1,
                                          sortable=False, sizing_mode="stretch_width", layout="fit_data_stretch")
        self.table.param.watch(lambda _: self._select(), "selection")
        self.thread = pn.pane.HTML(f"<p style='{FONT}'>{texts['choose']}</p>", sizing_mode="stretch_width")
        self.answer = pn.widgets.TextAreaInput(placeholder=texts["your_answer"], height=90,
                                               sizing_mode="stretch_width", visible=False)
        self.reply_button = pn.widgets.Button(label=texts["reply"], color="primary", visible=False)
        self.reply_button.on_click(lambda _: self.reply())
        self.refresh_button = pn.widgets.Button(label=texts["refresh"])
        self.refresh_button.on_click(lambda _: self.refresh())
        self.tickets = []
        self.refresh()

    def _about_options(self) -> dict:
        options = {self.texts["nothing"]: ""}
        options.update({f"{self.texts['service']} · {s.label}": f"service:{s.id}" for s in self.store.services()})
        options.update({f"{self.texts['credit_note' if i.kind == 'credit_note' else 'invoice']} · {i.number}":
                        f"invoice:{i.id}" for i in self.store.invoices(limit=24)})
        return options

    def refresh(self) -> None:
        self.tickets = self.store.tickets()
        t = self.texts
        self.table.value = pd.DataFrame([{
            "#": r.id, t["subject"]: r.subject, t["status"]: t["ticket_status"].get(r.status, r.status),
            t["priority"]: t["priorities"].get(r.priority, r.priority), t["updated"]: self._at(r.updated_at),
        } for r in self.tickets], columns=["#", t["subject"], t["status"], t["priority"], t["updated"]])
        if self.current is not None:
            self.show(self.current)

    def _select(self) -> None:
        if self.table.selection:
            self.show(self.tickets[self.table.selection[0]].id)

    def show(self, ticket_id: int) -> None:
        try:
            thread = self.store.ticket(ticket_id)
        except UserFacingError as exc:
            self._say(str(exc), ok=False)
            return
        self.current = ticket_id
        self.thread.object = self._render(thread)
        open_ = thread.ticket.status != "closed"
        self.answer.visible = self.reply_button.visible = open_

    def _render(self, thread: TicketThread) -> str:
        e, t, tk = html.escape, self.texts, thread.ticket
        about = " · ".join(x for x in (tk.service, tk.invoice) if x)
        messages = "".join(
            f"<div style='margin:8px 0;padding:10px 14px;border-radius:8px;"
            f"background:{'#eef4ff' if m.from_staff else '#f6f7f9'}'>"
            f"<div style='font-size:12px;color:#5b6472'>"
            f"{e(t['support_team'] + ' · ' + m.author if m.from_staff else m.author)} · {self._at(m.created_at)}</div>"
            f"<div style='white-space:pre-wrap;margin-top:4px'>{e(m.body)}</div></div>" for m in thread.messages)
        return (f"<div class='brt-ticket-thread' style='{FONT}'>"
                f"<h3 style='margin:4px 0'>#{tk.id} · {e(tk.subject)}</h3>"
                f"<div style='color:#5b6472;font-size:13px'>{e(t['status'])} : "
                f"<b class='brt-ticket-status'>{e(t['ticket_status'].get(tk.status, tk.status))}</b> · "
                f"{e(t['priority'])} : {e(t['priorities'].get(tk.priority, tk.priority))}"
                f"{' · ' + e(about) if about else ''}</div>{messages}</div>")

    def open_ticket(self) -> None:
        kind, _, object_id = (self.about.value or "").partition(":")
        try:
            row = self.store.open_ticket(self.subject.value or "", self.body.value or "", self.priority.value,
                                         service_id=int(object_id) if kind == "service" else None,
                                         invoice_id=int(object_id) if kind == "invoice" else None)
        except UserFacingError as exc:
            self._say(str(exc), ok=False)
            return
        self.subject.value = self.body.value = ""
        self._say(self.texts["sent"].format(id=row.id), ok=True)
        self.current = row.id
        self.refresh()

    def reply(self) -> None:
        try:
            self.store.reply(self.current, self.answer.value or "")
        except UserFacingError as exc:
            self._say(str(exc), ok=False)
            return
        self.answer.value = ""
        self._say(self.texts["replied"], ok=True)
        self.refresh()

    def _say(self, text: str, ok: bool) -> None:
        self.notice.object = (f"<div class='brt-support-notice' style='{FONT};color:{'#1b7a3a' if ok else '#b3261e'}'>"
                              f"{html.escape(text)}</div>")

    def _at(self, moment: dt.datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def panel(self) -> pn.viewable.Viewable:
        t = self.texts
        form = pn.Column(section_title(t["new_request"]), self.subject, self.body, pn.Row(self.priority, self.about),
                         self.send, width=420)
        return pn.Column(
            self.notice,
            pn.Row(form, pn.Column(section_title(t["requests"]), self.refresh_button, self.table,
                                   sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            self.thread, self.answer, self.reply_button,
            sizing_mode="stretch_width",
        )


def _duration(seconds: int | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _micro(price_micro: int | None, locale: str) -> str:
    """A per-call price (micro units) with 4 decimals, rounded half up, e.g. ``0,0123``."""
    if price_micro is None:
        return ""
    ten_thousandths, rest = divmod(abs(int(price_micro)), 100)
    ten_thousandths += 1 if rest >= 50 else 0
    whole, frac = divmod(ten_thousandths, 10_000)
    sep = "," if locale == "fr" else "."
    return f"{'-' if price_micro < 0 else ''}{whole}{sep}{frac:04d}"
