"""White-label: which brand a request is for, chosen from its Host header (DESIGN.md §4).

A brand lists the host names its portal answers on (``Brand.host_names``). The port is
ignored; a host no brand claims falls back to the first brand (lowest id), so that
``127.0.0.1:8000`` still shows a branded page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bluerocktel.db.models import Brand

NEUTRAL_PRIMARY = "#0b3d91"
NEUTRAL_ACCENT = "#f5a623"


def parse_host(host_header: str | None) -> str:
    """The host name of a Host header, lower case, without port: ``Portal.X.fr:8000`` → ``portal.x.fr``."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):                      # IPv6 literal: [::1]:8000
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class BrandView:
    """What a page needs to look like a brand; plain values, safe to keep after the session closes."""

    brand_id: int | None
    code: str
    name: str
    primary_color: str
    accent_color: str
    logo_svg: str | None
    sections: tuple[str, ...]
    matched_host: bool          # True when the Host header named this brand (not the fallback)

    @property
    def logo_data_uri(self) -> str | None:
        """The logo as a ``data:`` URI for an ``<img>`` (an SVG in an img never runs scripts)."""
        if not self.logo_svg:
            return None
        return "data:image/svg+xml;base64," + base64.b64encode(self.logo_svg.encode()).decode()

    @classmethod
    def of(cls, brand: Brand, matched_host: bool) -> "BrandView":
        return cls(brand.id, brand.code, brand.name, _color(brand.primary_color, NEUTRAL_PRIMARY),
                   _color(brand.accent_color, NEUTRAL_ACCENT), brand.logo_svg,
                   tuple(brand.sections or ()), matched_host)


NEUTRAL_BRAND = BrandView(None, "bluerocktel", "BlueRockTEL", NEUTRAL_PRIMARY, NEUTRAL_ACCENT, None,
                          ("invoices", "calls", "services"), False)


def _color(value: str | None, default: str) -> str:
    """``value`` when it is a CSS hex colour (#rgb or #rrggbb), else ``default``: it goes into CSS."""
    text = (value or "").strip()
    if text.startswith("#") and len(text) in (4, 7) and all(c in "0123456789abcdefABCDEF" for c in text[1:]):
        return text
    return default


def resolve_brand(session: Session, host_header: str | None) -> BrandView:
    """The brand whose ``host_names`` contain the request's host; else the first brand; else neutral."""
    host = parse_host(host_header)
    brands = session.scalars(select(Brand).order_by(Brand.id)).all()
    for brand in brands:
        if host and host in {h.strip().lower() for h in (brand.host_names or [])}:
            return BrandView.of(brand, matched_host=True)
    return BrandView.of(brands[0], matched_host=False) if brands else NEUTRAL_BRAND


def brand_by_id(session: Session, brand_id: int) -> BrandView:
    brand = session.get(Brand, brand_id)
    return BrandView.of(brand, matched_host=False) if brand is not None else NEUTRAL_BRAND
