"""Rating: who pays for each CDR, which rate applies and what it costs (DESIGN.md §2).

- :func:`rate_batch`: the pure, set-based kernel (Arrow in, Arrow out, DuckDB in-process):
  :func:`price_batch` (prices, costs and traces, pure per row) then the service bundles.
- :func:`load_tariffs`: the identifier, deck, rate, band, trunk and bundle tables from the
  system of record, checked (:class:`TariffError`), as a fingerprinted :class:`Tariffs`.
- :func:`rate_pending`: rate the lake's ``cdrs`` not yet in ``rated``, one file per month.
"""

from bluerocktel.rating.kernel import IDENTIFIER_SCHEMA, RATE_SCHEMA, price_batch, rate_batch
from bluerocktel.rating.pending import RatingSummary, rate_pending
from bluerocktel.rating.tariffs import TariffError, Tariffs, build_tariffs, load_tariffs

__all__ = ["IDENTIFIER_SCHEMA", "RATE_SCHEMA", "RatingSummary", "TariffError", "Tariffs", "build_tariffs",
           "load_tariffs", "price_batch", "rate_batch", "rate_pending"]
