"""Rating: who pays for each CDR, which rate applies and what it costs (DESIGN.md §2).

- :func:`rate_batch`: the pure, set-based kernel (Arrow in, Arrow out, DuckDB in-process).
- :func:`load_tariffs`: the identifier and rate tables from the system of record.
- :func:`rate_pending`: rate the lake's ``cdrs`` not yet in ``rated``, one file per month.
"""

from bluerocktel.rating.kernel import IDENTIFIER_SCHEMA, RATE_SCHEMA, rate_batch
from bluerocktel.rating.pending import RatingSummary, rate_pending
from bluerocktel.rating.tariffs import TariffError, load_tariffs

__all__ = ["IDENTIFIER_SCHEMA", "RATE_SCHEMA", "RatingSummary", "TariffError", "load_tariffs",
           "rate_batch", "rate_pending"]
