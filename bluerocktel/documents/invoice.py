"""The branded invoice PDF (WeasyPrint, PDF/A-3b so that Factur-X can be embedded later).

:func:`render_invoice_pdf` takes an issued :class:`~bluerocktel.db.models.Invoice` whose
``brand``, ``account`` and ``lines`` are loaded and returns the PDF bytes. French text by
default, English when ``account.language == "en"``. No call detail here (DESIGN.md §6: tables
are WeasyPrint's slow path); the template is ``templates/invoice.html`` + ``invoice.css``.

Only ``data:`` URLs are fetched while rendering (the logo is inlined as a data URI), so a
brand's SVG can never make the renderer read a file or call the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from bluerocktel.db.models import Account, Brand, Invoice
from bluerocktel.money import format_minor, minor_digits
from bluerocktel.vocabulary import AccountKind, VatRegime

TEMPLATES_DIR = Path(__file__).parent / "templates"
_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")

LABELS = {
    "fr": {
        "title": "Facture", "number": "N° de facture", "issue_date": "Date d'émission",
        "due_date": "Date d'échéance", "period": "Période", "account": "Compte client",
        "seller": "Émetteur", "buyer": "Client", "vat_number": "N° TVA",
        "description": "Désignation", "quantity": "Qté", "unit_price": "Prix unitaire HT",
        "vat_rate": "TVA", "amount": "Montant HT", "subtotal": "Total HT", "vat": "TVA",
        "on": "sur", "total": "Total TTC", "iban": "Règlement par virement — IBAN",
        "period_text": "du {start} au {end}",
        "penalty": "En cas de retard de paiement, des pénalités au taux de trois fois le taux d'intérêt légal "
                   "sont exigibles dès le lendemain de la date d'échéance (art. L441-10 du Code de commerce).",
        "indemnity": "Tout retard de paiement entraîne de plein droit une indemnité forfaitaire pour frais de "
                     "recouvrement de 40 € (art. D441-5 du Code de commerce).",
        "discount": "Pas d'escompte pour paiement anticipé.",
        "reverse_charge": "Autoliquidation : TVA due par le preneur (art. 283-2 du CGI, art. 196 de la "
                          "directive 2006/112/CE).",
        "export": "TVA non applicable, art. 259-1 du CGI.",
    },
    "en": {
        "title": "Invoice", "number": "Invoice number", "issue_date": "Issue date", "due_date": "Due date",
        "period": "Period", "account": "Customer account", "seller": "Seller", "buyer": "Bill to",
        "vat_number": "VAT no.", "description": "Description", "quantity": "Qty",
        "unit_price": "Unit price excl. VAT", "vat_rate": "VAT", "amount": "Amount excl. VAT",
        "subtotal": "Total excl. VAT", "vat": "VAT", "on": "on", "total": "Total incl. VAT",
        "iban": "Payment by bank transfer — IBAN", "period_text": "{start} to {end}",
        "penalty": "Late payment incurs penalties at three times the French statutory interest rate from the "
                   "day after the due date (art. L441-10 French Commercial Code).",
        "indemnity": "Any late payment also incurs a fixed recovery indemnity of €40 (art. D441-5 French "
                     "Commercial Code).",
        "discount": "No discount for early payment.",
        "reverse_charge": "Reverse charge: VAT to be accounted for by the customer (Article 196, "
                          "Directive 2006/112/EC).",
        "export": "VAT not applicable, art. 259-1 of the French Tax Code.",
    },
}


def _locale(account: Account) -> str:
    return "en" if account.language == "en" else "fr"


def format_date(day: dt.date, locale: str) -> str:
    return day.strftime("%d/%m/%Y") if locale == "fr" else day.isoformat()


def format_decimal(value: Decimal, locale: str, min_digits: int = 0) -> str:
    """``value`` with all its significant decimals (at least ``min_digits``), locale separators."""
    value = Decimal(value)
    exponent = value.normalize().as_tuple().exponent
    digits = max(min_digits, -exponent if isinstance(exponent, int) and exponent < 0 else 0)
    text = f"{value:,.{digits}f}"
    if locale == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def format_price(value: Decimal, currency: str, locale: str) -> str:
    text = format_decimal(value, locale, minor_digits(currency))
    symbol = {"EUR": "€", "USD": "$", "GBP": "£"}.get(currency, currency)
    return f"{text}\u00a0{symbol}" if locale == "fr" else f"{symbol}{text}"


def format_rate(rate: Decimal, locale: str) -> str:
    text = format_decimal(Decimal(rate) * 100, locale)
    return f"{text}\u00a0%" if locale == "fr" else f"{text}%"


def logo_data_uri(logo_svg: str | None) -> str | None:
    """The brand logo as a data URI: a ``data:image/…`` text is kept, SVG markup is base64-encoded."""
    if not logo_svg or not logo_svg.strip():
        return None
    text = logo_svg.strip()
    if text.startswith("data:image/"):
        return text
    return "data:image/svg+xml;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def _color(value: str | None, default: str) -> str:
    return value if value and _COLOR_RE.match(value) else default


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("invoice.html"), (TEMPLATES_DIR / "invoice.css").read_text()


def legal_mentions(account: Account, locale: str) -> list[str]:
    """Late-payment penalty for everyone; the €40 recovery indemnity applies between businesses."""
    t = LABELS[locale]
    mentions = []
    if account.vat_regime == VatRegime.EU_REVERSE_CHARGE:
        mentions.append(t["reverse_charge"])
    elif account.vat_regime == VatRegime.EXPORT:
        mentions.append(t["export"])
    mentions.append(t["penalty"])
    if account.kind != AccountKind.CONSUMER:
        mentions.append(t["indemnity"])
    mentions.append(t["discount"])
    return mentions


def render_invoice_html(invoice: Invoice) -> str:
    """The invoice as self-contained HTML (the PDF's source)."""
    brand: Brand = invoice.brand
    account: Account = invoice.account
    locale = _locale(account)
    t = LABELS[locale]
    currency = invoice.currency
    template, css = _template()
    last_day = invoice.period_end - dt.timedelta(days=1)
    vat_rows = _vat_rows(invoice, locale)
    lines = [{
        "description": line.description,
        "quantity": format_decimal(line.quantity, locale),
        "unit_price": "" if line.unit_price_precise is None else format_price(line.unit_price_precise, currency, locale),
        "vat_rate": format_rate(line.vat_rate, locale),
        "amount": format_minor(line.amount_minor, currency, locale),
    } for line in invoice.lines]
    buyer_address = "\n".join(part for part in (
        account.address, " ".join(p for p in (account.postcode, account.city) if p),
        account.country if account.country and account.country != "FR" else "") if part)
    return template.render(
        lang=locale, t=t, css=css, brand=brand, account=account, invoice=invoice,
        primary_color=_color(brand.primary_color, "#0b3d91"), accent_color=_color(brand.accent_color, "#f5a623"),
        logo_uri=logo_data_uri(brand.logo_svg), buyer_address=buyer_address,
        issue_date=format_date(invoice.issue_date, locale), due_date=format_date(invoice.due_date, locale),
        period=t["period_text"].format(start=format_date(invoice.period_start, locale),
                                       end=format_date(last_day, locale)),
        lines=lines, vat=vat_rows, subtotal=format_minor(invoice.subtotal_minor, currency, locale),
        total=format_minor(invoice.total_minor, currency, locale), mentions=legal_mentions(account, locale))


def _vat_rows(invoice: Invoice, locale: str) -> list[dict]:
    """One row per VAT rate, recomputed from the lines by the rule that issued them."""
    from bluerocktel.billing.charges import compute_vat

    vat = compute_vat((line.vat_rate, line.amount_minor) for line in invoice.lines)
    return [{"rate": format_rate(v.rate, locale), "base": format_minor(v.base_minor, invoice.currency, locale),
             "amount": format_minor(v.vat_minor, invoice.currency, locale)} for v in vat]


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice PDF (PDF/A-3b) as bytes."""
    return html_to_pdf(render_invoice_html(invoice))


def html_to_pdf(html: str) -> bytes:
    """PDF/A-3b bytes of self-contained invoice HTML; a top-level function so worker processes can run it."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols=("data",))
    return HTML(string=html, base_url=str(TEMPLATES_DIR), url_fetcher=fetcher).write_pdf(pdf_variant="pdf/a-3b")
