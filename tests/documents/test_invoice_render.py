"""The tuned WeasyPrint set-up (weasyprint_engine.py) draws exactly the page that WeasyPrint's defaults
draw, and writes the Factur-X PDF in one pass: PDF/A-3b metadata, one factur-x.xml attachment."""

import io
import re
from xml.etree import ElementTree

import pikepdf
import pytest
from lxml import etree
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration

from document_builders import issue, line, pdf_text
from bluerocktel.documents.content import DocumentError
from bluerocktel.documents.facturx import extract_facturx_xml, facturx_xml
from bluerocktel.documents.invoice import TEMPLATES_DIR, html_to_pdf, render_invoice_html

LOGO = ('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40">'
        '<rect width="120" height="40" fill="#c00"/></svg>')
UA_ELEMENTS = {"html", "head", "title", "meta", "body", "table", "thead", "tbody", "tr", "th", "td", "h1", "h2",
               "p", "b", "img", "footer"}                                     # what templates/ua.css styles
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
FX = "{urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#}"


def invoices(session):
    """A French invoice with a logo and several lines, an English credit note with a reason, a reverse charge."""
    sip = line("Trunk SIP — Siège", 2, "29.90", 5980)
    first = issue(session, [sip, line("Communications mobile : 3 appels", 3, None, 123, unit="call", kind="usage"),
                            line("Remise fidélité 10 %", 1, "-5.98", -598, unit="unit", kind="discount")])
    first.brand.logo_svg, first.brand.primary_color = LOGO, "#7a1f5c"
    credit = issue(session, [line("Trunk SIP, mars", 1, "29.90", 2990, kind="credit")], language="en",
                   credits=issue(session, [sip], language="en"), reason="Résiliation anticipée")
    reverse = issue(session, [line("Trunk SIP — Berlin", 1, "29.90", 2990, "0")], vat_regime="eu_reverse_charge",
                    country="DE", buyer_vat="DE123456789")
    return [first, credit, reverse]


def drawing(pdf: bytes) -> list[bytes]:
    """The content stream of each page: every text, line and colour drawn, in order."""
    with pikepdf.open(io.BytesIO(pdf)) as document:
        return [page.Contents.read_bytes() for page in document.pages]


def stock_weasyprint_pdf(html: str) -> bytes:
    """The page as WeasyPrint renders it by default: HTML5 parser, full user-agent stylesheet, CSS variables."""
    primary, accent = re.search(r'data-primary="([^"]*)" data-accent="([^"]*)"', html).groups()
    colours = f":root {{ --primary: {primary}; --accent: {accent}; }}"
    html = html.replace("</title>", f"</title><style>{colours}</style>", 1)
    fonts = FontConfiguration()
    return HTML(string=html, base_url=str(TEMPLATES_DIR)).write_pdf(
        pdf_variant="pdf/a-3b", font_config=fonts,
        stylesheets=[CSS(filename=str(TEMPLATES_DIR / "invoice.css"), font_config=fonts)])


def test_pages_are_drawn_exactly_as_with_weasyprints_defaults(docs_wb):
    with docs_wb.db.session() as s:
        pages = [render_invoice_html(invoice) for invoice in invoices(s)]
    assert 'data-primary="#7a1f5c"' in pages[0] and "<img" in pages[0] and "Reason:" in pages[1]
    for html in pages:
        assert drawing(html_to_pdf(html)) == drawing(stock_weasyprint_pdf(html))


def test_the_template_uses_only_elements_the_lean_user_agent_stylesheet_covers(docs_wb):
    with docs_wb.db.session() as s:
        pages = [render_invoice_html(invoice) for invoice in invoices(s)]
    used = {element.tag for html in pages for element in ElementTree.fromstring(html).iter()}
    assert used <= UA_ELEMENTS, used - UA_ELEMENTS


def test_html_that_is_not_well_formed_is_left_to_weasyprints_html_parser():
    text = pdf_text(html_to_pdf("<!DOCTYPE html><title>x</title><p>Total <b>73,24&nbsp;€<p>Merci"))
    assert "Total 73,24 €" in text and "Merci" in text


def test_a_colour_that_is_not_a_hex_colour_never_reaches_the_stylesheet():
    page = '<html data-primary="{}" data-accent="#f5a623"><body><h1>Facture</h1></body></html>'
    hostile = html_to_pdf(page.format("red;} body { display: none"))
    assert "FACTURE" in pdf_text(hostile)
    assert drawing(hostile) == drawing(html_to_pdf(page.format("#0b3d91")))  # the default primary colour
    assert drawing(hostile) != drawing(html_to_pdf(page.format("#ff0000")))


def test_facturx_pdf_in_one_pass_is_pdfa3b_with_consistent_metadata_and_one_attachment(docs_wb):
    with docs_wb.db.session() as s:
        invoice = invoices(s)[0]
        xml, html = facturx_xml(invoice), render_invoice_html(invoice)
    pdf = html_to_pdf(html, xml)
    assert extract_facturx_xml(pdf) == xml
    assert drawing(pdf) == drawing(html_to_pdf(html))                         # the same page, XML or not
    with pikepdf.open(io.BytesIO(pdf)) as document:
        catalog, info = document.Root, document.docinfo
        (spec,) = list(catalog.AF)
        assert (spec.F, spec.UF, spec.AFRelationship) == ("factur-x.xml", "factur-x.xml", "/Data")
        assert catalog.Names.EmbeddedFiles.Names[1].objgen == spec.objgen
        assert spec.EF.F.Subtype == "/text/xml" and spec.EF.F.read_bytes() == xml
        assert catalog.OutputIntents[0].S == "/GTS_PDFA1" and "/DestOutputProfile" in catalog.OutputIntents[0]
        xmp = etree.fromstring(catalog.Metadata.read_bytes().split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
        producer, title = str(info.Producer), str(info.Title)
    (rdf,) = xmp.findall(f"{RDF}RDF")                                         # one RDF: readers see the fx: part
    values = {}
    for description in rdf.iter(f"{RDF}Description"):
        values.update(description.attrib)
        values.update({child.tag: child.text for child in description if child.text and child.text.strip()})
    assert values["{http://www.aiim.org/pdfa/ns/id/}part"] == "3"
    assert values["{http://www.aiim.org/pdfa/ns/id/}conformance"] == "B"
    assert values["{http://ns.adobe.com/pdf/1.3/}Producer"] == producer       # Info and XMP agree (PDF/A)
    assert rdf.findtext(".//{http://purl.org/dc/elements/1.1/}title//" + f"{RDF}li") == title
    assert {key: values[FX + key] for key in ("DocumentType", "DocumentFileName", "Version", "ConformanceLevel")} \
        == {"DocumentType": "INVOICE", "DocumentFileName": "factur-x.xml", "Version": "1.0",
            "ConformanceLevel": "EN 16931"}
    schema = rdf.find(".//{http://www.aiim.org/pdfa/ns/schema#}namespaceURI")
    assert schema.text == "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"


def test_a_cii_the_xsd_rejects_is_refused_before_rendering(docs_wb):
    with docs_wb.db.session() as s:
        invoice = invoices(s)[2]
        xml, html = facturx_xml(invoice), render_invoice_html(invoice)
    with pytest.raises(DocumentError, match="EN 16931 XSD.*IssueDateTime"):
        html_to_pdf(html, xml.replace(b"<ram:TypeCode>380</ram:TypeCode>", b""))
