"""UBL 2.1 export of an invoice (``Invoice``) or credit note (``CreditNote``) for Peppol-style exchange.

Same content and totals as the Factur-X CII (both come from
:func:`~bluerocktel.documents.content.invoice_content`), with the Peppol BIS Billing 3.0
customization and profile ids. The seller's electronic address (BT-34) is its SIREN (EAS 0002).
"""

from __future__ import annotations

import datetime as dt

from lxml import etree

from bluerocktel.db.models import Invoice
from bluerocktel.documents.content import InvoiceContent, invoice_content
from bluerocktel.documents.facturx import decimal_text, percent_text
from bluerocktel.documents.parties import address_lines, siren_of
from bluerocktel.money import from_minor

CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
ROOTS = {False: "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
         True: "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"}


def ubl_xml(invoice: Invoice) -> bytes:
    """The UBL 2.1 XML of an issued invoice or credit note, UTF-8 bytes."""
    return content_ubl_xml(invoice_content(invoice))


def content_ubl_xml(content: InvoiceContent) -> bytes:
    """The UBL 2.1 XML of computed :class:`InvoiceContent`."""
    credit = content.credit_note
    doc = "CreditNote" if credit else "Invoice"
    root = etree.Element(f"{{{ROOTS[credit]}}}{doc}", nsmap={None: ROOTS[credit], "cac": CAC, "cbc": CBC})
    u = _Ubl(content.currency)
    u.cbc(root, "CustomizationID", CUSTOMIZATION_ID)
    u.cbc(root, "ProfileID", PROFILE_ID)
    u.cbc(root, "ID", content.number)
    u.cbc(root, "IssueDate", content.issue_date.isoformat())
    if not credit:
        u.cbc(root, "DueDate", content.due_date.isoformat())
    u.cbc(root, f"{doc}TypeCode", content.type_code)
    for text in ([content.reason] if content.reason else []) + [f"#{code}#{text}" for code, text in content.mentions]:
        u.cbc(root, "Note", text)
    u.cbc(root, "DocumentCurrencyCode", content.currency)
    u.cbc(root, "BuyerReference", content.buyer.get("number"))
    period = u.cac(root, "InvoicePeriod")
    u.cbc(period, "StartDate", content.period_start.isoformat())
    u.cbc(period, "EndDate", content.period_last_day.isoformat())
    if content.credited is not None:
        reference = u.cac(u.cac(root, "BillingReference"), "InvoiceDocumentReference")
        u.cbc(reference, "ID", content.credited[0])
        u.cbc(reference, "IssueDate", content.credited[1].isoformat())
    _party(u, u.cac(root, "AccountingSupplierParty"), content.seller,
           content.payment.creditor_id if content.payment else None)
    _party(u, u.cac(root, "AccountingCustomerParty"), content.buyer, None)
    _payment(u, root, content)
    tax_total = u.cac(root, "TaxTotal")
    u.amount(tax_total, "TaxAmount", content.vat_minor)
    for vat in content.vat:
        subtotal = u.cac(tax_total, "TaxSubtotal")
        u.amount(subtotal, "TaxableAmount", vat.base_minor)
        u.amount(subtotal, "TaxAmount", vat.vat_minor)
        category = u.cac(subtotal, "TaxCategory")
        u.cbc(category, "ID", vat.category)
        u.cbc(category, "Percent", percent_text(vat.rate))
        if vat.exemption_code:
            u.cbc(category, "TaxExemptionReasonCode", vat.exemption_code)
            u.cbc(category, "TaxExemptionReason", vat.exemption_reason)
        u.cbc(u.cac(category, "TaxScheme"), "ID", "VAT")
    totals = u.cac(root, "LegalMonetaryTotal")
    for name, minor in (("LineExtensionAmount", content.subtotal_minor), ("TaxExclusiveAmount", content.subtotal_minor),
                        ("TaxInclusiveAmount", content.total_minor), ("PayableAmount", content.total_minor)):
        u.amount(totals, name, minor)
    for line in content.lines:
        _line(u, root, doc, line)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


class _Ubl:
    def __init__(self, currency: str):
        self.currency = currency

    @staticmethod
    def cac(parent, name: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{CAC}}}{name}")

    @staticmethod
    def cbc(parent, name: str, text: str | None, **attrs) -> etree._Element | None:
        if text is None:
            return None
        element = etree.SubElement(parent, f"{{{CBC}}}{name}", attrs)
        element.text = text
        return element

    def amount(self, parent, name: str, minor: int) -> None:
        self.cbc(parent, name, str(from_minor(minor, self.currency)), currencyID=self.currency)


def _party(u: _Ubl, role, party: dict, creditor_id: str | None) -> None:
    element = u.cac(role, "Party")
    siren = siren_of(party)
    if siren:
        u.cbc(element, "EndpointID", siren, schemeID="0002")
    elif party.get("email"):
        u.cbc(element, "EndpointID", party["email"], schemeID="EM")
    if creditor_id:
        u.cbc(u.cac(element, "PartyIdentification"), "ID", creditor_id, schemeID="SEPA")
    if party.get("number"):
        u.cbc(u.cac(element, "PartyIdentification"), "ID", party["number"])
    if party.get("legal_name") and party.get("name") and party["name"] != party["legal_name"]:
        u.cbc(u.cac(element, "PartyName"), "Name", party["name"])
    address = u.cac(element, "PostalAddress")
    for name, text in zip(("StreetName", "AdditionalStreetName"), address_lines(party)):
        u.cbc(address, name, text)
    u.cbc(address, "CityName", party.get("city"))
    u.cbc(address, "PostalZone", party.get("postcode"))
    u.cbc(u.cac(address, "Country"), "IdentificationCode", party.get("country") or "FR")
    if party.get("vat_number"):
        scheme = u.cac(element, "PartyTaxScheme")
        u.cbc(scheme, "CompanyID", party["vat_number"])
        u.cbc(u.cac(scheme, "TaxScheme"), "ID", "VAT")
    legal = u.cac(element, "PartyLegalEntity")
    u.cbc(legal, "RegistrationName", party.get("legal_name") or party.get("name"))
    if siren:
        u.cbc(legal, "CompanyID", siren, schemeID="0002")


def _payment(u: _Ubl, root, content: InvoiceContent) -> None:
    pay = content.payment
    if pay is not None:
        means = u.cac(root, "PaymentMeans")
        u.cbc(means, "PaymentMeansCode", pay.means_code)
        u.cbc(means, "PaymentID", content.number)
        if pay.iban:
            account = u.cac(means, "PayeeFinancialAccount")
            u.cbc(account, "ID", pay.iban)
            if pay.bic:
                u.cbc(u.cac(account, "FinancialInstitutionBranch"), "ID", pay.bic)
        if pay.mandate_umr:
            mandate = u.cac(means, "PaymentMandate")
            u.cbc(mandate, "ID", pay.mandate_umr)
            if pay.debtor_iban:
                u.cbc(u.cac(mandate, "PayerFinancialAccount"), "ID", pay.debtor_iban)
    u.cbc(u.cac(root, "PaymentTerms"), "Note", _due_text(content.due_date, content.language))


def _due_text(due: dt.date, language: str) -> str:
    return f"Échéance {due:%d/%m/%Y}" if language == "fr" else f"Due {due.isoformat()}"


def _line(u: _Ubl, root, doc: str, line) -> None:
    element = u.cac(root, f"{doc}Line")
    u.cbc(element, "ID", str(line.position))
    quantity = "CreditedQuantity" if doc == "CreditNote" else "InvoicedQuantity"
    u.cbc(element, quantity, decimal_text(line.quantity), unitCode=line.unit_code)
    u.amount(element, "LineExtensionAmount", line.amount_minor)
    item = u.cac(element, "Item")
    u.cbc(item, "Name", line.description)
    category = u.cac(item, "ClassifiedTaxCategory")
    u.cbc(category, "ID", line.vat_category)
    u.cbc(category, "Percent", percent_text(line.vat_rate))
    u.cbc(u.cac(category, "TaxScheme"), "ID", "VAT")
    price = u.cac(element, "Price")
    u.cbc(price, "PriceAmount", decimal_text(line.net_price), currencyID=u.currency)
    if line.base_quantity is not None:
        u.cbc(price, "BaseQuantity", decimal_text(line.base_quantity), unitCode=line.unit_code)
