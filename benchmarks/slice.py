"""Times the slice on 1M CDRs: import, rating and the papermill billing run.

    .venv/bin/python benchmarks/slice.py [--cdrs 1000000] [--accounts 300] [--runs 3]

Each run builds the demo operator in a fresh data dir (embedded SQLite), writes a month of
Asterisk Master.csv CDRs with the demo generator (not timed), then times
``import_cdr_file``, ``rate_pending`` and ``run_billing_cycle`` (which executes
``pipelines/billing_cycle.ipynb`` with papermill and renders one PDF per invoice). Prints each
run and the medians, in seconds and CDRs/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bluerocktel.billing.pipeline import run_billing_cycle
from bluerocktel.demo.build import build_demo, write_demo_cdrs
from bluerocktel.mediation import import_cdr_file
from bluerocktel.rating import rate_pending
from bluerocktel.workbench import Workbench

PERIOD = "2026-10"


def one_run(root: Path, cdrs: int, accounts: int) -> dict[str, float]:
    wb = Workbench.open(root / "data")
    build_demo(wb, accounts=accounts, cdrs=0, period=PERIOD, seed=11)
    csv_path = root / "Master.csv"
    write_demo_cdrs(wb, csv_path, PERIOD, cdrs, seed=11)
    times = {}
    started = time.perf_counter()
    imported = import_cdr_file(wb, csv_path, "asterisk-csv", source="bench", actor="bench")
    times["import"] = time.perf_counter() - started
    started = time.perf_counter()
    rated = rate_pending(wb)
    times["rating"] = time.perf_counter() - started
    started = time.perf_counter()
    run = run_billing_cycle(wb, PERIOD, dry_run=False, actor="bench")
    times["billing"] = time.perf_counter() - started
    assert imported.imported == cdrs and rated.considered == cdrs and run.status == "completed", (imported, rated, run)
    times["invoices"] = run.summary["invoices_issued"]
    wb.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cdrs", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    results = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="brt-slice-") as tmp:
            t = one_run(Path(tmp), args.cdrs, args.accounts)
        results.append(t)
        print(f"run {n + 1}: " + ", ".join(f"{k} {t[k]:.2f} s ({args.cdrs / t[k]:,.0f} CDRs/s)"
                                            for k in ("import", "rating", "billing"))
              + f"; {t['invoices']} invoices; load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"median of {args.runs} runs, {args.cdrs:,} CDRs, {args.accounts} accounts:")
    for step in ("import", "rating", "billing"):
        median = statistics.median(r[step] for r in results)
        print(f"  {step:<8} {median:7.2f} s  {args.cdrs / median:>12,.0f} CDRs/s")


if __name__ == "__main__":
    main()
