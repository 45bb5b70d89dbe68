"""Throughput of the rating kernel: 1M synthetic CDRs x ~5k prefixes, in memory.

    .venv/bin/python benchmarks/rating.py [--cdrs 1000000] [--prefixes 5000] [--runs 3]

Generates a deck of random prefixes (lengths 1..7, several versions for some), 10k services
identified by caller number (plus account codes and trunks), and CDRs whose callees extend
a random prefix of the deck (1% match none, 2% come from unknown callers); then times :func:`bluerocktel.rating.rate_batch` (Arrow in,
Arrow out) and prints the median CDRs/s.
"""

from __future__ import annotations

import argparse
import os
import datetime as dt
import statistics
import time

import numpy as np
import pyarrow as pa

from bluerocktel.lake import CDR_SCHEMA, connect_duckdb
from bluerocktel.rating import IDENTIFIER_SCHEMA, RATE_SCHEMA, rate_batch
from bluerocktel.rating.tariffs import Tariffs

UTC = dt.timezone.utc
EPOCH = dt.datetime(2026, 10, 1, tzinfo=UTC)


def _digits(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    first = rng.integers(1, 10, n).astype(str)
    rest = rng.integers(0, 10, (n, length - 1)).astype(str)
    return np.char.add(first, np.array(["".join(r) for r in rest]))


def build_rates(rng: np.random.Generator, prefixes: int, decks: int) -> pa.Table:
    lengths = rng.integers(1, 8, prefixes * 2)
    numbers = _digits(rng, prefixes * 2, 7)
    unique = list(dict.fromkeys(n[:k] for n, k in zip(numbers, lengths)))[:prefixes]
    rows = []
    for deck_id in range(1, decks + 1):
        for i, prefix in enumerate(unique):
            versions = 2 if i % 10 == 0 else 1
            for v in range(versions):
                rows.append({
                    "rate_id": len(rows) + 1, "deck_id": deck_id, "prefix": prefix,
                    "destination": f"dest {prefix}", "zone": f"zone {len(prefix)}",
                    "price_per_minute_micro": int(rng.integers(1_000, 500_000)),
                    "connection_fee_micro": 0 if i % 3 else 15_000,
                    "first_increment_s": [60, 30, 1][i % 3], "next_increment_s": [60, 6, 1][i % 3],
                    "valid_from": EPOCH - dt.timedelta(days=365) + dt.timedelta(days=400 * v),
                })
    return pa.Table.from_pylist(rows, schema=RATE_SCHEMA)


def build_identifiers(services: int, decks: int) -> pa.Table:
    rows = []
    for s in range(1, services + 1):
        common = {"service_id": s, "account_id": (s + 1) // 2, "rate_deck_id": 1 + s % decks,
                  "valid_from": EPOCH - dt.timedelta(days=30), "valid_to": None}
        rows.append({"identifier_id": len(rows) + 1, "kind": "number", "value": f"+3319{s:07d}", **common})
        if s % 10 == 0:
            rows.append({"identifier_id": len(rows) + 1, "kind": "account_code", "value": f"AC{s}", **common})
        if s % 1000 == 0:
            rows.append({"identifier_id": len(rows) + 1, "kind": "trunk", "value": f"SIP/trunk{s}", **common})
    return pa.Table.from_pylist(rows, schema=IDENTIFIER_SCHEMA)


def build_cdrs(rng: np.random.Generator, n: int, rates: pa.Table, services: int) -> pa.Table:
    prefixes = np.array(rates["prefix"].to_pylist())
    chosen = prefixes[rng.integers(0, len(prefixes), n)]
    tails = _digits(rng, n, 11)
    callee = np.char.add("+", np.array([p + t[len(p):] for p, t in zip(chosen, tails)]))
    callee = np.where(rng.random(n) < 0.01, np.char.add("+0", tails), callee)   # ~1% match no prefix
    service = rng.integers(1, int(services * 1.02) + 1, n)   # ~2% unknown callers
    caller = np.char.add("+3319", np.char.zfill(service.astype(str), 7))
    account_code = np.where(rng.random(n) < 0.05, np.char.add("AC", (service // 10 * 10).astype(str)), "")
    start_us = (EPOCH.timestamp() * 1_000_000 + rng.integers(0, 30 * 86_400, n) * 1_000_000).astype("int64")
    billsec = np.where(rng.random(n) < 0.8, rng.integers(1, 900, n), 0).astype("int32")
    direction = np.where(rng.random(n) < 0.85, "out", "in")
    ts = pa.array(start_us, pa.timestamp("us", tz="UTC"))
    return pa.table({
        "cdr_id": pa.array(np.char.add("cdr", np.arange(n).astype(str))),
        "source": pa.array(["bench"] * n), "source_file": pa.array(["bench.csv"] * n),
        "source_line": pa.array(np.arange(1, n + 1, dtype="int32")),
        "start_at": ts, "answer_at": ts, "end_at": ts,
        "duration_s": pa.array(billsec + 5), "billsec_s": pa.array(billsec),
        "caller": pa.array(caller), "callee": pa.array(callee), "account_code": pa.array(account_code),
        "channel": pa.array(np.char.add("SIP/trunk", (service // 1000 * 1000).astype(str))),
        "dst_channel": pa.array(["SIP/carrier"] * n),
        "disposition": pa.array(np.where(billsec > 0, "ANSWERED", "NO ANSWER")),
        "direction": pa.array(direction), "call_type": pa.array(["voice"] * n),
        "unique_id": pa.array(np.arange(n).astype(str)),
    }).cast(CDR_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=1_000_000)
    parser.add_argument("--prefixes", type=int, default=5_000)
    parser.add_argument("--decks", type=int, default=2)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    rates = build_rates(rng, args.prefixes, args.decks)
    identifiers = build_identifiers(args.services, args.decks)
    cdrs = build_cdrs(rng, args.cdrs, rates, args.services)
    print(f"{cdrs.num_rows} CDRs, {rates.num_rows} rates ({args.prefixes} prefixes x {args.decks} decks), "
          f"{identifiers.num_rows} identifiers")

    con = connect_duckdb()
    speeds = []
    for run in range(args.runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        rated = rate_batch(con, cdrs, Tariffs(identifiers, rates, "bench"), dt.datetime.now(UTC))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        speeds.append(cdrs.num_rows / elapsed)
        statuses = dict(zip(*rated.group_by("rating_status").aggregate([("rating_status", "count")])
                            .to_pydict().values()))
        print(f"run {run + 1}: {elapsed:.3f} s wall, {cpu:.3f} s CPU, {speeds[-1]:,.0f} CDRs/s; {statuses}")
    print(f"median: {statistics.median(speeds):,.0f} CDRs/s (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
