"""Draw an :class:`~bluerocktel.documents.invoice.InvoicePage` on A4 with the ReportLab canvas.

The layout: the logo and brand name beside the title and the invoice's references, a rule in the
brand colour; seller and buyer side by side; the lines table (header in the brand colour,
descriptions wrapped); the totals on the right; the payment instructions and legal mentions in
small print. A long invoice continues on further pages, the table header repeated and each page
numbered ``number — n/N`` (drawn a second time once the count is known: the numbers take no room);
the totals and the mentions are never split. A page's text is one PDF text object, in reading
order, so that text extraction and copying give the lines as printed.

One font family (DejaVu Sans, embedded as a subset), RGB colours only, no transparency: what
:mod:`bluerocktel.documents.pdfa` needs to make the file a PDF/A-3b. The logo is not drawn here:
its place is returned (:class:`Overlay`) and the finishing step puts the brand's logo page there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from bluerocktel.documents.fonts import printable, register_fonts
from bluerocktel.documents.invoice import InvoicePage, rgb
from bluerocktel.documents.logo import draw_logo

MM = 72 / 25.4
WIDTH, HEIGHT = 210 * MM, 297 * MM
LEFT, RIGHT, TOP, BOTTOM = 14 * MM, WIDTH - 14 * MM, HEIGHT - 12 * MM, 14 * MM
CONTENT = RIGHT - LEFT
SIZE, SMALL = 9, 7.5                     # body and footer font sizes, points
LEADING = 1.17                           # DejaVu Sans line height, in font sizes
ASCENT = 0.93                            # its ascent, in font sizes
COLUMNS = (0.52, 0.08, 0.16, 0.08, 0.16)     # of the content width: description, qty, unit price, VAT, amount
PAD_X, PAD_Y = 1.5 * MM, 1 * MM          # table cell padding
TEXT, GREY, RULE, WHITE = "#222222", "#555555", "#dddddd", "#ffffff"


@dataclass(frozen=True)
class Overlay:
    """The top-left ``width`` × ``height`` points of the one-page ``pdf``, to draw with their lower-left corner at
    ``(x, y)`` on page ``page`` (0-based)."""

    page: int
    pdf: bytes
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Drawn:
    pdf: bytes
    overlays: tuple[Overlay, ...]


def draw_invoice(page: InvoicePage) -> Drawn:
    """The invoice drawn as a plain PDF (not yet PDF/A), and where the logo goes."""
    drawn, pages = _Layout(page).draw()
    if pages > 1:                       # again, now that the page count is known, to number the pages
        drawn, _ = _Layout(page, pages).draw()
    return drawn


def warm_up() -> None:
    """Load the fonts and ReportLab once (worker processes call this before freezing their memory)."""
    from reportlab.pdfgen.canvas import Canvas

    regular, _ = register_fonts()
    pdf = Canvas(io.BytesIO(), initialFontName=regular)
    pdf.drawString(0, 0, printable("warm-up 0,00 €"))
    pdf.save()


class _Layout:
    """One invoice's drawing: a cursor ``y`` moving down the page, new pages as needed."""

    def __init__(self, page: InvoicePage, pages: int | None = None):
        from reportlab.pdfbase.pdfmetrics import stringWidth
        from reportlab.pdfgen.canvas import Canvas

        self.page = page
        self.regular, self.bold = register_fonts()
        self.width_of = stringWidth
        self.buffer = io.BytesIO()
        self.pdf = Canvas(self.buffer, pagesize=(WIDTH, HEIGHT), invariant=True, pageCompression=1,
                          initialFontName=self.regular, initialFontSize=SIZE)
        self.primary, self.accent = rgb(page.primary), rgb(page.accent)
        self.page_number, self.pages = 1, pages
        self.text_object = None         # the page's text, one PDF text object (readers extract it in order)
        self.font = self.color = None
        self.overlays: list[Overlay] = []
        self.y = TOP

    # -- drawing primitives -------------------------------------------------------------------

    def text(self, x: float, baseline: float, text: str, *, bold=False, size=SIZE, color=TEXT, align="left") -> None:
        """One string, added to the page's text object (drawn over the page's graphics when it ends)."""
        text, font = printable(text), self.bold if bold else self.regular
        if self.text_object is None:
            self.text_object, self.font, self.color = self.pdf.beginText(), None, None
        if align == "right":
            x -= self.width_of(text, font, size)
        elif align == "centre":
            x -= self.width_of(text, font, size) / 2
        out = self.text_object
        if self.font != (font, size):
            out.setFont(font, size)
            self.font = (font, size)
        if self.color != color:
            out.setFillColorRGB(*(rgb(color) if isinstance(color, str) else color))
            self.color = color
        out.setTextOrigin(x, baseline)
        out.textOut(text)

    def wrap(self, text: str, width: float, *, bold=False, size=SIZE) -> list[str]:
        """``text`` in lines of at most ``width`` points, cut between words, or inside a word too long for a line."""
        from reportlab.lib.utils import simpleSplit

        font, lines = self.bold if bold else self.regular, []
        for line in simpleSplit(printable(text), font, size, width) or [""]:
            while len(line) > 1 and self.width_of(line, font, size) > width:
                cut = len(line) - 1
                while cut > 1 and self.width_of(line[:cut], font, size) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
            lines.append(line)
        return lines

    def rule(self, x1: float, x2: float, y: float, thickness: float, color) -> None:
        self.pdf.setStrokeColorRGB(*(rgb(color) if isinstance(color, str) else color))
        self.pdf.setLineWidth(thickness)
        self.pdf.line(x1, y, x2, y)

    def paragraph(self, x: float, width: float, text: str, *, bold=False, size=SIZE, color=TEXT,
                  leading: float = LEADING) -> None:
        """Wrapped text from the cursor down."""
        for line in self.wrap(text, width, bold=bold, size=size):
            self.text(x, self.y - ASCENT * size, line, bold=bold, size=size, color=color)
            self.y -= leading * size

    def fit(self, height: float) -> None:
        """Continue on a new page unless ``height`` points fit above the bottom margin."""
        if self.y - height < BOTTOM:
            self.new_page()

    def new_page(self) -> None:
        self.end_page()
        self.page_number += 1
        self.y = TOP

    def end_page(self) -> None:
        if self.pages:
            self.text(WIDTH / 2, 7 * MM, f"{self.page.meta[0][1]} — {self.page_number}/{self.pages}", size=7,
                      color=GREY, align="centre")
        if self.text_object is not None:
            self.pdf.drawText(self.text_object)
            self.text_object = None
        self.pdf.showPage()

    # -- the invoice --------------------------------------------------------------------------

    def draw(self) -> tuple[Drawn, int]:
        self.header()
        self.parties()
        if self.page.credited:
            self.paragraph(LEFT, CONTENT, self.page.credited, bold=True, color=self.primary)
            self.y -= 3 * MM
        self.lines()
        self.totals()
        self.footer()
        self.end_page()
        self.pdf.save()
        return Drawn(self.buffer.getvalue(), tuple(self.overlays)), self.page_number

    def header(self) -> None:
        page, half = self.page, CONTENT / 2
        left = TOP
        logo = draw_logo(page.logo) if page.logo else None
        if logo is not None:
            self.overlays.append(Overlay(0, logo.pdf, LEFT, TOP - logo.height, logo.width, logo.height))
            left -= logo.height + 2 * MM
        for line in self.wrap(page.brand_name, half, bold=True, size=14):
            self.text(LEFT, left - ASCENT * 14, line, bold=True, size=14, color=self.primary)
            left -= LEADING * 14
        self.text(RIGHT, TOP - ASCENT * 18, page.title.upper(), bold=True, size=18, color=self.primary, align="right")
        right = TOP - LEADING * 18 - 3 * MM
        for label, value in page.meta:
            baseline = right - ASCENT * SIZE - 0.115 * SIZE        # line-height 1.4: half the extra leading above
            self.text(RIGHT - self.width_of(printable(value), self.bold, SIZE), baseline, label + " ", align="right")
            self.text(RIGHT, baseline, value, bold=True, align="right")
            right -= 1.4 * SIZE
        self.y = min(left, right) - 3 * MM
        self.rule(LEFT, RIGHT, self.y - 1, 2, self.primary)
        self.y -= 2 + 4 * MM

    def parties(self) -> None:
        width, top, bottoms = 0.46 * CONTENT, self.y, []
        for x, party in zip((LEFT, LEFT + 0.54 * CONTENT), self.page.parties):
            self.y = top
            self.text(x, self.y - ASCENT * SIZE, party.heading.upper(), bold=True, color=self.primary)
            self.y -= LEADING * SIZE + 1 * MM
            self.rule(x, x + width, self.y - 0.3, 0.6, self.accent)
            self.y -= 0.6 + 1.5 * MM
            self.paragraph(x, width, party.name, bold=True)
            for line in party.lines:
                self.paragraph(x, width, line)
            bottoms.append(self.y)
        self.y = min(bottoms) - 4 * MM

    def lines(self) -> None:
        self.y -= 2 * MM
        widths = [share * CONTENT for share in COLUMNS]
        self.table_header(widths)
        for row in self.page.rows:
            description = self.wrap(row[0], widths[0] - 2 * PAD_X)
            height = len(description) * LEADING * SIZE + 2 * PAD_Y
            if self.y - height < BOTTOM:
                self.new_page()
                self.table_header(widths)
            top, right = self.y - PAD_Y, LEFT + widths[0]
            self.text(LEFT + PAD_X, top - ASCENT * SIZE, description[0])
            for width, cell in zip(widths[1:], row[1:]):
                right += width
                if cell:
                    self.text(right - PAD_X, top - ASCENT * SIZE, cell, align="right")
            for i, line in enumerate(description[1:], start=1):        # in reading order
                self.text(LEFT + PAD_X, top - ASCENT * SIZE - i * LEADING * SIZE, line)
            self.y -= height
            self.rule(LEFT, RIGHT, self.y + 0.2, 0.4, RULE)

    def table_header(self, widths: list[float]) -> None:
        cells = [self.wrap(heading, width - 2 * PAD_X, bold=True) for heading, width in zip(self.page.headings, widths)]
        height = max(map(len, cells)) * LEADING * SIZE + 2 * PAD_Y
        self.fit(height + LEADING * SIZE + 2 * PAD_Y)          # never a header alone at a page's foot
        self.pdf.setFillColorRGB(*self.primary)
        self.pdf.rect(LEFT, self.y - height, CONTENT, height, stroke=0, fill=1)
        x, bottom = LEFT, self.y - height + PAD_Y
        for i, (lines, width) in enumerate(zip(cells, widths)):
            for j, line in enumerate(lines):         # aligned at the bottom of the header
                baseline = bottom + (LEADING - ASCENT) * SIZE + (len(lines) - 1 - j) * LEADING * SIZE
                if i == 0:
                    self.text(x + PAD_X, baseline, line, bold=True, color=WHITE)
                else:
                    self.text(x + width - PAD_X, baseline, line, bold=True, color=WHITE, align="right")
            x += width
        self.y -= height

    def totals(self) -> None:
        page = self.page
        label_width, x = 62 * MM, RIGHT - 90 * MM
        labels = [self.wrap(label, label_width) for label, _ in page.totals]
        grand = LEADING * 11 + 2 * MM + 0.6 * MM
        self.fit(4 * MM + sum(len(lines) * LEADING * SIZE + 1.2 * MM for lines in labels) + 1.2 + grand)
        self.y -= 4 * MM
        for lines, (_, value) in zip(labels, page.totals):
            top = self.y - 0.6 * MM
            for i, line in enumerate(lines):
                self.text(x, top - ASCENT * SIZE, line)
                if i == 0:
                    self.text(RIGHT, top - ASCENT * SIZE, value, align="right")
                top -= LEADING * SIZE
            self.y = top - 0.6 * MM
        self.rule(x, RIGHT, self.y - 0.6, 1.2, self.accent)
        self.y -= 1.2 + 2 * MM
        label, value = page.grand_total
        self.text(x, self.y - ASCENT * 11, label, bold=True, size=11, color=self.primary)
        self.text(RIGHT, self.y - ASCENT * 11, value, bold=True, size=11, color=self.primary, align="right")
        self.y -= LEADING * 11 + 0.6 * MM

    def footer(self) -> None:
        page = self.page
        blocks = ([(page.payment, True)] if page.payment else []) + [(text, False) for text in page.mentions]
        blocks.append((page.seller_identity, False))
        wrapped = [(self.wrap(text, CONTENT, bold=bold, size=SMALL), bold) for text, bold in blocks]
        self.fit(6 * MM + 0.6 + 2 * MM + sum(len(lines) for lines, _ in wrapped) * LEADING * SMALL)
        self.y -= 6 * MM
        self.rule(LEFT, RIGHT, self.y - 0.3, 0.6, self.accent)
        self.y -= 0.6 + 2 * MM
        for lines, bold in wrapped:
            for line in lines:
                self.text(LEFT, self.y - ASCENT * SMALL, line, bold=bold, size=SMALL, color=TEXT if bold else GREY)
                self.y -= LEADING * SMALL
