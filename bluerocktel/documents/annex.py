"""Call-detail annex: every rated call of an invoice's period, in a separate fast PDF (ReportLab).

The call detail is a document of its own, drawn with the ReportLab canvas (plain strings, the
DejaVu font for € and accents, ``fonts.printable`` for what it cannot draw, brand colours): a
table of 1,000 calls costs HTML renderers seconds (WeasyPrint: 0.47 documents/s, DESIGN.md §6).
The calls are the lake's ``rated`` rows of the account whose call started in ``[period_start,
period_end)`` (UTC, like the usage lines), one row per ``cdr_id`` with its latest rating (the
rule of ``billing/usage.py``) as of the invoice's ``created_at`` (so an annex rendered later, on
demand, still lists the calls as invoiced), times shown in the account's time zone.
The billing cycle does not render annexes: :func:`bluerocktel.documents.batch.render_annexes` does,
when an e-mail attaches one or a download asks for it, and keeps it.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from bluerocktel import lake
from bluerocktel.db.models import Invoice
from bluerocktel.documents.content import language_of
from bluerocktel.documents.fonts import printable, register_fonts
from bluerocktel.documents.formatting import format_date, format_decimal, format_price
from bluerocktel.documents.invoice import brand_color, rgb
from bluerocktel.money import from_micro
from bluerocktel.vocabulary import InvoiceKind
from bluerocktel.workbench import Workbench

COLUMNS = {  # key: (width mm, align)
    "date": (20, "L"), "time": (15, "L"), "caller": (30, "L"), "callee": (30, "L"),
    "destination": (39, "L"), "duration": (18, "R"), "billed": (14, "R"), "price": (20, "R"),
}
LABELS = {
    "fr": {"title": "Détail des communications", "invoice": "Facture", "period": "du {start} au {end}",
           "date": "Date", "time": "Heure", "caller": "Appelant", "callee": "Appelé", "destination": "Destination",
           "duration": "Durée", "billed": "Facturé", "price": "Montant HT", "total": "{n} communications",
           "page": "Page {page}/{pages}"},
    "en": {"title": "Call detail", "invoice": "Invoice", "period": "{start} to {end}", "date": "Date",
           "time": "Time", "caller": "Caller", "callee": "Called", "destination": "Destination",
           "duration": "Duration", "billed": "Billed", "price": "Amount excl. VAT", "total": "{n} calls",
           "page": "Page {page}/{pages}"},
}
MM = 72 / 25.4          # points per millimetre
MARGIN, TOP, BOTTOM = 10 * MM, 27 * MM, 16 * MM
ROW_HEIGHT, FONT_SIZE = 4.6 * MM, 7.5


@dataclass(frozen=True)
class AnnexCall:
    start_at: dt.datetime          # UTC
    caller: str
    callee: str
    destination: str
    call_type: str
    billsec_s: int
    billable_units: int
    price_micro: int


@dataclass(frozen=True)
class AnnexHeader:
    """What the annex says about its invoice: picklable, so worker processes can render it."""

    number: str
    period_start: dt.date
    period_last_day: dt.date
    language: str
    currency: str
    timezone: str
    brand_name: str
    primary_color: str
    accent_color: str


def render_annex_pdf(wb: Workbench, invoice: Invoice) -> bytes | None:
    """The call-detail annex of ``invoice`` (brand and account loaded), or None when it has no calls."""
    if invoice.kind == InvoiceKind.CREDIT_NOTE:
        return None
    calls = read_annex_calls(wb.lake_dir, [invoice.account_id], invoice.period_start, invoice.period_end,
                             {invoice.account_id: invoice.created_at}).get(invoice.account_id)
    return render_call_annex(calls, annex_header(invoice)) if calls else None


def annex_header(invoice: Invoice) -> AnnexHeader:
    brand = invoice.brand
    return AnnexHeader(invoice.number, invoice.period_start, invoice.period_end - dt.timedelta(days=1),
                       language_of(invoice), invoice.currency, invoice.account.timezone or "Europe/Paris",
                       brand.name, brand_color(brand.primary_color, "#0b3d91"),
                       brand_color(brand.accent_color, "#f5a623"))


def read_annex_calls(lake_dir: Path, account_ids: list[int], period_start: dt.date, period_end: dt.date,
                     as_of: dict[int, dt.datetime] | None = None) -> dict[int, list[AnnexCall]]:
    """Rated calls per account started in ``[period_start, period_end)`` UTC, latest rating, in time order.

    ``as_of``: per account, ratings made after this instant (UTC) are ignored; the latest of
    them elsewhere (a call moved to an account not asked for) by the latest instant given.
    """
    if not account_ids:
        return {}
    months = _months(period_start, period_end)
    source = lake.scan_sql(lake_dir, "rated", months)
    start_at = dt.datetime.combine(period_start, dt.time(0), tzinfo=dt.timezone.utc)
    end_at = dt.datetime.combine(period_end, dt.time(0), tzinfo=dt.timezone.utc)
    as_of = {a: as_of[a] for a in account_ids if as_of and as_of.get(a) is not None}
    # Only the CDRs ever rated to these accounts are ranked, on the columns the annex prints: a
    # batch of 200 accounts out of 10M CDRs costs 3 s of CPU instead of 12.5 s.
    sql = f"""
        WITH ids AS (
            SELECT cdr_id FROM {source} WHERE list_contains($accounts, account_id)
        ), cutoffs AS (
            SELECT unnest($cutoff_accounts) AS account_id, unnest($cutoffs) AS cutoff
        ), latest AS (
            SELECT r.account_id, start_at, caller, callee, destination, zone, call_type, billsec_s, billable_units,
                   price_micro, rating_status, cdr_id
            FROM {source} r LEFT JOIN cutoffs c ON c.account_id = r.account_id
            WHERE cdr_id IN (SELECT cdr_id FROM ids) AND start_at >= $start AND start_at < $end
              AND (rated_at IS NULL OR rated_at <= coalesce(c.cutoff, $last_cutoff))
            QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1
        )
        SELECT account_id, start_at, coalesce(caller, ''), coalesce(callee, ''),
               coalesce(nullif(destination, ''), zone, ''), coalesce(call_type, 'voice'),
               coalesce(billsec_s, 0), coalesce(billable_units, 0), coalesce(price_micro, 0)
        FROM latest
        WHERE rating_status = 'rated' AND list_contains($accounts, account_id)
        ORDER BY account_id, start_at, cdr_id
    """
    con = lake.connect_duckdb()
    try:
        rows = con.execute(sql, {"start": start_at, "end": end_at, "accounts": list(account_ids),
                                 "cutoff_accounts": list(as_of), "cutoffs": list(as_of.values()),
                                 "last_cutoff": max(as_of.values(), default=dt.datetime.max.replace(
                                     tzinfo=dt.timezone.utc))}).fetchall()
    finally:
        con.close()
    calls: dict[int, list[AnnexCall]] = {}
    for account_id, *values in rows:
        calls.setdefault(int(account_id), []).append(AnnexCall(*values))
    return calls


def _months(start: dt.date, end: dt.date) -> list[str]:
    months, day = [], start.replace(day=1)
    while day < end:
        months.append(f"{day:%Y-%m}")
        day = (day + dt.timedelta(days=32)).replace(day=1)
    return months


def render_call_annex(calls: list[AnnexCall], header: AnnexHeader) -> bytes:
    """The annex PDF: a header band in the brand colour on each page, one row per call, a total line."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas

    regular, bold = register_fonts()
    t = LABELS[header.language]
    tz = ZoneInfo(header.timezone)
    primary, accent = rgb(header.primary_color), rgb(header.accent_color)
    period = t["period"].format(start=format_date(header.period_start, header.language),
                                end=format_date(header.period_last_day, header.language))
    width, height = A4
    rows_per_page = int((height - TOP - BOTTOM) // ROW_HEIGHT)
    pages = max(1, -(-(len(calls) + 1) // rows_per_page))
    buffer = io.BytesIO()
    pdf = Canvas(buffer, pagesize=A4, invariant=True, pageCompression=1)
    pdf.setTitle(f"{t['title']} {header.number}")
    pdf.setCreator("bluerocktel")

    def start_page(page: int) -> float:
        pdf.setFillColorRGB(*primary)
        pdf.rect(0, height - 18 * MM, width, 18 * MM, stroke=0, fill=1)
        pdf.setFillColorRGB(1, 1, 1)
        pdf.setFont(bold, 12)
        pdf.drawString(MARGIN, height - 11 * MM, printable(header.brand_name))
        pdf.setFont(regular, 9)
        pdf.drawRightString(width - MARGIN, height - 11 * MM,
                            f"{t['title']} — {t['invoice']} {header.number} — {period}")
        pdf.setFillColorRGB(0.43, 0.43, 0.43)
        pdf.setFont(regular, 7)
        pdf.drawCentredString(width / 2, 8 * MM, t["page"].format(page=page, pages=pages))
        y = height - TOP
        pdf.setFillColorRGB(*accent)
        pdf.rect(MARGIN, y - 1.6 * MM, width - 2 * MARGIN, ROW_HEIGHT + 1 * MM, stroke=0, fill=1)
        pdf.setFillColorRGB(0, 0, 0)
        pdf.setFont(bold, FONT_SIZE)
        _draw_row(pdf, y, {key: t[key] for key in COLUMNS})
        pdf.setFont(regular, FONT_SIZE)
        return y - ROW_HEIGHT - 1 * MM

    rows = _TextRows(pdf, regular, FONT_SIZE)
    page, y = 1, start_page(1)
    total_micro = total_s = 0
    for i, call in enumerate(calls):
        if y < BOTTOM:
            rows.flush()
            pdf.showPage()
            page += 1
            y = start_page(page)
        if i % 2:
            pdf.setFillColorRGB(0.955, 0.965, 0.98)
            pdf.rect(MARGIN, y - 1.4 * MM, width - 2 * MARGIN, ROW_HEIGHT, stroke=0, fill=1)
            pdf.setFillColorRGB(0, 0, 0)
        _draw_row(pdf, y, _cells(call, tz, header), rows)
        y -= ROW_HEIGHT
        total_micro += call.price_micro
        total_s += call.billsec_s if call.call_type == "voice" else 0
    rows.flush()
    if y < BOTTOM:
        pdf.showPage()
        y = start_page(page + 1)
    pdf.setStrokeColorRGB(*primary)
    pdf.line(MARGIN, y + ROW_HEIGHT - 1.4 * MM, width - MARGIN, y + ROW_HEIGHT - 1.4 * MM)
    pdf.setFont(bold, FONT_SIZE)
    _draw_row(pdf, y, {"date": t["total"].format(n=len(calls)), "duration": _duration(total_s),
                       "price": _micro_price(total_micro, header)})
    pdf.save()
    return buffer.getvalue()


def _draw_row(pdf, y: float, cells: dict[str, str], rows: "_TextRows | None" = None) -> None:
    """One row of ``cells`` in the canvas's current font, or through ``rows`` (its font)."""
    x = MARGIN
    for key, (width_mm, align) in COLUMNS.items():
        text = cells.get(key, "")
        if text:
            right = align == "R"
            at = x + (width_mm - 1) * MM if right else x + 1 * MM
            if rows is not None:
                rows.add(at, y, text, right)
            elif right:
                pdf.drawRightString(at, y, text)
            else:
                pdf.drawString(at, y, text)
        x += width_mm * MM


class _TextRows:
    """Cells in one TrueType font and size, written as one PDF text object per page.

    ReportLab's ``drawString`` costs about 100 µs of CPU a cell (a text object each, and the
    TrueType subset encoding walks every character in Python): 0.1 s for an annex of 1,000 calls,
    as much as the invoice itself. Here each character's code in the font subset is looked up once
    (ReportLab assigns it, so the font is embedded as usual) and a cell is one ``Tm … Tj``. A
    character that lands outside the first subset of 224 characters goes through ``drawString``.
    """

    def __init__(self, pdf, font_name: str, size: float):
        from reportlab.pdfbase import pdfmetrics

        self.pdf, self.font, self.size = pdf, pdfmetrics.getFont(font_name), size
        self.font_name = font_name
        self.codes: dict[int, str] = {}          # character → its code in subset 0, as a latin-1 character
        self.known: set[str] = set()             # the characters of ``codes`` and ``outside``
        self.outside: set[str] = set()           # characters in another subset
        self.ops: list[str] = []

    def add(self, x: float, y: float, text: str, right: bool = False) -> None:
        if right:
            x -= self.font.stringWidth(text, self.size)
        encoded = self._encode(text)
        if encoded is None:
            self.pdf.setFont(self.font_name, self.size)
            self.pdf.drawString(x, y, text)
        else:
            self.ops.append(f"1 0 0 1 {x:.2f} {y:.2f} Tm ({self.pdf._escape(encoded)}) Tj")

    def _encode(self, text: str) -> bytes | None:
        if not self.known.issuperset(text):
            for char in set(text) - self.known:
                (subset, code), = self.font.splitString(char, self.pdf._doc)
                if subset == 0:
                    self.codes[ord(char)] = chr(code[0])
                else:
                    self.outside.add(char)
                self.known.add(char)
        if self.outside and not self.outside.isdisjoint(text):
            return None
        return text.translate(self.codes).encode("latin-1")

    def flush(self) -> None:
        """Write the page's cells (before ``showPage``)."""
        if self.ops:
            name = self.font.getSubsetInternalName(0, self.pdf._doc)
            self.pdf._code.append(f"BT {name} {self.size} Tf {' '.join(self.ops)} ET")
            self.ops = []


def _cells(call: AnnexCall, tz: ZoneInfo, header: AnnexHeader) -> dict[str, str]:
    local = call.start_at.astimezone(tz)
    if call.call_type == "voice":
        duration, billed = _duration(call.billsec_s), _duration(call.billable_units)
    else:
        duration, billed = call.call_type, format_decimal(call.billable_units, header.language)
    return {"date": format_date(local.date(), header.language), "time": local.strftime("%H:%M:%S"),
            "caller": printable(call.caller), "callee": printable(call.callee),
            "destination": printable(call.destination[:26]),
            "duration": duration, "billed": billed,
            "price": _micro_price(call.price_micro, header)}


def _micro_price(micro: int, header: AnnexHeader) -> str:
    """A rated price as rated: all six decimals of the micro unit (``0,012350 €``)."""
    return format_price(from_micro(micro), header.currency, header.language, min_digits=6)


def _duration(seconds: int) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
