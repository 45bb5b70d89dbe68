"""``bluerocktel rating rerate``: rate a period again with the current tariffs and settle the delta.

After a deck or mapping change, every CDR of the period's months (all statuses) is rated again
and compared with its latest previous rating. The billed amount of a rating is its
``price_micro`` when its status is ``rated`` and 0 otherwise (what billing sums, see
:mod:`bluerocktel.billing.usage`); a call is *changed* when that amount or its account differs.
The result is reported per account (and per account and month): calls, calls changed, old
total, new total and delta.

Without ``dry_run`` the new ratings are appended to the lake (one ``rated`` file per month; the
latest rating wins, so billing of a month not invoiced yet simply reads the new prices), and for
each account and month already covered by an issued invoice a :class:`RatingAdjustment` of the
non-zero delta is recorded; the account's next billing cycle turns it into an invoice line. An
issued invoice is never edited. Re-rating with unchanged tariffs gives a zero delta and records
no adjustment.

The files are written first and the adjustments committed after, in one transaction with the
``rating.rerate`` audit entry; if that transaction fails, the files are removed again, so that a
second run computes the same delta. Runs hold the same lock as :func:`rate_pending`.

Wiring (in ``bluerocktel/cli.py``, next to ``add_rating_quote_parser(rating, common)``)::

    from bluerocktel.rating.rerate import add_rating_rerate_parser
    add_rating_rerate_parser(rating, common)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from bluerocktel.audit import record_audit
from bluerocktel.billing.periods import parse_period
from bluerocktel.db.models import Account, Invoice, RatingAdjustment
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.lake import connect_duckdb, dataset_dir, partition_files, scan_sql, write_partition
from bluerocktel.money import from_micro
from bluerocktel.rating.kernel import rate_batch
from bluerocktel.rating.pending import rating_lock, latest_rated_sql
from bluerocktel.rating.tariffs import load_tariffs
from bluerocktel.vocabulary import InvoiceKind, RatingStatus
from bluerocktel.workbench import Workbench

_NEW, _OLD = "_rerate_new", "_rerate_old"
_RATED = RatingStatus.RATED.value

# One row per re-rated CDR: the billed amount and account before and after.
_PAIRS_SQL = f"""
SELECT n.cdr_id, o.account_id AS old_account, n.account_id AS new_account,
       CASE WHEN o.rating_status = '{_RATED}' THEN coalesce(o.price_micro, 0) ELSE 0 END AS old_micro,
       CASE WHEN n.rating_status = '{_RATED}' THEN coalesce(n.price_micro, 0) ELSE 0 END AS new_micro
FROM {_NEW} n LEFT JOIN {_OLD} o ON o.cdr_id = n.cdr_id
"""

# Per account: a call counts for its old account and, when it moved, for its new one too.
_BY_ACCOUNT_SQL = f"""
WITH pairs AS (
    SELECT *, old_micro <> new_micro OR old_account IS DISTINCT FROM new_account AS changed FROM ({_PAIRS_SQL})
),
sides AS (
    SELECT old_account AS account_id, old_micro,
           CASE WHEN new_account = old_account THEN new_micro ELSE 0 END AS new_micro, changed
    FROM pairs WHERE old_account IS NOT NULL
    UNION ALL
    SELECT new_account, 0, new_micro, changed
    FROM pairs WHERE new_account IS NOT NULL AND new_account IS DISTINCT FROM old_account
)
SELECT account_id, count(*) AS calls, count(*) FILTER (WHERE changed) AS calls_changed,
       CAST(sum(old_micro) AS BIGINT) AS old_total_micro, CAST(sum(new_micro) AS BIGINT) AS new_total_micro
FROM sides
GROUP BY account_id
ORDER BY account_id
"""

_CHANGED_SQL = f"""
SELECT count(*) FILTER (WHERE old_micro <> new_micro OR old_account IS DISTINCT FROM new_account) AS changed
FROM ({_PAIRS_SQL})
"""


def _signed(micro: int) -> str:
    return f"{'+' if micro > 0 else ''}{from_micro(micro)}"


@dataclass
class AccountMonthDelta:
    """The re-rating of one account's calls of one month."""

    account_id: int
    month: str
    calls: int                     # re-rated calls of the account (before or after)
    calls_changed: int             # of them, whose billed amount or account changed
    old_total_micro: int           # billed amount of the latest previous ratings
    new_total_micro: int
    account_number: str | None = None
    invoiced: bool = False         # an issued invoice of the account covers the month
    adjustment_id: int | None = None

    @property
    def delta_micro(self) -> int:
        return self.new_total_micro - self.old_total_micro

    @property
    def needs_adjustment(self) -> bool:
        return self.invoiced and self.delta_micro != 0

    def as_dict(self) -> dict:
        return {"account_id": self.account_id, "account_number": self.account_number, "month": self.month,
                "calls": self.calls, "calls_changed": self.calls_changed,
                **_money(self.old_total_micro, self.new_total_micro),
                "invoiced": self.invoiced, "adjustment_id": self.adjustment_id}


def _money(old_micro: int, new_micro: int) -> dict:
    """Old, new and delta in micro units and as Decimal text."""
    return {"old_total_micro": old_micro, "new_total_micro": new_micro, "delta_micro": new_micro - old_micro,
            "old_total": str(from_micro(old_micro)), "new_total": str(from_micro(new_micro)),
            "delta": str(from_micro(new_micro - old_micro))}


@dataclass
class RerateSummary:
    """What one :func:`rerate` did (or, in a dry run, would do)."""

    months: list[str]                                  # the months asked for
    account_number: str | None
    dry_run: bool
    tariff_version: str
    rated_months: list[str] = field(default_factory=list)   # months that had CDRs
    cdrs: int = 0                                      # CDRs re-rated
    changed: int = 0                                   # of them, billed amount or account changed
    rows: list[AccountMonthDelta] = field(default_factory=list)
    files: list[str] = field(default_factory=list)     # rated files written, relative to the dataset

    def accounts(self) -> list[dict]:
        """Per account over the whole period: calls, calls changed, old/new totals and delta."""
        by_account: dict[int, dict] = {}
        for row in self.rows:
            acc = by_account.setdefault(row.account_id, {"account_id": row.account_id,
                                                         "account_number": row.account_number,
                                                         "calls": 0, "calls_changed": 0, "old": 0, "new": 0})
            acc["calls"] += row.calls
            acc["calls_changed"] += row.calls_changed
            acc["old"] += row.old_total_micro
            acc["new"] += row.new_total_micro
        return [{k: v for k, v in acc.items() if k not in ("old", "new")} | _money(acc["old"], acc["new"])
                for acc in sorted(by_account.values(), key=lambda a: (a["account_number"] or "", a["account_id"]))]

    def adjustments(self) -> list[AccountMonthDelta]:
        return [row for row in self.rows if row.needs_adjustment]

    def as_dict(self) -> dict:
        old = sum(r.old_total_micro for r in self.rows)
        new = sum(r.new_total_micro for r in self.rows)
        return {"months": self.months, "account": self.account_number, "dry_run": self.dry_run,
                "tariff_version": self.tariff_version, "rated_months": self.rated_months, "cdrs": self.cdrs,
                "changed": self.changed, **_money(old, new), "accounts": self.accounts(),
                "by_month": [r.as_dict() for r in self.rows],
                "adjustments": [{"account_number": r.account_number, "month": r.month, "calls": r.calls_changed,
                                 "delta_micro": r.delta_micro, "delta": str(from_micro(r.delta_micro)),
                                 "adjustment_id": r.adjustment_id} for r in self.adjustments()],
                "files": self.files}

    def describe(self) -> str:
        if not self.cdrs:
            return f"nothing to re-rate: no CDR in {', '.join(self.months)}"
        head = (f"re-rated {self.cdrs} CDRs of {', '.join(self.rated_months)} with tariff version "
                f"{self.tariff_version}: {self.changed} changed"
                + (" (dry run: nothing written)" if self.dry_run else ""))
        lines = [head]
        for acc in self.accounts():
            if acc["calls_changed"] or acc["delta_micro"]:
                lines.append(f"  {acc['account_number'] or acc['account_id']}: {acc['calls_changed']} of "
                             f"{acc['calls']} calls changed, {acc['old_total']} -> {acc['new_total']} "
                             f"(delta {_signed(acc['delta_micro'])})")
        adjustments = self.adjustments()
        verb = "would be recorded" if self.dry_run else "recorded"
        lines.append(f"{len(adjustments)} adjustment(s) {verb} for invoiced months"
                     + "".join(f"\n  {r.account_number} {r.month}: {_signed(r.delta_micro)} "
                               f"({r.calls_changed} calls)" for r in adjustments))
        return "\n".join(lines)


def parse_period_range(text: str) -> list[str]:
    """``"2026-01:2026-03"`` → ``["2026-01", "2026-02", "2026-03"]``; ``"2026-03"`` → ``["2026-03"]``."""
    first_text, sep, last_text = (text or "").partition(":")
    first = parse_period(first_text)
    last = parse_period(last_text) if sep else first
    if last.period_start < first.period_start:
        raise UserFacingError(f"--period {text!r}: {last.label} is before {first.label}")
    months, period = [], first
    while period.period_start <= last.period_start:
        months.append(period.label)
        period = parse_period(period.period_end.strftime("%Y-%m"))
    return months


def _rerate_month(con, lake_dir: Path, month: str, tariffs, rated_at: dt.datetime,
                  account_id: int | None) -> tuple[pa.Table, int, list[AccountMonthDelta]]:
    """Rate every CDR of ``month`` again; the new ratings to append (only the calls of
    ``account_id``, before or after, when given), the number changed and the per-account rows."""
    cdrs = con.sql(f"""SELECT DISTINCT ON (cdr_id) * FROM {scan_sql(lake_dir, "cdrs", [month])}
                       ORDER BY cdr_id, source_file, source_line""").to_arrow_table()
    # the whole month, so that bundles are consumed from zero by every call of the month again
    new = rate_batch(con, cdrs, tariffs, rated_at)
    old = con.sql(f"SELECT cdr_id, account_id, rating_status, price_micro "
                  f"FROM {latest_rated_sql(lake_dir, [month])}").to_arrow_table()
    con.register(_OLD, old)
    try:
        if account_id is not None:
            con.register(_NEW, new)
            try:
                new = con.sql(f"SELECT n.* FROM {_NEW} n LEFT JOIN {_OLD} o ON o.cdr_id = n.cdr_id "
                              f"WHERE n.account_id = $a OR o.account_id = $a", params={"a": account_id}
                              ).to_arrow_table()
            finally:
                con.unregister(_NEW)
        con.register(_NEW, new)
        try:
            changed = con.sql(_CHANGED_SQL).fetchall()[0][0]
            rows = [AccountMonthDelta(int(a), month, int(calls), int(changed_calls), int(old_m), int(new_m))
                    for a, calls, changed_calls, old_m, new_m in con.sql(_BY_ACCOUNT_SQL).fetchall()]
        finally:
            con.unregister(_NEW)
    finally:
        con.unregister(_OLD)
    return new, int(changed), rows


def _chunks(values: list[int], size: int = 1000):
    for i in range(0, len(values), size):
        yield values[i:i + size]


def label_rows(session, rows: list[AccountMonthDelta]) -> None:
    """Fill ``account_number`` and ``invoiced`` (an issued invoice of the account covers the month)."""
    ids = sorted({r.account_id for r in rows})
    numbers: dict[int, str] = {}
    covered: dict[int, list[tuple[dt.date, dt.date]]] = {}
    for chunk in _chunks(ids):
        numbers.update(session.execute(sa.select(Account.id, Account.number).where(Account.id.in_(chunk))).all())
        for account_id, start, end in session.execute(
                sa.select(Invoice.account_id, Invoice.period_start, Invoice.period_end)
                .where(Invoice.account_id.in_(chunk), Invoice.kind == InvoiceKind.INVOICE)):
            covered.setdefault(account_id, []).append((start, end))
    for row in rows:
        month_start = parse_period(row.month).period_start
        row.account_number = numbers.get(row.account_id)
        row.invoiced = any(start <= month_start < end for start, end in covered.get(row.account_id, []))


def settle_invoiced(session, rows: list[AccountMonthDelta], reason: str) -> list[AccountMonthDelta]:
    """Label ``rows`` (see :func:`label_rows`) and add a :class:`RatingAdjustment` to ``session``
    for each one whose month is invoiced and whose delta is not zero; those rows, with their
    ``adjustment_id``. The caller commits (or rolls back) the session."""
    label_rows(session, rows)
    settled = [row for row in rows if row.needs_adjustment]
    for row in settled:
        adjustment = RatingAdjustment(account_id=row.account_id, usage_month=row.month, delta_micro=row.delta_micro,
                                      calls=row.calls_changed, reason=reason)
        session.add(adjustment)
        session.flush()
        row.adjustment_id = adjustment.id
    return settled


def rerate(wb: Workbench, months: list[str], *, account_number: str | None = None, dry_run: bool = False,
           actor: str = "system") -> RerateSummary:
    """Re-rate every CDR of ``months`` with the current tariffs (see the module docstring).

    ``account_number`` limits the re-rating to the calls that belong to that account before or
    after. Returns the per-account report; writes nothing when ``dry_run``.
    """
    months = [parse_period(m).label for m in months]
    if not months:
        raise UserFacingError("no month to re-rate: give --period YYYY-MM[:YYYY-MM]")
    account_id = None
    if account_number is not None:
        with wb.db.session() as s:
            account_id = s.scalar(sa.select(Account.id).where(Account.number == account_number))
        if account_id is None:
            raise NotFoundError(f"no account with number {account_number!r}")
    with rating_lock(wb.lake_dir):
        with wb.db.session() as s:
            tariffs = load_tariffs(s)
        summary = RerateSummary(months, account_number, dry_run, tariffs.version)
        rated_at = dt.datetime.now(dt.timezone.utc)
        ratings: dict[str, pa.Table] = {}
        con = connect_duckdb()
        try:
            for month in months:
                if not partition_files(wb.lake_dir, "cdrs", [month]):
                    continue
                new, changed, rows = _rerate_month(con, wb.lake_dir, month, tariffs, rated_at, account_id)
                if new.num_rows == 0:
                    continue
                ratings[month] = new
                summary.rated_months.append(month)
                summary.cdrs += new.num_rows
                summary.changed += changed
                summary.rows.extend(rows)
        finally:
            con.close()
        if dry_run or not ratings:
            with wb.db.session() as s:
                label_rows(s, summary.rows)
            return summary
        written = [write_partition(wb.lake_dir, "rated", month, table) for month, table in ratings.items()]
        summary.files = [str(p.relative_to(dataset_dir(wb.lake_dir, "rated"))) for p in written]
        try:
            with wb.db.transaction() as s:
                settle_invoiced(s, summary.rows, f"re-rating by {actor} with tariff version {tariffs.version}")
                details = summary.as_dict()
                record_audit(s, actor, "rating.rerate", "lake", "rated",
                             **{k: details[k] for k in ("months", "account", "tariff_version", "cdrs", "changed",
                                                        "delta_micro", "adjustments", "files")})
        except BaseException:
            for path in written:     # no adjustment recorded: take the ratings back, a new run redoes both
                path.unlink(missing_ok=True)
            for row in summary.rows:
                row.adjustment_id = None
            raise
    return summary


def add_rating_rerate_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "rerate", parents=[common], help="rate a period again with the current tariffs; report and settle deltas",
        description="Re-rate every CDR of the period with the current tariffs, report the delta per account "
                    "and record adjustments for months already invoiced (billed by the next cycle).")
    p.add_argument("--period", required=True, help="YYYY-MM or YYYY-MM:YYYY-MM (inclusive)")
    p.add_argument("--account", default=None, help="only the calls of this account number")
    p.add_argument("--dry-run", action="store_true", help="compute and report, write nothing")
    p.set_defaults(func=cmd_rating_rerate)
    return p


def cmd_rating_rerate(args) -> int:
    wb = Workbench.open(args.data_dir)
    try:
        summary = rerate(wb, parse_period_range(args.period), account_number=args.account,
                         dry_run=args.dry_run, actor="cli")
    finally:
        wb.close()
    print(json.dumps(summary.as_dict(), indent=2) if getattr(args, "json", False) else summary.describe())
    return 0
