"""The monthly billing cycle: periods, charges, invoice numbering, the run steps and the pipeline.

Importing this package is cheap: papermill and WeasyPrint are imported inside the functions
that need them (``pipeline.run_billing_cycle``, ``bluerocktel.documents.invoice``).
"""
