"""The invoice PDF carries the mentions French law requires, in French and in English, and is a
Factur-X PDF/A-3b whose embedded XML is exactly our CII."""

import io
import re

import pypdf
import pytest

from document_builders import issue, line, pdf_text
from bluerocktel.billing.vat import vat_mention
from bluerocktel.documents.facturx import embed_facturx, extract_facturx_xml, facturx_xml
from bluerocktel.documents.invoice import render_invoice_pdf
from bluerocktel.documents.validation import xsd_errors

SIP = line("Trunk SIP — Siège", 2, "29.90", 5980)
CALLS = line("Communications mobile : 3 appels", 3, None, 123, unit="call", kind="usage")

SELLER_IDENTITY = ["BlueRock Télécom SAS", "12 quai Rambaud", "69002 Lyon", "SIRET 91234567800017",
                   "RCS Lyon 912 345 678"]
FRENCH = SELLER_IDENTITY + [
    "FACTURE", "SAS au capital de 50 000 €", "N° TVA FR40912345678", "Boulangerie Martin & Fils",
    "69001 Lyon", "SIREN 999999999", "N° TVA FR44999999999", "Date d'émission 02/04/2026",
    "Date d'échéance 02/05/2026", "du 01/03/2026 au 31/03/2026", "Total HT 61,03 €",
    "TVA 20 % (sur 61,03 €) 12,21 €", "Total TTC 73,24 €",
    "des pénalités au taux annuel de 12 % sont exigibles dès le lendemain de la date d'échéance",
    "indemnité forfaitaire pour frais de recouvrement de 40 € (art. D441-5 du Code de commerce)",
    "Règlement par virement — IBAN FR76 3000 6000 0112 3456 7890 189 — BIC AGRIFRPP",
]
ENGLISH = SELLER_IDENTITY + [
    "INVOICE", "SAS with a share capital of 50 000 €", "VAT no. FR40912345678", "Issue date 2026-04-02",
    "Due date 2026-05-02", "2026-03-01 to 2026-03-31", "Total excl. VAT €61.03", "VAT 20% (on €61.03) €12.21",
    "Total incl. VAT €73.24", "penalties at the annual rate of 12% from the day after the due date",
    "fixed recovery indemnity of €40", "Payment by bank transfer — IBAN FR76 3000 6000 0112 3456 7890 189",
]


@pytest.mark.parametrize("language, expected, absent", [("fr", FRENCH, "INVOICE"), ("en", ENGLISH, "FACTURE")])
def test_invoice_pdf_has_every_legal_mention(docs_wb, language, expected, absent):
    with docs_wb.db.session() as s:
        text = pdf_text(render_invoice_pdf(issue(s, [SIP, CALLS], language=language)))
    for mention in expected:
        assert mention in text, mention
    assert absent not in text


@pytest.mark.parametrize("language, regime, country, vat, words", [
    ("fr", "eu_reverse_charge", "DE", "DE123456789", ["Autoliquidation", "2006/112/CE"]),
    ("en", "eu_reverse_charge", "DE", "DE123456789", ["Reverse charge", "2006/112/EC"]),
    ("fr", "export", "CH", None, ["TVA non applicable", "CGI"]),
    ("en", "export", "CH", None, ["VAT not applicable"]),
])
def test_reverse_charge_and_export_print_their_vat_mention(docs_wb, language, regime, country, vat, words):
    with docs_wb.db.session() as s:
        invoice = issue(s, [line("Trunk SIP", 1, "29.90", 2990, "0")], language=language, vat_regime=regime,
                        country=country, buyer_vat=vat)
        text = pdf_text(render_invoice_pdf(invoice))
    mention = vat_mention(regime, language)                      # the legal text is billing.vat's
    assert mention in text and all(word in mention for word in words)
    assert ("DE" if country == "DE" else "CH") in text          # the buyer's country is printed


@pytest.mark.parametrize("language, expected", [
    ("fr", ["AVOIR", "N° d'avoir AV-2026-", "Avoir sur la facture FA-2026-{n:06d} du 02/04/2026",
            "Motif : Résiliation anticipée", "Total TTC 35,88 €"]),
    ("en", ["CREDIT NOTE", "Credit note number AV-2026-", "Credit note for invoice FA-2026-{n:06d} of 2026-04-02",
            "Reason: Résiliation anticipée", "Total incl. VAT €35.88"]),
])
def test_credit_note_is_titled_avoir_and_names_the_invoice_it_credits(docs_wb, language, expected):
    with docs_wb.db.session() as s:
        invoice = issue(s, [SIP], language=language)
        credit = issue(s, [line("Trunk SIP, mars", 1, "29.90", 2990, kind="credit")], language=language,
                       credits=invoice, reason="Résiliation anticipée")      # 29.90 + 5.98 VAT = 35.88
        n = int(invoice.number[-6:])
        text = pdf_text(render_invoice_pdf(credit))
    for mention in expected:
        assert mention.format(n=n) in text, mention
    assert "IBAN" not in text                                    # nothing to pay on a credit note


def test_consumers_get_no_recovery_indemnity(docs_wb):
    with docs_wb.db.session() as s:
        text = pdf_text(render_invoice_pdf(issue(s, [SIP], kind="consumer")))
    assert "40 €" not in text and "taux annuel de 12 %" in text


def test_sepa_debit_invoice_says_how_it_is_collected(docs_wb):
    with docs_wb.db.session() as s:
        invoice = issue(s, [SIP], payment_method="sepa_debit")
        text = pdf_text(render_invoice_pdf(invoice))
        umr = invoice.buyer["sepa_mandate"]["umr"]
    assert f"Règlement par prélèvement SEPA — mandat {umr}, créancier FR12ZZZ123456" in text


def test_snapshots_win_over_the_live_rows(docs_wb):
    """An issued invoice keeps the identities it was issued with, even after the brand moved."""
    with docs_wb.db.session() as s:
        invoice = issue(s, [SIP])
        invoice.brand.address, invoice.brand.city = "1 avenue Nouvelle", "Paris"
        text = pdf_text(render_invoice_pdf(invoice))
        assert "12 quai Rambaud" in text and "avenue Nouvelle" not in text
        old = issue(s, [SIP], snapshot=False)                    # issued before snapshots: live rows
        old.brand.address = "1 avenue Nouvelle"
        assert "1 avenue Nouvelle" in pdf_text(render_invoice_pdf(old))


@pytest.mark.parametrize("way", ["rendered with the XML", "embedded afterwards"])
def test_facturx_pdf_is_pdfa3b_with_our_xml_embedded(docs_wb, way):
    with docs_wb.db.session() as s:
        invoice = issue(s, [SIP, CALLS])
        xml = facturx_xml(invoice)
        if way == "rendered with the XML":            # what the billing run does, in one pass
            pdf = render_invoice_pdf(invoice, xml)
        else:
            pdf = embed_facturx(render_invoice_pdf(invoice), xml)
    assert extract_facturx_xml(pdf) == xml
    assert xsd_errors(extract_facturx_xml(pdf), "cii") == []
    catalog = pypdf.PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    intents = catalog["/OutputIntents"]
    assert intents[0].get_object()["/S"] == "/GTS_PDFA1" and "/DestOutputProfile" in intents[0].get_object()
    xmp = catalog["/Metadata"].get_object().get_data().decode("utf-8")
    # pdfaid properties as elements or as attributes (both are XMP)
    assert re.search(r'pdfaid:part(>|=")3\b', xmp) and re.search(r'pdfaid:conformance(>|=")B\b', xmp)
    assert "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#" in xmp
    assert "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
    attached = [spec.get_object()["/F"] for spec in catalog["/AF"]]
    assert attached == ["factur-x.xml"]
    assert [spec.get_object()["/AFRelationship"] for spec in catalog["/AF"]] == ["/Data"]
