"""Throughput of the rating kernel: N synthetic CDRs against a 10,000-prefix deck with bands, in memory.

    .venv/bin/python benchmarks/rating.py [--cdrs 2000000] [--prefixes 10000] [--runs 5] [--threads 0]

Tariffs: a sell deck of ``--prefixes`` random prefixes (lengths 1..7, 10% with a second version),
increments mixed 60/60, 30/6 and 1/1, each prefix priced peak / off-peak (bands in Europe/Paris,
weekdays 08:00-19:00) with an all-time row for the weekend and French public holidays, 10% of
the prefixes with a grouped interval (a cheaper price from 60 s); deck rounding half-up at 4
decimals. A buy deck with the same prefixes (1/1, no bands) behind a carrier trunk that 90% of
the calls use. 10k services identified by caller number (plus account codes and trunks),
accounts in Europe/Paris; 10% of the services have a monthly bundle on two zones.

CDRs: a month (October 2026, so calls cross the DST night and bands), callees extending a random
prefix (1% match none), 2% from unknown callers, 80% answered for 1..900 s, 85% outbound.

Prints the median CDRs/s and CPU time per CDR (process user + sys, all threads: comparable when
other processes load the machine; the system part is shown per run) of ``--runs`` timed runs
after one warm-up run, first with DuckDB's default threads then with one thread (DuckDB only
prepares the tariffs, once: the kernel prices a large batch in numpy and Arrow, one slice per
core, so both should agree), and the peak RSS growth while rating (ru_maxrss minus the RSS
before the first run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import time

import numpy as np
import pyarrow as pa

from bluerocktel.lake import CDR_SCHEMA, connect_duckdb
from bluerocktel.rating import IDENTIFIER_SCHEMA, RATE_SCHEMA, rate_batch
from bluerocktel.rating.tariffs import BAND_SCHEMA, DECK_SCHEMA, SERVICE_BUNDLE_SCHEMA, TRUNK_SCHEMA, build_tariffs

UTC = dt.timezone.utc
EPOCH = dt.datetime(2026, 10, 1, tzinfo=UTC)
SELL, BUY = 1, 2


def _digits(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    first = rng.integers(1, 10, n).astype(str)
    rest = rng.integers(0, 10, (n, length - 1)).astype(str)
    return np.char.add(first, np.array(["".join(r) for r in rest]))


def build_prefixes(rng: np.random.Generator, prefixes: int) -> list[str]:
    lengths = rng.integers(1, 8, prefixes * 3)
    numbers = _digits(rng, prefixes * 3, 7)
    return list(dict.fromkeys(n[:k] for n, k in zip(numbers, lengths)))[:prefixes]


def build_rates(rng: np.random.Generator, prefixes: list[str]) -> pa.Table:
    rows = []

    def add(**row):
        rows.append({"rate_id": len(rows) + 1, "call_type": "voice", "unit_size": 60, "connection_fee_micro": 0,
                     "min_charge_micro": 0, "max_cost_micro": None, "max_cost_action": None, "valid_to": None,
                     "group_start": 0, "band": "", **row})

    for i, prefix in enumerate(prefixes):
        first, nxt = [(60, 60), (30, 6), (1, 1)][i % 3]
        common = {"prefix": prefix, "destination": f"dest {prefix}", "zone": f"zone {i % 7}"}
        for version in range(2 if i % 10 == 0 else 1):
            valid_from = EPOCH - dt.timedelta(days=365) + dt.timedelta(days=380 * version)   # v2 from 2026-10-16
            base = int(rng.integers(1_000, 500_000))
            for band, price in (("peak", base), ("offpeak", base // 2), ("", base // 3)):
                add(deck_id=SELL, **common, band=band, price_micro=price, first_increment=first, next_increment=nxt,
                    connection_fee_micro=15_000 if i % 3 == 0 else 0, valid_from=valid_from)
                if i % 10 == 5:    # grouped interval: cheaper per second from 60 s
                    add(deck_id=SELL, **common, band=band, group_start=60, price_micro=price // 2, first_increment=1,
                        next_increment=1, valid_from=valid_from)
        add(deck_id=BUY, **common, price_micro=int(rng.integers(500, 400_000)), first_increment=1, next_increment=1,
            valid_from=EPOCH - dt.timedelta(days=365))
    return pa.Table.from_pylist(rows, schema=RATE_SCHEMA)


def build_identifiers(services: int) -> pa.Table:
    rows = []
    for s in range(1, services + 1):
        common = {"service_id": s, "account_id": (s + 1) // 2, "rate_deck_id": SELL,
                  "valid_from": EPOCH - dt.timedelta(days=30), "valid_to": None, "timezone": "Europe/Paris"}
        rows.append({"identifier_id": len(rows) + 1, "kind": "number", "value": f"+3319{s:07d}", **common})
        if s % 10 == 0:
            rows.append({"identifier_id": len(rows) + 1, "kind": "account_code", "value": f"AC{s}", **common})
        if s % 1000 == 0:
            rows.append({"identifier_id": len(rows) + 1, "kind": "trunk", "value": f"SIP/trunk{s}", **common})
    return pa.Table.from_pylist(rows, schema=IDENTIFIER_SCHEMA)


def build_tables(rng: np.random.Generator, args) -> tuple:
    prefixes = build_prefixes(rng, args.prefixes)
    decks = pa.Table.from_pylist([
        {"deck_id": SELL, "code": "SELL", "kind": "sell", "currency": "EUR", "rounding_method": "half_up",
         "rounding_decimals": 4, "holiday_calendar": "FR"},
        {"deck_id": BUY, "code": "CARRIER", "kind": "buy", "currency": "EUR", "rounding_method": "half_up",
         "rounding_decimals": 6}], schema=DECK_SCHEMA)
    bands = pa.Table.from_pylist([
        {"deck_id": SELL, "name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "start_minute": 480,
         "end_minute": 1140, "priority": 1},
        {"deck_id": SELL, "name": "offpeak", "days": ["mon", "tue", "wed", "thu", "fri"], "start_minute": 0,
         "end_minute": 1440, "priority": 0},
        {"deck_id": SELL, "name": "weekend", "days": ["sat", "sun", "hol"], "start_minute": 0,
         "end_minute": 1440, "priority": 2}], schema=BAND_SCHEMA)
    trunks = pa.Table.from_pylist([{"trunk_id": 1, "deck_id": BUY, "trunk": "SIP/carrierA",
                                    "valid_from": EPOCH - dt.timedelta(days=365), "valid_to": None}],
                                  schema=TRUNK_SCHEMA)
    bundles = pa.Table.from_pylist([
        {"service_bundle_id": s, "service_id": s, "bundle_id": 1, "code": "B1000", "call_type": "voice",
         "zones": ["zone 1", "zone 2"], "allowance": 60_000, "fair_use_cap": None,
         "valid_from": EPOCH - dt.timedelta(days=30), "valid_to": None}
        for s in range(1, args.services + 1, 10)], schema=SERVICE_BUNDLE_SCHEMA)
    return prefixes, decks, bands, trunks, bundles


def build_cdrs(rng: np.random.Generator, n: int, prefixes: list[str], services: int) -> pa.Table:
    chosen = np.array(prefixes)[rng.integers(0, len(prefixes), n)]
    tails = _digits(rng, n, 11)
    callee = np.char.add("+", np.array([p + t[len(p):] for p, t in zip(chosen, tails)]))
    callee = np.where(rng.random(n) < 0.01, np.char.add("+0", tails), callee)   # ~1% match no prefix
    service = rng.integers(1, int(services * 1.02) + 1, n)   # ~2% unknown callers
    caller = np.char.add("+3319", np.char.zfill(service.astype(str), 7))
    account_code = np.where(rng.random(n) < 0.05, np.char.add("AC", (service // 10 * 10).astype(str)), "")
    start_us = (EPOCH.timestamp() * 1_000_000 + rng.integers(0, 31 * 86_400, n) * 1_000_000).astype("int64")
    billsec = np.where(rng.random(n) < 0.8, rng.integers(1, 900, n), 0).astype("int32")
    direction = np.where(rng.random(n) < 0.85, "out", "in")
    dst = np.where(rng.random(n) < 0.9, "SIP/carrierA-", "SIP/other-")
    ts = pa.array(start_us, pa.timestamp("us", tz="UTC"))
    return pa.table({
        "cdr_id": pa.array(np.char.add("cdr", np.arange(n).astype(str))),
        "source": pa.array(["bench"] * n), "source_file": pa.array(["bench.csv"] * n),
        "source_line": pa.array(np.arange(1, n + 1, dtype="int32")),
        "start_at": ts, "answer_at": ts, "end_at": ts,
        "duration_s": pa.array(billsec + 5), "billsec_s": pa.array(billsec),
        "caller": pa.array(caller), "callee": pa.array(callee), "account_code": pa.array(account_code),
        "channel": pa.array(np.char.add("SIP/trunk", (service // 1000 * 1000).astype(str))),
        "dst_channel": pa.array(np.char.add(dst, np.arange(n).astype(str))),
        "disposition": pa.array(np.where(billsec > 0, "ANSWERED", "NO ANSWER")),
        "direction": pa.array(direction), "call_type": pa.array(["voice"] * n),
        "units": pa.array(np.zeros(n, dtype=np.int64)),
        "unique_id": pa.array(np.arange(n).astype(str)),
    }).cast(CDR_SCHEMA)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _timed_runs(con, cdrs: pa.Table, tariffs, runs: int, label: str) -> float:
    rate_batch(con, cdrs, tariffs, dt.datetime.now(UTC))          # warm-up (and tariff preparation)
    speeds, cpu_per_cdr = [], []
    for run in range(runs):
        started, cpu_started, sys_started = time.perf_counter(), time.process_time(), os.times().system
        rated = rate_batch(con, cdrs, tariffs, dt.datetime.now(UTC))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        system = os.times().system - sys_started
        speeds.append(cdrs.num_rows / elapsed)
        cpu_per_cdr.append(cpu / cdrs.num_rows * 1e6)
        statuses = dict(zip(*rated.group_by("rating_status").aggregate([("rating_status", "count")])
                            .to_pydict().values()))
        print(f"  {label} run {run + 1}: {elapsed:.3f} s wall, {cpu:.3f} s CPU ({system:.3f} s system), "
              f"{speeds[-1]:,.0f} CDRs/s; {statuses}")
        del rated
    median = statistics.median(speeds)
    print(f"{label}: median {median:,.0f} CDRs/s, {statistics.median(cpu_per_cdr):.2f} µs of CPU per CDR "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=2_000_000)
    parser.add_argument("--prefixes", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: its default, then 1)")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    prefixes, decks, bands, trunks, bundles = build_tables(rng, args)
    rates = build_rates(rng, prefixes)
    identifiers = build_identifiers(args.services)
    cdrs = build_cdrs(rng, args.cdrs, prefixes, args.services)
    bundle_note = f"{bundles.num_rows} service bundles"
    tariffs = build_tariffs(identifiers, decks, rates, bands, trunks, bundles)
    print(f"{cdrs.num_rows:,} CDRs; {rates.num_rows:,} rates ({len(prefixes):,} prefixes, sell with 3 bands + buy), "
          f"{identifiers.num_rows:,} identifiers, {bundle_note}")

    con = connect_duckdb()
    rss_before = _rss_mb()
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
        _timed_runs(con, cdrs, tariffs, args.runs, f"{args.threads} thread(s)")
    else:
        default_threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
        _timed_runs(con, cdrs, tariffs, args.runs, f"{default_threads} threads")
        con.execute("SET threads = 1")
        _timed_runs(con, cdrs, tariffs, args.runs, "1 thread")
        con.execute(f"SET threads = {default_threads}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS before rating {rss_before:,.0f} MB, peak {peak:,.0f} MB: the kernel added at most "
          f"{peak - rss_before:,.0f} MB for {cdrs.num_rows:,} CDRs")


if __name__ == "__main__":
    main()
