"""Factur-X CII and UBL of every kind of invoice we issue: valid against the XSDs and the CEN
EN 16931 schematrons, with the database totals to the cent."""

import pytest
from lxml import etree

from document_builders import issue, line
from bluerocktel.billing.vat import vat_mention
from bluerocktel.documents.content import DocumentError
from bluerocktel.documents.facturx import NS, facturx_xml
from bluerocktel.documents.ubl import ubl_xml
from bluerocktel.documents.validation import validate_facturx_xml, validate_ubl_xml

SIP = line("Trunk SIP — Siège", 2, "29.90", 5980)                       # 2 × 29.90 = 59.80
CALLS = line("Communications mobile : 3 appels", 3, None, 123, unit="call", kind="usage")   # usage total, no unit price


def issue_case(session, case: str):
    """(invoice, expected (net, VAT, total) as XML text) for one kind of invoice, amounts worked out by hand."""
    if case == "fr_20":
        # 59.80 + 1.23 = 61.03; VAT 61.03 × 20 % = 12.206 → 12.21; total 73.24
        return issue(session, [SIP, CALLS]), ("61.03", "12.21", "73.24")
    if case == "mixed_20_10":
        # 20 %: 49.90 → 9.98; 10 %: 10.05 + 10.05 = 20.10 → 2.01 (per rate; per line it would be 1.01 + 1.01)
        lines = [line("Standard hébergé", 1, "49.90", 4990), line("Fax vers mail", 3, "3.35", 1005, "0.10"),
                 line("Fax vers mail (2)", 3, "3.35", 1005, "0.10")]
        return issue(session, lines), ("70.00", "11.99", "81.99")
    if case == "reverse_charge":
        lines = [line("Trunk SIP — Berlin", 2, "29.90", 5980, "0")]
        return (issue(session, lines, vat_regime="eu_reverse_charge", country="DE", buyer_vat="DE123456789"),
                ("59.80", "0.00", "59.80"))
    if case == "export":
        lines = [line("Trunk SIP — Genève", 1, "29.90", 2990, "0")]
        return issue(session, lines, vat_regime="export", country="CH", buyer_vat=None), ("29.90", "0.00", "29.90")
    if case == "credit_note_partial":
        invoice = issue(session, [SIP, CALLS])
        lines = [line("Avoir : 1 mois de trunk SIP", 1, "29.90", 2990, kind="credit")]   # VAT 5.98
        return issue(session, lines, credits=invoice, reason="Geste commercial"), ("29.90", "5.98", "35.88")
    if case == "sepa_debit":
        return issue(session, [SIP], payment_method="sepa_debit"), ("59.80", "11.96", "71.76")
    if case == "zero_and_discount_lines":
        # 59.80 + 0.00 + 0.00 − 5.98 = 53.82; VAT 10.764 → 10.76; total 64.58
        lines = [SIP, line("Portabilité offerte", 1, "0.00", 0, unit="unit", kind="one_off"),
                 line("Données mobiles : 1,5 Mo (forfait)", "1.5", None, 0, unit="MB", kind="usage"),
                 line("Remise fidélité 10 %", 1, "-5.98", -598, unit="unit", kind="discount")]
        return issue(session, lines), ("53.82", "10.76", "64.58")
    raise AssertionError(case)


CASES = ["fr_20", "mixed_20_10", "reverse_charge", "export", "credit_note_partial", "sepa_debit",
         "zero_and_discount_lines"]


def texts(xml: bytes, path: str) -> list[str]:
    return [e.text for e in etree.fromstring(xml).xpath(path, namespaces=NS)]


@pytest.mark.parametrize("case", CASES)
def test_every_invoice_kind_passes_xsd_and_en16931_schematron_with_db_totals(docs_wb, case):
    with docs_wb.db.session() as s:
        invoice, (net, vat, total) = issue_case(s, case)
        xml, ubl = facturx_xml(invoice), ubl_xml(invoice)
        assert validate_facturx_xml(xml) == []
        assert validate_ubl_xml(ubl) == []
        summation = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:"
        assert texts(xml, summation + "TaxBasisTotalAmount") == [net]
        assert texts(xml, summation + "TaxTotalAmount") == [vat]
        assert texts(xml, summation + "GrandTotalAmount") == [total]
        assert (invoice.subtotal_minor, invoice.vat_minor, invoice.total_minor) == tuple(
            int(amount.replace(".", "")) for amount in (net, vat, total))
        ubl_ns = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
        root = etree.fromstring(ubl)
        assert root.xpath("//cbc:PayableAmount/text()", namespaces=ubl_ns) == [total]
        assert root.xpath("//cbc:TaxExclusiveAmount/text()", namespaces=ubl_ns) == [net]


def test_mixed_rates_have_one_vat_breakdown_per_rate(docs_wb):
    with docs_wb.db.session() as s:
        xml = facturx_xml(issue_case(s, "mixed_20_10")[0])
    tax = "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:"
    assert texts(xml, tax + "RateApplicablePercent") == ["10", "20"]
    assert texts(xml, tax + "BasisAmount") == ["20.10", "49.90"]
    assert texts(xml, tax + "CalculatedAmount") == ["2.01", "9.98"]
    assert texts(xml, tax + "CategoryCode") == ["S", "S"]


def test_reverse_charge_and_export_are_exempt_categories_with_their_reason(docs_wb):
    with docs_wb.db.session() as s:
        reverse = facturx_xml(issue_case(s, "reverse_charge")[0])
        export = facturx_xml(issue_case(s, "export")[0])
    tax = "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:"
    assert texts(reverse, tax + "CategoryCode") == ["AE"]
    assert texts(reverse, tax + "ExemptionReasonCode") == ["VATEX-EU-AE"]
    assert texts(reverse, tax + "ExemptionReason") == [vat_mention("eu_reverse_charge", "fr")]
    assert "Autoliquidation" in texts(reverse, tax + "ExemptionReason")[0]
    assert texts(reverse, "//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == ["DE123456789"]
    assert texts(export, tax + "CategoryCode") == ["G"]
    assert texts(export, tax + "ExemptionReasonCode") == ["VATEX-EU-G"]
    assert texts(export, tax + "ExemptionReason") == [vat_mention("export", "fr")]


def test_credit_note_is_type_381_and_references_the_invoice(docs_wb):
    with docs_wb.db.session() as s:
        credit_note = issue_case(s, "credit_note_partial")[0]
        credited_number = credit_note.number.replace("AV-2026-", "FA-2026-")
        credited_number = f"FA-2026-{int(credited_number[-6:]) - 1:06d}"   # the invoice issued just before
        xml = facturx_xml(credit_note)
    assert texts(xml, "//rsm:ExchangedDocument/ram:TypeCode") == ["381"]
    assert texts(xml, "//ram:InvoiceReferencedDocument/ram:IssuerAssignedID") == [credited_number]
    assert texts(xml, "//ram:InvoiceReferencedDocument/ram:FormattedIssueDateTime/qdt:DateTimeString") == ["20260402"]
    assert "Geste commercial" in texts(xml, "//rsm:ExchangedDocument/ram:IncludedNote/ram:Content")


def test_sepa_debit_is_payment_means_59_with_mandate_creditor_and_debtor_account(docs_wb):
    with docs_wb.db.session() as s:
        invoice = issue_case(s, "sepa_debit")[0]
        xml = facturx_xml(invoice)
        umr = invoice.buyer["sepa_mandate"]["umr"]
    assert umr.startswith("BRT-MANDATE-")
    assert texts(xml, "//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode") == ["59"]
    assert texts(xml, "//ram:SpecifiedTradePaymentTerms/ram:DirectDebitMandateID") == [umr]
    assert texts(xml, "//ram:CreditorReferenceID") == ["FR12ZZZ123456"]
    assert texts(xml, "//ram:PayerPartyDebtorFinancialAccount/ram:IBANID") == ["FR7630004000031234567890143"]


def test_transfer_gives_payment_means_58_with_the_seller_iban_and_legal_ids(docs_wb):
    with docs_wb.db.session() as s:
        xml = facturx_xml(issue_case(s, "fr_20")[0])
    assert texts(xml, "//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode") == ["58"]
    assert texts(xml, "//ram:PayeePartyCreditorFinancialAccount/ram:IBANID") == ["FR7630006000011234567890189"]
    assert texts(xml, "//ram:SellerTradeParty/ram:SpecifiedLegalOrganization/ram:ID") == ["912345678"]
    assert etree.fromstring(xml).xpath("//ram:SellerTradeParty/ram:SpecifiedLegalOrganization/ram:ID/@schemeID",
                                       namespaces=NS) == ["0002"]
    assert texts(xml, "//ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString") == ["20260502"]
    # the usage line has no unit price: priced per its 3 calls (base quantity), so 3 × 1.23 / 3 = 1.23
    assert texts(xml, "//ram:NetPriceProductTradePrice/ram:BasisQuantity") == ["3"]


def test_unit_codes_are_un_ece_recommendation_20(docs_wb):
    with docs_wb.db.session() as s:
        xml = facturx_xml(issue_case(s, "zero_and_discount_lines")[0])
    assert texts(xml, "//ram:BilledQuantity") == ["2", "1", "1.5", "-1"]       # the discount: −1 × 5.98
    assert etree.fromstring(xml).xpath("//ram:BilledQuantity/@unitCode", namespaces=NS) == ["MON", "C62", "4L", "C62"]
    assert texts(xml, "//ram:NetPriceProductTradePrice/ram:ChargeAmount") == ["29.9", "0", "0", "5.98"]


def test_totals_off_by_one_cent_are_reported_with_the_rule_id(docs_wb):
    with docs_wb.db.session() as s:
        xml = facturx_xml(issue_case(s, "fr_20")[0])
    off_by_one_cent = xml.replace(b"<ram:LineTotalAmount>61.03</ram:LineTotalAmount>",
                                  b"<ram:LineTotalAmount>61.04</ram:LineTotalAmount>")
    assert off_by_one_cent != xml
    errors = validate_facturx_xml(off_by_one_cent)
    assert [e.split(":")[0] for e in errors] == ["BR-CO-10", "BR-CO-13"]
    grand_total_off = xml.replace(b"<ram:GrandTotalAmount>73.24<", b"<ram:GrandTotalAmount>73.25<")
    # 61.03 + 12.21 ≠ 73.25 (BR-CO-15), and the amount due 73.24 ≠ 73.25 − 0 prepaid (BR-CO-16)
    assert [e.split(":")[0] for e in validate_facturx_xml(grand_total_off)] == ["BR-CO-15", "BR-CO-16"]


def test_xsd_errors_come_before_the_schematron(docs_wb):
    with docs_wb.db.session() as s:
        xml = facturx_xml(issue_case(s, "fr_20")[0])
    errors = validate_facturx_xml(xml.replace(b"<ram:TypeCode>380</ram:TypeCode>", b""))
    assert len(errors) == 1 and errors[0].startswith("XSD line") and "IssueDateTime" in errors[0]


def test_an_invoice_whose_stored_totals_differ_from_its_lines_is_refused(docs_wb):
    with docs_wb.db.session() as s:
        invoice = issue_case(s, "fr_20")[0]
        invoice.vat_minor += 1
        with pytest.raises(DocumentError, match=r"stored totals .*VAT 1222.*VAT per rate 1221"):
            facturx_xml(invoice)
