"""Mediation throughput and memory, per CDR format preset.

    .venv/bin/python benchmarks/mediation.py [--formats asterisk-csv,3gpp-ber] [--runs 3]
                                             [--work DIR] [--big-gb 2]

For each preset a file is generated once (``benchmarks/cdrgen``; kept in ``--work``, default
``/tmp/brt-bench-mediation``), then imported ``--runs`` times, each time into a fresh data dir
(embedded SQLite) by a fresh Python process, so each run's peak memory (max RSS) is its own.
A run times ``import_cdr_file`` end to end: read, parse, normalize, deduplicate against the
lake, write Parquet, ledger. Prints each run and the median records/s and peak RSS.

``--big-gb N`` also imports an N GB Asterisk Master.csv once and reports its throughput and peak
memory (the issue asks for < 1 GB of memory on a 2 GB file). ``asterisk-csv`` is compared with
DuckDB alone reading the same file into Arrow (``read_csv``, all columns as text).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# format -> (generator module in cdrgen, function, records, file name)
PRESETS = {
    "asterisk-csv": ("asterisk", "write_asterisk", 1_000_000, "Master.csv"),
    "freeswitch-csv": ("freeswitch", "write_freeswitch_csv", 1_000_000, "Master-fs.csv"),
    "freeswitch-xml": ("freeswitch", "write_freeswitch_xml", 20_000, "fs.cdr.xml"),
    "3cx": ("threecx", "write_3cx", 1_000_000, "3cx.csv"),
    "cucm": ("cucm", "write_cucm", 1_000_000, "cdr_cucm.csv"),
    "kamailio-acc": ("kamailio", "write_kamailio_acc", 500_000, "acc.csv"),
    "3gpp-ber": ("ber", "write_3gpp_ber", 500_000, "msc.ber"),
}


def generate(fmt: str, work: Path) -> Path:
    module, func, n, name = PRESETS[fmt]
    path = work / name
    if not path.exists():
        started = time.perf_counter()
        getattr(importlib.import_module(f"cdrgen.{module}"), func)(path, n, seed=1)
        print(f"  generated {path} ({path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - started:.0f} s",
              flush=True)
    return path


def one_import(fmt: str, path: str) -> dict:
    """Run in a child process: import ``path`` into a fresh data dir; seconds, counts, max RSS."""
    from bluerocktel.mediation import import_cdr_file
    from bluerocktel.workbench import Workbench

    with tempfile.TemporaryDirectory(prefix="brt-bench-med-") as tmp:
        wb = Workbench.open(Path(tmp) / "data")
        started = time.perf_counter()
        summary = import_cdr_file(wb, path, fmt, source="bench", actor="bench")
        seconds = time.perf_counter() - started
        wb.close()
    return {"seconds": seconds, "received": summary.received, "imported": summary.imported,
            "quarantined": summary.quarantined, "max_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak across fork+exec),
    plus the largest peak of its worker processes (3gpp-ber forks workers)."""
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return (hwm_kb + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def duckdb_baseline(path: Path) -> float:
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    table = con.sql(f"SELECT * FROM read_csv('{path}', header = false, all_varchar = true, "
                    "strict_mode = false, null_padding = true)").to_arrow_table()
    seconds = time.perf_counter() - started
    return table.num_rows / seconds


def child(fmt: str, path: Path) -> dict:
    env = dict(os.environ)
    env.pop("BLUEROCKTEL_DATABASE_URL", None)
    done = subprocess.run([sys.executable, __file__, "--child", fmt, str(path)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{fmt} import failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=",".join(PRESETS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default="/tmp/brt-bench-mediation")
    parser.add_argument("--big-gb", type=float, default=0)
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_import(*args.child)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    medians = {}
    for fmt in [f for f in args.formats.split(",") if f]:
        print(f"{fmt}:", flush=True)
        path = generate(fmt, work)
        runs = []
        for k in range(args.runs):
            r = child(fmt, path)
            runs.append(r)
            print(f"  run {k + 1}: {r['received']:,} records in {r['seconds']:.2f} s "
                  f"({r['received'] / r['seconds']:,.0f}/s), peak RSS {r['max_rss_mb']:,.0f} MB; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        rate = statistics.median(r["received"] / r["seconds"] for r in runs)
        rss = statistics.median(r["max_rss_mb"] for r in runs)
        medians[fmt] = (rate, rss, runs[0]["received"], path.stat().st_size)
        if fmt == "asterisk-csv":
            base = statistics.median(duckdb_baseline(path) for _ in range(args.runs))
            print(f"  DuckDB read_csv alone: {base:,.0f} rows/s", flush=True)
    if args.big_gb:
        from cdrgen.asterisk import write_asterisk_bytes

        big = work / f"Master-{args.big_gb:g}GB.csv"
        if not big.exists():
            print(f"generating {big} ...", flush=True)
            write_asterisk_bytes(big, int(args.big_gb * (1 << 30)))
        r = child("asterisk-csv", big)
        print(f"big file {big.stat().st_size / (1 << 30):.2f} GiB: {r['received']:,} records in "
              f"{r['seconds']:.1f} s ({r['received'] / r['seconds']:,.0f}/s), peak RSS {r['max_rss_mb']:,.0f} MB",
              flush=True)
    print(f"\nmedians of {args.runs} runs ({os.cpu_count()} cores):")
    for fmt, (rate, rss, n, size) in medians.items():
        print(f"  {fmt:<15} {rate:>12,.0f} records/s  peak RSS {rss:>6,.0f} MB  ({n:,} records, {size / 1e6:,.0f} MB)")


if __name__ == "__main__":
    main()
