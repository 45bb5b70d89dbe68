"""A demo operator: brands, users, catalog, rate deck, accounts and a month of Asterisk CDRs.

``build_demo`` fills an empty data dir deterministically from a seed; ``run_demo`` then imports,
rates and bills the month (what ``bluerocktel demo`` does). Every demo user signs in with
:data:`DEMO_PASSWORD`.
"""

from bluerocktel.demo.build import DemoSummary, build_demo, demo_callers, write_demo_cdrs
from bluerocktel.demo.cdrs import MALFORMED_LINES, CallerLine, CsvSummary, write_asterisk_master_csv
from bluerocktel.demo.data import DEMO_PASSWORD
from bluerocktel.demo.run import run_demo

__all__ = ["DEMO_PASSWORD", "MALFORMED_LINES", "CallerLine", "CsvSummary", "DemoSummary", "build_demo",
           "demo_callers", "run_demo", "write_asterisk_master_csv", "write_demo_cdrs"]
