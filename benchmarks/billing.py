"""Times the billing cycle on 10,000 accounts and 10M rated CDRs: dry run, issue with documents, memory.

    .venv/bin/python benchmarks/billing.py [--accounts 10000] [--cdrs 10000000] [--data-dir DIR]
                                           [--steps dry,issue,render] [--repeat 3]

Setup (not timed): the demo operator with ``--accounts`` accounts (embedded SQLite; 1-3 services
each, monthly products, some yearly, bundles, discounts, SEPA mandates...), then a month of
``--cdrs`` rated CDRs written straight into the lake, vectorised with numpy/pyarrow (not through
mediation or rating): each call belongs to a voice service of the demo, inside its active days,
priced with the demo's sell deck (increments, connection fee), bundled zones free on bundled
services; 0.5 % unrated and 0.2 % unassigned. The same rows, minus the rating columns, are
written to the ``cdrs`` dataset, so that ``rate_usage`` does its real "nothing pending" check.
With ``--data-dir`` an operator built by an earlier run is reused (the build takes minutes).

Steps, each repeated ``--repeat`` times from a copy of the database as set up (medians printed):

- ``dry``: prepare_run, rate_usage (nothing pending), build_drafts, control_report, finish_run
  called as package functions, then the same dry run through ``pipeline.run_billing_cycle``
  (papermill). Target: under 2 minutes.
- ``issue`` (``render`` is the same): the real cycle from prepare_run to finish_run; issue_invoices
  starts two worker processes rendering the Factur-X PDF of each batch it commits while it issues
  the next, render_documents waits for the last ones. Printed: the wall time of the cycle and of
  both steps, and the CPU seconds of each phase, issuing and documents also per invoice. Then
  the call-detail annexes of ``ANNEX_SAMPLE`` invoices are rendered on demand (as e-mailing or a
  download does; the cycle renders none), in CPU ms per invoice. Target: under 10 minutes.
  PDF rendering alone, in invoices/s: ``benchmarks/documents.py``.

The peak memory of each step is the highest sum of the RSS of this process and its children
(sampled every 0.5 s), next to ``ru_maxrss`` of the process and of its largest child. Target:
under 4 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from facturx import get_xml_from_pdf

from bluerocktel.billing import cycle
from bluerocktel.billing.pipeline import run_billing_cycle
from bluerocktel.db.models import AuditEntry, Bundle, Invoice, Product, Service, ServiceBundle, ServiceIdentifier
from bluerocktel.demo import data
from bluerocktel.demo.build import DEMO_AUDIT_ACTION, build_demo
from bluerocktel.documents.batch import render_annexes
from bluerocktel.lake import CDR_SCHEMA, RATED_SCHEMA, UTC_TS, partition_files, write_partition
from bluerocktel.rating.tariffs import load_tariffs
from bluerocktel.workbench import Workbench

PERIOD = "2026-10"
ANNEX_SAMPLE = 200       # invoices whose call-detail annex is rendered on demand after the cycle
MONTH_START = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
MONTH_START_US = int(MONTH_START.timestamp()) * 1_000_000
MONTH_DAYS = 31
CHUNK = 1_000_000        # rows per Parquet file (one file per rating batch)
DB_FILE = "bluerocktel.db"
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
HOURS = [0, 0, 0, 0, 0, 0, 3, 15, 50, 90, 100, 95, 50, 45, 85, 95, 90, 70, 35, 15, 8, 5, 3, 0]   # calls per UTC hour
ZONE_SHARES = {"national_fixed": 44, "national_mobile": 40, "national_special": 3}   # the rest: international


class PeakRss:
    """The highest RSS of this process plus all its descendants while the block runs (sampled)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> "PeakRss":
        self.peak = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _random_text(rng: np.random.Generator, n: int, width: int, alphabet: np.ndarray) -> pa.Array:
    """``n`` random strings of ``width`` characters drawn from ``alphabet`` (vectorised, no Python loop)."""
    chars = alphabet[rng.integers(0, len(alphabet), (n, width), dtype=np.uint8)]
    return pa.array(chars.view(f"S{width}").ravel()).cast(pa.string())


def load_callers(session) -> dict[str, np.ndarray]:
    """Voice services (those with a rate deck) as arrays: ids, account, identifiers, traffic weight,
    active days of the month ``[first_day, end_day)``, and whether a bundle makes fixed / mobile calls free."""
    rows = session.execute(
        sa.select(Service.id, Service.account_id, Service.quantity, Service.activated_on, Service.terminated_on,
                  Product.code).join(Product, Product.id == Service.product_id)
        .where(Service.rate_deck_id.is_not(None)).order_by(Service.id)).all()
    idents = {(sid, kind): value for sid, kind, value in session.execute(
        sa.select(ServiceIdentifier.service_id, ServiceIdentifier.kind, ServiceIdentifier.value))}
    bundled = {sid: (sbid, zones) for sid, sbid, zones in session.execute(
        sa.select(ServiceBundle.service_id, ServiceBundle.id, Bundle.zones)
        .join(Bundle, Bundle.id == ServiceBundle.bundle_id))}
    start = MONTH_START.date()
    lo, hi = [], []
    for r in rows:
        first = max(r.activated_on or start, start)
        last = min(r.terminated_on or start + dt.timedelta(MONTH_DAYS), start + dt.timedelta(MONTH_DAYS))
        lo.append((first - start).days)
        hi.append(max((last - start).days, (first - start).days + 1))
    return {
        "service_id": np.array([r.id for r in rows]), "account_id": np.array([r.account_id for r in rows]),
        "number": np.array([idents.get((r.id, "number"), "") for r in rows]),
        "channel": np.array([idents.get((r.id, "trunk"), idents.get((r.id, "account_code"), "")) for r in rows]),
        "account_code": np.array([idents.get((r.id, "account_code"), "") for r in rows]),
        "weight": np.array([{"SIP-CH": 2 * int(r.quantity), "3CX-PRO": 8}.get(r.code, 1) for r in rows], float),
        "first_day": np.array(lo), "end_day": np.array(hi),
        "bundle_id": np.array([bundled.get(r.id, (0, []))[0] for r in rows]),
        "free_fixed": np.array(["national_fixed" in bundled.get(r.id, (0, []))[1] for r in rows]),
        "free_mobile": np.array(["national_mobile" in bundled.get(r.id, (0, []))[1] for r in rows]),
    }


def _rate_table() -> dict[str, np.ndarray]:
    """The demo sell deck as arrays, with each prefix's share of the calls."""
    zones = np.array([zone for _p, _d, zone, *_ in data.RATES])
    share = np.array([ZONE_SHARES.get(z, 13) for z in zones], float)
    for zone in set(zones):          # a zone's share split evenly over its prefixes
        share[zones == zone] /= (zones == zone).sum()
    return {
        "prefix": np.array([p for p, *_ in data.RATES]), "destination": np.array([d for _p, d, *_ in data.RATES]),
        "zone": zones, "share": share / share.sum(),
        "per_minute_micro": np.array([micro_units(price) for *_x, price, _f, _a, _b in data.RATES], np.int64),
        "fee_micro": np.array([int(micro_units(f)) for *_x, f, _a, _b in data.RATES], np.int64),
        "first": np.array([a for *_x, a, _b in data.RATES], np.int64),
        "next": np.array([b for *_x, b in data.RATES], np.int64),
        # the carrier's price per minute, 1/1 increments: the demo's buy deck
        "buy_per_minute_micro": np.array([micro_units(data.BUY_OVERRIDES[p]) if p in data.BUY_OVERRIDES
                                          else micro_units(price) * 3 // 5 for p, _d, _z, price, *_ in data.RATES],
                                         np.int64),
    }


def micro_units(amount: str) -> int:
    """Micro units of a decimal text such as ``0.0800`` (exact: the deck has at most 6 decimals)."""
    whole, _, frac = amount.partition(".")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


def build_rated_chunk(rng: np.random.Generator, n: int, offset: int, callers: dict, rates: dict,
                      tariff_version: str, rated_at: dt.datetime) -> pa.Table:
    """``n`` rated CDRs (RATED_SCHEMA) of the month for ``callers``, ids from ``offset``."""
    who = rng.choice(len(callers["service_id"]), n, p=callers["weight"] / callers["weight"].sum())
    dest = rng.choice(len(rates["prefix"]), n, p=rates["share"])
    days = callers["first_day"][who] + (rng.random(n) * (callers["end_day"] - callers["first_day"])[who]).astype(int)
    hour = rng.choice(24, n, p=np.array(HOURS) / sum(HOURS))
    start_s = days * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)
    answered = rng.random(n) < 0.7
    billsec = np.where(answered, np.clip(rng.lognormal(4.4, 1.0, n), 1, 7_200).astype(np.int64), 0)
    duration = billsec + rng.integers(3, 25, n)
    first, nxt = rates["first"][dest], rates["next"][dest]
    billable = np.where(billsec == 0, 0,
                        np.where(billsec <= first, first, first + -(-(billsec - first) // nxt) * nxt))
    per_minute = rates["per_minute_micro"][dest]
    # exact amount in pico units (1e-12), then micro units rounded half-up (positive amounts)
    unrounded_pico = np.where(billable > 0, rates["fee_micro"][dest] * 1_000_000 + billable * per_minute * 1_000_000
                              // 60, 0)
    price = (unrounded_pico + 500_000) // 1_000_000
    zone = rates["zone"][dest]
    status = np.where(rng.random(n) < 0.005, "unrated", "rated")
    unassigned = rng.random(n) < 0.002
    status = np.where(unassigned, "unassigned", status)
    priced = status == "rated"
    free = priced & (billable > 0) & (
        ((zone == "national_fixed") & callers["free_fixed"][who])
        | ((zone == "national_mobile") & callers["free_mobile"][who] & (rng.random(n) < 0.7)))
    price = np.where(free, 0, price)
    cost = (billsec * rates["buy_per_minute_micro"][dest] + 30) // 60
    flags = np.where(free, "bundle", np.where(priced & (price < cost), "negative_margin", ""))
    start_us = MONTH_START_US + start_s * 1_000_000
    ts = pa.array(start_us, UTC_TS)
    end_ts = pa.array(start_us + duration * 1_000_000, UTC_TS)
    digits = _random_text(rng, n, 9, DIGITS)
    callee = pc.binary_join_element_wise(pa.array(np.char.add("+", rates["prefix"][dest])), digits, "")
    callee = pc.utf8_slice_codeunits(callee, 0, 12)
    ids = np.arange(offset, offset + n)

    def priced_only(values, dtype=None):
        return pa.array(values, dtype, mask=~priced)

    return pa.table({
        "cdr_id": _random_text(rng, n, 32, HEX),
        "source": pa.array(["bench"] * n), "source_file": pa.array([f"bench-{offset // CHUNK:03d}.csv"] * n),
        "source_line": pa.array(ids - offset + 1, pa.int32()),
        "start_at": ts, "answer_at": pa.array(start_us, UTC_TS, mask=~answered),
        "end_at": end_ts, "duration_s": pa.array(duration, pa.int32()), "billsec_s": pa.array(billsec, pa.int32()),
        "caller": pa.array(callers["number"][who]), "callee": callee,
        "account_code": pa.array(callers["account_code"][who]), "channel": pa.array(callers["channel"][who]),
        "dst_channel": pa.array(np.char.add("PJSIP/operator-out-", (ids % 100_000).astype(str))),
        "disposition": pa.array(np.where(answered, "ANSWERED", "NO ANSWER")),
        "direction": pa.array(["out"] * n), "call_type": pa.array(["voice"] * n),
        "units": pa.array(np.zeros(n, np.int64)), "unique_id": pa.array(ids.astype(str)),
        "account_id": pa.array(callers["account_id"][who], mask=unassigned),
        "service_id": pa.array(callers["service_id"][who], mask=unassigned),
        "rate_deck_id": priced_only(np.ones(n, np.int64)), "rate_id": priced_only(dest + 1),
        "rate_valid_from": pa.array(np.zeros(n, np.int64), UTC_TS, mask=~priced),
        "prefix": priced_only(rates["prefix"][dest]), "destination": priced_only(rates["destination"][dest]),
        "zone": priced_only(zone), "band": pa.array(np.where(priced, "", None)),
        "segments": pa.nulls(n, pa.string()),
        "first_increment": priced_only(first), "next_increment": priced_only(nxt),
        "billable_s": priced_only(billable, pa.int32()), "billable_units": priced_only(billable),
        "unrounded_pico": priced_only(unrounded_pico), "price_micro": priced_only(price),
        "bundle_id": pa.array(callers["bundle_id"][who], mask=~free), "bundle_units": pa.array(billable, mask=~free),
        "bundle_split": pa.nulls(n, pa.string()),
        "cost_deck_id": priced_only(np.full(n, 2, np.int64)), "cost_rate_id": priced_only(dest + 100),
        "cost_micro": priced_only(cost), "margin_micro": priced_only(price - cost),
        "flags": pa.array(flags), "rating_status": pa.array(status),
        "rating_reason": pa.array(np.where(status == "unrated", "no rate for the callee",
                                           np.where(unassigned, "no service for the caller", ""))),
        "tariff_version": pa.array([tariff_version] * n),
        "rated_at": pa.array([rated_at] * n, UTC_TS),
    }).cast(RATED_SCHEMA)


def write_lake(wb: Workbench, cdrs: int, seed: int) -> None:
    """``cdrs`` rated CDRs of :data:`PERIOD` in the lake's ``rated`` dataset, and the same calls in ``cdrs``."""
    rng = np.random.default_rng(seed)
    with wb.db.session() as s:
        callers = load_callers(s)
        version = load_tariffs(s).version
    rates = _rate_table()
    rated_at = dt.datetime.now(dt.timezone.utc)
    for offset in range(0, cdrs, CHUNK):
        table = build_rated_chunk(rng, min(CHUNK, cdrs - offset), offset, callers, rates, version, rated_at)
        name = f"bench-{offset // CHUNK:03d}"
        write_partition(wb.lake_dir, "cdrs", PERIOD, table.select(CDR_SCHEMA.names), name=name)
        write_partition(wb.lake_dir, "rated", PERIOD, table, name=name)


def setup(data_dir: Path, accounts: int, cdrs: int) -> None:
    """Build the operator and its month of rated CDRs in ``data_dir`` unless done there already."""
    wb = Workbench.open(data_dir)
    try:
        with wb.db.session() as s:
            built = s.scalar(sa.select(AuditEntry.id).where(AuditEntry.action == DEMO_AUDIT_ACTION)) is not None
        if not built:
            started = time.perf_counter()
            build_demo(wb, accounts=accounts, cdrs=0, period=PERIOD, seed=11)
            print(f"setup: {accounts:,} accounts in {time.perf_counter() - started:.1f} s", flush=True)
        if not partition_files(wb.lake_dir, "rated", [PERIOD]):
            started = time.perf_counter()
            write_lake(wb, cdrs, seed=11)
            print(f"setup: {cdrs:,} rated CDRs in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        wb.close()


def dry_run(data_dir: Path) -> dict[str, float]:
    """The dry run step by step (package functions), then through papermill."""
    times: dict[str, float] = {}

    def timed(name, fn, *args):
        started = time.perf_counter()
        result = fn(*args)
        times[name] = time.perf_counter() - started
        return result

    started = time.perf_counter()
    ctx = timed("prepare_run", cycle.prepare_run, data_dir, PERIOD, True)
    try:
        rating = timed("rate_usage", cycle.rate_usage, ctx)
        drafts = timed("build_drafts", cycle.build_drafts, ctx)
        timed("control_report", cycle.control_report, ctx, drafts)
        timed("finish_run", cycle.finish_run, ctx)
    finally:
        ctx.wb.close()
    times["dry"] = time.perf_counter() - started
    assert rating["considered"] == 0, rating
    times["drafts"] = len(drafts)
    wb = Workbench.open(data_dir)
    try:
        run = timed("dry_papermill", run_billing_cycle, wb, PERIOD, True, None, "bench")
        assert run.status == "previewed", (run.status, run.error)
    finally:
        wb.close()
    return times


def issue_run(data_dir: Path) -> dict[str, float]:
    """The real cycle: issue every invoice (rendering starts meanwhile), then wait for the documents.

    CPU seconds per phase: ``before_cpu`` (rate_usage, build_drafts, control_report), ``issue_cpu``
    (this process during issue_invoices: numbers, invoices, and the HTML/XML it prepares for the
    workers), ``render_cpu`` (this process and the workers until the last document is recorded).
    Then ``annex_cpu``: :func:`render_annexes` of :data:`ANNEX_SAMPLE` invoices in this process, as the
    on-demand path does (the cycle renders no annex; e-mailing renders those it attaches).
    """
    times: dict[str, float] = {}
    started = time.perf_counter()
    cpu = _cpu_s()
    ctx = cycle.prepare_run(data_dir, PERIOD, False, actor="bench")
    try:
        cycle.rate_usage(ctx)
        drafts = cycle.build_drafts(ctx)
        cycle.control_report(ctx, drafts)
        times["before_cpu"], cpu = _cpu_s() - cpu, _cpu_s()
        t = time.perf_counter()
        issued = cycle.issue_invoices(ctx, drafts)
        times["issue_invoices"] = time.perf_counter() - t
        times["issue_cpu"], cpu = _cpu_s() - cpu, _cpu_s()
        t = time.perf_counter()
        documents = cycle.render_documents(ctx)
        times["render"] = time.perf_counter() - t
        times["render_cpu"] = _cpu_s() - cpu
        cycle.finish_run(ctx)
        times["issue"] = time.perf_counter() - started
        with ctx.wb.db.session() as s:
            times["invoices"] = s.scalar(sa.select(sa.func.count(Invoice.id)))
            sample = list(s.scalars(sa.select(Invoice.id).order_by(Invoice.number).limit(ANNEX_SAMPLE)))
        assert len(issued) == len(drafts) == len(documents) == times["invoices"], (len(issued), len(documents))
        times["facturx"] = int(bool(documents) and get_xml_from_pdf((ctx.wb.data_dir / documents[0]).read_bytes(),
                                                                     check_xsd=False)[0] == "factur-x.xml")
        cpu = _cpu_s()
        times["annexes"] = len(render_annexes(ctx.wb, sample, workers=1))
        times["annex_cpu"] = _cpu_s() - cpu
    finally:
        ctx.wb.close()
    return times


def restore(data_dir: Path, base: Path) -> None:
    """Put the database back as set up, drop documents and runs of earlier repeats."""
    for suffix in ("-wal", "-shm"):
        (data_dir / (DB_FILE + suffix)).unlink(missing_ok=True)
    shutil.copyfile(base, data_dir / DB_FILE)
    for folder in ("documents", "runs"):
        shutil.rmtree(data_dir / folder, ignore_errors=True)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def measured(fn, data_dir: Path) -> dict[str, float]:
    """``fn``'s figures plus its peak RSS and CPU seconds (less sensitive than wall time to a loaded machine)."""
    cpu = _cpu_s()
    with PeakRss() as rss:
        times = fn(data_dir)
    times["peak_rss_mb"] = rss.peak / 2 ** 20
    times["cpu_s"] = _cpu_s() - cpu
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--cdrs", type=int, default=10_000_000)
    parser.add_argument("--data-dir", type=Path, help="build here, or reuse what an earlier run built here")
    parser.add_argument("--steps", default="dry,issue,render", help="comma-separated: dry, issue, render")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    steps = {s.strip() for s in args.steps.split(",") if s.strip()}
    if not steps <= {"dry", "issue", "render"}:
        parser.error(f"unknown steps: {', '.join(sorted(steps - {'dry', 'issue', 'render'}))}")
    os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="brt-billing-")
    data_dir = (args.data_dir or Path(tmp.name)).resolve()
    try:
        # in a child process, so that what the build allocated does not count in the peaks measured here
        builder = multiprocessing.get_context("spawn").Process(target=setup,
                                                               args=(data_dir, args.accounts, args.cdrs))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            raise SystemExit(f"setup failed (exit code {builder.exitcode})")
        base = data_dir / "bench-base.db"
        if not base.exists():
            shutil.copyfile(data_dir / DB_FILE, base)
        results: dict[str, list[dict]] = {"dry": [], "issue": []}
        for n in range(args.repeat):
            if "dry" in steps:
                restore(data_dir, base)
                t = measured(dry_run, data_dir)
                results["dry"].append(t)
                print(f"run {n + 1} dry: {t['dry']:.1f} s (" + ", ".join(
                    f"{k} {t[k]:.1f}" for k in ("prepare_run", "rate_usage", "build_drafts", "control_report",
                                                "finish_run")) + f"), papermill {t['dry_papermill']:.1f} s, "
                      f"{t['drafts']} drafts, CPU {t['cpu_s']:.0f} s, peak RSS {t['peak_rss_mb']:,.0f} MB; "
                      f"load {_load()}", flush=True)
            if steps & {"issue", "render"}:
                restore(data_dir, base)
                t = measured(issue_run, data_dir)
                results["issue"].append(t)
                n_inv = t["invoices"]
                print(f"run {n + 1} issue: {t['issue']:.1f} s (issue_invoices {t['issue_invoices']:.1f} s, "
                      f"then documents {t['render']:.1f} s, Factur-X {'yes' if t['facturx'] else 'no'}), "
                      f"{n_inv} invoices, CPU {t['cpu_s'] - t['annex_cpu']:.0f} s (before issuing "
                      f"{t['before_cpu']:.1f}, issuing {t['issue_cpu']:.1f} = "
                      f"{1000 * t['issue_cpu'] / n_inv:.1f} ms/invoice, documents {t['render_cpu']:.1f} = "
                      f"{1000 * t['render_cpu'] / n_inv:.1f} ms/invoice), peak RSS {t['peak_rss_mb']:,.0f} MB; "
                      f"annex on demand: {t['annexes']} of {ANNEX_SAMPLE} in {t['annex_cpu']:.1f} s CPU = "
                      f"{1000 * t['annex_cpu'] / ANNEX_SAMPLE:.0f} ms/invoice; load {_load()}", flush=True)
        report(results, args)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def report(results: dict[str, list[dict]], args) -> None:
    def median(step, key):
        return statistics.median(r[key] for r in results[step])

    print(f"median of {args.repeat} runs, {args.accounts:,} accounts, {args.cdrs:,} CDRs:")
    if results["dry"]:
        for key in ("dry", "prepare_run", "rate_usage", "build_drafts", "control_report", "finish_run",
                    "dry_papermill"):
            print(f"  {key:<16} {median('dry', key):8.2f} s")
        print(f"  dry CPU          {median('dry', 'cpu_s'):8.2f} s (both dry runs, papermill kernel included)")
        print(f"  dry peak RSS     {median('dry', 'peak_rss_mb'):8,.0f} MB (target: dry run < 120 s)")
    if results["issue"]:
        invoices = median("issue", "invoices")
        for key in ("issue", "issue_invoices", "render"):
            print(f"  {key:<16} {median('issue', key):8.2f} s")
        print(f"  invoices/s       {invoices / median('issue', 'issue'):8.1f} for the whole cycle ({invoices:.0f} "
              f"invoices)")
        print(f"  issue CPU        {median('issue', 'cpu_s'):8.2f} s (render workers and the annex sample included)")
        for key, what in (("issue_cpu", "issuing"), ("render_cpu", "documents"), ("annex_cpu", "annex")):
            count = ANNEX_SAMPLE if key == "annex_cpu" else invoices
            print(f"  {what + ' CPU':<16} {1000 * median('issue', key) / count:8.1f} ms per invoice")
        print(f"  issue peak RSS   {median('issue', 'peak_rss_mb'):8,.0f} MB (targets: issue < 600 s, < 4,096 MB)")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"  ru_maxrss: this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB, "
          f"largest child {children:,.0f} MB; load {_load()}")


if __name__ == "__main__":
    main()
