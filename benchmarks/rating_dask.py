"""Throughput of the Dask rating engine on a 2-worker LocalCluster, against the local engine.

    .venv/bin/python benchmarks/rating_dask.py [--cdrs 2000000] [--runs 3] [--files 4]
                                               [--partition-rows N] [--work DIR]

The tariffs and CDRs are those of ``benchmarks/rating.py`` (its generators, imported): a
10,000-prefix sell deck with bands and grouped intervals, a buy deck, bundles on 10% of the
services, a month of calls. The CDRs are written to a lake
(one month, ``--files`` Parquet files, under ``--work``) and rated end to end as
``bluerocktel rate`` does, ``--runs`` times per engine (the ``rated`` dataset is removed between
runs so that everything is pending again):

``pending_cdrs`` → the month's bundle usage → rate → one Parquet file, where "rate" is

- local: ``rate_batch`` in this process (DuckDB with its default threads);
- dask: the Dask engine (:func:`bluerocktel.rating.dask_engine.rating_engine`) on a
  LocalCluster of 2 worker processes with 1 thread each, started once before the runs (its
  start-up time is printed apart).

The runs of the two engines alternate, so that both see the same machine load.

Prints each run, the median CDRs/s of each engine end to end and of the rating call alone
(``rate_batch`` or the Dask engine on the month's pending table), and whether the Dask result
equals the local one (every column but ``rated_at``, rows sorted by ``cdr_id``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from bluerocktel.lake import connect_duckdb, dataset_dir, read_table, write_partition
from bluerocktel.rating import rate_batch
from bluerocktel.rating.bundles import bundle_usage
from bluerocktel.rating.dask_engine import rating_engine
from bluerocktel.rating.pending import pending_cdrs
from bluerocktel.rating.tariffs import build_tariffs

UTC = dt.timezone.utc
MONTH = "2026-10"


def build_inputs(cdrs: int, prefixes: int, services: int):
    """The tariffs and CDRs of benchmarks/rating.py (its generators, imported by path, called in
    its order with its seed, so both benchmarks rate the same data)."""
    spec = importlib.util.spec_from_file_location("rating_benchmark", Path(__file__).with_name("rating.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(7)
    numbers, decks, bands, trunks, bundles = bench.build_tables(rng, SimpleNamespace(prefixes=prefixes,
                                                                                     services=services))
    rates = bench.build_rates(rng, numbers)
    identifiers = bench.build_identifiers(services)
    table = bench.build_cdrs(rng, cdrs, numbers, services)
    return build_tariffs(identifiers, decks, rates, bands, trunks, bundles), table


def rate_month(lake_dir: Path, tariffs, rate) -> tuple[int, float]:
    """What ``rate_pending`` does for one month with the rating function ``rate`` (``rate_batch``
    or the Dask engine's): pending CDRs, earlier bundle usage, rate, one file. Returns the CDRs
    rated and the seconds the ``rate`` call took."""
    con = connect_duckdb()
    try:
        pending = pending_cdrs(con, lake_dir, MONTH, tariffs.version)
        used = bundle_usage(con, lake_dir, [MONTH])
        started = time.perf_counter()
        rated = rate(con, pending.drop_columns(["reprocessed"]), tariffs, dt.datetime.now(UTC), bundle_used=used)
        rating_s = time.perf_counter() - started
        write_partition(lake_dir, "rated", MONTH, rated)
        return rated.num_rows, rating_s
    finally:
        con.close()


def rated_rows(lake_dir: Path) -> pa.Table:
    """The rated dataset sorted by cdr_id, without rated_at."""
    return read_table(lake_dir, "rated", [MONTH], order_by="cdr_id").drop_columns(["rated_at"])


def timed_run(label: str, run: int, lake_dir: Path, rate) -> tuple[float, float]:
    """Rate everything again (the ``rated`` dataset removed first); CDRs/s end to end and of the
    rating call alone."""
    shutil.rmtree(dataset_dir(lake_dir, "rated"), ignore_errors=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    count, rating_s = rate()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"{label} run {run + 1}: {count} CDRs in {elapsed:.2f} s ({cpu:.2f} s CPU in this process), "
          f"{count / elapsed:,.0f} CDRs/s end to end; the rating call {rating_s:.2f} s, {count / rating_s:,.0f} "
          f"CDRs/s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return count / elapsed, count / rating_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=2_000_000)
    parser.add_argument("--prefixes", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=4, help="CDR files the month is written as")
    parser.add_argument("--partition-rows", type=int, default=None,
                        help="CDRs per Dask task (default: the engine's choice)")
    parser.add_argument("--work", default=None, help="lake folder (default: a temporary one, removed)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="brt-bench-rating-dask-"))
    lake_dir = work / "lake"
    shutil.rmtree(lake_dir, ignore_errors=True)
    tariffs, cdrs = build_inputs(args.cdrs, args.prefixes, args.services)
    step = -(-cdrs.num_rows // args.files)
    for start in range(0, cdrs.num_rows, step):
        write_partition(lake_dir, "cdrs", MONTH, cdrs.slice(start, step))
    print(f"{cdrs.num_rows:,} CDRs in {args.files} files; {tariffs.rates.num_rows:,} rates, "
          f"{tariffs.bundles.num_rows:,} service bundles, {tariffs.bands.num_rows} bands", flush=True)
    del cdrs

    started = time.perf_counter()
    with rating_engine("dask", partition_rows=args.partition_rows) as on_cluster:   # a 2-worker LocalCluster
        print(f"LocalCluster (2 workers x 1 thread) started in {time.perf_counter() - started:.2f} s", flush=True)
        local, on_dask, expected = [], [], None
        for run in range(args.runs):      # alternated, so that both engines see the same machine load
            local.append(timed_run("local", run, lake_dir, lambda: rate_month(lake_dir, tariffs, rate_batch)))
            if expected is None:
                expected = rated_rows(lake_dir)
            on_dask.append(timed_run("dask ", run, lake_dir, lambda: rate_month(lake_dir, tariffs, on_cluster)))
    same = rated_rows(lake_dir).equals(expected)
    for label, at in (("end to end", 0), ("rating call", 1)):
        print(f"median {label}: local {statistics.median(s[at] for s in local):,.0f} CDRs/s, dask (2-worker "
              f"LocalCluster) {statistics.median(s[at] for s in on_dask):,.0f} CDRs/s")
    print(f"dask result equal to local: {same} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
