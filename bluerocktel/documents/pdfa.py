"""Make a ReportLab PDF a PDF/A-3b, and a Factur-X invoice when given its XML (pikepdf, one pass).

ReportLab already writes what PDF/A asks of the page itself when the drawing keeps to it
(``invoice_canvas.py``): embedded TrueType subsets (symbolic, one Unicode cmap, a ToUnicode
map), RGB colours, no transparency, no JavaScript or actions. What it lacks is added here:

- an sRGB output intent (``/GTS_PDFA1``; pikepdf's own sRGB ICC profile, read once);
- XMP metadata declaring PDF/A-3 level B, with the title, author, dates and producer of the
  document information dictionary, which is rewritten to agree with it;
- with ``facturx_xml``: the XML as the embedded file ``factur-x.xml`` (``text/xml``,
  ``/AFRelationship /Data``, listed in the catalog's ``/AF``) and the Factur-X extension schema
  and ``fx:`` values in the XMP (``facturx.FACTURX_XMP``);
- the overlays (the brand's logo): a page of another PDF placed as a form XObject.

:func:`pdfa_problems` checks a PDF with pikepdf's PDF/A-3b validator (``billing documents check``
and the tests use it).
"""

from __future__ import annotations

import datetime as dt
import io
from functools import lru_cache
from importlib import resources
from xml.sax.saxutils import escape

from bluerocktel.documents.facturx import FACTURX_FILENAME, FACTURX_XMP

PRODUCER = "BlueRockTEL"
XMP_NAMESPACES_RULE = "ISO_19005_3:6.6.2.3.1-1"
FACTURX_EXTENSION = ("pdfaExtension", "pdfaSchema", "pdfaProperty", "fx:", "fx=")


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """The sRGB ICC profile pikepdf ships for PDF/A output intents."""
    return (resources.files("pikepdf.pdfa") / "data" / "sRGB.icc").read_bytes()


def finish_pdfa3b(pdf: bytes, *, title: str, author: str, language: str, facturx_xml: bytes | None = None,
                  overlays=(), now: dt.datetime | None = None) -> bytes:
    """``pdf`` (ReportLab's) as a PDF/A-3b, with ``facturx_xml`` attached and ``overlays`` placed."""
    import pikepdf
    from pikepdf import Array, Dictionary, Name, String

    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    with pikepdf.open(io.BytesIO(pdf)) as document:
        for overlay in overlays:
            _place(document, overlay)
        for page in document.pages:
            if "/Trans" in page.obj and not page.obj.Trans.keys():       # ReportLab's empty transition
                del page.obj["/Trans"]
        profile = pikepdf.Stream(document, srgb_profile())
        profile.N = 3
        document.Root.OutputIntents = Array([document.make_indirect(Dictionary(
            Type=Name.OutputIntent, S=Name.GTS_PDFA1, OutputConditionIdentifier=String("sRGB"),
            Info=String("sRGB IEC61966-2.1"), DestOutputProfile=profile))])
        document.Root.Lang = String(language)
        if facturx_xml is not None:
            spec = pikepdf.AttachedFileSpec(
                document, facturx_xml, description="Factur-X XML file", filename=FACTURX_FILENAME,
                mime_type="text/xml", creation_date=_pdf_date(now), mod_date=_pdf_date(now),
                relationship=Name.Data)
            document.attachments[FACTURX_FILENAME] = spec
            document.Root.AF = Array([spec.obj])
        pdf_date = String(_pdf_date(now))
        document.trailer.Info = document.make_indirect(Dictionary(
            Title=String(title), Author=String(author), Creator=String(PRODUCER), Producer=String(PRODUCER),
            CreationDate=pdf_date, ModDate=pdf_date))
        metadata = pikepdf.Stream(document, _xmp(title, author, now, facturx_xml is not None))
        metadata.Type, metadata.Subtype = Name.Metadata, Name.XML
        document.Root.Metadata = document.make_indirect(metadata)
        out = io.BytesIO()
        document.save(out, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.disable,
                      deterministic_id=True, fix_metadata_version=False)      # our XMP, byte for byte
    return out.getvalue()


def _place(document, overlay) -> None:
    """Draw the top-left ``overlay.width`` × ``overlay.height`` corner of the one-page ``overlay.pdf``, as a form
    XObject, with its lower-left corner at ``(overlay.x, overlay.y)`` of page ``overlay.page``."""
    import pikepdf
    from pikepdf import Array, Name

    source = _open_overlay(overlay.pdf)
    form = document.copy_foreign(source.pages[0].as_form_xobject())
    x0, y0, x1, y1 = (float(v) for v in source.pages[0].mediabox)
    form.BBox = Array([x0, y1 - overlay.height, x0 + overlay.width, y1])
    page = document.pages[overlay.page]
    if Name.XObject not in page.Resources:
        page.Resources.XObject = pikepdf.Dictionary()
    xobjects = page.Resources.XObject
    name = f"/Overlay{len(xobjects.keys())}"          # a fixed name: the same invoice gives the same bytes
    xobjects[name] = form
    dx, dy = overlay.x - x0, overlay.y - (y1 - overlay.height)
    page.contents_add(pikepdf.Stream(document, f"q 1 0 0 1 {dx:.3f} {dy:.3f} cm {name} Do Q".encode()),
                      prepend=False)


@lru_cache(maxsize=16)
def _open_overlay(pdf: bytes):
    """An overlay PDF opened once per process (the same logo is placed on every invoice), without the
    empty resource dictionaries WeasyPrint writes (/Pattern, /Shading: validators flag them)."""
    import pikepdf

    source = pikepdf.open(io.BytesIO(pdf))
    for page in source.pages:
        resources = page.obj.get("/Resources")
        for key in list(resources.keys()) if resources is not None else ():
            if isinstance(resources[key], pikepdf.Dictionary) and not resources[key].keys():
                del resources[key]
    return source


def _pdf_date(when: dt.datetime) -> str:
    return when.strftime("D:%Y%m%d%H%M%S+00'00'")


def _xmp(title: str, author: str, when: dt.datetime, facturx: bool) -> bytes:
    date = when.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{rdf}">'
        '<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">'
        '<pdfaid:part>3</pdfaid:part><pdfaid:conformance>B</pdfaid:conformance></rdf:Description>'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:format>application/pdf</dc:format>'
        f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(title)}</rdf:li></rdf:Alt></dc:title>'
        f'<dc:creator><rdf:Seq><rdf:li>{escape(author)}</rdf:li></rdf:Seq></dc:creator></rdf:Description>'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        f'<xmp:CreatorTool>{PRODUCER}</xmp:CreatorTool><xmp:CreateDate>{date}</xmp:CreateDate>'
        f'<xmp:ModifyDate>{date}</xmp:ModifyDate></rdf:Description>'
        '<rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">'
        f'<pdf:Producer>{PRODUCER}</pdf:Producer></rdf:Description>'
    ).encode("utf-8") + (FACTURX_XMP if facturx else b"") + b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'


def pdfa_problems(pdf: bytes) -> list[str]:
    """What pikepdf's PDF/A-3b validator finds wrong with ``pdf``, as texts (``[]``: none).

    The validator admits no XMP extension schema, while PDF/A allows them and Factur-X requires
    one (the ``fx:`` properties): its findings on that schema are left out, and only those.
    """
    import pikepdf.pdfa

    report = pikepdf.pdfa.validate_written(io.BytesIO(pdf), "3b")
    return [f"PDF/A-3b {f.rule}: {f.message} (at {f.where})" for f in report.findings
            if not (f.rule == XMP_NAMESPACES_RULE and any(name in f.message for name in FACTURX_EXTENSION))]
