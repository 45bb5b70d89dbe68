"""Factur-X: the EN 16931 Cross Industry Invoice (UN/CEFACT D16B) of an invoice, embedded in its PDF/A-3.

:func:`facturx_xml` writes the CII XML of the EN 16931 profile (guideline
``urn:cen.eu:en16931:2017``): type 380 for an invoice, 381 for a credit note (with BT-25, the
credited invoice). Every amount is the stored integer minor amount written with the currency's
decimals, so the XML totals are the database totals; the VAT breakdown is the one the invoice
was issued with (per rate, rounded per rate), which is what BR-CO-14/17 check.

A Factur-X PDF is a PDF/A-3b with the XML attached as ``factur-x.xml`` (relationship ``Data``)
and declared in the XMP metadata (the ``fx:`` extension schema below). The invoice renderer adds
both while it finishes the PDF (``invoice.page_to_pdf(page, facturx_xml)``, after
:func:`check_facturx_xsd`, see ``pdfa.py``); :func:`embed_facturx` attaches the XML to a PDF/A-3b
made elsewhere with the ``factur-x`` package, which parses the XSD again each time (11 ms an
invoice with its check; :func:`check_facturx_xsd` takes 0.1 ms).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from lxml import etree

from bluerocktel.db.models import Invoice
from bluerocktel.documents.content import DocumentError, InvoiceContent, invoice_content
from bluerocktel.documents.parties import address_lines, siren_of
from bluerocktel.money import from_minor

GUIDELINE = "urn:cen.eu:en16931:2017"
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
SIREN_SCHEME = "0002"
FACTURX_FILENAME = "factur-x.xml"
FACTURX_NS = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
_PROPERTIES = (("DocumentFileName", "The name of the embedded XML document"),
               ("DocumentType", "The type of the hybrid document in capital letters, e.g. INVOICE or ORDER"),
               ("Version", "The actual version of the standard applying to the embedded XML document"),
               ("ConformanceLevel", "The conformance level of the embedded XML document"))
# The XMP that makes a PDF/A-3 a Factur-X 1.0 EN 16931 invoice: the PDF/A extension schema declaring
# the fx: properties, then their values. Two rdf:Description elements, to go inside the rdf:RDF.
FACTURX_XMP = (
    '<rdf:Description xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" rdf:about=""'
    ' xmlns:pdfaExtension="http://www.aiim.org/pdfa/ns/extension/"'
    ' xmlns:pdfaSchema="http://www.aiim.org/pdfa/ns/schema#"'
    ' xmlns:pdfaProperty="http://www.aiim.org/pdfa/ns/property#">'
    '<pdfaExtension:schemas><rdf:Bag><rdf:li rdf:parseType="Resource">'
    '<pdfaSchema:schema>Factur-X PDFA Extension Schema</pdfaSchema:schema>'
    f'<pdfaSchema:namespaceURI>{FACTURX_NS}</pdfaSchema:namespaceURI>'
    '<pdfaSchema:prefix>fx</pdfaSchema:prefix>'
    '<pdfaSchema:property><rdf:Seq>'
    + "".join('<rdf:li rdf:parseType="Resource">'
              f'<pdfaProperty:name>{name}</pdfaProperty:name>'
              '<pdfaProperty:valueType>Text</pdfaProperty:valueType>'
              '<pdfaProperty:category>external</pdfaProperty:category>'
              f'<pdfaProperty:description>{text}</pdfaProperty:description></rdf:li>'
              for name, text in _PROPERTIES)
    + '</rdf:Seq></pdfaSchema:property></rdf:li></rdf:Bag></pdfaExtension:schemas></rdf:Description>'
    f'<rdf:Description xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" rdf:about="" xmlns:fx="{FACTURX_NS}">'
    f'<fx:DocumentType>INVOICE</fx:DocumentType><fx:DocumentFileName>{FACTURX_FILENAME}</fx:DocumentFileName>'
    '<fx:Version>1.0</fx:Version><fx:ConformanceLevel>EN 16931</fx:ConformanceLevel></rdf:Description>'
).encode("utf-8")


def facturx_xml(invoice: Invoice) -> bytes:
    """The CII XML (EN 16931 profile) of an issued invoice or credit note, UTF-8 bytes."""
    return cii_xml(invoice_content(invoice))


def check_facturx_xsd(xml: bytes) -> None:
    """Refuse (:class:`DocumentError`) a CII that the Factur-X EN 16931 XSD rejects (schema loaded once a process)."""
    from bluerocktel.documents.validation import xsd_errors

    errors = xsd_errors(xml, "cii")
    if errors:
        raise DocumentError("the Factur-X XML does not match the EN 16931 XSD: " + "; ".join(errors))


def embed_facturx(pdf: bytes, xml: bytes, *, lang: str | None = None) -> bytes:
    """The PDF/A-3b ``pdf`` with ``xml`` attached as ``factur-x.xml`` (XSD-checked), as bytes."""
    from facturx import generate_from_binary

    check_facturx_xsd(xml)       # the package would parse the XSD again for every invoice
    return generate_from_binary(pdf, xml, flavor="factur-x", level="en16931", check_xsd=False, lang=lang)


def extract_facturx_xml(pdf: bytes) -> bytes:
    """The Factur-X XML attached to ``pdf`` (for checks and tests)."""
    from facturx import get_xml_from_pdf

    _, xml = get_xml_from_pdf(pdf, check_xsd=False)
    return xml


def cii_xml(content: InvoiceContent) -> bytes:
    """The CII XML of computed :class:`InvoiceContent`."""
    x = _Builder(content.currency)
    root = etree.Element(_q("rsm:CrossIndustryInvoice"), nsmap=NS)
    context = x.sub(root, "rsm:ExchangedDocumentContext")
    x.sub(x.sub(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID", GUIDELINE)
    document = x.sub(root, "rsm:ExchangedDocument")
    x.sub(document, "ram:ID", content.number)
    x.sub(document, "ram:TypeCode", content.type_code)
    x.date(x.sub(document, "ram:IssueDateTime"), content.issue_date)
    if content.reason:
        x.sub(x.sub(document, "ram:IncludedNote"), "ram:Content", content.reason)
    for subject, text in content.mentions:
        note = x.sub(document, "ram:IncludedNote")
        x.sub(note, "ram:Content", text)
        x.sub(note, "ram:SubjectCode", subject)
    transaction = x.sub(root, "rsm:SupplyChainTradeTransaction")
    for line in content.lines:
        _line(x, transaction, line)
    agreement = x.sub(transaction, "ram:ApplicableHeaderTradeAgreement")
    _party(x, agreement, "ram:SellerTradeParty", content.seller)
    _party(x, agreement, "ram:BuyerTradeParty", content.buyer)
    x.sub(transaction, "ram:ApplicableHeaderTradeDelivery")
    _settlement(x, x.sub(transaction, "ram:ApplicableHeaderTradeSettlement"), content)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


class _Builder:
    """Small helpers to write CII elements: text, amounts from minor units, dates (format 102)."""

    def __init__(self, currency: str):
        self.currency = currency

    @staticmethod
    def sub(parent, name: str, text: str | None = None, **attrs) -> etree._Element:
        element = etree.SubElement(parent, _q(name), attrs)
        if text is not None:
            element.text = text
        return element

    def amount(self, parent, name: str, minor: int, with_currency: bool = False) -> None:
        attrs = {"currencyID": self.currency} if with_currency else {}
        self.sub(parent, name, str(from_minor(minor, self.currency)), **attrs)

    def date(self, parent, day: dt.date, prefix: str = "udt") -> None:
        self.sub(parent, f"{prefix}:DateTimeString", day.strftime("%Y%m%d"), format="102")


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain XML decimal text, without exponent or trailing zeros."""
    text = format(Decimal(value).normalize(), "f")
    return text if text != "-0" else "0"


def percent_text(rate: Decimal) -> str:
    return decimal_text(Decimal(rate) * 100)


def _line(x: _Builder, transaction, line) -> None:
    item = x.sub(transaction, "ram:IncludedSupplyChainTradeLineItem")
    x.sub(x.sub(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", str(line.position))
    x.sub(x.sub(item, "ram:SpecifiedTradeProduct"), "ram:Name", line.description)
    price = x.sub(x.sub(item, "ram:SpecifiedLineTradeAgreement"), "ram:NetPriceProductTradePrice")
    x.sub(price, "ram:ChargeAmount", decimal_text(line.net_price))
    if line.base_quantity is not None:
        x.sub(price, "ram:BasisQuantity", decimal_text(line.base_quantity), unitCode=line.unit_code)
    x.sub(x.sub(item, "ram:SpecifiedLineTradeDelivery"), "ram:BilledQuantity", decimal_text(line.quantity),
          unitCode=line.unit_code)
    settlement = x.sub(item, "ram:SpecifiedLineTradeSettlement")
    tax = x.sub(settlement, "ram:ApplicableTradeTax")
    x.sub(tax, "ram:TypeCode", "VAT")
    x.sub(tax, "ram:CategoryCode", line.vat_category)
    x.sub(tax, "ram:RateApplicablePercent", percent_text(line.vat_rate))
    x.amount(x.sub(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation"), "ram:LineTotalAmount",
             line.amount_minor)


def _party(x: _Builder, agreement, name: str, party: dict) -> None:
    element = x.sub(agreement, name)
    if party.get("number"):
        x.sub(element, "ram:ID", party["number"])
    x.sub(element, "ram:Name", party.get("legal_name") or party.get("name"))
    siren = siren_of(party)
    if siren:
        legal = x.sub(element, "ram:SpecifiedLegalOrganization")
        x.sub(legal, "ram:ID", siren, schemeID=SIREN_SCHEME)
        if party.get("legal_name") and party.get("name") and party["name"] != party["legal_name"]:
            x.sub(legal, "ram:TradingBusinessName", party["name"])
    address = x.sub(element, "ram:PostalTradeAddress")
    if party.get("postcode"):
        x.sub(address, "ram:PostcodeCode", party["postcode"])
    for tag, text in zip(("ram:LineOne", "ram:LineTwo", "ram:LineThree"), address_lines(party)):
        x.sub(address, tag, text)
    if party.get("city"):
        x.sub(address, "ram:CityName", party["city"])
    x.sub(address, "ram:CountryID", party.get("country") or "FR")
    if party.get("email"):
        x.sub(x.sub(element, "ram:URIUniversalCommunication"), "ram:URIID", party["email"], schemeID="EM")
    if party.get("vat_number"):
        x.sub(x.sub(element, "ram:SpecifiedTaxRegistration"), "ram:ID", party["vat_number"], schemeID="VA")


def _settlement(x: _Builder, settlement, content: InvoiceContent) -> None:
    pay = content.payment
    if pay is not None and pay.creditor_id:
        x.sub(settlement, "ram:CreditorReferenceID", pay.creditor_id)
    x.sub(settlement, "ram:PaymentReference", content.number)
    x.sub(settlement, "ram:InvoiceCurrencyCode", content.currency)
    if pay is not None:
        means = x.sub(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
        x.sub(means, "ram:TypeCode", pay.means_code)
        if pay.debtor_iban:
            x.sub(x.sub(means, "ram:PayerPartyDebtorFinancialAccount"), "ram:IBANID", pay.debtor_iban)
        if pay.iban:
            x.sub(x.sub(means, "ram:PayeePartyCreditorFinancialAccount"), "ram:IBANID", pay.iban)
        if pay.bic:
            x.sub(x.sub(means, "ram:PayeeSpecifiedCreditorFinancialInstitution"), "ram:BICID", pay.bic)
    for vat in content.vat:
        tax = x.sub(settlement, "ram:ApplicableTradeTax")
        x.amount(tax, "ram:CalculatedAmount", vat.vat_minor)
        x.sub(tax, "ram:TypeCode", "VAT")
        if vat.exemption_reason:
            x.sub(tax, "ram:ExemptionReason", vat.exemption_reason)
        x.amount(tax, "ram:BasisAmount", vat.base_minor)
        x.sub(tax, "ram:CategoryCode", vat.category)
        if vat.exemption_code:
            x.sub(tax, "ram:ExemptionReasonCode", vat.exemption_code)
        x.sub(tax, "ram:RateApplicablePercent", percent_text(vat.rate))
    period = x.sub(settlement, "ram:BillingSpecifiedPeriod")
    x.date(x.sub(period, "ram:StartDateTime"), content.period_start)
    x.date(x.sub(period, "ram:EndDateTime"), content.period_last_day)
    terms = x.sub(settlement, "ram:SpecifiedTradePaymentTerms")
    x.date(x.sub(terms, "ram:DueDateDateTime"), content.due_date)
    if pay is not None and pay.mandate_umr:
        x.sub(terms, "ram:DirectDebitMandateID", pay.mandate_umr)
    totals = x.sub(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    x.amount(totals, "ram:LineTotalAmount", content.subtotal_minor)
    x.amount(totals, "ram:TaxBasisTotalAmount", content.subtotal_minor)
    x.amount(totals, "ram:TaxTotalAmount", content.vat_minor, with_currency=True)
    x.amount(totals, "ram:GrandTotalAmount", content.total_minor)
    x.amount(totals, "ram:DuePayableAmount", content.total_minor)
    if content.credited is not None:
        reference = x.sub(settlement, "ram:InvoiceReferencedDocument")
        x.sub(reference, "ram:IssuerAssignedID", content.credited[0])
        x.date(x.sub(reference, "ram:FormattedIssueDateTime"), content.credited[1], prefix="qdt")
