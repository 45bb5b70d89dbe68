"""The invoice PDF is a PDF/A-3b (pikepdf's validator) and the Factur-X PDF adds exactly the XML and its
XMP declaration: consistent metadata, one factur-x.xml attachment, the same page as without it."""

import io

import pikepdf
import pikepdf.pdfa
import pytest
from lxml import etree

from document_builders import issue, line
from bluerocktel.documents.content import DocumentError, invoice_content
from bluerocktel.documents.facturx import FACTURX_XMP, extract_facturx_xml, facturx_xml
from bluerocktel.documents.invoice import invoice_page, page_to_pdf, render_invoice_pdf
from bluerocktel.documents.pdfa import pdfa_problems

LOGO = ('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40">'
        '<rect width="120" height="40" fill="#c00"/><text x="8" y="28" font-size="20">Télécom</text></svg>')
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
        return [page.Contents.read_bytes() if isinstance(page.Contents, pikepdf.Stream)
                else b"".join(part.read_bytes() for part in page.Contents) for page in document.pages]


def findings(pdf: bytes) -> list:
    return pikepdf.pdfa.validate_written(io.BytesIO(pdf), "3b").findings


def test_invoice_and_credit_note_pdfs_pass_the_pdfa3b_validator(docs_wb):
    with docs_wb.db.session() as s:
        pdfs = [render_invoice_pdf(invoice) for invoice in invoices(s)]
    for pdf in pdfs:                 # fonts embedded, output intent, XMP and Info agreeing, no forbidden feature
        assert findings(pdf) == []
    with pikepdf.open(io.BytesIO(pdfs[0])) as document:        # the brand's logo is drawn, as a form XObject
        (name,) = document.pages[0].Resources.XObject.keys()
        assert f"{name} Do".encode() in b"".join(drawing(pdfs[0]))


def test_the_facturx_pdf_differs_from_a_pdfa3b_only_by_the_facturx_xmp_extension(docs_wb):
    # pikepdf's validator admits no XMP extension schema at all, which Factur-X requires (the fx:
    # properties): every finding must be about it, and with it taken out the file passes.
    with docs_wb.db.session() as s:
        invoice = invoices(s)[0]
        pdf = render_invoice_pdf(invoice, facturx_xml(invoice))
    found = findings(pdf)
    assert found and {f.rule for f in found} == {"ISO_19005_3:6.6.2.3.1-1"}
    assert all(any(ns in f.message for ns in ("pdfaExtension", "pdfaSchema", "pdfaProperty", "fx:", "fx="))
               for f in found), found
    with pikepdf.open(io.BytesIO(pdf)) as document:
        document.Root.Metadata.write(document.Root.Metadata.read_bytes().replace(FACTURX_XMP, b""))
        out = io.BytesIO()
        document.save(out)
    assert findings(out.getvalue()) == []
    assert pdfa_problems(pdf) == []                     # what `billing documents check` reports


def test_facturx_pdf_has_consistent_metadata_and_one_attachment(docs_wb):
    with docs_wb.db.session() as s:
        invoice = invoices(s)[0]
        xml, page = facturx_xml(invoice), invoice_page(invoice_content(invoice), invoice.brand)
    pdf = page_to_pdf(page, xml)
    assert extract_facturx_xml(pdf) == xml
    assert drawing(pdf) == drawing(page_to_pdf(page))                         # the same page, XML or not
    with pikepdf.open(io.BytesIO(pdf)) as document:
        catalog, info = document.Root, document.docinfo
        (spec,) = list(catalog.AF)
        assert (spec.F, spec.UF, spec.AFRelationship) == ("factur-x.xml", "factur-x.xml", "/Data")
        assert catalog.Names.EmbeddedFiles.Names[1].objgen == spec.objgen
        assert spec.EF.F.Subtype == "/text/xml" and spec.EF.F.read_bytes() == xml
        assert catalog.OutputIntents[0].S == "/GTS_PDFA1" and "/DestOutputProfile" in catalog.OutputIntents[0]
        xmp = etree.fromstring(catalog.Metadata.read_bytes().split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
        producer, title, created = str(info.Producer), str(info.Title), str(info.CreationDate)
    (rdf,) = xmp.findall(f"{RDF}RDF")                                         # one RDF: readers see the fx: part
    values = {}
    for description in rdf.iter(f"{RDF}Description"):
        values.update(description.attrib)
        values.update({child.tag: child.text for child in description if child.text and child.text.strip()})
    assert values["{http://www.aiim.org/pdfa/ns/id/}part"] == "3"
    assert values["{http://www.aiim.org/pdfa/ns/id/}conformance"] == "B"
    assert values["{http://ns.adobe.com/pdf/1.3/}Producer"] == producer       # Info and XMP agree (PDF/A)
    assert rdf.findtext(".//{http://purl.org/dc/elements/1.1/}title//" + f"{RDF}li") == title == "Facture " + invoice.number
    xmp_created = values["{http://ns.adobe.com/xap/1.0/}CreateDate"]           # 2026-11-27T07:43:00+00:00
    assert created == "D:" + xmp_created[:19].replace("-", "").replace(":", "").replace("T", "") + "+00'00'"
    assert {key: values[FX + key] for key in ("DocumentType", "DocumentFileName", "Version", "ConformanceLevel")} \
        == {"DocumentType": "INVOICE", "DocumentFileName": "factur-x.xml", "Version": "1.0",
            "ConformanceLevel": "EN 16931"}
    schema = rdf.find(".//{http://www.aiim.org/pdfa/ns/schema#}namespaceURI")
    assert schema.text == "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"


def test_a_cii_the_xsd_rejects_is_refused_before_rendering(docs_wb):
    with docs_wb.db.session() as s:
        invoice = invoices(s)[2]
        xml, page = facturx_xml(invoice), invoice_page(invoice_content(invoice), invoice.brand)
    with pytest.raises(DocumentError, match="EN 16931 XSD.*IssueDateTime"):
        page_to_pdf(page, xml.replace(b"<ram:TypeCode>380</ram:TypeCode>", b""))
