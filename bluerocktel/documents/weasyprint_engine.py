"""WeasyPrint set up for many small invoices: the part of :func:`invoice.html_to_pdf` that imports it.

A billing run renders thousands of one-page invoices, so what WeasyPrint redoes for every
document counts. Each of these keeps the page exactly as WeasyPrint renders it by default (same
drawing operators, checked by ``tests/documents/test_invoice_render.py``); together they took
the benchmark invoice (``benchmarks/documents.py``) from ~100 to ~68 ms of CPU on a loaded
2-core machine (measured side by side: the lean user-agent stylesheet ~15 %, expat and written-in
colours ~10 %, Factur-X in the same pass ~10 %; WeasyPrint's layout and drawing are the rest):

- one state per thread (Pango's font maps are not thread-safe): the font configuration, the
  parsed ``invoice.css`` per pair of brand colours (the colours written in, instead of
  ``var()`` resolved element by element), the ``data:``-only URL fetcher;
- ``templates/ua.css``, the user-agent rules that can match the template's elements, instead of
  WeasyPrint's ~300 (matched against every element of every document);
- the HTML parsed by expat (``xml.etree``) when it is well-formed, which the template always
  is, rather than by the pure-Python HTML5 parser; anything else still goes to WeasyPrint's;
- the Factur-X XML attached and declared in the XMP while the PDF is written, instead of
  reading and rewriting the finished PDF with the ``factur-x`` package.

The brand colours travel on the root element (``data-primary``, ``data-accent``), checked
again here since only ``#rgb``/``#rrggbb`` values may be written into the stylesheet.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from xml.etree import ElementTree

import cssselect2
from weasyprint import CSS, HTML, Attachment
from weasyprint.pdf.metadata import DocumentMetadata
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import URLFetcher

from bluerocktel.documents.facturx import FACTURX_FILENAME, FACTURX_XMP
from bluerocktel.documents.invoice import DEFAULT_COLORS, TEMPLATES_DIR, brand_color

_STATE = threading.local()


class _Renderer:
    """One thread's WeasyPrint state, made on first use and kept."""

    def __init__(self) -> None:
        self.font_config = FontConfiguration()
        self.fetcher = URLFetcher(allowed_protocols=("data",))
        self.user_agent_css = CSS(filename=str(TEMPLATES_DIR / "ua.css"))
        self.css_text = (TEMPLATES_DIR / "invoice.css").read_text(encoding="utf-8")
        self.stylesheets: dict[tuple[str, str], CSS] = {}     # one per brand colour pair: a handful

    def stylesheet(self, primary: str, accent: str) -> CSS:
        sheet = self.stylesheets.get((primary, accent))
        if sheet is None:
            text = self.css_text.replace("var(--primary)", primary).replace("var(--accent)", accent)
            sheet = self.stylesheets[primary, accent] = CSS(string=text, base_url=str(TEMPLATES_DIR),
                                                            font_config=self.font_config)
        return sheet


def renderer() -> _Renderer:
    if not hasattr(_STATE, "renderer"):
        _STATE.renderer = _Renderer()
    return _STATE.renderer


class InvoiceHTML(HTML):
    """An invoice page for WeasyPrint, parsed by expat when well-formed, styled with ``ua.css``."""

    def __init__(self, html: str, state: _Renderer):
        self._user_agent_css = state.user_agent_css
        try:
            if "<!ENTITY" in html:
                raise ElementTree.ParseError("entity declarations are left to the HTML parser")
            root = ElementTree.fromstring(html)
        except ElementTree.ParseError:        # not XHTML-clean (not our template): WeasyPrint parses it
            super().__init__(string=html, base_url=str(TEMPLATES_DIR), url_fetcher=state.fetcher)
            return
        self.base_url = str(TEMPLATES_DIR)
        self.url_fetcher = state.fetcher
        self.media_type = "print"
        self.wrapper_element = cssselect2.ElementWrapper.from_html_root(root, content_language=None)
        self.etree_element = self.wrapper_element.etree_element

    def _ua_stylesheets(self, forms=False):
        return [self._user_agent_css]


class _FacturXMetadata(DocumentMetadata):
    """WeasyPrint's metadata with the Factur-X XMP (extension schema and ``fx:`` values) in its rdf:RDF."""

    def generate_rdf_metadata(self, *args, **kwargs):
        rdf = super().generate_rdf_metadata(*args, **kwargs)
        end = rdf.rindex(b"</rdf:RDF>")
        return rdf[:end] + FACTURX_XMP + rdf[end:]


def write_pdf(html: str, facturx_xml: bytes | None = None) -> bytes:
    """PDF/A-3b of ``html`` styled by ``invoice.css`` in the root element's colours; with
    ``facturx_xml`` (already XSD-checked) attached as ``factur-x.xml`` and declared in the XMP."""
    state = renderer()
    page = InvoiceHTML(html, state)
    root = page.etree_element
    primary = brand_color(root.get("data-primary"), DEFAULT_COLORS[0])
    accent = brand_color(root.get("data-accent"), DEFAULT_COLORS[1])
    document = page.render(pdf_variant="pdf/a-3b", stylesheets=[state.stylesheet(primary, accent)],
                           font_config=state.font_config)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    metadata = document.metadata
    metadata.created = metadata.modified = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if facturx_xml is not None:
        metadata.__class__ = _FacturXMetadata
        metadata.attachments = [*metadata.attachments, Attachment(
            file_obj=io.BytesIO(facturx_xml), name=FACTURX_FILENAME, description="Factur-X XML file",
            relationship="Data", created=now, modified=now, url_fetcher=state.fetcher)]
    return document.write_pdf(pdf_variant="pdf/a-3b", finisher=_list_attachments_once)


def _list_attachments_once(document, pdf) -> None:
    """WeasyPrint 70's PDF/A-3 step lists each attachment twice in the catalog's /AF: keep one of each."""
    if "AF" in pdf.catalog:
        pdf.catalog["AF"][:] = list(dict.fromkeys(pdf.catalog["AF"]))
