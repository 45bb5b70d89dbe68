"""Rated usage of a period, read from the lake with DuckDB and totalled per account, call type and
zone in one aggregate query, and the re-rating adjustments of earlier months still to bill
(system of record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel import lake
from bluerocktel.billing.charges import PendingAdjustment, UsageTotal
from bluerocktel.billing.periods import Period
from bluerocktel.db.models import RatingAdjustment


@dataclass
class PeriodUsage:
    """What the lake holds for a period: billable totals and the counts that need a look."""

    rated: list[UsageTotal] = field(default_factory=list)        # rating_status = 'rated', with an account
    unrated_calls: dict[int, int] = field(default_factory=dict)  # account_id -> calls with no rate
    unassigned_calls: int = 0                                    # calls no service claimed

    def rated_by_account(self) -> dict[int, list[UsageTotal]]:
        by_account: dict[int, list[UsageTotal]] = {}
        for total in self.rated:
            by_account.setdefault(total.account_id, []).append(total)
        return by_account


def read_period_usage(lake_dir: Path, period: Period) -> PeriodUsage:
    """Totals of the ``rated`` dataset for ``period`` (UTC ``start_at`` in ``[start, end)``) per
    account, call type and zone.

    A CDR rated more than once counts once, with its latest rating (``rated_at``), so re-rating
    never bills a call twice. Only the CDRs found more than once are ranked, and the period's
    rows are re-read rather than held (``NOT MATERIALIZED``): measured on 10M CDRs, 4.1 s of CPU
    and 0.77 GB peak, against 5.9 s and 1.75 GB with the rows held (a plain sum: 0.9 s, 0.12 GB).
    """
    source = lake.scan_sql(lake_dir, "rated", [period.label])
    columns = ("cdr_id, rated_at, rating_status, account_id, call_type, zone, billable_s, price_micro, "
               "billable_units, bundle_units")
    sql = f"""
        WITH period_rows AS NOT MATERIALIZED (
            SELECT {columns} FROM {source} WHERE start_at >= ? AND start_at < ?
        ), rerated AS (
            SELECT cdr_id FROM period_rows GROUP BY cdr_id HAVING count(*) > 1
        ), latest AS (
            SELECT * FROM period_rows ANTI JOIN rerated USING (cdr_id)
            UNION ALL BY NAME
            SELECT * FROM (SELECT * FROM period_rows SEMI JOIN rerated USING (cdr_id)
                           QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1)
        )
        SELECT rating_status, account_id, coalesce(call_type, 'voice') AS call_type, coalesce(zone, '') AS zone,
               count(*) AS calls, coalesce(sum(billable_s), 0) AS billable_s,
               coalesce(sum(price_micro), 0) AS price_micro, coalesce(sum(billable_units), 0) AS billable_units,
               coalesce(sum(bundle_units), 0) AS bundle_units
        FROM latest
        GROUP BY ALL
        ORDER BY account_id NULLS FIRST, call_type, zone, rating_status
    """
    con = lake.connect_duckdb()
    try:
        rows = con.execute(sql, [period.start_at, period.end_at]).fetchall()
    finally:
        con.close()
    usage = PeriodUsage()
    for status, account_id, call_type, zone, calls, billable_s, price_micro, units, bundle_units in rows:
        if account_id is None or status == "unassigned":
            usage.unassigned_calls += int(calls)
        elif status == "rated":
            usage.rated.append(UsageTotal(int(account_id), zone, int(calls), int(billable_s), int(price_micro),
                                          call_type, int(units), int(bundle_units)))
        elif status == "unrated":
            usage.unrated_calls[int(account_id)] = usage.unrated_calls.get(int(account_id), 0) + int(calls)
    return usage


def read_unbilled_adjustments(session: Session, period: Period) -> dict[int, list[PendingAdjustment]]:
    """Re-rating adjustments not billed yet (no ``invoice_id``) of usage months before ``period``,
    per account id, oldest first. The cycle of ``period`` bills them."""
    rows = session.scalars(
        sa.select(RatingAdjustment)
        .where(RatingAdjustment.invoice_id.is_(None), RatingAdjustment.usage_month < period.label)
        .order_by(RatingAdjustment.account_id, RatingAdjustment.usage_month, RatingAdjustment.id))
    by_account: dict[int, list[PendingAdjustment]] = {}
    for row in rows:
        by_account.setdefault(row.account_id, []).append(
            PendingAdjustment(row.id, row.account_id, row.usage_month, int(row.delta_micro), int(row.calls)))
    return by_account
