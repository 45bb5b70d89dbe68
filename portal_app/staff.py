"""The staff app (``/staff``): accounts (searchable, paginated on the server), billing runs (state,
approval, executed notebook, control report; data from :mod:`bluerocktel.billing.report`), the
CDR page (upload a file, the file ledger, the quarantine, the CDR sources) and the Rating page
(the unrated queue, rated CDRs and their traces, anomalies of the last 7 days with a CSV export;
roles with ``rating:read``). Thin: every read and action is a
:class:`~bluerocktel.portal.StaffStore` call."""

from __future__ import annotations

import datetime as dt
import html
import io

import pandas as pd
import panel as pn

from bluerocktel.billing.approval import approve_run
from bluerocktel.billing.report import billing_run_rows, notebook_html, report_file
from bluerocktel.errors import UserFacingError
from bluerocktel.portal import StaffStore
from bluerocktel.rating.anomalies import format_amount
from bluerocktel.security import AuthError, can
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import STAFF_ROLES, RatingStatus
from portal_app.identity import page_brand, refused_page, signed_in
from portal_app.helpdesk import build_helpdesk_tab
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
    wanted = linked_account(pn.state.session_args)
    tabs = [("Accounts", lambda: AccountsView(store, wanted).panel()),
            ("Billing runs", lambda: BillingRunsView(wb, principal).panel()),
            ("CDR", lambda: CdrView(store, principal).panel())]
    if can(principal, "rating:read"):
        tabs.append(("Rating", lambda: RatingView(store, principal).panel()))
    if can(principal, "tickets:read"):
        tabs.append(("Helpdesk", lambda: build_helpdesk_tab(wb, principal)))
    return pn.Column(
        header(brand, f"Operations · {principal.role.value.replace('_', ' ')}", principal.email),
        lazy_tabs(tabs),
        sizing_mode="stretch_width", margin=0,
    )


def linked_account(session_args: dict) -> str:
    """The account number of a ``/staff?account=C0001`` link (3CX opens those), else ''."""
    values = session_args.get("account") or [b""]
    value = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else str(values[0])
    return value.strip()[:32]


class AccountsView:
    def __init__(self, store: StaffStore, search: str = ""):
        self.store = store
        self.offset = 0
        self.search = pn.widgets.TextInput(value=search, placeholder="Search name, number, e-mail, city", width=320)
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


class BillingRunsView:
    """The billing runs: their state, approval, executed notebook and control report.

    Data from :mod:`bluerocktel.billing.report`; approving is
    :func:`bluerocktel.billing.approval.approve_run` (shown to roles with ``billing:issue``).
    """

    def __init__(self, wb, principal):
        self.wb = wb
        self.principal = principal
        self.may_approve = can(principal, "billing:issue")
        self.table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, selectable=False,
                                          sortable=False, sizing_mode="stretch_width", layout="fit_data_stretch")
        self.run = pn.widgets.Select(name="Run", width=320)
        self.run.param.watch(lambda _: self.show_run(), "value")
        self.detail = pn.pane.HTML("", sizing_mode="stretch_width")
        self.notebook_button = pn.widgets.Button(name="Show notebook", width=140)
        self.notebook_button.on_click(lambda _: self.show_notebook())
        self.report = pn.widgets.FileDownload(callback=self._report, label="Download control report",
                                              filename="control_report.xlsx", button_type="default", width=220)
        self.approve_button = pn.widgets.Button(name="Approve", button_type="primary", width=120, visible=False)
        self.approve_button.on_click(lambda _: self.approve())
        self.message = pn.pane.HTML("", sizing_mode="stretch_width")
        self.notebook = pn.pane.HTML("", sizing_mode="stretch_width", min_height=0)
        self.refresh()

    def refresh(self) -> None:
        self.rows = {r["id"]: r for r in billing_run_rows(self.wb)}
        self.table.value = pd.DataFrame([{
            "Run": r["id"], "Period": r["period"], "Brand": r["brand"], "Kind": "dry run" if r["dry_run"] else "issue",
            "Status": r["status"], "Step": r["step"], "Approved by": r["approved_by"], "Totals": r["totals"],
            "Invoices": "" if r["invoices"] is None else r["invoices"], "Anomalies": r["anomalies"],
            "Started": f"{r['started_at']:%Y-%m-%d %H:%M} UTC", "By": r["started_by"], "Error": r["error"][:120],
        } for r in self.rows.values()], columns=["Run", "Period", "Brand", "Kind", "Status", "Step", "Approved by",
                                                  "Totals", "Invoices", "Anomalies", "Started", "By", "Error"])
        current = self.run.value
        self.run.options = {f"{r['id']} · {r['period']} · {'dry run' if r['dry_run'] else 'issue'}": r["id"]
                            for r in self.rows.values()}
        self.run.value = current if current in self.rows else next(iter(self.rows), None)
        self.show_run()

    def show_run(self) -> None:
        row = self.rows.get(self.run.value)
        self.notebook.object = ""
        self.notebook_button.disabled = row is None or not row["notebook_path"]
        self.report.disabled = row is None or not row["report_path"]
        self.approve_button.visible = bool(row and self.may_approve and row["approvable"])
        if row is None:
            self.detail.object = "<p style='font-family:system-ui,sans-serif'>No billing run yet.</p>"
            return
        if row["approved_at"]:
            approval = f"approved by {row['approved_by']} at {row['approved_at']:%Y-%m-%d %H:%M} UTC"
        elif row["dry_run"]:
            approval = "not approved"
        else:
            approval = f"approved dry run: {row['approved_run_id'] or 'none'}"
        self.detail.object = (
            f"<div class='brt-run-detail' style='font-family:system-ui,sans-serif'><b>Run {row['id']}</b> · "
            f"{html.escape(row['period'])} · brand {html.escape(row['brand'])} · "
            f"{'dry run' if row['dry_run'] else 'issue'} · last step {html.escape(row['step'] or '-')} · "
            f"{row['anomalies']} anomalies · "
            f"{html.escape(row['totals'] or 'no total')} · <span class='brt-run-approval'>{html.escape(approval)}"
            f"</span></div>")

    def show_notebook(self) -> None:
        try:
            page = notebook_html(self.wb, self.run.value)
        except UserFacingError as exc:
            self.message.object = _message(str(exc), ok=False)
            return
        self.notebook.object = (f"<iframe class='brt-notebook' title='Executed notebook' srcdoc=\"{html.escape(page)}\" "
                                f"style='width:100%;height:900px;border:1px solid #d0d5dd;border-radius:6px'></iframe>")

    def _report(self) -> io.BytesIO:
        self.report.filename = f"control_report_run_{self.run.value}.xlsx"
        return io.BytesIO(report_file(self.wb, self.run.value).read_bytes())

    def approve(self) -> None:
        try:
            run = approve_run(self.wb, self.run.value, self.principal.email)
        except UserFacingError as exc:
            self.message.object = _message(str(exc), ok=False)
            return
        self.message.object = _message(f"Run {run.id} ({run.period}) approved by {run.approved_by}: it may be "
                                       f"issued with `bluerocktel billing run --period {run.period} --issue`.", ok=True)
        self.refresh()

    def panel(self):
        return pn.Column(section_title("Billing runs"), self.table,
                         pn.Row(self.run, self.notebook_button, self.report, self.approve_button),
                         self.detail, self.message, self.notebook, sizing_mode="stretch_width")


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


# --- Rating ----------------------------------------------------------------------------------

RATING_ROWS = 25
ANOMALY_DAYS = 7
_STATUS_LABEL = "(any status)"


def _at(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def _money(amount: str | None, currency: str | None) -> str:
    return "" if amount is None else f"{amount} {currency or ''}".strip()


def render_trace(trace: dict) -> str:
    """The trace of one rated CDR as HTML: the call, who pays, the rate and its version, bands,
    increments, amounts, bundle, cost and margin, flags, then its segments and earlier ratings."""
    e = html.escape
    cur = trace.get("currency")
    deck = (f"{trace['rate_deck_code'] or ''} (#{trace['rate_deck_id']})" if trace.get("rate_deck_id") is not None
            else "")
    rate = (f"#{trace['rate_id']}, in force since {_at(trace['rate_valid_from'])} UTC"
            if trace.get("rate_id") is not None else "")
    cost_deck = (f"{trace.get('cost_deck_code') or ''} (#{trace['cost_deck_id']}), rate #{trace['cost_rate_id']}"
                 if trace.get("cost_deck_id") is not None else "")
    bundle = (f"#{trace['bundle_id']}: {trace['bundle_units']} units covered" if trace.get("bundle_id") is not None
              else "")
    increments = (f"{trace['first_increment']} / {trace['next_increment']}"
                  if trace.get("first_increment") is not None else "")
    facts = [
        ("CDR", trace["cdr_id"]),
        ("Status", trace["rating_status"] + (f": {trace['rating_reason']}" if trace.get("rating_reason") else "")),
        ("Call", f"{_at(trace['start_at'])} UTC · {trace['caller']} → {trace['callee']} · {trace['call_type']} · "
                 f"{trace['direction']} · {trace['disposition']} · {trace['billsec_s']} s answered"),
        ("Account / service", f"{trace['account_id'] or ''} / {trace['service_id'] or ''}"),
        ("Prefix", trace.get("prefix") or ""),
        ("Destination", " · ".join(x for x in (trace.get("destination"), trace.get("zone")) if x)),
        ("Deck", deck), ("Rate", rate), ("Tariff version", trace.get("tariff_version") or ""),
        ("Band(s)", " + ".join(trace["bands"]) or ("any time" if trace.get("band") == "" else "")),
        ("Increments (first / next)", increments),
        ("Billable units", "" if trace.get("billable_units") is None else str(trace["billable_units"])),
        ("Unrounded amount", _money(trace.get("amount_precise"), cur)),
        ("Price", _money(trace.get("price"), cur)),
        ("Bundle", bundle),
        ("Cost", " · ".join(x for x in (_money(trace.get("cost"), trace.get("cost_currency")), cost_deck) if x)),
        ("Margin", _money(trace.get("margin"), cur)),
        ("Flags", ", ".join(trace["flags"])),
        ("Rated at", f"{_at(trace['rated_at'])} UTC" if trace.get("rated_at") else ""),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td class='brt-trace-{e(k.split()[0].lower())}'>{e(str(v))}</td></tr>"
                   for k, v in facts if v not in ("", None))
    out = [f"<table class='brt-trace'>{rows}</table>"]
    if trace.get("segments"):
        seg_rows = "".join(
            f"<tr><td>{e(str(sg.get('band') or 'any time'))}</td><td>{e(str(sg.get('rate_id', '')))}</td>"
            f"<td>{e(str(sg.get('group_start', '')))}</td><td>{e(str(sg.get('increments', '')))}</td>"
            f"<td>{e(str(sg.get('units', '')))}</td><td>{e(_money(sg.get('amount_precise'), cur))}</td></tr>"
            for sg in trace["segments"])
        out.append("<h4>Segments</h4><table class='brt-segments'><tr><th>Band</th><th>Rate</th><th>From unit</th>"
                   f"<th>Increments</th><th>Units</th><th>Amount</th></tr>{seg_rows}</table>")
    if trace.get("history"):
        hist_rows = "".join(
            f"<tr><td>{e(_at(h['rated_at']))}</td><td>{e(h['rating_status'] or '')}</td>"
            f"<td>{e(_money(h['price'], cur))}</td><td>{e(h['tariff_version'] or '')}</td></tr>"
            for h in trace["history"])
        out.append("<h4>Earlier ratings</h4><table class='brt-history'><tr><th>Rated at (UTC)</th><th>Status</th>"
                   f"<th>Price</th><th>Tariff version</th></tr>{hist_rows}</table>")
    style = ("<style>.brt-trace-box{font-family:system-ui,sans-serif;font-size:14px} .brt-trace-box table"
             "{border-collapse:collapse;margin:4px 0 10px} .brt-trace-box th,.brt-trace-box td{text-align:left;"
             "padding:3px 10px;border-bottom:1px solid #e3e7ee} .brt-trace-box th{color:#5b6472;font-weight:600}"
             "</style>")
    return f"{style}<div class='brt-trace-box'>{''.join(out)}</div>"


class RatingView:
    """The unrated queue, a month's rated CDRs, one CDR's trace, and the anomalies of the last
    7 days with a CSV export (StaffStore does every read)."""

    def __init__(self, store: StaffStore, principal):
        self.store = store
        self.principal = principal
        # unrated queue
        self.unrated_offset = 0
        self.unrated_info = pn.pane.HTML("", margin=(8, 10))
        self.unrated_counts = _table(pd.DataFrame())
        self.unrated_table = _table(pd.DataFrame())
        self.unrated_table.on_click(lambda event: self._trace_of_row(self.unrated_table, event))
        self.unrated_prev = pn.widgets.Button(label="‹ Previous", width=110)
        self.unrated_next = pn.widgets.Button(label="Next ›", width=110)
        self.unrated_prev.on_click(lambda _: self.show_unrated(self.unrated_offset - RATING_ROWS))
        self.unrated_next.on_click(lambda _: self.show_unrated(self.unrated_offset + RATING_ROWS))
        # trace lookup and rated CDRs
        self.cdr_id = pn.widgets.TextInput(placeholder="CDR id", width=340)
        self.lookup = pn.widgets.Button(name="Show trace", button_type="primary", width=120)
        self.lookup.on_click(lambda _: self.show_trace(self.cdr_id.value))
        self.trace = pn.pane.HTML("", sizing_mode="stretch_width")
        months = store.rated_months(principal)
        self.month = pn.widgets.Select(name="Month", options=months, value=months[0] if months else None, width=130)
        self.status = pn.widgets.Select(name="Status", options=[_STATUS_LABEL] + [s.value for s in RatingStatus],
                                        width=140)
        self.month.param.watch(lambda _: self.show_rated(0), "value")
        self.status.param.watch(lambda _: self.show_rated(0), "value")
        self.rated_offset = 0
        self.rated_info = pn.pane.HTML("", margin=(8, 10))
        self.rated_table = _table(pd.DataFrame())
        self.rated_table.on_click(lambda event: self._trace_of_row(self.rated_table, event))
        self.rated_prev = pn.widgets.Button(label="‹ Newer", width=100)
        self.rated_next = pn.widgets.Button(label="Older ›", width=100)
        self.rated_prev.on_click(lambda _: self.show_rated(self.rated_offset - RATING_ROWS))
        self.rated_next.on_click(lambda _: self.show_rated(self.rated_offset + RATING_ROWS))
        # anomalies
        self.anomalies_info = pn.pane.HTML("", margin=(8, 10))
        self.anomalies_table = _table(pd.DataFrame())
        self.export = pn.widgets.FileDownload(callback=self._anomalies_csv, label="Export CSV",
                                              filename=f"anomalies-{dt.date.today():%Y-%m-%d}.csv",
                                              button_type="default", width=140)
        self.anomalies = []
        self.show_unrated(0)
        self.show_rated(0)
        self.show_anomalies()

    def show_unrated(self, offset: int) -> None:
        page = self.store.unrated(self.principal, offset=max(0, offset), limit=RATING_ROWS)
        self.unrated_offset = page.offset
        self.unrated_counts.value = pd.DataFrame([{
            "Status": c["status"], "Reason": c["reason"], "Calls": c["calls"],
            "First call": _at(c["first_start_at"]), "Last call": _at(c["last_start_at"]),
        } for c in page.counts], columns=["Status", "Reason", "Calls", "First call", "Last call"])
        self.unrated_table.value = pd.DataFrame([{
            "Start (UTC)": _at(r["start_at"]), "Status": r["status"], "Reason": r["reason"], "Caller": r["caller"],
            "Callee": r["callee"], "Account": "" if r["account_id"] is None else r["account_id"],
            "Where": f"{r['source_file']}:{r['source_line']}", "CDR id": r["cdr_id"],
        } for r in page.rows], columns=["Start (UTC)", "Status", "Reason", "Caller", "Callee", "Account", "Where",
                                        "CDR id"])
        shown = (f" · {page.offset + 1}–{page.offset + len(page.rows)} shown (click a row for its trace)"
                 if page.rows else "")
        self.unrated_info.object = (f"<span class='brt-unrated-info' style='font-family:system-ui,sans-serif;"
                                    f"color:#5b6472'>{page.total:,} CDRs in the unrated queue{shown}</span>")
        self.unrated_prev.disabled = page.offset == 0
        self.unrated_next.disabled = page.offset + page.limit >= page.total

    def show_rated(self, offset: int) -> None:
        if not self.month.value:
            self.rated_info.object = "<span style='font-family:system-ui,sans-serif'>No rated CDR yet.</span>"
            self.rated_prev.disabled = self.rated_next.disabled = True
            return
        status = None if self.status.value == _STATUS_LABEL else self.status.value
        page = self.store.rated_cdrs(self.principal, self.month.value, offset=max(0, offset), limit=RATING_ROWS,
                                     status=status)
        self.rated_offset = page.offset
        self.rated_table.value = pd.DataFrame([{
            "Start (UTC)": _at(r["start_at"]), "Caller": r["caller"], "Callee": r["callee"],
            "Destination": r["destination"] or "", "Band": r["band"] or "", "Units": r["billable_units"],
            "Price": r["price"] or "", "Cost": r["cost"] or "", "Margin": r["margin"] or "",
            "Status": r["rating_status"], "Flags": ", ".join(r["flags"]), "CDR id": r["cdr_id"],
        } for r in page.rows], columns=["Start (UTC)", "Caller", "Callee", "Destination", "Band", "Units", "Price",
                                        "Cost", "Margin", "Status", "Flags", "CDR id"])
        shown = (f"CDRs {page.offset + 1}–{page.offset + len(page.rows)}{' and older' if page.has_more else ''}"
                 if page.rows else "No CDR")
        self.rated_info.object = (f"<span style='font-family:system-ui,sans-serif;color:#5b6472'>{shown} "
                                  f"(click a row for its trace)</span>")
        self.rated_prev.disabled = page.offset == 0
        self.rated_next.disabled = not page.has_more

    def _trace_of_row(self, table, event) -> None:
        frame = table.value
        if 0 <= event.row < len(frame):
            row = frame.iloc[event.row]
            self.cdr_id.value = str(row["CDR id"])
            self.show_trace(self.cdr_id.value, month=str(row["Start (UTC)"])[:7] or None)

    def show_trace(self, cdr_id: str, month: str | None = None) -> None:
        try:
            trace = self.store.rated_cdr(self.principal, cdr_id, month)
        except (UserFacingError, AuthError) as exc:
            self.trace.object = _message(str(exc), ok=False)
            return
        self.trace.object = render_trace(trace)

    def show_anomalies(self) -> None:
        try:
            self.anomalies = self.store.anomalies(self.principal, days=ANOMALY_DAYS)
        except (UserFacingError, AuthError) as exc:
            self.anomalies = []
            self.anomalies_info.object = _message(str(exc), ok=False)
            return
        self.anomalies_table.value = pd.DataFrame([{
            "Severity": a.severity, "Kind": a.kind.replace("_", " "),
            "Account": a.account_number or f"#{a.account_id}", "Name": a.account_name or "",
            "From (UTC)": _at(a.window_start), "To (UTC)": _at(a.window_end), "Calls": a.calls,
            "Minutes": str(a.minutes), "Amount": f"{format_amount(a.amount_micro)} {a.currency or ''}".strip(),
            "Zones": ", ".join(a.zones), "Detail": a.detail,
        } for a in self.anomalies], columns=["Severity", "Kind", "Account", "Name", "From (UTC)", "To (UTC)",
                                             "Calls", "Minutes", "Amount", "Zones", "Detail"])
        self.anomalies_info.object = (f"<span class='brt-anomalies-info' style='font-family:system-ui,sans-serif;"
                                      f"color:#5b6472'>{len(self.anomalies)} "
                                      f"{'anomaly' if len(self.anomalies) == 1 else 'anomalies'} in the last "
                                      f"{ANOMALY_DAYS} days</span>")

    def _anomalies_csv(self) -> io.BytesIO:
        return io.BytesIO(self.store.anomalies_csv(self.principal, self.anomalies))

    def panel(self):
        return pn.Column(
            section_title("Unrated queue"), self.unrated_info, self.unrated_counts,
            pn.Row(self.unrated_prev, self.unrated_next), self.unrated_table,
            section_title("CDR trace"), pn.Row(self.cdr_id, self.lookup), self.trace,
            section_title("Rated CDRs"), pn.Row(self.month, self.status, self.rated_prev, self.rated_next,
                                                self.rated_info),
            self.rated_table,
            section_title(f"Anomalies (last {ANOMALY_DAYS} days)"), pn.Row(self.anomalies_info, self.export),
            self.anomalies_table,
            sizing_mode="stretch_width")
