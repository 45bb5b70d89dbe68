"""CDR mediation: switch files in, normalized CDRs in the usage lake out.

- :mod:`bluerocktel.mediation.formats`: the formats (one module per family, found by name);
- :mod:`bluerocktel.mediation.normalize`: the vectorized normalizer every parser ends with;
- :mod:`bluerocktel.mediation.importer`: the one way into the lake (ledger, slices, dedup,
  quarantine, gzip/zip), used by the CLI, the collectors and the API.
"""

from __future__ import annotations

from bluerocktel.mediation.formats import FormatSpec, ParseFn
from bluerocktel.mediation.importer import (
    FORMATS,
    ImportSummary,
    format_spec,
    import_cdr_bytes,
    import_cdr_file,
    read_quarantine,
    register_format,
)
from bluerocktel.mediation.records import CdrIssue

__all__ = ["FORMATS", "CdrIssue", "FormatSpec", "ImportSummary", "ParseFn", "format_spec", "import_cdr_bytes",
           "import_cdr_file", "read_quarantine", "register_format"]
