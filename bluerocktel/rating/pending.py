"""Rate what the lake holds and has not rated yet: ``cdrs`` minus ``rated``, month by month."""

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

from bluerocktel.audit import record_audit
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import connect_duckdb, dataset_dir, partition_files, scan_sql, write_partition
from bluerocktel.money import from_micro
from bluerocktel.rating.kernel import rate_batch
from bluerocktel.rating.tariffs import load_tariffs
from bluerocktel.vocabulary import RatingStatus
from bluerocktel.workbench import Workbench

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


@dataclass
class RatingSummary:
    """What one :func:`rate_pending` call did. The status counts sum to ``considered``."""

    months: list[str] = field(default_factory=list)   # months that got a new rated file
    considered: int = 0
    rated: int = 0
    unrated: int = 0
    unassigned: int = 0
    free: int = 0
    total_price_micro: int = 0                         # sum of price_micro of the rated CDRs

    def add(self, month: str, rated: pa.Table) -> None:
        self.months.append(month)
        self.considered += rated.num_rows
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
        return (f"rated {self.considered} CDRs in {', '.join(self.months)}: {self.rated} rated, "
                f"{self.free} free, {self.unrated} unrated (no rate), {self.unassigned} unassigned "
                f"(no service); total {from_micro(self.total_price_micro)} in deck currency")


def lake_months(lake_dir: Path, dataset: str) -> list[str]:
    """The months (``YYYY-MM``) that have a partition folder in ``dataset``."""
    return sorted({p.parent.name.removeprefix("month=") for p in partition_files(lake_dir, dataset)})


def pending_cdrs(con, lake_dir: Path, month: str) -> pa.Table:
    """CDRs of ``month`` whose ``cdr_id`` is not in ``rated`` yet (one row per ``cdr_id``)."""
    sql = f"""
        SELECT DISTINCT ON (c.cdr_id) c.*
        FROM {scan_sql(lake_dir, "cdrs", [month])} c
        ANTI JOIN (SELECT cdr_id FROM {scan_sql(lake_dir, "rated", [month])}) r ON r.cdr_id = c.cdr_id
        ORDER BY c.cdr_id, c.source_file, c.source_line
    """
    return con.sql(sql).to_arrow_table()


@contextmanager
def _rating_lock(lake_dir: Path) -> Iterator[None]:
    """One rating run at a time per lake, so that no CDR is rated twice."""
    lake_dir.mkdir(parents=True, exist_ok=True)
    with open(lake_dir / ".rating.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def rate_pending(wb: Workbench, months: list[str] | None = None, *, actor: str = "system") -> RatingSummary:
    """Rate every CDR of the lake (or of ``months``) that is not rated yet.

    Writes one ``rated`` partition file per month that had pending CDRs, then records a
    ``rating.run`` audit entry (none when nothing was pending). Idempotent: a second call
    finds nothing pending and rates nothing.
    """
    for month in months or []:
        if not _MONTH.fullmatch(month):
            raise UserFacingError(f"not a month: {month!r} (expected YYYY-MM)")
    summary = RatingSummary()
    files: list[str] = []
    with _rating_lock(wb.lake_dir):
        with wb.db.session() as session:
            tariffs = load_tariffs(session)
        rated_at = dt.datetime.now(dt.timezone.utc)
        con = connect_duckdb()
        try:
            for month in months or lake_months(wb.lake_dir, "cdrs"):
                pending = pending_cdrs(con, wb.lake_dir, month)
                if pending.num_rows == 0:
                    continue
                rated = rate_batch(con, pending, tariffs, rated_at)
                path = write_partition(wb.lake_dir, "rated", month, rated)
                files.append(str(path.relative_to(dataset_dir(wb.lake_dir, "rated"))))
                summary.add(month, rated)
        finally:
            con.close()
        if summary.considered:
            with wb.db.transaction() as session:
                record_audit(session, actor, "rating.run", "lake", "rated", files=files, **summary.as_dict())
    return summary
