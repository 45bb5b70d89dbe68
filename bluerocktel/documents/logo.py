"""A brand's logo as a small PDF page, drawn once per brand and process, for the invoice to place.

The logo is whatever the brand stored: SVG markup or a ``data:image/…`` URI (PNG, JPEG, SVG).
WeasyPrint draws it (vector stays vector; its fonts are embedded) at most 60 × 18 mm, keeping
its proportions, as the HTML invoice used to. Only ``data:`` URLs are fetched, so a brand's SVG
can never make the renderer read a file or call the network. A logo WeasyPrint cannot draw is
left out (the brand's name is printed anyway).
"""

from __future__ import annotations

import html
import io
import logging
from dataclasses import dataclass
from functools import lru_cache

MAX_WIDTH_MM, MAX_HEIGHT_MM = 60, 18
PX = 0.75               # points per CSS pixel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Logo:
    pdf: bytes          # one page whose top-left corner holds the logo
    width: float        # points
    height: float


@lru_cache(maxsize=16)
def draw_logo(data_uri: str) -> Logo | None:
    """The logo of ``data_uri`` (see :func:`~bluerocktel.documents.invoice.logo_data_uri`), or None."""
    from weasyprint import CSS, HTML
    from weasyprint.formatting_structure.boxes import ReplacedBox
    from weasyprint.urls import URLFetcher

    page = (f'<html><body><img src="{html.escape(data_uri, quote=True)}" alt="" /></body></html>')
    style = CSS(string=f"@page {{ size: {MAX_WIDTH_MM}mm {MAX_HEIGHT_MM}mm; margin: 0 }} body {{ margin: 0 }}"
                       f"img {{ display: block; max-width: {MAX_WIDTH_MM}mm; max-height: {MAX_HEIGHT_MM}mm }}")
    try:
        document = HTML(string=page, url_fetcher=URLFetcher(allowed_protocols=("data",))).render(stylesheets=[style])
        images = [box for box in document.pages[0]._page_box.descendants() if isinstance(box, ReplacedBox)]
        if not images or images[0].width <= 0 or images[0].height <= 0:
            raise ValueError("nothing drawn")
        buffer = io.BytesIO()
        document.write_pdf(buffer)
    except Exception as exc:        # a broken logo must not stop an invoice
        log.warning("brand logo left out: %s", exc)
        return None
    return Logo(buffer.getvalue(), images[0].width * PX, images[0].height * PX)
