"""The unrated queue: CDRs whose latest rating found no price (``unrated``) or nobody to bill
(``unassigned``), with the reason, for the staff app and the CLI.

A CDR leaves the queue when a later rating prices it: :func:`bluerocktel.rating.rate_pending`
takes the queue again whenever the tariffs (decks, identifiers) have changed since its last
rating. Both functions read the lake only (set-based DuckDB queries), never the database.
"""

from __future__ import annotations

from pathlib import Path

from bluerocktel.errors import UserFacingError
from bluerocktel.lake import connect_duckdb, scan_sql
from bluerocktel.rating.pending import QUEUE_STATUSES, check_months

QUEUE_COLUMNS = ["cdr_id", "start_at", "caller", "callee", "account_code", "channel", "status", "reason",
                 "account_id", "rated_at", "source_file", "source_line"]


def _queued_sql(lake_dir: Path, months: list[str] | None) -> str:
    """The latest rating of each CDR that is in the queue. Only the ratings of CDRs that were
    ever queued are ordered, so memory follows the size of the queue, not of the lake."""
    queue = ", ".join(f"'{status}'" for status in QUEUE_STATUSES)
    rated = scan_sql(lake_dir, "rated", months)
    return f"""(SELECT *, rating_status AS status, coalesce(rating_reason, '') AS reason
               FROM (SELECT * FROM {rated}
                     WHERE cdr_id IN (SELECT cdr_id FROM {rated} WHERE rating_status IN ({queue}))
                     QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1)
               WHERE rating_status IN ({queue}))"""


def unrated_queue(lake_dir: Path, months: list[str] | None = None, *, limit: int = 100, offset: int = 0,
                  account_id: int | None = None) -> list[dict]:
    """One page of the unrated queue, oldest call first (then ``cdr_id``).

    Each row is a dict of :data:`QUEUE_COLUMNS`: the CDR's identity and where it came from
    (``source_file``, ``source_line``), ``status`` (``unrated`` or ``unassigned``), ``reason``
    ('' when the rating gave none) and ``rated_at`` of that latest rating. ``months`` (``YYYY-MM``)
    limits the lake partitions read (all by default); ``account_id`` keeps one account's calls
    (unassigned calls have no account, so they never match).
    """
    check_months(months)
    if not isinstance(limit, int) or not isinstance(offset, int) or limit < 0 or offset < 0:
        raise UserFacingError(f"limit and offset must be integers >= 0, got limit={limit!r}, offset={offset!r}")
    where = "WHERE account_id = $account_id" if account_id is not None else ""
    params = {"limit": limit, "offset": offset} | ({"account_id": int(account_id)} if account_id is not None else {})
    sql = f"""
        SELECT {", ".join(QUEUE_COLUMNS)} FROM {_queued_sql(lake_dir, months)} {where}
        ORDER BY start_at, cdr_id
        LIMIT $limit OFFSET $offset
    """
    con = connect_duckdb()
    try:
        return con.sql(sql, params=params).to_arrow_table().to_pylist()
    finally:
        con.close()


def unrated_counts(lake_dir: Path, months: list[str] | None = None) -> list[dict]:
    """The unrated queue counted per ``status`` and ``reason``, largest first.

    Each row: ``status``, ``reason``, ``calls``, ``first_start_at`` and ``last_start_at``
    (UTC) of those calls.
    """
    check_months(months)
    sql = f"""
        SELECT status, reason, count(*) AS calls, min(start_at) AS first_start_at, max(start_at) AS last_start_at
        FROM {_queued_sql(lake_dir, months)}
        GROUP BY status, reason
        ORDER BY calls DESC, status, reason
    """
    con = connect_duckdb()
    try:
        return con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()
