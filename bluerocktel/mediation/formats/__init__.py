"""The CDR formats: one module per family, each declaring ``FORMATS: list[FormatSpec]``.

Every module of this package is found and read at first use (:func:`builtin_formats`), so a new
format is one new file. A parser takes the bytes of a file (or of a slice of it, cut at line
ends, when the format is ``line_based``) and returns a ``CDR_SCHEMA`` table and its issues::

    def parse(data: bytes, *, file_name: str, source: str, timezone: str, country: str,
              options: Mapping) -> tuple[pyarrow.Table, list[CdrIssue]]

Line numbers are those of ``data`` (1-based, header lines included); the importer shifts them
to the whole file's. ``options`` are the CDR source's options (e.g. a 3CX column order).

``raw_kind`` says what a quarantined record's ``raw`` holds, so it can be read again
(``cdr quarantine reprocess``):

- ``line``: one text line; the quarantined lines of a source are joined (after the
  ``header_lines`` kept with them) and parsed together, so records split across files
  (a Kamailio INVITE and its BYE) can meet;
- ``document``: a standalone text document holding the one record (an XML ``<cdr>``);
- ``binary``: base64 of the record's bytes, decodable alone (a BER record).

On ``cdr quarantine reprocess`` the parser receives UTF-8 text and the option
``quarantine_reprocess=True``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Mapping

import pyarrow as pa

ParseFn = Callable[..., tuple[pa.Table, list]]


@dataclass(frozen=True)
class FormatSpec:
    name: str
    parse: ParseFn
    description: str = ""
    fingerprint: str = ""          # which fields make the record id (shown by `cdr formats`)
    line_based: bool = True        # may be cut at line ends into slices imported one by one
    header_lines: int = 0          # first lines repeated at the head of every slice
    header_lines_of: Callable[[bytes, Mapping], int] | None = None   # per file, from its first slice
    extensions: tuple[str, ...] = ()
    raw_kind: str = "line"         # line | document | binary (module doc)
    encoding: str = "utf-8"        # text encoding of the files (header lines are decoded with it)
    terminated_lines: bool = False  # the writer ends every record with a line end: an unterminated
                                    # last line is a record being written, left for the next import

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "fingerprint": self.fingerprint,
                "line_based": self.line_based, "header_lines": self.header_lines,
                "extensions": list(self.extensions), "raw_kind": self.raw_kind, "encoding": self.encoding}


_BUILTIN: dict[str, FormatSpec] | None = None


def builtin_formats() -> dict[str, FormatSpec]:
    """Every format declared by a module of this package, by name (imported once)."""
    global _BUILTIN
    if _BUILTIN is None:
        found: dict[str, FormatSpec] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for spec in getattr(module, "FORMATS", ()):
                if spec.name in found:
                    raise RuntimeError(f"CDR format {spec.name!r} is declared twice ({info.name})")
                found[spec.name] = spec
        _BUILTIN = found
    return _BUILTIN
