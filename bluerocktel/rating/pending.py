"""Rate what the lake holds and has not rated yet, month by month, and re-process the unrated queue.

A CDR is pending when it has no rating yet, or when its latest rating (max ``rated_at``) left it
in the unrated queue (status ``unrated`` or ``unassigned``) with tariffs that have changed since
(``tariff_version`` differs from the current one): a deck or identifier fixed since is picked up
by the next run, and an unchanged tariff set does not rate the queue again and again. The lake is
append-only: a new rating is a new row, and the latest one is the truth.

Calls priced now in a month an account was already invoiced for (late CDRs, or CDRs that left
the unrated queue) were on no invoice: their amount is recorded as a re-rating adjustment, which
the account's next billing cycle bills (:func:`bluerocktel.rating.rerate.settle_invoiced`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Invoice
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import connect_duckdb, dataset_dir, partition_files, scan_sql, write_partition
from bluerocktel.money import from_micro
from bluerocktel.rating.dask_engine import rating_engine
from bluerocktel.rating.tariffs import load_tariffs
from bluerocktel.vocabulary import InvoiceKind, RatingStatus
from bluerocktel.workbench import Workbench

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
QUEUE_STATUSES = (RatingStatus.UNRATED.value, RatingStatus.UNASSIGNED.value)     # the unrated queue
_OUT_OF_QUEUE = [RatingStatus.RATED.value, RatingStatus.FREE.value]


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
        """Count the ratings of ``month``; ``reprocessed`` flags (bool) the rows taken from the queue."""
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


def pending_cdrs(con, lake_dir: Path, month: str, tariff_version: str) -> pa.Table:
    """CDRs of ``month`` to rate now (one row per ``cdr_id``, CDR_SCHEMA plus a bool ``reprocessed``).

    Those never rated, and those whose latest rating is ``unrated`` or ``unassigned`` under
    another tariff version than ``tariff_version`` (``reprocessed`` true).
    """
    queue = ", ".join(f"'{status}'" for status in QUEUE_STATUSES)
    sql = f"""
        SELECT c.*, r.cdr_id IS NOT NULL AS reprocessed
        FROM {scan_sql(lake_dir, "cdrs", [month])} c
        LEFT JOIN (SELECT cdr_id, rating_status, tariff_version FROM {latest_rated_sql(lake_dir, [month])}) r
               ON r.cdr_id = c.cdr_id
        WHERE r.cdr_id IS NULL
           OR (r.rating_status IN ({queue}) AND r.tariff_version IS DISTINCT FROM $version)
        -- one row per cdr_id (a record re-sent in another file is the same call); QUALIFY is
        -- 3x faster than DISTINCT ON here (2M CDRs: 3.9 s against 12-14 s)
        QUALIFY row_number() OVER (PARTITION BY c.cdr_id ORDER BY c.source_file, c.source_line) = 1
        ORDER BY c.cdr_id
    """
    return con.sql(sql, params={"version": tariff_version}).to_arrow_table()


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


def rate_pending(wb: Workbench, months: list[str] | None = None, *, actor: str = "system", engine: str = "local",
                 scheduler: str | None = None) -> RatingSummary:
    """Rate every CDR of the lake (or of ``months``) that is pending (see :func:`pending_cdrs`).

    Writes one ``rated`` partition file per month that had pending CDRs, then, in one
    transaction, records the adjustments of calls priced in months already invoiced and a
    ``rating.run`` audit entry (none when nothing was pending). If anything fails, the files
    written are removed again, so that the next run does the same work. Idempotent: a second
    call with the same tariffs finds nothing pending and rates nothing. ``engine``: ``local``
    (this process) or ``dask`` (the cluster whose scheduler is at ``scheduler``, or a
    LocalCluster of 2 workers; :mod:`bluerocktel.rating.dask_engine`): the same files either way.
    """
    # lazily: bundles builds on the kernel, rerate on this module
    from bluerocktel.rating.bundles import bundle_usage
    from bluerocktel.rating.rerate import AccountMonthDelta, settle_invoiced

    check_months(months)
    summary = RatingSummary()
    written: list[Path] = []
    newly_billed: list[AccountMonthDelta] = []     # per account and invoiced month: what no invoice had
    with rating_lock(wb.lake_dir), rating_engine(engine, scheduler) as rate:
        with wb.db.session() as session:
            tariffs = load_tariffs(session)
            months = months or lake_months(wb.lake_dir, "cdrs")
            invoiced = {month for month in months if _month_invoiced(session, month)}
        rated_at = dt.datetime.now(dt.timezone.utc)
        con = connect_duckdb()
        try:
            for month in months:
                pending = pending_cdrs(con, wb.lake_dir, month, tariffs.version)
                if pending.num_rows == 0:
                    continue
                # bundles are consumed after what the month's earlier ratings used
                used = bundle_usage(con, wb.lake_dir, [month])
                rated = rate(con, pending.drop_columns(["reprocessed"]), tariffs, rated_at, bundle_used=used)
                if month in invoiced:   # the previous rating of these CDRs (if any) billed nothing
                    con.register("_pending_rated", rated)
                    try:
                        newly_billed += [AccountMonthDelta(int(a), month, int(n), int(n), 0, int(micro))
                                         for a, n, micro in con.sql(_BILLED_BY_ACCOUNT_SQL).fetchall()]
                    finally:
                        con.unregister("_pending_rated")
                written.append(write_partition(wb.lake_dir, "rated", month, rated))
                summary.add(month, rated, pending["reprocessed"])
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
            con.close()
    return summary
