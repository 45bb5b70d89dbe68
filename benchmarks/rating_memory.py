"""Peak memory and speed of ``rate_pending`` on one large month, rated in sub-month batches.

    .venv/bin/python benchmarks/rating_memory.py [--cdrs 100000000] [--batch-size 1000000] [--data-dir DIR]

Tariffs: those of ``benchmarks/rating.py`` (its builders, imported): a 10,000-prefix sell deck
with peak / off-peak / weekend bands and grouped intervals, a buy deck behind a carrier trunk,
10,000 services identified by caller number, account code or trunk, bundles on 10% of them;
written into the system of record of a fresh workbench (SQLite), since ``rate_pending`` loads
its tariffs from there.

CDRs: ``--cdrs`` calls of October 2026 generated straight into the lake (vectorised NumPy /
Arrow, not through the mediation importer), 1,000,000 per Parquet file, each file a consecutive
slice of the month as a switch writes them; random 32-hex ``cdr_id`` like the importer's
SHA-256 ids, callees extending a random prefix of the deck (1% match none), 2% from unknown
callers, 80% answered for 1..899 s, 85% outbound, 90% through the carrier trunk.

``rate_pending`` then runs in a child process (what ``bluerocktel rate`` does) with
``--batch-size`` CDRs per batch. Prints the child's progress (with its RSS) as it goes, the wall time,
CDRs/s and the child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

``--data-dir``: the workbench folder (default: a new folder under /tmp, removed at the end). A
folder that already holds a generated lake of the same size is reused (its ratings removed
first), so that several batch sizes can be measured on one lake; remove it yourself afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rating import EPOCH, build_identifiers, build_rates, build_tables  # noqa: E402  (benchmarks/rating.py)

from bluerocktel.db.models import (  # noqa: E402
    Account,
    Brand,
    Bundle,
    CarrierTrunk,
    Product,
    Rate,
    RateDeck,
    Service,
    ServiceBundle,
    ServiceIdentifier,
    TimeBand,
)
from bluerocktel.lake import CDR_SCHEMA, dataset_dir, write_partition  # noqa: E402
from bluerocktel.workbench import Workbench  # noqa: E402

MONTH = "2026-10"
FILE_CDRS = 1_000_000
MONTH_US = 31 * 86_400 * 1_000_000
HEX = np.array([f"{i:02x}" for i in range(256)], dtype="S2")


def _money(micro: int | None) -> Decimal | None:
    return None if micro is None else Decimal(micro).scaleb(-6)


def seed_tariffs(wb: Workbench, services: int, prefixes: int) -> list[str]:
    """The tariffs of benchmarks/rating.py (same seed) in the system of record; its prefixes."""
    rng = np.random.default_rng(7)
    numbers, decks, bands, trunks, bundles = build_tables(rng, SimpleNamespace(prefixes=prefixes, services=services))
    rates, identifiers = build_rates(rng, numbers), build_identifiers(services)
    ids = identifiers.to_pylist()
    with wb.db.transaction() as s:
        brand = Brand(code="BENCH", name="Bench", legal_name="Bench SAS")
        product = Product(code="VOIP", name="SIP trunk", kind="usage")
        s.add_all([brand, product])
        s.flush()
        s.execute(sa.insert(RateDeck), [
            {"id": d["deck_id"], "code": d["code"], "name": d["code"], "kind": d["kind"], "currency": d["currency"],
             "rounding_method": d["rounding_method"], "rounding_decimals": d["rounding_decimals"],
             "holiday_calendar": d["holiday_calendar"]} for d in decks.to_pylist()])
        s.execute(sa.insert(Rate), [
            {"id": r["rate_id"], "deck_id": r["deck_id"], "call_type": r["call_type"], "prefix": r["prefix"],
             "destination": r["destination"], "zone": r["zone"], "band": r["band"], "group_start": r["group_start"],
             "price": _money(r["price_micro"]), "unit_size": r["unit_size"],
             "connection_fee": _money(r["connection_fee_micro"]), "first_increment": r["first_increment"],
             "next_increment": r["next_increment"], "min_charge": _money(r["min_charge_micro"]),
             "valid_from": r["valid_from"], "valid_to": r["valid_to"]} for r in rates.to_pylist()])
        s.execute(sa.insert(TimeBand), [
            {"deck_id": b["deck_id"], "name": b["name"], "days": ",".join(b["days"]),
             "start_minute": b["start_minute"], "end_minute": b["end_minute"], "priority": b["priority"]}
            for b in bands.to_pylist()])
        s.execute(sa.insert(CarrierTrunk), [
            {"id": t["trunk_id"], "name": t["trunk"], "deck_id": t["deck_id"], "trunk": t["trunk"],
             "valid_from": t["valid_from"], "valid_to": t["valid_to"]} for t in trunks.to_pylist()])
        s.execute(sa.insert(Account), [
            {"id": a, "number": f"B{a:06d}", "brand_id": brand.id, "name": f"account {a}", "timezone": "Europe/Paris"}
            for a in sorted({i["account_id"] for i in ids})])
        s.execute(sa.insert(Service), [
            {"id": sid, "account_id": acc, "product_id": product.id, "rate_deck_id": deck, "label": f"service {sid}"}
            for sid, acc, deck in sorted({(i["service_id"], i["account_id"], i["rate_deck_id"]) for i in ids})])
        s.execute(sa.insert(ServiceIdentifier), [
            {"id": i["identifier_id"], "service_id": i["service_id"], "kind": i["kind"], "value": i["value"],
             "valid_from": i["valid_from"], "valid_to": i["valid_to"]} for i in ids])
        grants = bundles.to_pylist()
        s.execute(sa.insert(Bundle), [
            {"id": g["bundle_id"], "code": g["code"], "name": g["code"], "call_type": g["call_type"],
             "zones": g["zones"], "allowance": g["allowance"], "fair_use_cap": g["fair_use_cap"]}
            for g in {g["bundle_id"]: g for g in grants}.values()])
        s.execute(sa.insert(ServiceBundle), [
            {"id": g["service_bundle_id"], "service_id": g["service_id"], "bundle_id": g["bundle_id"],
             "valid_from": g["valid_from"], "valid_to": g["valid_to"]} for g in grants])
    return numbers


def _text(values) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def generate_file(rng: np.random.Generator, n: int, first: int, start_us: tuple[int, int], prefixes: np.ndarray,
                  lengths: np.ndarray, services: int, file_no: int) -> pa.Table:
    """``n`` CDRs started in ``[start_us)`` (epoch microseconds), in start order; ``first`` is the
    number of the first (for unique ids); ``prefixes`` (ints) and their ``lengths`` in digits."""
    pick = rng.integers(0, len(prefixes), n)
    scale = 10 ** (11 - lengths[pick])                     # callees have 11 digits after the '+'
    callee = _join("+", _text(prefixes[pick] * scale + rng.integers(0, scale)))
    callee = pc.if_else(pa.array(rng.random(n) < 0.01), _join("+0", _text(rng.integers(10**10, 10**11, n))), callee)
    service = rng.integers(1, int(services * 1.02) + 1, n)   # ~2% unknown callers
    start = np.sort(rng.integers(*start_us, n))
    billsec = np.where(rng.random(n) < 0.8, rng.integers(1, 900, n), 0).astype("int32")
    ring = rng.integers(0, 30, n).astype("int32")
    answer = start + ring.astype(np.int64) * 1_000_000
    answered = billsec > 0
    number = np.arange(first, first + n)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "cdr_id": pa.array(HEX[np.frombuffer(rng.bytes(16 * n), dtype=np.uint8)].view("S32").ravel()).cast(pa.string()),
        "source": pa.array(np.full(n, "bench")), "source_file": pa.array(np.full(n, f"bench-{file_no:05d}.csv")),
        "source_line": pa.array(np.arange(1, n + 1, dtype="int32")),
        "start_at": pa.array(start, ts), "answer_at": pa.array(answer, ts, mask=~answered),
        "end_at": pa.array(answer + billsec.astype(np.int64) * 1_000_000, ts),
        "duration_s": pa.array(ring + billsec), "billsec_s": pa.array(billsec),
        "caller": _join("+3319", pc.utf8_slice_codeunits(_text(10_000_000 + service), 1)), "callee": callee,
        "account_code": pc.if_else(pa.array(rng.random(n) < 0.05), _join("AC", _text(service // 10 * 10)), ""),
        "channel": _join("SIP/trunk", _text(service // 1000 * 1000)),
        "dst_channel": _join(pc.if_else(pa.array(rng.random(n) < 0.9), "SIP/carrierA-", "SIP/other-"), _text(number)),
        "disposition": pc.if_else(pa.array(answered), "ANSWERED", "NO ANSWER"),
        "direction": pc.if_else(pa.array(rng.random(n) < 0.85), "out", "in"),
        "call_type": pa.array(np.full(n, "voice")), "units": pa.array(np.zeros(n, dtype=np.int64)),
        "unique_id": _text(number),
    }).cast(CDR_SCHEMA)


def generate_lake(lake_dir: Path, cdrs: int, numbers: list[str], services: int) -> None:
    prefixes = np.array([int(p) for p in numbers], dtype=np.int64)     # no prefix starts with 0
    lengths = np.array([len(p) for p in numbers], dtype=np.int64)
    rng = np.random.default_rng(11)
    files = -(-cdrs // FILE_CDRS)
    month_start = int(EPOCH.timestamp()) * 1_000_000
    for f in range(files):
        n = min(FILE_CDRS, cdrs - f * FILE_CDRS)
        window = (month_start + MONTH_US * f // files, month_start + MONTH_US * (f + 1) // files)
        write_partition(lake_dir, "cdrs", MONTH, generate_file(rng, n, f * FILE_CDRS, window, prefixes, lengths,
                                                              services, f))
        if (f + 1) % 10 == 0:
            print(f"  generated {(f + 1) * FILE_CDRS:,} CDRs", flush=True)


def _rss_mb() -> tuple[int, int]:
    """This process's RSS and peak RSS (VmHWM), in MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) // 1024, int(status["VmHWM"].split()[0]) // 1024


def rate_in_child(data_dir: Path, batch_size: int) -> None:
    """The child: ``rate_pending`` on the workbench, its progress on stderr, the summary as JSON on stdout."""
    from bluerocktel.rating import rate_pending

    wb = Workbench.open(data_dir)
    started = time.perf_counter()
    batches, shown_peak = [0], [0]

    def progress(month: str, cdrs: int) -> None:
        """Print the first batch, every 10th, and any that raised the peak RSS by 50 MB or more."""
        batches[0] += 1
        rss_mb, peak_mb = _rss_mb()
        if batches[0] == 1 or batches[0] % 10 == 0 or peak_mb >= shown_peak[0] + 50:
            shown_peak[0] = peak_mb
            print(f"  child: batch {batches[0]}, {cdrs:,} CDRs rated after {time.perf_counter() - started:.1f} s, "
                  f"RSS {rss_mb:,} MB (peak {peak_mb:,})", file=sys.stderr, flush=True)

    summary = rate_pending(wb, actor="benchmark", batch_size=batch_size, progress=progress)
    wb.close()
    print(json.dumps({"considered": summary.considered, "rated": summary.rated, "free": summary.free,
                      "unrated": summary.unrated, "unassigned": summary.unassigned, "batches": batches[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=100_000_000)
    parser.add_argument("--batch-size", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default=None, help="workbench folder (default: a temporary one, removed)")
    parser.add_argument("--prefixes", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)       # the workbench's own SQLite file
    if args.child:
        rate_in_child(Path(args.data_dir), args.batch_size)
        return

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="brt-bench-memory-", dir="/tmp"))
    marker = data_dir / "rating_memory.json"
    wanted = {"cdrs": args.cdrs, "prefixes": args.prefixes, "services": args.services}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        shutil.rmtree(dataset_dir(data_dir / "lake", "rated"), ignore_errors=True)
        print(f"reusing the lake of {args.cdrs:,} CDRs in {data_dir}", flush=True)
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        started = time.perf_counter()
        wb = Workbench.open(data_dir)
        numbers = seed_tariffs(wb, args.services, args.prefixes)
        wb.close()
        generate_lake(data_dir / "lake", args.cdrs, numbers, args.services)
        marker.write_text(json.dumps(wanted))
        lake_mb = sum(p.stat().st_size for p in (data_dir / "lake").rglob("*.parquet")) / 2**20
        print(f"tariffs seeded and {args.cdrs:,} CDRs generated in {time.perf_counter() - started:.0f} s "
              f"({lake_mb:,.0f} MB of Parquet)", flush=True)

    started = time.perf_counter()
    child = subprocess.run([sys.executable, __file__, "--child", "--data-dir", str(data_dir),
                            "--batch-size", str(args.batch_size)], stdout=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if child.returncode != 0:
        sys.exit(f"the rating child failed (exit {child.returncode})")
    summary = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"rate_pending: {summary['considered']:,} CDRs in {summary['batches']} batches of {args.batch_size:,} "
          f"in {elapsed:.1f} s wall: {summary['considered'] / elapsed:,.0f} CDRs/s; peak RSS of the child "
          f"{peak_mb:,.0f} MB ({summary}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if not args.data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
