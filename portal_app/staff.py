"""The staff app (``/staff``): accounts (searchable, paginated on the server) and billing runs."""

from __future__ import annotations

import pandas as pd
import panel as pn

from bluerocktel.portal import StaffStore
from bluerocktel.security import AuthError
from bluerocktel.vocabulary import STAFF_ROLES
from portal_app.identity import page_brand, refused_page, signed_in
from portal_app.layout import header, lazy_tabs, load_extensions, section_title

ACCOUNTS_PAGE_SIZE = 50


def build_staff(wb):
    """The Panel app function of one staff session."""
    load_extensions()
    try:
        principal = signed_in(wb, frozenset(STAFF_ROLES))
    except AuthError:
        return refused_page("Your session has ended.")
    store = StaffStore(wb)
    brand = page_brand(wb)
    pn.state.curdoc.title = f"{brand.name} · Operations"
    return pn.Column(
        header(brand, f"Operations · {principal.role.value.replace('_', ' ')}", principal.email),
        lazy_tabs([("Accounts", lambda: AccountsView(store).panel()),
                   ("Billing runs", lambda: billing_runs_view(store))]),
        sizing_mode="stretch_width", margin=0,
    )


class AccountsView:
    def __init__(self, store: StaffStore):
        self.store = store
        self.offset = 0
        self.search = pn.widgets.TextInput(placeholder="Search name, number, e-mail, city", width=320)
        self.search.param.watch(lambda _: self.show(0), "value")
        self.table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, selectable=False,
                                          sortable=False,
                                          sizing_mode="stretch_width", layout="fit_data_stretch")
        self.info = pn.pane.HTML("", margin=(8, 10))
        self.prev = pn.widgets.Button(label="‹ Previous", width=110)
        self.next = pn.widgets.Button(label="Next ›", width=110)
        self.prev.on_click(lambda _: self.show(self.offset - ACCOUNTS_PAGE_SIZE))
        self.next.on_click(lambda _: self.show(self.offset + ACCOUNTS_PAGE_SIZE))
        self.show(0)

    def show(self, offset: int) -> None:
        page = self.store.accounts(self.search.value or "", offset=max(0, offset), limit=ACCOUNTS_PAGE_SIZE)
        self.offset = page.offset
        self.table.value = pd.DataFrame(
            [{"Number": a.number, "Name": a.name, "Brand": a.brand, "Kind": a.kind, "Status": a.status,
              "City": a.city or "", "E-mail": a.email or ""} for a in page.rows],
            columns=["Number", "Name", "Brand", "Kind", "Status", "City", "E-mail"])
        last = min(page.offset + page.limit, page.total)
        self.info.object = (f"<span style='font-family:system-ui,sans-serif;color:#5b6472'>"
                            f"{page.offset + 1 if page.total else 0}–{last} of {page.total:,} accounts</span>")
        self.prev.disabled = page.offset == 0
        self.next.disabled = page.offset + page.limit >= page.total

    def panel(self):
        return pn.Column(pn.Row(self.search, self.prev, self.next, self.info), self.table,
                         sizing_mode="stretch_width")


def billing_runs_view(store: StaffStore):
    runs = store.billing_runs()
    if not runs:
        return pn.pane.HTML("<p style='padding:16px'>No billing run yet.</p>")
    frame = pd.DataFrame([{
        "Run": r.id, "Period": r.period, "Brand": r.brand_code or "all", "Dry run": "yes" if r.dry_run else "",
        "Status": r.status, "Invoices": "" if r.invoices is None else r.invoices,
        "Started": f"{r.started_at:%Y-%m-%d %H:%M} UTC",
        "Finished": f"{r.finished_at:%Y-%m-%d %H:%M} UTC" if r.finished_at else "",
        "By": r.started_by, "Error": (r.error or "")[:120],
    } for r in runs])
    return pn.Column(section_title(f"{len(runs)} most recent billing runs"),
                     pn.widgets.Tabulator(frame, show_index=False, disabled=True, selectable=False,
                                          sizing_mode="stretch_width", layout="fit_data_stretch"),
                     sizing_mode="stretch_width")
