"""The one font family of our PDFs (DejaVu Sans, regular and bold), registered with ReportLab once a process.

ReportLab embeds a subset of the TrueType font in each PDF, as PDF/A requires. It has no font
fallback: a character the font lacks would be drawn as an empty box (``.notdef``) that a reader
cannot copy. :func:`printable` replaces such characters with U+FFFD (�) instead, visibly; DejaVu
Sans covers Latin, Greek, Cyrillic and the usual symbols (€, —, ’, narrow no-break spaces), so
this only touches scripts such as Chinese. The Factur-X XML always carries the exact text.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
REGULAR, BOLD = "DejaVu", "DejaVu-Bold"
REPLACEMENT = "\ufffd"


@lru_cache(maxsize=1)
def register_fonts() -> tuple[str, str]:
    """Register DejaVu Sans (regular, bold) with ReportLab once per process; their names."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for name, file in ((REGULAR, "DejaVuSans.ttf"), (BOLD, "DejaVuSans-Bold.ttf")):
        pdfmetrics.registerFont(TTFont(name, str(font_file(file))))
    return REGULAR, BOLD


@lru_cache(maxsize=1)
def _covered() -> frozenset[int]:
    """Code points both fonts draw."""
    from reportlab.pdfbase import pdfmetrics

    register_fonts()
    regular, bold = (pdfmetrics.getFont(name).face.charToGlyph for name in (REGULAR, BOLD))
    return frozenset(regular.keys() & bold.keys())


def printable(text: str) -> str:
    """``text`` with every character the fonts lack (and control characters) replaced by U+FFFD."""
    if text.isascii() and text.isprintable():
        return text
    covered = _covered()
    return "".join(char if ord(char) in covered and char >= " " else REPLACEMENT for char in text)


def font_file(name: str) -> Path:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"font {name} not found in {', '.join(map(str, FONT_DIRS))} "
                            f"(Debian package fonts-dejavu-core)")
