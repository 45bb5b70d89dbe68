"""The customer portal (``/portal``): the signed-in customer's invoices, calls and services.

A thin view: every number comes from :class:`bluerocktel.portal.PortalStore`, which is scoped to
the customer's account; the call log is fetched one page at a time from the lake.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pandas as pd
import panel as pn

from bluerocktel.money import format_minor
from bluerocktel.portal import PortalStore
from bluerocktel.security import AuthError
from bluerocktel.vocabulary import Role
from portal_app.identity import page_brand, refused_page, signed_in
from portal_app.layout import card, header, lazy_tabs, load_extensions, section_title

CALLS_PAGE_SIZE = 25
CUSTOMER = frozenset({Role.CUSTOMER})


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

    def money(minor: int, currency: str) -> str:
        return format_minor(int(minor), currency, locale)

    # Each tab is built when first opened: a page view costs only what the customer looks at.
    builders = []
    if "invoices" in brand.sections or not brand.sections:
        builders.append(("Invoices", lambda: invoices_view(store, money)))
    if "calls" in brand.sections:
        builders.append(("Call log", lambda: CallLogView(store, summary.timezone, locale, summary.currency).panel()))
    if "services" in brand.sections:
        builders.append(("Services", lambda: services_view(store)))

    cards = pn.Row(
        card("Account", summary.number, summary.name, brand.accent_color),
        card("Unpaid invoices", str(summary.unpaid_invoices), "issued, sent or disputed", brand.accent_color),
        card("Amount due", money(summary.unpaid_total_minor, summary.currency), "incl. VAT", brand.accent_color),
        margin=(10, 18),
    )
    return pn.Column(
        header(brand, "Customer area", principal.email),
        cards,
        lazy_tabs(builders),
        sizing_mode="stretch_width", margin=0,
    )


def invoices_view(store: PortalStore, money) -> pn.viewable.Viewable:
    rows = store.invoices()
    frame = pd.DataFrame([{
        "Number": inv.number,
        "Type": "Credit note" if inv.kind == "credit_note" else "Invoice",
        "Period": f"{inv.period_start:%Y-%m-%d} → {inv.period_end - dt.timedelta(days=1):%Y-%m-%d}",
        "Issued": f"{inv.issue_date:%Y-%m-%d}",
        "Due": f"{inv.due_date:%Y-%m-%d}",
        "Total": money(inv.total_minor, inv.currency),
        "Status": inv.status.replace("_", " ").capitalize(),
        "PDF": f"/portal/invoices/{inv.id}.pdf" if inv.has_pdf else "",
    } for inv in rows], columns=["Number", "Type", "Period", "Issued", "Due", "Total", "Status", "PDF"])
    if frame.empty:
        return pn.pane.HTML("<p style='padding:16px'>No invoice yet.</p>")
    return pn.Column(
        section_title(f"{len(rows)} invoice{'s' if len(rows) != 1 else ''}"),
        pn.widgets.Tabulator(
            frame, show_index=False, disabled=True, sizing_mode="stretch_width", layout="fit_data_stretch",
            pagination="local", page_size=12, selectable=False,
            formatters={"PDF": {"type": "link", "label": "Download PDF"}},
            text_align={"Total": "right"},
        ),
        sizing_mode="stretch_width",
    )


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


def services_view(store: PortalStore) -> pn.viewable.Viewable:
    rows = store.services()
    if not rows:
        return pn.pane.HTML("<p style='padding:16px'>No service on this account.</p>")
    frame = pd.DataFrame([{"Service": s.label, "Product": s.product, "Quantity": s.quantity,
                           "Status": s.status.capitalize(),
                           "Since": f"{s.activated_on:%Y-%m-%d}" if s.activated_on else ""} for s in rows])
    return pn.widgets.Tabulator(frame, show_index=False, disabled=True, sizing_mode="stretch_width",
                                layout="fit_data_stretch", selectable=False)


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
