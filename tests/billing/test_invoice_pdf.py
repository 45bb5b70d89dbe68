"""The invoice PDF: branded, French by default, English on request; pypdf reads its key facts."""

import datetime as dt
import io
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import numpy as np
import pypdf
import pytest
from PIL import Image

from bluerocktel.db.models import Account, Brand, Invoice, InvoiceLine
from bluerocktel.documents.content import invoice_content
from bluerocktel.documents.facturx import extract_facturx_xml, facturx_xml
from bluerocktel.documents.invoice import invoice_page, logo_data_uri, render_invoice_pdf

LOGO = '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" fill="#0b3d91"/></svg>'


def make_invoice(language="fr", kind="business", vat_regime="fr", logo=LOGO, primary="#123456") -> Invoice:
    brand = Brand(id=1, code="BRT", name="BlueRock Télécom", legal_name="BlueRock Télécom SAS", siren="123456789",
                  vat_number="FR12123456789", address="1 rue de la Paix\n75002 Paris", primary_color=primary,
                  accent_color="#f5a623", logo_svg=logo, iban="FR76 3000 6000 0112 3456 7890 189")
    account = Account(id=1, number="C0001", name="Boulangerie Martin & Fils", address="3 place du Marché",
                      postcode="69001", city="Lyon", country="FR", language=language, kind=kind,
                      vat_regime=vat_regime, vat_number="FR99999999999")
    lines = [
        InvoiceLine(position=1, kind="subscription", description="Trunk SIP — Siège", quantity=Decimal(2),
                    unit="month", unit_price_precise=Decimal("29.90"), amount_precise=Decimal("59.80"),
                    amount_minor=5980, vat_rate=Decimal("0.20")),
        InvoiceLine(position=2, kind="usage", description="Communications mobile : 3 appels, 4 min 05 s",
                    quantity=Decimal(3), unit="call", unit_price_precise=None, amount_precise=Decimal("1.234567"),
                    amount_minor=123, vat_rate=Decimal("0.20")),
    ]
    invoice = Invoice(number="FA-2026-000123", currency="EUR", period_start=dt.date(2026, 3, 1),
                      period_end=dt.date(2026, 4, 1), issue_date=dt.date(2026, 4, 2), due_date=dt.date(2026, 5, 2),
                      subtotal_minor=6103, vat_minor=1221, total_minor=7324)
    invoice.brand, invoice.account, invoice.lines = brand, account, lines
    return invoice


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def test_french_invoice_pdf_shows_number_customer_total_and_legal_mentions():
    pdf = render_invoice_pdf(make_invoice())
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for expected in ("FA-2026-000123", "Boulangerie Martin & Fils", "Total TTC 73,24 €",
                     "BlueRock Télécom SAS", "SIREN 123456789", "FR12123456789", "FR99999999999",
                     "Date d'échéance 02/05/2026", "du 01/03/2026 au 31/03/2026", "29,90 €", "59,80 €",
                     "TVA 20 % (sur 61,03 €) 12,21 €", "40 €", "FACTURE", "trois fois le taux d'intérêt légal"):
        assert expected in text, expected


def test_english_invoice_when_the_account_speaks_english():
    text = pdf_text(render_invoice_pdf(make_invoice(language="en")))
    for expected in ("INVOICE", "FA-2026-000123", "Total incl. VAT €73.24", "2026-03-01 to 2026-03-31", "€40"):
        assert expected in text, expected
    assert "FACTURE" not in text and "Date d" not in text


def test_consumers_get_no_business_recovery_indemnity_and_reverse_charge_is_stated():
    assert "40 €" not in pdf_text(render_invoice_pdf(make_invoice(kind="consumer")))
    assert "Autoliquidation" in pdf_text(render_invoice_pdf(make_invoice(vat_regime="eu_reverse_charge")))


def page_of(invoice: Invoice):
    return invoice_page(invoice_content(invoice), invoice.brand)


def test_logo_and_colours_come_from_the_brand_and_a_bad_colour_falls_back():
    page = page_of(make_invoice())
    assert page.logo == logo_data_uri(LOGO) and page.primary == "#123456" and page.accent == "#f5a623"
    page = page_of(make_invoice(primary="red;} body { display:none", logo=None))
    assert page.primary == "#0b3d91" and page.logo is None


@pytest.mark.parametrize("logo", ['<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>'])
def test_rendering_never_fetches_files_or_network(logo):
    assert render_invoice_pdf(make_invoice(logo=logo)).startswith(b"%PDF-")


def test_each_invoice_is_drawn_in_its_own_brand_colour():
    def page_ops(primary: str) -> bytes:
        pdf = render_invoice_pdf(make_invoice(primary=primary))
        return b"".join(page.get_contents().get_data() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)

    red, green = page_ops("#ff0000"), page_ops("#00ff00")
    assert b"1 0 0 rg" in red and b"1 0 0 rg" not in green
    assert b"0 1 0 rg" in green and b"0 1 0 rg" not in red


def usage_line(position: int, description: str) -> InvoiceLine:
    return InvoiceLine(position=position, kind="usage", description=description, quantity=Decimal(137), unit="call",
                       unit_price_precise=None, amount_precise=Decimal("2.74"), amount_minor=274,
                       vat_rate=Decimal("0.20"))


def test_a_business_invoice_of_sixteen_lines_with_every_mention_fits_on_one_page():
    # The demo's business invoices: a few refund lines that wrap, a dozen usage zones, the SEPA or
    # transfer line, the penalty, €40 indemnity and no-discount mentions: one page, not a footer alone on page 2.
    invoice = make_invoice()
    invoice.lines = [usage_line(i, f"Remboursement Accès fibre FTTH Pro 1 Gb/s — Fibre FTTH Pro — 11 rue Nationale, "
                                   f"Nanterre, du 24/10/2026 au 31/10/2026 (prorata 8/31 jours) {i}") for i in (1, 2, 3)]
    invoice.lines += [usage_line(i, f"Communications zone_{i} : 137 appels, 220 min 58 s") for i in range(4, 17)]
    invoice.subtotal_minor, invoice.vat_minor, invoice.total_minor = 16 * 274, 877, 16 * 274 + 877
    pdf = render_invoice_pdf(invoice)
    assert len(pypdf.PdfReader(io.BytesIO(pdf)).pages) == 1
    text = pdf_text(pdf)
    assert "zone_16" in text and "Total TTC 52,61 €" in text and "40 €" in text


def green_box(png: Path) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of the pure green drawn on the page."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    ys, xs = np.nonzero((rgb[..., 1] > 200) & (rgb[..., 0] < 60) & (rgb[..., 2] < 60))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) is not installed")
def test_a_wide_logo_with_only_a_viewbox_is_drawn_whole_within_60_by_18_mm(tmp_path):
    # A logo without width/height (as brands upload them) keeps its proportions, scaled down into the
    # 60 × 18 mm logo box (logo.py), neither cut nor stretched.
    logo = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 220 48"><rect width="220" height="48" fill="#00ff00"/></svg>'
    (tmp_path / "invoice.pdf").write_bytes(render_invoice_pdf(make_invoice(logo=logo)))
    subprocess.run(["pdftoppm", "-r", "144", "-f", "1", "-l", "1", "-png", "-singlefile", str(tmp_path / "invoice.pdf"),
                    str(tmp_path / "page")], check=True)
    left, top, right, bottom = green_box(tmp_path / "page.png")
    width_mm, height_mm = (right - left) * 25.4 / 144, (bottom - top) * 25.4 / 144
    assert width_mm / height_mm == pytest.approx(220 / 48, rel=0.03)
    assert width_mm == pytest.approx(60, abs=1) and height_mm <= 18


def test_a_long_invoice_continues_on_numbered_pages_with_the_table_header_repeated():
    invoice = make_invoice()
    invoice.lines = [usage_line(i, f"Communications zone_{i} : 137 appels, 220 min 58 s") for i in range(1, 91)]
    invoice.subtotal_minor, invoice.vat_minor, invoice.total_minor = 90 * 274, 4932, 90 * 274 + 4932
    pages = [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(render_invoice_pdf(invoice))).pages]
    assert len(pages) == 3
    for n, text in enumerate(pages, start=1):
        assert f"FA-2026-000123 — {n}/3" in text                  # numbered, the count filled in at the end
        assert "Désignation" in text and "Montant HT" in text       # the table header on every page
    text = "\n".join(pages)
    assert all(f"zone_{i} :" in text for i in range(1, 91))        # no line lost at a page break
    assert "Total TTC 295,92 €" in pages[-1].replace("\u202f", " ") and "40 €" in pages[-1]
    assert len(pypdf.PdfReader(io.BytesIO(render_invoice_pdf(make_invoice()))).pages) == 1
    assert "1/1" not in pdf_text(render_invoice_pdf(make_invoice()))   # a one-page invoice is not numbered


def test_characters_the_font_lacks_print_as_a_replacement_mark_and_the_xml_keeps_them():
    invoice = make_invoice()
    invoice.account.name = "Boulangerie 北京 Martin"
    pdf = render_invoice_pdf(invoice, facturx_xml(invoice))
    assert "Boulangerie \ufffd\ufffd Martin" in pdf_text(pdf)               # visibly replaced, not an empty box
    assert "Boulangerie 北京 Martin" in extract_facturx_xml(pdf).decode("utf-8")


def test_a_description_too_long_for_its_column_wraps_inside_it_even_without_spaces():
    from reportlab.pdfbase.pdfmetrics import stringWidth

    from bluerocktel.documents.invoice_canvas import _Layout

    layout = _Layout(page_of(make_invoice()))
    text = "Lien " + "FR7630006000011234567890189" * 5 + " fin"
    lines = layout.wrap(text, 80)
    assert len(lines) > 3 and " ".join(lines).replace(" ", "") == text.replace(" ", "")
    assert all(stringWidth(line, layout.regular, 9) <= 80 for line in lines)
    invoice = make_invoice()
    invoice.lines[0].description = text
    assert "FR7630006000011234567890189" in pdf_text(render_invoice_pdf(invoice)).replace("\n", "")
