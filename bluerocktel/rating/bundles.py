"""Bundles: included minutes, SMS and bytes per calendar month, consumed in call order.

A service bundle (``tariffs.bundles``, one row per ``service_bundles`` grant) covers a rated
CDR of its service when the CDR's ``call_type`` is the bundle's, its ``zone`` is one of the
bundle's ``zones`` and it started in the grant's ``[valid_from, valid_to)``.

Period and allowance
    The period is the UTC calendar month of ``start_at``. A month's allowance is the bundle's
    allowance prorated by the share of the month the grant covers:
    ``floor(allowance * covered / month_length)`` (lengths in microseconds; a whole month gives
    the whole allowance). An unlimited bundle (allowance null) covers everything up to its
    ``fair_use_cap``, prorated the same way; without a cap it covers everything.

Consumption
    Calls consume their ``billable_units`` in the order (``start_at``, ``cdr_id``), after the
    units ``used`` by earlier ratings of the same month (:func:`bundle_usage`). When several
    bundles of a service match a call, the lowest ``service_bundle_id`` is used first, then the
    next for what remains. Set-based, one pass per bundle rank (the k-th bundle of every
    service at once; most services have one): a call's demand on its k-th bundle is what the
    earlier ones left; where a bundle-month's total demand fits in what remains, every call is
    fully covered; elsewhere a running sum of the demand in call order gives each call's cover
    ``max(0, min(demand, remaining - demand_before))``.

Price
    Fully covered (``c == b`` billable units): price 0. Partly covered: the call's price
    (already rounded, minimum charge and maximum cost applied) times ``(b - c) / b``, rounded
    with the deck's ``rounding_method`` to ``rounding_decimals`` in integer arithmetic.
    ``bundle_units = c`` and ``bundle_id`` is the first bundle that covered units (or, when
    none had units left, the first that matched). Flags: ``bundle`` when ``c > 0``;
    ``fair_use_exceeded`` when units of the call stay charged because an unlimited bundle's
    fair-use cap was reached. ``margin_micro`` is recomputed with the new price, but the
    ``negative_margin`` flag is left as the kernel set it: it means "the tariff sells this call
    below its cost", which a bundle (paid for by its subscription) does not change.

Rows that match no bundle are returned untouched, and all rows keep their order. The result
for a service depends only on that service's rows, so a Dask shuffle by ``service_id`` gives
the same result.

Why not a DuckDB window function for the running sum: on 1M calls of 10,000 bundles (2 busy
cores), ``sum() OVER (PARTITION BY bundle, month ORDER BY start_at, cdr_id)`` took 2.1 s where
Arrow's ``sort_indices`` plus a NumPy cumulative sum took 0.6 s; and bundle-months that are
not used up (most of them) need no ordering at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.lake import scan_sql
from bluerocktel.vocabulary import RatingFlag, RatingStatus, RoundingMethod

# Units of a service bundle consumed in a month (UTC, ``YYYY-MM``) by earlier ratings.
BUNDLE_USED_SCHEMA = pa.schema([("service_bundle_id", pa.int64()), ("month", pa.string()), ("units", pa.int64())])

_PRICED, _GRANTS, _USED, _PRIOR = "_bundles_priced", "_bundles_grants", "_bundles_used", "_bundles_prior"
_PARTIAL, _DECKS = "_bundles_partial", "_bundles_decks"
_MONTHS = 1 << 20        # bundle-month key = service_bundle_id * _MONTHS + months since year 0

# the bundles, one row per (bundle, zone), with their rank among the service's bundles
_GRANTS_SQL = """
SELECT DISTINCT sbid, service_id, call_type, zone, full_limit, fair_use, vf, vt, level
FROM (SELECT service_bundle_id AS sbid, service_id, call_type, unnest(zones) AS zone,
             coalesce(allowance, fair_use_cap) AS full_limit,          -- null: unlimited, no cap
             allowance IS NULL AND fair_use_cap IS NOT NULL AS fair_use,
             epoch_us(valid_from) AS vf, epoch_us(valid_to) AS vt,
             dense_rank() OVER (PARTITION BY service_id ORDER BY service_bundle_id) AS level
      FROM {grants})
"""

# units used by earlier ratings, keyed by the month's first microsecond (UTC)
_USED_SQL = """
SELECT service_bundle_id AS sbid, epoch_us(strptime(month || '-01', '%Y-%m-%d')) AS month_us,
       CAST(sum(units) AS BIGINT) AS units
FROM {used} GROUP BY ALL
"""

# Every (call, bundle of rank $level) pair: the call's demand on the bundle (what earlier ranks
# left), the call's month (months since year 0) and the units the bundle still has for that
# month (null: unlimited). Months are computed on naive UTC timestamps (no time-zone lookups).
# Every column is BIGINT: a HUGEINT column would reach NumPy as Python Decimal objects.
_LEVEL_SQL = f"""
WITH pairs AS (
    SELECT p.rid, g.sbid, g.fair_use, g.full_limit, g.vf, g.vt,
           p.billable_units - coalesce(pr.covered, 0) AS d,
           date_trunc('month', make_timestamp(epoch_us(p.start_at))) AS m
    FROM {_PRICED} p
    JOIN {_GRANTS} g ON g.level = $level AND g.service_id = p.service_id AND g.call_type = p.call_type
                    AND g.zone = p.zone AND g.vf <= epoch_us(p.start_at)
                    AND (g.vt IS NULL OR epoch_us(p.start_at) < g.vt)
    LEFT JOIN {_PRIOR} pr ON pr.rid = p.rid
    WHERE p.rating_status = '{RatingStatus.RATED.value}' AND p.billable_units > 0
),
months AS (SELECT *, epoch_us(m) AS ms, epoch_us(m + INTERVAL 1 MONTH) AS me FROM pairs WHERE d > 0)
SELECT k.rid, k.sbid, k.fair_use, k.d, CAST(year(k.m) * 12 + month(k.m) - 1 AS BIGINT) AS month,
       CASE WHEN k.full_limit IS NOT NULL THEN
           greatest(CAST(CAST(k.full_limit AS HUGEINT) * (least(coalesce(k.vt, k.me), k.me) - greatest(k.vf, k.ms))
                         // (k.me - k.ms) AS BIGINT) - coalesce(u.units, 0), CAST(0 AS BIGINT)) END AS remaining
FROM months k LEFT JOIN {_USED} u ON u.sbid = k.sbid AND u.month_us = k.ms
"""


def _round_ratio_sql(num: str, den: str, method: str, decimals: str) -> str:
    """SQL for the non-negative rational ``num / den`` micro units rounded to ``decimals``
    (0..6) decimals of the currency with ``method`` (a :class:`RoundingMethod` value), in
    integer (HUGEINT) arithmetic; the result is BIGINT micro units."""
    step = f"[1000000, 100000, 10000, 1000, 100, 10, 1][{decimals} + 1]"   # micro units per last decimal
    n, d = f"CAST({num} AS HUGEINT)", f"(CAST({den} AS HUGEINT) * {step})"
    return (f"CAST(CASE {method}"
            f" WHEN '{RoundingMethod.UP.value}' THEN ({n} + {d} - 1) // {d}"
            f" WHEN '{RoundingMethod.HALF_UP.value}' THEN (2 * {n} + {d}) // (2 * {d})"
            f" WHEN '{RoundingMethod.DOWN.value}' THEN {n} // {d}"
            f" END * {step} AS BIGINT)")


# price x (b - c) / b of the partly covered calls, rounded as their deck says
_PARTIAL_SQL = f"""
SELECT i, dk.deck_id IS NOT NULL AS deck_known,
       {_round_ratio_sql("CAST(price AS HUGEINT) * (b - c)", "b", "dk.rounding_method",
                         "dk.rounding_decimals")} AS price
FROM {_PARTIAL} LEFT JOIN {_DECKS} dk ON dk.deck_id = {_PARTIAL}.deck_id
ORDER BY i
"""


def _running_cover(key: np.ndarray, start_at: pa.Array, cdr_id: pa.Array, rid: np.ndarray, d: np.ndarray,
                   remaining: np.ndarray) -> np.ndarray:
    """Units each call takes from its bundle-month ``key`` when the month cannot cover every
    call: calls in the order (key, start_at, cdr_id, rid), a running sum of the demand ``d``
    restarting at each key, and ``max(0, min(d, remaining - demand_before))``."""
    order = pc.sort_indices(pa.table({"key": key, "start_at": start_at, "cdr_id": cdr_id, "rid": rid}),
                            [(k, "ascending") for k in ("key", "start_at", "cdr_id", "rid")]).to_numpy()
    key, d = key[order], d[order]
    upto = np.cumsum(d)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    before = upto - d - np.repeat((upto - d)[starts], np.diff(np.r_[starts, len(d)]))
    cover = np.empty_like(d)
    cover[order] = np.clip(remaining[order] - before, 0, d)
    return cover


def _tight(key: np.ndarray, d: np.ndarray, remaining: np.ndarray, limited: np.ndarray) -> np.ndarray:
    """Mask of the limited pairs whose bundle-month (``key``) has more demand than units left."""
    demand = pa.table({"key": key[limited], "d": d[limited], "remaining": remaining[limited]})
    totals = demand.group_by("key").aggregate([("d", "sum"), ("remaining", "min")])
    short = totals["key"].filter(pc.greater(totals["d_sum"], totals["remaining_min"]))
    if len(short) == 0:
        return np.zeros(len(key), dtype=bool)
    return limited & pc.is_in(pa.array(key), value_set=short).to_numpy(zero_copy_only=False)


def _allocate(con, calls: pa.Table, grants: pa.Table, used: pa.Table | None):
    """Per row of ``calls`` (priced rows of services that have a bundle): units covered, the
    first bundle that covered units, the first that matched (-1: none) and whether an
    unlimited bundle's fair-use cap left units uncovered."""
    n = calls.num_rows
    covered = np.zeros(n, dtype=np.int64)
    first_cover = np.full(n, -1, dtype=np.int64)
    first_match = np.full(n, -1, dtype=np.int64)
    fair = np.zeros(n, dtype=bool)
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []     # (rid, sbid, units) covered, per level
    con.register(_GRANTS, grants)
    try:
        prepared = con.sql(_GRANTS_SQL.format(grants=_GRANTS)).to_arrow_table()
    finally:
        con.unregister(_GRANTS)
    used = used if used is not None else BUNDLE_USED_SCHEMA.empty_table()
    con.register(_USED + "_raw", used.select(BUNDLE_USED_SCHEMA.names).cast(BUNDLE_USED_SCHEMA))
    try:
        used_by_month = con.sql(_USED_SQL.format(used=_USED + "_raw")).to_arrow_table()
    finally:
        con.unregister(_USED + "_raw")
    columns = ["start_at", "service_id", "call_type", "zone", "billable_units", "rating_status"]
    views = {_PRICED: calls.select(columns).append_column("rid", pa.array(np.arange(n, dtype=np.int64))),
             _GRANTS: prepared, _USED: used_by_month}
    for name, table in views.items():
        con.register(name, table)
    try:
        levels = pc.max(prepared["level"]).as_py() or 0
        for level in range(1, levels + 1):
            done = np.flatnonzero(covered)
            con.register(_PRIOR, pa.table({"rid": done, "covered": covered[done]}))
            try:
                pairs = con.sql(_LEVEL_SQL, params={"level": level}).to_arrow_table()
            finally:
                con.unregister(_PRIOR)
            rid, sbid, d = (pairs[k].to_numpy() for k in ("rid", "sbid", "d"))
            key = sbid * _MONTHS + pairs["month"].to_numpy()          # one bundle-month
            limited = pairs["remaining"].is_valid().to_numpy(zero_copy_only=False)
            remaining = pairs["remaining"].fill_null(0).to_numpy()
            cover = d.copy()                       # unlimited, or the month's demand fits
            tight = _tight(key, d, remaining, limited)
            if tight.any():
                at = pa.array(rid[tight])
                cover[tight] = _running_cover(key[tight], calls["start_at"].take(at), calls["cdr_id"].take(at),
                                              rid[tight], d[tight], remaining[tight])
            covered[rid] += cover
            some = cover > 0
            pieces.append((rid[some], sbid[some], cover[some]))
            first_match[rid] = np.where(first_match[rid] < 0, sbid, first_match[rid])
            first_cover[rid] = np.where((first_cover[rid] < 0) & (cover > 0), sbid, first_cover[rid])
            fair[rid] |= pairs["fair_use"].to_numpy(zero_copy_only=False) & (cover < d)
    finally:
        for name in views:
            con.unregister(name)
    return covered, first_cover, first_match, fair, _splits(n, pieces)


def _splits(n: int, pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[str | None]:
    """Per call, ``'sbid:units,...'`` (in bundle order) when more than one bundle covered it, else
    None. Only the few calls that straddle two bundles get a string."""
    splits: list[str | None] = [None] * n
    if len(pieces) < 2:
        return splits
    rid = np.concatenate([p[0] for p in pieces])
    counts = np.bincount(rid, minlength=n)
    multi = np.flatnonzero(counts > 1)
    if len(multi):
        sbid, units = np.concatenate([p[1] for p in pieces]), np.concatenate([p[2] for p in pieces])
        for r in multi.tolist():   # rare: at most one call per bundle and month runs over
            at = np.flatnonzero(rid == r)
            splits[r] = ",".join(f"{b}:{u}" for b, u in zip(sbid[at].tolist(), units[at].tolist()))
    return splits


def _flags(old: pa.Array, bundle: np.ndarray, fair_use: np.ndarray) -> pa.Array:
    """``old`` flags with bundle and fair_use_exceeded set from the masks,
    comma-joined in :class:`RatingFlag` order (words that are not RatingFlag values are
    dropped). Computed once per distinct combination, not per row."""
    recomputed = {RatingFlag.BUNDLE, RatingFlag.FAIR_USE_EXCEEDED}
    encoded = pc.dictionary_encode(pc.fill_null(old, ""))
    words = encoded.dictionary.to_pylist()
    code = encoded.indices.to_numpy().astype(np.int64) * 4 + bundle * 1 + fair_use * 2
    distinct, inverse = np.unique(code, return_inverse=True)
    texts = []
    for value in distinct.tolist():
        word, bits = divmod(value, 4)
        kept = set(words[word].split(",")) - recomputed
        wanted = {f for f in RatingFlag if f.value in kept}
        wanted |= {flag for bit, flag in ((1, RatingFlag.BUNDLE), (2, RatingFlag.FAIR_USE_EXCEEDED)) if bits & bit}
        texts.append(",".join(f.value for f in RatingFlag if f in wanted))
    return pa.array(texts, pa.string()).take(pa.array(inverse.ravel()))


def apply_bundles(con, priced: pa.Table, tariffs, used: pa.Table | None) -> pa.Table:
    """``priced`` (RATED_SCHEMA, as the kernel's pricing steps leave it) with bundles applied.

    ``tariffs`` gives ``bundles`` (SERVICE_BUNDLE_SCHEMA) and ``decks`` (DECK_SCHEMA, for the
    rounding of partly covered calls); ``used`` (BUNDLE_USED_SCHEMA or None) holds the units
    earlier ratings consumed per service bundle and month. Returns a table of the same schema,
    rows in input order; only rated rows of a service with a matching bundle change (price,
    bundle_id, bundle_units, margin, flags). When no row's service has a bundle, returns
    ``priced`` itself. ``con`` is a DuckDB connection used by one caller at a time.
    """
    grants = tariffs.bundles
    if priced.num_rows == 0 or grants.num_rows == 0:
        return priced
    # the subset that can change: rows of services that have a bundle (often few or none)
    services = priced["service_id"].fill_null(-1).to_numpy()
    candidates = np.flatnonzero(np.isin(services, pc.unique(grants["service_id"]).drop_null().to_numpy()))
    if len(candidates) == 0:
        return priced
    columns = ["cdr_id", "start_at", "service_id", "call_type", "zone", "billable_units", "rating_status"]
    calls = priced.select(columns)
    if len(candidates) < priced.num_rows:
        calls = calls.take(pa.array(candidates))
    covered, first_cover, first_match, fair, splits = _allocate(con, calls, grants, used)
    matched = np.flatnonzero(first_match >= 0)
    if len(matched) == 0:
        return priced
    rows = candidates[matched]                 # positions in ``priced``
    take = pa.array(rows)
    c, sbid_cover, sbid_match = covered[matched], first_cover[matched], first_match[matched]
    b = priced["billable_units"].take(take).to_numpy()
    old_price = priced["price_micro"].take(take).combine_chunks()
    price = pc.if_else(pa.array(c == b), pa.scalar(0, pa.int64()), old_price)
    partial = np.flatnonzero((c > 0) & (c < b))
    if len(partial):
        at = pa.array(partial)
        views = {_PARTIAL: pa.table({"i": at, "price": old_price.take(at), "b": b[partial], "c": c[partial],
                                     "deck_id": priced["rate_deck_id"].take(take).take(at)}),
                 _DECKS: tariffs.decks.select(["deck_id", "rounding_method", "rounding_decimals"])}
        for name, table in views.items():
            con.register(name, table)
        try:
            rounded = con.sql(_PARTIAL_SQL).to_arrow_table()
        finally:
            for name in views:
                con.unregister(name)
        if not pc.all(rounded["deck_known"]).as_py():
            missing = sorted(set(views[_PARTIAL]["deck_id"].filter(pc.invert(rounded["deck_known"])).to_pylist()),
                             key=str)
            raise ValueError(f"apply_bundles: rate deck(s) {missing} of bundle-covered calls are not in tariffs.decks")
        mask = np.zeros(len(rows), dtype=bool)
        mask[partial] = True
        price = pc.replace_with_mask(price, pa.array(mask), rounded["price"].combine_chunks())
    margin = pc.subtract(price, priced["cost_micro"].take(take).combine_chunks())
    changes = {
        "price_micro": price,
        "bundle_id": pa.array(np.where(sbid_cover >= 0, sbid_cover, sbid_match)),
        "bundle_units": pa.array(c),
        "bundle_split": pa.array([splits[i] for i in matched.tolist()], pa.string()),
        "margin_micro": margin,
        "flags": _flags(priced["flags"].take(take).combine_chunks(), c > 0, fair[matched] & (c < b)),
    }
    return _replace_rows(priced, rows, changes)


def _replace_rows(table: pa.Table, rows: np.ndarray, changes: dict[str, pa.Array]) -> pa.Table:
    """``table`` with the columns of ``changes`` replaced at ``rows`` (sorted positions): per
    column, one ``take`` over the old values followed by the new ones (``replace_with_mask``
    over a whole batch of strings costs about twice as much)."""
    n = table.num_rows
    index = np.arange(n)
    index[rows] = n + np.arange(len(rows))
    index = pa.array(index)
    columns = {name: table[name] for name in table.column_names}
    for name, values in changes.items():
        old = table[name]
        columns[name] = pa.chunked_array(old.chunks + [values.cast(old.type)], old.type).take(index)
    return pa.table(columns, schema=table.schema)


def bundle_usage(con, lake_dir: Path, months: list[str]) -> pa.Table:
    """Units each service bundle covered per month (BUNDLE_USED_SCHEMA), from the lake's
    ``rated`` dataset for ``months`` (``YYYY-MM``): the latest rating (max ``rated_at``) of
    each ``cdr_id`` counts, so a re-rated CDR is counted once. Ordered by service bundle, then
    month.

    A call covered by several bundles has its units per bundle in ``bundle_split``; they count
    for each bundle."""
    if not months:
        return BUNDLE_USED_SCHEMA.empty_table()
    source = scan_sql(lake_dir, "rated", months)
    sql = f"""
        WITH latest AS (
            SELECT bundle_id, bundle_units, bundle_split,
                   strftime(make_timestamp(epoch_us(start_at)), '%Y-%m') AS month
            FROM {source}
            QUALIFY row_number() OVER (PARTITION BY cdr_id ORDER BY rated_at DESC NULLS LAST) = 1
        ),
        pieces AS (
            SELECT bundle_id AS sbid, bundle_units AS units, month FROM latest
            WHERE bundle_split IS NULL AND bundle_id IS NOT NULL AND bundle_units > 0
            UNION ALL
            SELECT CAST(split_part(piece, ':', 1) AS BIGINT), CAST(split_part(piece, ':', 2) AS BIGINT), month
            FROM (SELECT unnest(string_split(bundle_split, ',')) AS piece, month FROM latest
                  WHERE bundle_split IS NOT NULL)
        )
        SELECT sbid AS service_bundle_id, month, CAST(sum(units) AS BIGINT) AS units
        FROM pieces
        WHERE month IN (SELECT unnest($months::VARCHAR[]))
        GROUP BY ALL
        ORDER BY service_bundle_id, month
    """
    return con.sql(sql, params={"months": list(months)}).to_arrow_table().cast(BUNDLE_USED_SCHEMA)
