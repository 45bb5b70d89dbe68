"""The staff app (``/staff``): accounts (searchable, paginated on the server), billing runs, and
the CDR page (upload a file, the file ledger, the quarantine, the CDR sources). Thin: every
read and action is a :class:`~bluerocktel.portal.StaffStore` call."""

from __future__ import annotations

import html

import pandas as pd
import panel as pn

from bluerocktel.errors import UserFacingError
from bluerocktel.portal import StaffStore
from bluerocktel.security import AuthError, can
from bluerocktel.settings import get_setting
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
                   ("Billing runs", lambda: billing_runs_view(store)),
                   ("CDR", lambda: CdrView(store, principal).panel())]),
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


CDR_ROWS = 50
DEFAULT_FORMAT_LABEL = "(the source's format)"


def _table(frame: pd.DataFrame) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(frame, show_index=False, disabled=True, selectable=False, sortable=False,
                                sizing_mode="stretch_width", layout="fit_data_stretch", page_size=CDR_ROWS)


def _message(text: str, ok: bool) -> str:
    colour = "#1b5e20" if ok else "#b71c1c"
    return (f"<pre class='brt-cdr-message' style='white-space:pre-wrap;font-family:ui-monospace,monospace;"
            f"color:{colour};margin:4px 0'>{html.escape(text)}</pre>")


class CdrView:
    """Upload a CDR file, then see the ledger, the quarantine and the sources (StaffStore does it all).

    The file travels over the session's websocket and is imported in the callback: meant for
    the occasional manual file (a few MB); large or regular files go through
    ``POST /api/v1/cdr/files``, ``bluerocktel cdr import`` or a collector.
    """

    def __init__(self, store: StaffStore, principal):
        self.store = store
        self.principal = principal
        self.files = _table(self._files_frame())
        self.quarantine = _table(self._quarantine_frame())
        self.sources = _table(self._sources_frame())
        self.source = pn.widgets.Select(name="Source", width=220)
        self.format = pn.widgets.Select(name="Format", width=220,
                                        options=[DEFAULT_FORMAT_LABEL] + store.cdr_formats())
        self.file = pn.widgets.FileInput(name="CDR file", accept=".csv,.json,.xml,.txt,.cdr,.ber,.asn1,.gz,.zip",
                                         width=320)
        self.import_button = pn.widgets.Button(name="Import", button_type="primary", width=110)
        self.import_button.on_click(lambda _: self.upload())
        self.file.param.watch(lambda _: self.file_chosen(), "value")
        self.summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.new_name = pn.widgets.TextInput(name="Name", placeholder="pbx-paris", width=160)
        self.new_format = pn.widgets.Select(name="Its format", options=store.cdr_formats(), width=170)
        self.new_url = pn.widgets.TextInput(name="URL (empty: pushed or uploaded)",
                                            placeholder="sftp://cdr@pbx.example:22/var/log/asterisk/cdr-csv",
                                            width=340)
        self.new_timezone = pn.widgets.TextInput(name="Time zone", value=get_setting("default_timezone"), width=150)
        self.new_country = pn.widgets.TextInput(name="Country", value=get_setting("default_country"), width=80)
        self.new_options = pn.widgets.TextAreaInput(name="Options (JSON)", value="{}", height=70, width=340)
        self.add_button = pn.widgets.Button(name="Add source", button_type="primary", width=120)
        self.add_button.on_click(lambda _: self.add_source())
        self.add_result = pn.pane.HTML("", sizing_mode="stretch_width")
        self._fill_sources()

    def _fill_sources(self) -> None:
        names = [src.name for src in self.store.cdr_sources()]
        self.source.options = names
        if names and self.source.value not in names:
            self.source.value = names[0]

    def _files_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "Received": f"{f.received_at:%Y-%m-%d %H:%M:%S}", "Source": f.source, "Collector": f.collector,
            "File": f.file_name, "Format": f.format, "Status": f.status, "Records": f.received,
            "Imported": f.imported, "Duplicates": f.duplicates, "Quarantined": f.quarantined,
            "Duration": "" if f.duration_ms is None else f"{f.duration_ms / 1000:.2f} s",
            "Error": (f.error or "")[:120],
        } for f in self.store.cdr_files(CDR_ROWS)], columns=[
            "Received", "Source", "Collector", "File", "Format", "Status", "Records", "Imported", "Duplicates",
            "Quarantined", "Duration", "Error"])

    def _quarantine_frame(self) -> pd.DataFrame:
        page = self.store.cdr_quarantine(CDR_ROWS)
        return pd.DataFrame([{
            "Quarantined": f"{r['quarantined_at']:%Y-%m-%d %H:%M:%S}", "Source": r["source"],
            "Where": f"{r['source_file']}:{r['source_line']}", "Reason": r["reason"], "Raw": (r["raw"] or "")[:160],
        } for r in page.rows], columns=["Quarantined", "Source", "Where", "Reason", "Raw"])

    def _sources_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "Source": src.name, "Format": src.format, "URL": src.url or "(pushed / uploaded)",
            "Time zone": src.timezone, "Country": src.country, "Enabled": "yes" if src.enabled else "no",
            "Last run": f"{src.last_run_at:%Y-%m-%d %H:%M} UTC" if src.last_run_at else "",
            "Last status": src.last_status or "", "Last error": (src.last_error or "")[:120],
        } for src in self.store.cdr_sources()], columns=[
            "Source", "Format", "URL", "Time zone", "Country", "Enabled", "Last run", "Last status", "Last error"])

    def refresh(self) -> None:
        self.files.value = self._files_frame()
        self.quarantine.value = self._quarantine_frame()
        self.sources.value = self._sources_frame()

    def file_chosen(self) -> None:
        if self.file.value:
            self.summary.object = _message(f"{self.file.filename}: {len(self.file.value):,} bytes received, "
                                           "ready to import.", ok=True)

    def upload(self) -> None:
        if not self.file.value:
            self.summary.object = _message("Choose a CDR file first.", ok=False)
            return
        fmt = None if self.format.value == DEFAULT_FORMAT_LABEL else self.format.value
        try:
            result = self.store.upload_cdr_file(self.principal, source=self.source.value or "",
                                                file_name=self.file.filename or "upload", data=self.file.value,
                                                format=fmt)
        except (UserFacingError, AuthError) as exc:
            self.summary.object = _message(str(exc), ok=False)
            return
        self.summary.object = _message(result.describe(), ok=True)
        self.refresh()

    def add_source(self) -> None:
        try:
            row = self.store.add_cdr_source(self.principal, name=self.new_name.value, format=self.new_format.value,
                                            url=self.new_url.value, timezone=self.new_timezone.value,
                                            country=self.new_country.value, options=self.new_options.value)
        except (UserFacingError, AuthError) as exc:
            self.add_result.object = _message(str(exc), ok=False)
            return
        self.add_result.object = _message(f"CDR source {row.name} added ({row.format}).", ok=True)
        self.new_name.value = ""
        self._fill_sources()
        self.refresh()

    def panel(self):
        parts = []
        if can(self.principal, "cdrs:import"):
            parts += [section_title("Import a CDR file"),
                      pn.Row(self.file, self.source, self.format, self.import_button),
                      self.summary]
        parts += [section_title(f"File ledger (latest {CDR_ROWS})"), self.files,
                  section_title(f"Quarantine (latest {CDR_ROWS})"), self.quarantine,
                  section_title("CDR sources"), self.sources]
        if can(self.principal, "cdrs:sources"):
            parts += [section_title("Add a CDR source"),
                      pn.Row(self.new_name, self.new_format, self.new_url, self.new_timezone, self.new_country),
                      pn.Row(self.new_options, self.add_button), self.add_result]
        return pn.Column(*parts, sizing_mode="stretch_width")
