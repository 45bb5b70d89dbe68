"""Rate what the lake holds and has not rated yet, month by month, and re-process the unrated queue.

A CDR is pending when it has no rating yet, or when its latest rating (max ``rated_at``) left it
in the unrated queue (status ``unrated`` or ``unassigned``) with tariffs that have changed since
(``tariff_version`` differs from the current one): a deck or identifier fixed since is picked up
by the next run, and an unchanged tariff set does not rate the queue again and again. The lake is
append-only: a new rating is a new row, and the latest one is the truth.

A month is rated in batches of ``rating_batch_size`` CDRs (a setting) in call order
(``start_at``, ``cdr_id``), each written as its own ``rated`` file, so that memory does not grow
with the month: DuckDB selects the pending CDRs in a database of its own whose memory is capped
(:data:`SELECT_MEMORY_LIMIT`, spilling to a temporary folder in the lake) and streams them in
that order; the units each batch took from bundles are added, in memory, to what earlier ratings
of the month used (:func:`~bluerocktel.rating.bundles.bundle_usage`) before the next batch, so
the ratings are exactly those of one batch for the whole month.

Calls priced now in a month an account was already invoiced for (late CDRs, or CDRs that left
the unrated queue) were on no invoice: their amount is recorded as a re-rating adjustment, which
the account's next billing cycle bills (:func:`bluerocktel.rating.rerate.settle_invoiced`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Invoice
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import (
    CDR_SCHEMA,
    connect_duckdb,
    dataset_dir,
    empty_relation_sql,
    partition_files,
    scan_sql,
    write_partition,
)
from bluerocktel.money import from_micro
from bluerocktel.rating.bundles import BUNDLE_USED_SCHEMA, bundle_usage
from bluerocktel.rating.dask_engine import rating_engine
from bluerocktel.rating.tariffs import load_tariffs
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import InvoiceKind, RatingStatus
from bluerocktel.workbench import Workbench

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
QUEUE_STATUSES = (RatingStatus.UNRATED.value, RatingStatus.UNASSIGNED.value)     # the unrated queue
_OUT_OF_QUEUE = [RatingStatus.RATED.value, RatingStatus.FREE.value]
# Memory of the DuckDB database that selects and orders a month's pending CDRs; beyond it DuckDB
# spills to disk (in the lake folder: up to ~8x the month's Parquet, 35 GB for 100M CDRs).
# Measured selecting 10M CDRs (2 cores): 6 GB uncapped; capped at 1GB, the rating run peaked at
# 3.0 GB (batches of 1M), at 512MB 2.6 GB; 100M CDRs at 512MB: 2.5 GB.
SELECT_MEMORY_LIMIT = "512MB"


@dataclass
class RatingSummary:
    """What one :func:`rate_pending` call did. The status counts sum to ``considered``."""

    months: list[str] = field(default_factory=list)   # months that got a new rated file
    considered: int = 0
    reprocessed: int = 0                               # of ``considered``: taken again from the unrated queue
    left_queue: int = 0                                # of ``reprocessed``: now rated or free
    rated: int = 0
    unrated: int = 0
    unassigned: int = 0
    free: int = 0
    total_price_micro: int = 0                         # sum of price_micro of the rated CDRs
    adjustments: list[dict] = field(default_factory=list)   # recorded for calls of invoiced months

    def add(self, month: str, rated: pa.Table, reprocessed: pa.ChunkedArray | pa.Array) -> None:
        """Count ratings of ``month`` (a batch); ``reprocessed`` flags (bool) the rows taken from the queue."""
        if month not in self.months:
            self.months.append(month)
        self.considered += rated.num_rows
        again = rated.filter(reprocessed)
        self.reprocessed += again.num_rows
        self.left_queue += pc.sum(pc.is_in(again["rating_status"], pa.array(_OUT_OF_QUEUE))).as_py() or 0
        counts = {row["values"]: row["counts"] for row in pc.value_counts(rated["rating_status"]).to_pylist()}
        self.rated += counts.get(RatingStatus.RATED.value, 0)
        self.unrated += counts.get(RatingStatus.UNRATED.value, 0)
        self.unassigned += counts.get(RatingStatus.UNASSIGNED.value, 0)
        self.free += counts.get(RatingStatus.FREE.value, 0)
        self.total_price_micro += pc.sum(rated["price_micro"]).as_py() or 0

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if not self.considered:
            return "nothing to rate: no CDR in the lake is waiting to be rated"
        text = (f"rated {self.considered} CDRs in {', '.join(self.months)}: {self.rated} rated, "
                f"{self.free} free, {self.unrated} unrated (no rate), {self.unassigned} unassigned "
                f"(no service); total {from_micro(self.total_price_micro)} in deck currency")
        if self.reprocessed:
            text += (f"; {self.reprocessed} taken again from the unrated queue, "
                     f"{self.left_queue} of them left it")
        if self.adjustments:
            text += (f"; {len(self.adjustments)} adjustment(s) recorded for calls of months already invoiced: "
                     + ", ".join(f"{a['account_number']} {a['month']} {from_micro(a['delta_micro'])}"
                                 for a in self.adjustments))
        return text


def lake_months(lake_dir: Path, dataset: str) -> list[str]:
    """The months (``YYYY-MM``) that have a partition folder in ``dataset``."""
    return sorted({p.parent.name.removeprefix("month=") for p in partition_files(lake_dir, dataset)})


def latest_rated_sql(lake_dir: Path, months: list[str] | None = None) -> str:
    """A DuckDB table expression: the latest rating (max ``rated_at``) of each ``cdr_id`` of ``months``.

    Billing reads the lake the same way (:mod:`bluerocktel.billing.usage`)."""
    return f"""(SELECT * FROM {scan_sql(lake_dir, "rated", months)}
            QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1)"""


def _cdr_rows_sql(lake_dir: Path, month: str) -> str:
    """The ``cdrs`` of ``month`` with each row's place (``filename``, ``file_row_number``)."""
    files = partition_files(lake_dir, "cdrs", [month])
    if not files:
        return f"(SELECT *, '' AS filename, 0 AS file_row_number FROM {empty_relation_sql(CDR_SCHEMA)})"
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return (f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true, filename = true, "
            f"file_row_number = true)")


def pending_sql(lake_dir: Path, month: str) -> str:
    """The DuckDB query of :func:`pending_cdrs` (parameter ``$version``), in call order.

    Written for months larger than memory: the latest rating of each CDR is a grouped
    ``arg_max``, and re-sent records are looked for only among the CDRs whose ``cdr_id`` hash is
    seen twice (grouping 100M ``cdr_id`` strings ran out of 512 MB where their 64-bit hashes
    spill); a window over every row (the former ``QUALIFY``) took 3x longer."""
    queue = ", ".join(f"'{status}'" for status in QUEUE_STATUSES)
    cdrs = _cdr_rows_sql(lake_dir, month)
    return f"""
        WITH latest AS (
            SELECT cdr_id, arg_max({{'status': rating_status, 'version': tariff_version}}, rated_at) AS r
            FROM {scan_sql(lake_dir, "rated", [month])}
            GROUP BY cdr_id
        ),
        resent AS (   -- a record re-sent (same cdr_id) is the same call: all but its first row
            SELECT filename, file_row_number FROM {cdrs}
            WHERE hash(cdr_id) IN (SELECT hash(cdr_id) FROM {cdrs} GROUP BY ALL HAVING count(*) > 1)
            QUALIFY row_number() OVER (PARTITION BY cdr_id
                                       ORDER BY source_file, source_line, filename, file_row_number) > 1
        )
        SELECT c.* EXCLUDE (filename, file_row_number), l.cdr_id IS NOT NULL AS reprocessed
        FROM {cdrs} c
        LEFT JOIN latest l ON l.cdr_id = c.cdr_id
        ANTI JOIN resent d ON d.filename = c.filename AND d.file_row_number = c.file_row_number
        WHERE l.cdr_id IS NULL OR (l.r.status IN ({queue}) AND l.r.version IS DISTINCT FROM $version)
        ORDER BY c.start_at, c.cdr_id
    """


def pending_cdrs(con, lake_dir: Path, month: str, tariff_version: str) -> pa.Table:
    """CDRs of ``month`` to rate now (one row per ``cdr_id``, CDR_SCHEMA plus a bool ``reprocessed``),
    in call order (``start_at``, ``cdr_id``).

    Those never rated, and those whose latest rating is ``unrated`` or ``unassigned`` under
    another tariff version than ``tariff_version`` (``reprocessed`` true). The whole month at
    once: :func:`pending_batches` streams it instead.
    """
    return con.sql(pending_sql(lake_dir, month), params={"version": tariff_version}).to_arrow_table()


def pending_batches(con, lake_dir: Path, month: str, tariff_version: str, batch_size: int) -> Iterator[pa.Table]:
    """:func:`pending_cdrs` in tables of ``batch_size`` rows (the last one shorter), streamed
    from DuckDB: only about one batch is in this process's memory at a time. ``con`` must not
    run anything else until the iterator is exhausted or closed (use a cursor of its own)."""
    reader = con.sql(pending_sql(lake_dir, month), params={"version": tariff_version}).to_arrow_reader(batch_size)
    held: list[pa.RecordBatch] = []
    rows = 0
    for chunk in reader:
        held.append(chunk)
        rows += chunk.num_rows
        while rows >= batch_size:
            table = pa.Table.from_batches(held)
            held, rows = table.slice(batch_size).to_batches(), rows - batch_size
            yield table.slice(0, batch_size)
            del table     # only the caller holds the batch now: it can free it before the next one
    if rows:
        yield pa.Table.from_batches(held, reader.schema)


@contextmanager
def selection_database(lake_dir: Path) -> Iterator[object]:
    """A DuckDB database of its own for selecting pending CDRs: memory capped at
    :data:`SELECT_MEMORY_LIMIT`, spilling to a temporary folder of the lake (removed after)."""
    import duckdb

    lake_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rating-spill-", dir=lake_dir) as spill:
        db = duckdb.connect(config={"memory_limit": SELECT_MEMORY_LIMIT, "temp_directory": spill,
                                    "preserve_insertion_order": False})
        try:
            db.execute("SET TimeZone = 'UTC'")
            yield db
        finally:
            db.close()


def batch_bundle_usage(used: pa.Table, rated: pa.Table) -> pa.Table:
    """``used`` (BUNDLE_USED_SCHEMA) plus the units the bundles covered in ``rated``, counted as
    :func:`~bluerocktel.rating.bundles.bundle_usage` counts them once ``rated`` is in the lake
    (a call split over several bundles counts for each), summed per service bundle and month."""
    month = pc.strftime(rated["start_at"], "%Y-%m")
    split = rated["bundle_split"]
    whole = pc.and_(pc.and_(pc.is_null(split), pc.is_valid(rated["bundle_id"])), pc.greater(rated["bundle_units"], 0))
    has_split = pc.is_valid(split)
    parts = pc.split_pattern(split.filter(has_split).combine_chunks(), ",")     # 'sbid:units' pieces
    pieces = pc.split_pattern(pc.list_flatten(parts), ":")
    added = [
        pa.table([rated["bundle_id"].filter(whole), month.filter(whole), rated["bundle_units"].filter(whole)],
                 schema=BUNDLE_USED_SCHEMA),
        pa.table([pc.cast(pc.list_element(pieces, 0), pa.int64()),
                  month.filter(has_split).combine_chunks().take(pc.list_parent_indices(parts)),
                  pc.cast(pc.list_element(pieces, 1), pa.int64())], schema=BUNDLE_USED_SCHEMA),
    ]
    summed = pa.concat_tables([used.select(BUNDLE_USED_SCHEMA.names).cast(BUNDLE_USED_SCHEMA), *added]) \
        .group_by(["service_bundle_id", "month"]).aggregate([("units", "sum")])
    return pa.table([summed["service_bundle_id"], summed["month"], summed["units_sum"]], schema=BUNDLE_USED_SCHEMA)


@contextmanager
def rating_lock(lake_dir: Path) -> Iterator[None]:
    """One rating run at a time per lake, so that no CDR is rated twice."""
    lake_dir.mkdir(parents=True, exist_ok=True)
    with open(lake_dir / ".rating.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_BILLED_BY_ACCOUNT_SQL = f"""
SELECT account_id, count(*) AS calls, CAST(sum(price_micro) AS BIGINT) AS billed_micro
FROM _pending_rated
WHERE account_id IS NOT NULL AND rating_status = '{RatingStatus.RATED.value}' AND price_micro <> 0
GROUP BY account_id
ORDER BY account_id
"""


def _month_invoiced(session, month: str) -> bool:
    """Whether any issued invoice covers ``month`` (then newly priced calls may need settling)."""
    start = dt.date(int(month[:4]), int(month[5:]), 1)
    return session.scalar(sa.select(Invoice.id).where(
        Invoice.kind == InvoiceKind.INVOICE, Invoice.period_start <= start, Invoice.period_end > start).limit(1)
    ) is not None


def check_months(months: list[str] | None) -> None:
    """Refuse any month not written ``YYYY-MM``."""
    for month in months or []:
        if not isinstance(month, str) or not _MONTH.fullmatch(month):
            raise UserFacingError(f"not a month: {month!r} (expected YYYY-MM)")


def _remove_stale_temporaries(lake_dir: Path) -> None:
    """Remove the temporary files a killed run left in ``rated`` (never read: not ``*.parquet``).
    Only rating runs, under :func:`rating_lock`, write there."""
    for path in dataset_dir(lake_dir, "rated").glob("month=*/.*.tmp"):
        path.unlink(missing_ok=True)


def _batch_size(batch_size: int | None) -> int:
    value = batch_size if batch_size is not None else get_setting("rating_batch_size")
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise UserFacingError(f"rating batch size must be an integer >= 1 (BLUEROCKTEL_RATING_BATCH_SIZE), "
                              f"got {value!r}")
    return size


def rate_pending(wb: Workbench, months: list[str] | None = None, *, actor: str = "system", engine: str = "local",
                 scheduler: str | None = None, batch_size: int | None = None,
                 progress: Callable[[str, int], None] | None = None) -> RatingSummary:
    """Rate every CDR of the lake (or of ``months``) that is pending (see :func:`pending_cdrs`).

    Rates each month in batches of ``batch_size`` CDRs (default: the ``rating_batch_size``
    setting) in call order and writes one ``rated`` partition file per batch, then, in one
    transaction, records the adjustments of calls priced in months already invoiced and a
    ``rating.run`` audit entry (none when nothing was pending). If anything fails, the files
    written are removed again, so that the next run does the same work; if the process is
    killed, the files written stay (complete ratings) and the next run rates the rest.
    Idempotent: a second call with the same tariffs finds nothing pending and rates nothing.
    ``engine``: ``local`` (this process) or ``dask`` (the cluster whose scheduler is at
    ``scheduler``, or a LocalCluster of 2 workers; :mod:`bluerocktel.rating.dask_engine`): the
    same files either way. ``progress(month, cdrs)``, if given, is called after each batch's
    file is written with the CDRs this call has rated so far.
    """
    from bluerocktel.rating.rerate import AccountMonthDelta, settle_invoiced   # lazily: rerate builds on this module

    check_months(months)
    size = _batch_size(batch_size)
    summary = RatingSummary()
    written: list[Path] = []
    newly_billed: list[AccountMonthDelta] = []     # per account and invoiced month: what no invoice had
    done: list[tuple[str, list[str]]] = []         # months with nothing pending after this run, their CDR files
    with rating_lock(wb.lake_dir), rating_engine(engine, scheduler) as rate, \
            selection_database(wb.lake_dir) as selection:
        _remove_stale_temporaries(wb.lake_dir)
        with wb.db.session() as session:
            tariffs = load_tariffs(session)
            months = months or lake_months(wb.lake_dir, "cdrs")
            invoiced = {month for month in months if _month_invoiced(session, month)}
        rated_at = dt.datetime.now(dt.timezone.utc)
        con, select = connect_duckdb(), selection.cursor()
        try:
            for month in months:
                if _settled(wb.lake_dir, month, tariffs.version):
                    continue
                # bundles are consumed after what the month's earlier ratings used, then batch by batch
                used = bundle_usage(select, wb.lake_dir, [month])
                billed: dict[int, tuple[int, int]] = {}     # account -> (calls, micro) newly billed
                cdr_files = _files_state(wb.lake_dir, "cdrs", month)     # at most what the selection reads
                for pending in pending_batches(select, wb.lake_dir, month, tariffs.version, size):
                    rated = rate(con, pending.drop_columns(["reprocessed"]), tariffs, rated_at, bundle_used=used)
                    used = batch_bundle_usage(used, rated)
                    if month in invoiced:   # the previous rating of these CDRs (if any) billed nothing
                        for account, calls, micro in _billed_by_account(con, rated):
                            before = billed.get(account, (0, 0))
                            billed[account] = (before[0] + calls, before[1] + micro)
                    written.append(write_partition(wb.lake_dir, "rated", month, rated))
                    summary.add(month, rated, pending["reprocessed"])
                    if progress is not None:
                        progress(month, summary.considered)
                    del pending, rated     # free this batch before the next one is selected and rated
                newly_billed += [AccountMonthDelta(account, month, calls, calls, 0, micro)
                                 for account, (calls, micro) in sorted(billed.items())]
                done.append((month, cdr_files))
            if summary.considered:
                with wb.db.transaction() as session:
                    settled = settle_invoiced(session, newly_billed, f"calls rated by {actor} after the month was "
                                                                     f"invoiced (late, or left the unrated queue)")
                    summary.adjustments = [{"account_number": r.account_number, "month": r.month, "calls": r.calls,
                                            "delta_micro": r.delta_micro, "adjustment_id": r.adjustment_id}
                                           for r in settled]
                    files = [str(p.relative_to(dataset_dir(wb.lake_dir, "rated"))) for p in written]
                    record_audit(session, actor, "rating.run", "lake", "rated", files=files, **summary.as_dict())
        except BaseException:
            for path in written:   # nothing settled: take the ratings back, the next run redoes both
                path.unlink(missing_ok=True)
            raise
        finally:
            select.close()
            con.close()
        for month, cdr_files in done:          # still under the lock: no other run adds rated files
            _mark_settled(wb.lake_dir, month, _digest(tariffs.version, cdr_files,
                                                      _files_state(wb.lake_dir, "rated", month)))
    return summary


# A month's pending CDRs are a function of its ``cdrs`` and ``rated`` files and of the tariff
# version alone (the lake is append-only: files are written once, atomically, and only ever
# added or, by a failed run, removed). After a run, a digest of those is kept per month: the CDR
# files listed before the month's selection (an import meanwhile adds one that is not in it) and
# the rated files after it. While the digest matches, the month has nothing pending and the query
# that proves it (27 s for a month of 10M CDRs, each time a billing cycle starts) is skipped.
SETTLED_DIR = ".rating-settled"


def _files_state(lake_dir: Path, dataset: str, month: str) -> list[str]:
    return [f"{dataset}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
            for path in partition_files(lake_dir, dataset, [month]) for stat in [path.stat()]]


def _digest(tariff_version: str, cdr_files: list[str], rated_files: list[str]) -> str:
    return hashlib.sha256("\n".join([tariff_version, *cdr_files, *rated_files]).encode()).hexdigest()


def _settled(lake_dir: Path, month: str, tariff_version: str) -> bool:
    """True when ``month`` had nothing pending after the last run and none of its files nor the
    tariffs have changed since."""
    marker = lake_dir / SETTLED_DIR / month
    return marker.is_file() and marker.read_text() == _digest(
        tariff_version, _files_state(lake_dir, "cdrs", month), _files_state(lake_dir, "rated", month))


def _mark_settled(lake_dir: Path, month: str, digest: str) -> None:
    folder = lake_dir / SETTLED_DIR
    folder.mkdir(exist_ok=True)
    temporary = folder / f".{month}.tmp"
    temporary.write_text(digest)
    temporary.replace(folder / month)


def _billed_by_account(con, rated: pa.Table) -> list[tuple[int, int, int]]:
    """``(account_id, calls, price_micro)`` of the priced calls of ``rated``, per account."""
    con.register("_pending_rated", rated)
    try:
        return [(int(a), int(n), int(micro)) for a, n, micro in con.sql(_BILLED_BY_ACCOUNT_SQL).fetchall()]
    finally:
        con.unregister("_pending_rated")
