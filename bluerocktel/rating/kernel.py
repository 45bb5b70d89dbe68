"""The rating kernel: set-based DuckDB queries from (CDR batch, tariff tables) to rated CDRs.

:func:`rate_batch` is a pure function of its Arrow inputs (DESIGN.md §2), so the same kernel
rates a month on one machine or a partition on a Dask worker. There is no per-row Python: the
small tariff tables are ranked once, one query picks an identifier and a rate for every CDR
and prices the call, and Arrow ``take`` attaches the picked rows' columns as per-call traces.

Who pays
    Each CDR is resolved to a service through :data:`IDENTIFIER_SCHEMA` rows valid at the
    call start (``valid_from <= start_at < valid_to``, a null ``valid_to`` is open). Kinds, in
    priority order: ``account_code`` (equals ``cdr.account_code``, any direction), ``number``
    (equals ``cdr.caller``, outbound calls), ``did`` (equals ``cdr.callee``, inbound calls),
    ``trunk`` (a prefix of ``cdr.channel``; the longest wins). Ties go to the lowest
    identifier id. The service gives the account and the (sell) rate deck.

Which rate
    The callee's E.164 digits (``+`` removed; a callee not starting with ``+`` matches no
    rate) are expanded into their candidate prefixes, one per prefix length present in the
    rate table, and equi-joined with the deck's prefixes. Among the rates of the service's
    deck with ``valid_from <= start_at``, the longest prefix wins, then the newest version.
    A prefix whose first version starts after the call does not exist yet for that call.

Price
    Only answered outbound calls with ``billsec_s > 0`` are billable. With first increment
    ``f`` and next increment ``n``: ``billable_s = f`` if ``billsec_s <= f``, else
    ``f + ceil((billsec_s - f) / n) * n``; ``price_micro = connection_fee_micro +
    round_half_up(price_per_minute_micro * billable_s / 60)``, all in BIGINT arithmetic
    (``(x + 30) // 60``; never DOUBLE).

Status (first that applies)
    ``unassigned`` no service (price and billable_s null); ``free`` not billable: unanswered,
    0 s, inbound or internal (billable_s 0, price 0; inbound and internal calls are not
    charged per call in this version); ``unrated`` billable but no rate (price null, never
    free); ``rated``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from bluerocktel.lake import CDR_SCHEMA, RATED_SCHEMA, UTC_TS
from bluerocktel.vocabulary import CallDirection, Disposition, IdentifierKind, RatingStatus

# Service identifiers joined with their service: who pays for a CDR.
IDENTIFIER_SCHEMA = pa.schema([
    ("identifier_id", pa.int64()),
    ("service_id", pa.int64()),
    ("account_id", pa.int64()),
    ("rate_deck_id", pa.int64()),
    ("kind", pa.string()),
    ("value", pa.string()),
    ("valid_from", UTC_TS),
    ("valid_to", UTC_TS),
])

# Rate versions with prices in integer micro units per minute / per call.
RATE_SCHEMA = pa.schema([
    ("rate_id", pa.int64()),
    ("deck_id", pa.int64()),
    ("prefix", pa.string()),
    ("destination", pa.string()),
    ("zone", pa.string()),
    ("price_per_minute_micro", pa.int64()),
    ("connection_fee_micro", pa.int64()),
    ("first_increment_s", pa.int32()),
    ("next_increment_s", pa.int32()),
    ("valid_from", UTC_TS),
])

_CDRS, _IDS, _RATES = "_rating_cdrs", "_rating_identifiers", "_rating_rates"
_RANKED_IDS, _RANKED_RATES = "_rating_ranked_identifiers", "_rating_ranked_rates"
# vocabulary values spelled into the SQL
_OUT, _IN, _ANSWERED = CallDirection.OUT.value, CallDirection.IN.value, Disposition.ANSWERED.value
_ACCOUNT_CODE, _NUMBER, _DID, _TRUNK = (k.value for k in (IdentifierKind.ACCOUNT_CODE, IdentifierKind.NUMBER,
                                                          IdentifierKind.DID, IdentifierKind.TRUNK))
_RATED, _UNRATED, _UNASSIGNED, _FREE = (s.value for s in (RatingStatus.RATED, RatingStatus.UNRATED,
                                                          RatingStatus.UNASSIGNED, RatingStatus.FREE))

_VALID_AT_START = "i.valid_from <= k.start_at AND (i.valid_to IS NULL OR k.start_at < i.valid_to)"

# Identifiers in order of precedence (kind, then the longer trunk prefix, then the lowest id);
# ``pick`` is the 0-based position in that order, so that the main query only needs min(pick).
_RANK_IDENTIFIERS_SQL = f"""
SELECT *, row_number() OVER (ORDER BY priority, key_len DESC, identifier_id) - 1 AS pick
FROM (SELECT *, CASE kind WHEN '{_ACCOUNT_CODE}' THEN 1 WHEN '{_NUMBER}' THEN 2
                          WHEN '{_DID}' THEN 3 WHEN '{_TRUNK}' THEN 4 END AS priority,
                CASE kind WHEN '{_TRUNK}' THEN length(value) ELSE 0 END AS key_len
      FROM {_IDS})
WHERE priority IS NOT NULL
ORDER BY pick
"""

# Rate versions in increasing order of preference (shorter prefix, then older version);
# ``pick`` is the 0-based position, so that the main query only needs max(pick).
_RANK_RATES_SQL = f"""
SELECT *, row_number() OVER (ORDER BY length(prefix), valid_from, rate_id) - 1 AS pick
FROM {_RATES}
ORDER BY pick
"""

# One row per CDR (``rid`` is its row number in the batch, in any order): the picked identifier
# and rate (positions in the ranked tables above), billable seconds, price and status.
_RATE_SQL = f"""
WITH
c AS (
    SELECT rid, start_at, billsec_s, caller, callee, account_code, channel, direction,
           direction = '{_OUT}' AND disposition = '{_ANSWERED}' AND coalesce(billsec_s, 0) > 0 AS billable,
           CASE WHEN starts_with(callee, '+') THEN substr(callee, 2) END AS digits   -- E.164 only
    FROM {_CDRS}
),
trunk_lengths AS (SELECT DISTINCT key_len AS n FROM {_RANKED_IDS} WHERE kind = '{_TRUNK}'),
keys AS (
    SELECT rid, start_at, '{_ACCOUNT_CODE}' AS kind, account_code AS key FROM c WHERE account_code <> ''
    UNION ALL SELECT rid, start_at, '{_NUMBER}', caller FROM c WHERE direction = '{_OUT}'
    UNION ALL SELECT rid, start_at, '{_DID}', callee FROM c WHERE direction = '{_IN}'
    UNION ALL SELECT rid, start_at, '{_TRUNK}', left(channel, t.n) FROM c CROSS JOIN trunk_lengths t
),
who AS (
    SELECT k.rid, min(i.pick) AS ident_pick
    FROM keys k JOIN {_RANKED_IDS} i ON i.kind = k.kind AND i.value = k.key
    WHERE {_VALID_AT_START}
    GROUP BY k.rid
),
prefix_lengths AS (SELECT DISTINCT length(prefix) AS n FROM {_RANKED_RATES}),
-- each CDR with the service's identifier and deck (null when no identifier matched)
assigned AS (
    SELECT c.*, who.ident_pick, i.rate_deck_id AS deck_id
    FROM c LEFT JOIN who USING (rid) LEFT JOIN {_RANKED_IDS} i ON i.pick = who.ident_pick
),
-- every prefix of the callee's digits whose length is used in a deck (DESIGN.md §2); when a
-- length exceeds the number, left() returns the whole number again, which changes no result
candidates AS (
    SELECT a.rid, a.start_at, a.billsec_s, a.deck_id, left(a.digits, l.n) AS prefix
    FROM assigned a CROSS JOIN prefix_lengths l
    WHERE a.billable AND a.digits IS NOT NULL AND a.deck_id IS NOT NULL
),
best AS (
    SELECT k.rid, k.billsec_s, max(r.pick) AS rate_pick
    FROM candidates k JOIN {_RANKED_RATES} r ON r.deck_id = k.deck_id AND r.prefix = k.prefix
    WHERE r.valid_from <= k.start_at
    GROUP BY k.rid, k.billsec_s
),
priced AS (
    SELECT best.rid, best.rate_pick, r.connection_fee_micro, r.price_per_minute_micro,
           CASE WHEN best.billsec_s <= r.first_increment_s THEN r.first_increment_s
                ELSE r.first_increment_s
                     + (best.billsec_s - r.first_increment_s + r.next_increment_s - 1)
                       // r.next_increment_s * r.next_increment_s
           END AS billable_s
    FROM best JOIN {_RANKED_RATES} r ON r.pick = best.rate_pick
)
SELECT a.rid, a.ident_pick, p.rate_pick,
       CAST(CASE WHEN a.ident_pick IS NULL THEN NULL
                 WHEN NOT a.billable THEN 0
                 ELSE p.billable_s END AS INTEGER) AS billable_s,
       CASE WHEN a.ident_pick IS NULL THEN NULL
            WHEN NOT a.billable THEN CAST(0 AS BIGINT)
            ELSE p.connection_fee_micro + (p.price_per_minute_micro * CAST(p.billable_s AS BIGINT) + 30) // 60
       END AS price_micro,
       CASE WHEN a.ident_pick IS NULL THEN '{_UNASSIGNED}'
            WHEN NOT a.billable THEN '{_FREE}'
            WHEN p.rate_pick IS NULL THEN '{_UNRATED}'
            ELSE '{_RATED}' END AS rating_status
FROM assigned a LEFT JOIN priced p USING (rid)
"""


def _inverse_permutation(rids: np.ndarray, n: int) -> np.ndarray:
    """Positions that put rows tagged ``rids`` back in order 0..n-1; each rid must occur once."""
    if len(rids) != n:
        raise RuntimeError(f"rating kernel returned {len(rids)} rows for {n} CDRs")
    order = np.full(n, -1, dtype=np.int64)
    order[rids] = np.arange(n, dtype=np.int64)
    if (order < 0).any():
        raise RuntimeError("rating kernel: a CDR was rated twice and another not at all")
    return order


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.select(schema.names).cast(schema)


def rate_batch(con, cdrs: pa.Table, tariffs, rated_at: dt.datetime, bundle_used: pa.Table | None = None) -> pa.Table:
    """Rate ``cdrs`` (:data:`~bluerocktel.lake.CDR_SCHEMA`) against the tariff tables.

    ``tariffs`` is a :class:`~bluerocktel.rating.tariffs.Tariffs` (see
    :func:`bluerocktel.rating.load_tariffs`). Returns one row per CDR, in input order, with
    :data:`~bluerocktel.lake.RATED_SCHEMA`. ``con`` is a DuckDB connection used by one
    caller at a time; the kernel registers and then drops its views on it.
    """
    if rated_at.tzinfo is None:
        raise ValueError(f"naive datetime {rated_at!r}: rated_at must be UTC-aware")
    identifiers, rates = tariffs.identifiers, tariffs.rates
    cdrs = _conform(cdrs, CDR_SCHEMA)
    n = cdrs.num_rows
    views = {_CDRS: cdrs.append_column("rid", pa.array(np.arange(n, dtype=np.int64))),
             _IDS: _conform(identifiers, IDENTIFIER_SCHEMA), _RATES: _conform(rates, RATE_SCHEMA)}
    for name, table in views.items():
        con.register(name, table)
    try:
        ranked_ids = con.sql(_RANK_IDENTIFIERS_SQL).to_arrow_table()
        ranked_rates = con.sql(_RANK_RATES_SQL).to_arrow_table()
        con.register(_RANKED_IDS, ranked_ids)
        con.register(_RANKED_RATES, ranked_rates)
        rating = con.sql(_RATE_SQL).to_arrow_table()
    finally:
        for name in (*views, _RANKED_IDS, _RANKED_RATES):
            con.unregister(name)
    # back in CDR order, then the picked identifier and rate rows give the trace columns
    rating = rating.take(_inverse_permutation(rating["rid"].to_numpy(), n))
    who = ranked_ids.select(["account_id", "service_id", "rate_deck_id"]).take(rating["ident_pick"])
    rate = ranked_rates.select(["rate_id", "prefix", "destination", "zone"]).take(rating["rate_pick"])
    columns = {
        **{name: cdrs[name] for name in CDR_SCHEMA.names},
        "account_id": who["account_id"], "service_id": who["service_id"], "rate_deck_id": who["rate_deck_id"],
        "rate_id": rate["rate_id"], "prefix": rate["prefix"], "destination": rate["destination"],
        "zone": rate["zone"], "billable_s": rating["billable_s"], "price_micro": rating["price_micro"],
        "rating_status": rating["rating_status"], "tariff_version": pa.repeat(pa.scalar(tariffs.version), n),
        "rated_at": pa.repeat(pa.scalar(rated_at, UTC_TS), n),
    }
    for name in RATED_SCHEMA.names:   # trace columns this kernel version does not compute yet
        columns.setdefault(name, pa.nulls(n, RATED_SCHEMA.field(name).type))
    return pa.table({name: columns[name] for name in RATED_SCHEMA.names}).cast(RATED_SCHEMA)
