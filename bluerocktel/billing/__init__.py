"""The monthly billing cycle: periods, charges, invoice numbering, the run steps and the pipeline.

Importing this package is cheap: papermill, ReportLab and pikepdf are imported inside the functions
that need them (``pipeline.run_billing_cycle``, ``bluerocktel.documents.invoice``).
"""

from bluerocktel.billing import invoices as _invoice_guard  # noqa: E402,F401  (registers the immutability guard)
