"""The branded invoice or credit-note PDF (WeasyPrint, PDF/A-3b so that Factur-X can be embedded).

:func:`render_invoice_pdf` takes an issued :class:`~bluerocktel.db.models.Invoice` whose
``brand``, ``account`` and ``lines`` are loaded (and attached to a session for a credit note,
to name the credited invoice) and returns the PDF bytes, in the invoice's language (French or
English). It prints what French law asks of an invoice: both parties' identities (legal form,
share capital, SIRET/SIREN, RCS, VAT numbers), number, dates, period, VAT per rate, the
reverse-charge or export mention, the late-penalty rate, the €40 recovery indemnity (businesses)
and how to pay; the texts come from :mod:`bluerocktel.documents.content`. No call detail here
(DESIGN.md §6: tables are WeasyPrint's slow path, see ``annex.py``); the template is
``templates/invoice.html``, styled by ``templates/invoice.css``.

Rendering cost is WeasyPrint's, roughly proportional to lines of text and boxes, so the template
is lean (few elements, fixed-layout tables, one font family) and WeasyPrint is set up once per
thread for many documents (``weasyprint_engine.py``: parsed stylesheets, fonts, a user-agent
stylesheet cut to the template's elements, expat parsing). :func:`html_to_pdf` with the CII
writes the Factur-X PDF in the same pass. Worker processes that render many invoices start with
:func:`prepare_pdf_worker`.

Only ``data:`` URLs are fetched while rendering (the logo is inlined as a data URI), so a
brand's SVG can never make the renderer read a file or call the network.
"""

from __future__ import annotations

import base64
import gc
import re
from functools import lru_cache
from pathlib import Path

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

TEMPLATES_DIR = Path(__file__).parent / "templates"
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


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("invoice.html")


def render_invoice_html(invoice: Invoice) -> str:
    """The invoice (or credit note) as HTML, the PDF's source (styled by ``invoice.css``, see :func:`html_to_pdf`)."""
    return render_content_html(invoice_content(invoice), invoice.brand)


def render_content_html(content: InvoiceContent, brand: Brand) -> str:
    """HTML of already computed :class:`InvoiceContent`; the brand gives the logo and colours."""
    locale, currency = content.language, content.currency
    t = LABELS[locale]
    template = _template()
    lines = [{
        "description": line.description,
        "quantity": format_decimal(line.quantity, locale),
        "unit_price": "" if line.base_quantity is not None else format_price(line.net_price, currency, locale),
        "vat_rate": format_rate(line.vat_rate, locale),
        "amount": format_minor(line.amount_minor, currency, locale),
    } for line in content.lines]
    vat = [{"rate": format_rate(v.rate, locale), "base": format_minor(v.base_minor, currency, locale),
            "amount": format_minor(v.vat_minor, currency, locale)} for v in content.vat]
    credited = None if content.credited is None else t["credits"].format(
        number=content.credited[0], date=format_date(content.credited[1], locale))
    return template.render(
        lang=locale, t=t, brand=brand, content=content, seller=_party(content.seller, t),
        buyer=_party(content.buyer, t), title=t["credit_title" if content.credit_note else "title"],
        number_label=t["credit_number" if content.credit_note else "number"], credited=credited,
        primary_color=brand_color(brand.primary_color, DEFAULT_COLORS[0]),
        accent_color=brand_color(brand.accent_color, DEFAULT_COLORS[1]),
        logo_uri=logo_data_uri(brand.logo_svg),
        issue_date=format_date(content.issue_date, locale), due_date=format_date(content.due_date, locale),
        period=t["period_text"].format(start=format_date(content.period_start, locale),
                                       end=format_date(content.period_last_day, locale)),
        lines=lines, vat=vat, subtotal=format_minor(content.subtotal_minor, currency, locale),
        total=format_minor(content.total_minor, currency, locale), mentions=[text for _, text in content.mentions],
        payment=_payment_text(content, t))


def _party(party: dict, t: dict) -> dict:
    """Printable text of a seller or buyer: name, lines (address then legal identity), legal identity."""
    town = " ".join(p for p in (party.get("postcode"), party.get("city")) if p)
    country = party.get("country") if party.get("country") not in (None, "", "FR") else ""
    capital = party.get("share_capital") and f"{t['capital']} {party['share_capital']}"
    legal = [" ".join(p for p in (party.get("legal_form"), capital) if p)]
    if party.get("siret"):
        legal.append(f"SIRET {party['siret']}")
    elif siren_of(party):
        legal.append(f"SIREN {siren_of(party)}")
    legal.append(party.get("rcs"))
    if party.get("vat_number"):
        legal.append(f"{t['vat_number']} {party['vat_number']}")
    legal = [p for p in legal if p]
    return {"name": party.get("legal_name") or party.get("name"),
            "lines": [p for p in (*address_lines(party), town, country) if p] + legal, "legal": legal}


def _payment_text(content: InvoiceContent, t: dict) -> str | None:
    pay = content.payment
    if pay is None:
        return None
    if pay.means_code == "59":
        return t["direct_debit"].format(umr=pay.mandate_umr or "—", creditor=pay.creditor_id or "—")
    iban = " ".join(pay.iban[i:i + 4] for i in range(0, len(pay.iban), 4))
    return f"{t['iban']} {iban}" + (f" — {t['bic']} {pay.bic}" if pay.bic else "")


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice PDF (PDF/A-3b) as bytes."""
    return html_to_pdf(render_invoice_html(invoice))


def html_to_pdf(html: str, facturx_xml: bytes | None = None) -> bytes:
    """PDF/A-3b bytes of invoice HTML styled by ``invoice.css``; a top-level function so worker processes can run it.

    With ``facturx_xml`` (the invoice's CII, checked here against the XSD), the Factur-X PDF:
    the XML attached as ``factur-x.xml`` and declared in the XMP metadata, written in the same
    pass as the page.
    """
    from bluerocktel.documents.weasyprint_engine import write_pdf

    if facturx_xml is not None:
        check_facturx_xsd(facturx_xml)
    return write_pdf(html, facturx_xml)


def prepare_pdf_worker() -> None:
    """Pool initializer for processes that render many invoices: warm up, then ``gc.freeze()``.

    WeasyPrint allocates a few hundred thousand objects per invoice, so full garbage collections
    are frequent, and each one walked the ~190,000 long-lived objects of the imported libraries:
    freezing them after one warm-up render saved ~15 % of the CPU per invoice (measured). The
    Factur-X XSD is loaded here too.
    """
    from bluerocktel.documents.validation import xsd_errors

    html_to_pdf("<!DOCTYPE html><html><head><title>warm-up</title></head><body><p>warm-up <b>0</b></p></body></html>")
    xsd_errors(b"<warm-up/>", "cii")
    gc.collect()
    gc.freeze()
