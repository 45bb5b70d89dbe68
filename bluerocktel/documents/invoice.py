"""The branded invoice or credit-note PDF: ReportLab draws the page, pikepdf makes it a PDF/A-3b (Factur-X).

:func:`render_invoice_pdf` takes an issued :class:`~bluerocktel.db.models.Invoice` whose
``brand``, ``account`` and ``lines`` are loaded (and attached to a session for a credit note,
to name the credited invoice) and returns the PDF bytes, in the invoice's language (French or
English). It prints what French law asks of an invoice: both parties' identities (legal form,
share capital, SIRET/SIREN, RCS, VAT numbers), number, dates, period, VAT per rate, the
reverse-charge or export mention, the late-penalty rate, the €40 recovery indemnity (businesses)
and how to pay; the texts come from :mod:`bluerocktel.documents.content`. The call detail is a
separate document (``annex.py``).

Two steps, so that a billing run can render thousands of invoices: :func:`invoice_page` turns
the invoice's content into the printed strings (an :class:`InvoicePage`, cheap and picklable,
made in the main process), then :func:`page_to_pdf` draws them (``invoice_canvas.py``) and
finishes the file as PDF/A-3b with the Factur-X XML attached (``pdfa.py``), in worker processes.
This costs about a sixth of what the earlier HTML page cost WeasyPrint (README, design notes);
WeasyPrint still draws the brand's SVG logo, once per brand and process (``logo.py``).
"""

from __future__ import annotations

import base64
import gc
import re
from dataclasses import dataclass

from bluerocktel.db.models import Brand, Invoice
from bluerocktel.documents.content import InvoiceContent, invoice_content
from bluerocktel.documents.facturx import check_facturx_xsd
from bluerocktel.documents.formatting import (
    format_date,
    format_decimal,
    format_price,
    format_rate,
)
from bluerocktel.documents.parties import address_lines, siren_of
from bluerocktel.money import format_minor

DEFAULT_COLORS = ("#0b3d91", "#f5a623")          # primary, accent
_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")

LABELS = {
    "fr": {
        "title": "Facture", "credit_title": "Avoir", "number": "N° de facture", "credit_number": "N° d'avoir",
        "issue_date": "Date d'émission", "due_date": "Date d'échéance", "period": "Période",
        "account": "Compte client", "seller": "Émetteur", "buyer": "Client", "vat_number": "N° TVA",
        "description": "Désignation", "quantity": "Qté", "unit_price": "Prix unitaire HT",
        "vat_rate": "TVA", "amount": "Montant HT", "subtotal": "Total HT", "vat": "TVA",
        "on": "sur", "total": "Total TTC", "iban": "Règlement par virement — IBAN", "bic": "BIC",
        "direct_debit": "Règlement par prélèvement SEPA — mandat {umr}, créancier {creditor}",
        "period_text": "du {start} au {end}", "capital": "au capital de",
        "credits": "Avoir sur la facture {number} du {date}", "reason": "Motif :",
    },
    "en": {
        "title": "Invoice", "credit_title": "Credit note", "number": "Invoice number",
        "credit_number": "Credit note number", "issue_date": "Issue date", "due_date": "Due date",
        "period": "Period", "account": "Customer account", "seller": "Seller", "buyer": "Bill to",
        "vat_number": "VAT no.", "description": "Description", "quantity": "Qty",
        "unit_price": "Unit price excl. VAT", "vat_rate": "VAT", "amount": "Amount excl. VAT",
        "subtotal": "Total excl. VAT", "vat": "VAT", "on": "on", "total": "Total incl. VAT",
        "iban": "Payment by bank transfer — IBAN", "bic": "BIC",
        "direct_debit": "Payment by SEPA direct debit — mandate {umr}, creditor {creditor}",
        "period_text": "{start} to {end}", "capital": "with a share capital of",
        "credits": "Credit note for invoice {number} of {date}", "reason": "Reason:",
    },
}


@dataclass(frozen=True)
class Party:
    heading: str
    name: str
    lines: tuple[str, ...]          # address, then legal identity


@dataclass(frozen=True)
class InvoicePage:
    """Every string an invoice PDF prints, formatted for its language, and how it looks (brand)."""

    language: str
    document_title: str             # "Facture FA-2026-000123": the PDF's title
    author: str                     # the seller
    brand_name: str
    logo: str | None                # a data URI (see :func:`logo_data_uri`)
    primary: str                    # #rgb or #rrggbb, checked
    accent: str
    title: str                      # "Facture", "Avoir"
    meta: tuple[tuple[str, str], ...]           # (label, value): number, dates, period, account
    parties: tuple[Party, Party]                # seller, buyer
    credited: str | None                        # credit notes: the invoice credited and why
    headings: tuple[str, str, str, str, str]    # description, quantity, unit price, VAT, amount
    rows: tuple[tuple[str, str, str, str, str], ...]
    totals: tuple[tuple[str, str], ...]         # net total, then VAT per rate
    grand_total: tuple[str, str]
    payment: str | None
    mentions: tuple[str, ...]                   # legal notes
    seller_identity: str                        # the footer's last line


def logo_data_uri(logo_svg: str | None) -> str | None:
    """The brand logo as a data URI: a ``data:image/…`` text is kept, SVG markup is base64-encoded."""
    if not logo_svg or not logo_svg.strip():
        return None
    text = logo_svg.strip()
    if text.startswith("data:image/"):
        return text
    return "data:image/svg+xml;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def brand_color(value: str | None, default: str) -> str:
    return value if value and _COLOR_RE.match(value) else default


def rgb(color: str) -> tuple[float, float, float]:
    """A checked ``#rrggbb`` (or ``#rgb``) colour as the 0–1 components PDF drawing takes."""
    text = color.lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    return int(text[0:2], 16) / 255, int(text[2:4], 16) / 255, int(text[4:6], 16) / 255


def invoice_page(content: InvoiceContent, brand: Brand) -> InvoicePage:
    """What the PDF of already computed :class:`InvoiceContent` prints; the brand gives the logo and colours."""
    locale, currency = content.language, content.currency
    t = LABELS[locale]
    rows = tuple((
        line.description,
        format_decimal(line.quantity, locale),
        "" if line.base_quantity is not None else format_price(line.net_price, currency, locale),
        format_rate(line.vat_rate, locale),
        format_minor(line.amount_minor, currency, locale),
    ) for line in content.lines)
    vat = tuple((f"{t['vat']} {format_rate(v.rate, locale)} ({t['on']} {format_minor(v.base_minor, currency, locale)})",
                 format_minor(v.vat_minor, currency, locale)) for v in content.vat)
    credited = None
    if content.credited is not None:
        credited = t["credits"].format(number=content.credited[0], date=format_date(content.credited[1], locale))
        if content.reason:
            credited += f" — {t['reason']} {content.reason}"
    title = t["credit_title" if content.credit_note else "title"]
    seller, buyer = _party(t["seller"], content.seller, t), _party(t["buyer"], content.buyer, t)
    period = t["period_text"].format(start=format_date(content.period_start, locale),
                                     end=format_date(content.period_last_day, locale))
    return InvoicePage(
        language=locale, document_title=f"{title} {content.number}", author=seller.name, brand_name=brand.name,
        logo=logo_data_uri(brand.logo_svg), primary=brand_color(brand.primary_color, DEFAULT_COLORS[0]),
        accent=brand_color(brand.accent_color, DEFAULT_COLORS[1]), title=title,
        meta=((t["credit_number" if content.credit_note else "number"], content.number),
              (t["issue_date"], format_date(content.issue_date, locale)),
              (t["due_date"], format_date(content.due_date, locale)), (t["period"], period),
              (t["account"], content.buyer.get("number") or "")),
        parties=(seller, buyer), credited=credited,
        headings=(t["description"], t["quantity"], t["unit_price"], t["vat_rate"], t["amount"]), rows=rows,
        totals=((t["subtotal"], format_minor(content.subtotal_minor, currency, locale)), *vat),
        grand_total=(t["total"], format_minor(content.total_minor, currency, locale)),
        payment=_payment_text(content, t), mentions=tuple(text for _, text in content.mentions),
        seller_identity=" — ".join((seller.name, *_legal(content.seller, t))))


def _party(heading: str, party: dict, t: dict) -> Party:
    """A seller or buyer as printed: name, then address and legal identity."""
    town = " ".join(p for p in (party.get("postcode"), party.get("city")) if p)
    country = party.get("country") if party.get("country") not in (None, "", "FR") else ""
    return Party(heading, party.get("legal_name") or party.get("name") or "",
                 tuple(p for p in (*address_lines(party), town, country) if p) + _legal(party, t))


def _legal(party: dict, t: dict) -> tuple[str, ...]:
    """Legal identity: form and share capital, SIRET (else SIREN), RCS, VAT number."""
    capital = party.get("share_capital") and f"{t['capital']} {party['share_capital']}"
    legal = [" ".join(p for p in (party.get("legal_form"), capital) if p)]
    if party.get("siret"):
        legal.append(f"SIRET {party['siret']}")
    elif siren_of(party):
        legal.append(f"SIREN {siren_of(party)}")
    legal.append(party.get("rcs"))
    if party.get("vat_number"):
        legal.append(f"{t['vat_number']} {party['vat_number']}")
    return tuple(p for p in legal if p)


def _payment_text(content: InvoiceContent, t: dict) -> str | None:
    pay = content.payment
    if pay is None:
        return None
    if pay.means_code == "59":
        return t["direct_debit"].format(umr=pay.mandate_umr or "—", creditor=pay.creditor_id or "—")
    iban = " ".join(pay.iban[i:i + 4] for i in range(0, len(pay.iban), 4))
    return f"{t['iban']} {iban}" + (f" — {t['bic']} {pay.bic}" if pay.bic else "")


def render_invoice_pdf(invoice: Invoice, facturx_xml: bytes | None = None) -> bytes:
    """The invoice PDF (PDF/A-3b) as bytes; with its CII ``facturx_xml``, the Factur-X PDF."""
    return page_to_pdf(invoice_page(invoice_content(invoice), invoice.brand), facturx_xml)


def page_to_pdf(page: InvoicePage, facturx_xml: bytes | None = None) -> bytes:
    """PDF/A-3b bytes of ``page``; a top-level function so worker processes can run it.

    With ``facturx_xml`` (the invoice's CII, checked here against the XSD), the Factur-X PDF:
    the XML attached as ``factur-x.xml`` and declared in the XMP metadata.
    """
    from bluerocktel.documents.invoice_canvas import draw_invoice
    from bluerocktel.documents.pdfa import finish_pdfa3b

    if facturx_xml is not None:
        check_facturx_xsd(facturx_xml)
    drawn = draw_invoice(page)
    return finish_pdfa3b(drawn.pdf, title=page.document_title, author=page.author, language=page.language,
                         facturx_xml=facturx_xml, overlays=drawn.overlays)


def prepare_pdf_worker() -> None:
    """Pool initializer for processes that render many invoices: warm up, then ``gc.freeze()``.

    The first invoice loads the fonts, ReportLab, pikepdf and the Factur-X XSD; freezing what
    the imports allocated keeps the garbage collector from walking it again for every invoice.
    """
    from bluerocktel.documents.validation import xsd_errors

    from bluerocktel.documents.invoice_canvas import warm_up

    warm_up()
    xsd_errors(b"<warm-up/>", "cii")
    gc.collect()
    gc.freeze()
