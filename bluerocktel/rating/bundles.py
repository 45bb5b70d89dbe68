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

from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.lake import scan_sql
from bluerocktel.vocabulary import RatingFlag, RatingStatus, RoundingMethod

# Units of a service bundle consumed in a month (UTC, ``YYYY-MM``) by earlier ratings.
BUNDLE_USED_SCHEMA = pa.schema([("service_bundle_id", pa.int64()), ("month", pa.string()), ("units", pa.int64())])

_MONTHS = 1 << 20        # bundle-month key = service_bundle_id * _MONTHS + months since year 0
_NO_END_US = 2 ** 62     # a grant without valid_to
_EPOCH_MONTHS = 1970 * 12


def _grant_rows(grants: pa.Table) -> dict:
    """The bundles as numpy columns, one row per distinct (bundle, zone): sbid, service_id,
    call_type, zone (strings, as Arrow arrays), full_limit (allowance, else fair-use cap; -1:
    unlimited without cap), fair_use (unlimited with a cap), vf, vt (µs; a null valid_from never
    starts, a null valid_to never ends) and level (rank of the bundle among its service's,
    by service_bundle_id, from 1)."""
    zones = grants["zones"].combine_chunks()
    parent = pc.list_parent_indices(zones).to_numpy()
    flat = grants.take(pa.array(parent))
    rows = pa.table({"sbid": flat["service_bundle_id"], "service_id": flat["service_id"],
                     "call_type": flat["call_type"], "zone": pc.list_flatten(zones)})
    rows = rows.append_column("i", pa.array(np.arange(rows.num_rows)))
    first = rows.group_by(["sbid", "service_id", "call_type", "zone"], use_threads=False).aggregate([("i", "min")])
    keep = np.sort(first["i_min"].to_numpy())
    flat, rows = flat.take(pa.array(keep)), rows.take(pa.array(keep))
    allowance, cap = flat["allowance"], flat["fair_use_cap"]
    sbid, service = rows["sbid"].to_numpy(), rows["service_id"].to_numpy()
    # level: dense rank of sbid within its service
    pairs, pair_of = (np.unique(np.stack([service, sbid], axis=1), axis=0, return_inverse=True) if len(sbid)
                      else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64)))
    first_of_service = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]] if len(pairs) else np.zeros(0, bool)
    positions = np.arange(len(pairs))
    rank = positions - np.maximum.accumulate(np.where(first_of_service, positions, 0)) + 1
    level = rank[pair_of.ravel()] if len(sbid) else np.zeros(0, np.int64)
    vf, vt = flat["valid_from"].cast(pa.int64()), flat["valid_to"].cast(pa.int64())
    return {"sbid": sbid, "service_id": service, "call_type": rows["call_type"].combine_chunks(),
            "zone": rows["zone"].combine_chunks(), "level": level,
            "full_limit": pc.coalesce(allowance, cap).fill_null(-1).to_numpy(),
            "fair_use": (allowance.is_null().to_numpy(zero_copy_only=False)
                         & cap.is_valid().to_numpy(zero_copy_only=False)),
            "vf": vf.fill_null(_NO_END_US).to_numpy(), "vt": vt.fill_null(_NO_END_US).to_numpy()}


def _used_units(used: pa.Table | None) -> tuple[np.ndarray, np.ndarray]:
    """Units used by earlier ratings per bundle-month key (``sbid * _MONTHS + months since year
    0``): sorted keys and their summed units."""
    if used is None or used.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    used = used.select(BUNDLE_USED_SCHEMA.names).cast(BUNDLE_USED_SCHEMA)
    totals: dict[int, int] = {}
    for sbid, month, units in zip(*(used[c].to_pylist() for c in BUNDLE_USED_SCHEMA.names)):
        if sbid is None or month is None or units is None:
            continue
        year, number = month.split("-")[:2]
        key = sbid * _MONTHS + int(year) * 12 + int(number) - 1
        totals[key] = totals.get(key, 0) + units
    keys = np.array(sorted(totals), np.int64)
    return keys, np.array([totals[k] for k in keys.tolist()], np.int64)


def _month_bounds(start_us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per instant (µs, UTC): its calendar month (months since 1970) and that month's first and
    next month's first microsecond."""
    month = start_us.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    first = month.astype("datetime64[M]").astype("datetime64[us]").astype(np.int64)
    return month, first, (month + 1).astype("datetime64[M]").astype("datetime64[us]").astype(np.int64)


def _round_ratio(num: int, den: int, method: str | None, decimals: int | None) -> int | None:
    """The non-negative rational ``num / den`` micro units rounded to ``decimals`` (0..6) decimals
    of the currency with ``method`` (a :class:`RoundingMethod` value), in micro units; None for
    an unknown method or decimals."""
    if decimals is None or not 0 <= decimals <= 6:
        return None
    step = 10 ** (6 - decimals)                  # micro units per last decimal
    d = den * step
    if method == RoundingMethod.UP.value:
        return (num + d - 1) // d * step
    if method == RoundingMethod.HALF_UP.value:
        return (2 * num + d) // (2 * d) * step
    if method == RoundingMethod.DOWN.value:
        return num // d * step
    return None


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


def _allocate(calls: pa.Table, grants: pa.Table, used: pa.Table | None):
    """Per row of ``calls`` (priced rows of services that have a bundle): units covered, the
    first bundle that covered units, the first that matched (-1: none) and whether an
    unlimited bundle's fair-use cap left units uncovered."""
    n = calls.num_rows
    covered = np.zeros(n, dtype=np.int64)
    first_cover = np.full(n, -1, dtype=np.int64)
    first_match = np.full(n, -1, dtype=np.int64)
    fair = np.zeros(n, dtype=bool)
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []     # (rid, sbid, units) covered, per level
    g = _grant_rows(grants)
    if len(g["sbid"]) == 0:
        return covered, first_cover, first_match, fair, _splits(n, pieces)
    used_keys, used_sums = _used_units(used)

    # the calls a bundle can cover, and their (service, call type, zone) as one integer key
    units = calls["billable_units"].fill_null(0).to_numpy()
    rated = (pc.equal(calls["rating_status"], RatingStatus.RATED.value).fill_null(False)
             .to_numpy(zero_copy_only=False)) & (units > 0)
    services, service_of = np.unique(g["service_id"], return_inverse=True)
    types = pc.unique(g["call_type"]).drop_null()
    zones = pc.unique(g["zone"]).drop_null()
    call_service = calls["service_id"].fill_null(-1).to_numpy()
    s_idx = np.minimum(np.searchsorted(services, call_service), len(services) - 1)
    t_idx = pc.index_in(calls["call_type"], value_set=types).fill_null(-1).to_numpy()
    z_idx = pc.index_in(calls["zone"], value_set=zones).fill_null(-1).to_numpy()
    rated &= (services[s_idx] == call_service) & (t_idx >= 0) & (z_idx >= 0)
    rid = np.flatnonzero(rated)
    call_key = (s_idx[rid] * len(zones) + z_idx[rid]) * len(types) + t_idx[rid]
    start = calls["start_at"].cast(pa.int64()).to_numpy()[rid]
    month, month_start, month_end = _month_bounds(start)
    grant_key = ((service_of.ravel() * len(zones) + pc.index_in(g["zone"], value_set=zones).fill_null(-1).to_numpy())
                 * len(types) + pc.index_in(g["call_type"], value_set=types).fill_null(-1).to_numpy())
    grant_ok = (pc.index_in(g["zone"], value_set=zones).is_valid().to_numpy(zero_copy_only=False)
                & pc.index_in(g["call_type"], value_set=types).is_valid().to_numpy(zero_copy_only=False))

    for level in range(1, int(g["level"].max()) + 1):
        at_level = np.flatnonzero((g["level"] == level) & grant_ok)
        order = at_level[np.argsort(grant_key[at_level], kind="stable")]
        keys = grant_key[order]
        pos = np.minimum(np.searchsorted(keys, call_key), max(len(keys) - 1, 0))
        hit = (keys[pos] == call_key) if len(keys) else np.zeros(len(call_key), bool)
        row = order[pos]
        hit &= (g["vf"][row] <= start) & (start < g["vt"][row])
        d = units[rid] - covered[rid]
        hit &= d > 0
        at = np.flatnonzero(hit)
        prid, row, d = rid[at], row[at], d[at]
        sbid, ms, me = g["sbid"][row], month_start[at], month_end[at]
        key = sbid * _MONTHS + month[at] + _EPOCH_MONTHS           # one bundle-month
        limit = g["full_limit"][row]
        limited = limit >= 0
        granted = limit.copy()                 # a grant covering part of the month: floor(limit × part / month)
        overlap = np.minimum(g["vt"][row], me) - np.maximum(g["vf"][row], ms)
        for i in np.flatnonzero(limited & (overlap < me - ms)).tolist():
            granted[i] = int(limit[i]) * int(overlap[i]) // int(me[i] - ms[i])
        if len(used_keys):
            u = np.minimum(np.searchsorted(used_keys, key), len(used_keys) - 1)
            granted -= np.where(used_keys[u] == key, used_sums[u], 0)
        remaining = np.where(limited, np.maximum(granted, 0), 0)
        cover = d.copy()                       # unlimited, or the month's demand fits
        tight = _tight(key, d, remaining, limited)
        if tight.any():
            take = pa.array(prid[tight])
            cover[tight] = _running_cover(key[tight], calls["start_at"].take(take), calls["cdr_id"].take(take),
                                          prid[tight], d[tight], remaining[tight])
        covered[prid] += cover
        some = cover > 0
        pieces.append((prid[some], sbid[some], cover[some]))
        first_match[prid] = np.where(first_match[prid] < 0, sbid, first_match[prid])
        first_cover[prid] = np.where((first_cover[prid] < 0) & (cover > 0), sbid, first_cover[prid])
        fair[prid] |= g["fair_use"][row] & (cover < d)
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


def apply_bundles(con, priced: pa.Table, tariffs, used: pa.Table | None, pool: Executor | None = None) -> pa.Table:
    """``priced`` (RATED_SCHEMA, as the kernel's pricing steps leave it) with bundles applied.

    ``tariffs`` gives ``bundles`` (SERVICE_BUNDLE_SCHEMA) and ``decks`` (DECK_SCHEMA, for the
    rounding of partly covered calls); ``used`` (BUNDLE_USED_SCHEMA or None) holds the units
    earlier ratings consumed per service bundle and month. Returns a table of the same schema,
    rows in input order; only rated rows of a service with a matching bundle change (price,
    bundle_id, bundle_units, margin, flags). When no row's service has a bundle, returns
    ``priced`` itself. ``con`` (a DuckDB connection) is not used: the allocation runs in numpy
    and Arrow (a DuckDB query per batch cost more, and its worker threads trim the C heap,
    page-faulting the kernel's arrays in again). ``pool``: threads that may rewrite the chunks
    of ``priced`` (one slice per core from the kernel) side by side.
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
    covered, first_cover, first_match, fair, splits = _allocate(calls, grants, used)
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
        decks = {d: (m, k) for d, m, k in zip(*(tariffs.decks[name].to_pylist()
                                                for name in ("deck_id", "rounding_method", "rounding_decimals")))}
        deck_ids = priced["rate_deck_id"].take(pa.array(rows[partial])).to_pylist()
        missing = sorted({d for d in deck_ids if d not in decks}, key=str)
        if missing:
            raise ValueError(f"apply_bundles: rate deck(s) {missing} of bundle-covered calls are not in tariffs.decks")
        old = old_price.take(pa.array(partial)).to_pylist()
        rounded = [None if p is None else _round_ratio(p * (bb - cc), bb, *decks[d])
                   for p, bb, cc, d in zip(old, b[partial].tolist(), c[partial].tolist(), deck_ids)]
        mask = np.zeros(len(rows), dtype=bool)
        mask[partial] = True
        price = pc.replace_with_mask(price, pa.array(mask), pa.array(rounded, pa.int64()))
    margin = pc.subtract(price, priced["cost_micro"].take(take).combine_chunks())
    changes = {
        "price_micro": price,
        "bundle_id": pa.array(np.where(sbid_cover >= 0, sbid_cover, sbid_match)),
        "bundle_units": pa.array(c),
        "bundle_split": pa.array([splits[i] for i in matched.tolist()], pa.string()),
        "margin_micro": margin,
        "flags": _flags(priced["flags"].take(take).combine_chunks(), c > 0, fair[matched] & (c < b)),
    }
    return _replace_chunks(priced, rows, changes, pool)


def _replace_chunks(table: pa.Table, rows: np.ndarray, changes: dict[str, pa.Array], pool: Executor | None
                    ) -> pa.Table:
    """:func:`_replace_rows` of each chunk of ``rating_status`` (the kernel's per-core slices)
    with the changes at its rows, the first in this thread and the others in ``pool``: the
    rewriting of whole columns was ~40 % of the bundles' time, on the main thread while the
    other cores waited. One chunk or no pool: in this thread, at once."""
    bounds = np.cumsum([0] + [len(chunk) for chunk in table["rating_status"].chunks])
    if pool is None or len(bounds) <= 2:
        return _replace_rows(table, rows, changes)
    cuts = np.searchsorted(rows, bounds)
    parts = [(table.slice(lo, hi - lo), rows[a:b] - lo, {name: values.slice(a, b - a) for name, values in changes.items()})
             for lo, hi, a, b in zip(bounds[:-1], bounds[1:], cuts[:-1], cuts[1:])]
    others = [pool.submit(_replace_rows, *part) for part in parts[1:]]
    return pa.concat_tables([_replace_rows(*parts[0])] + [future.result() for future in others])


def _replace_rows(table: pa.Table, rows: np.ndarray, changes: dict[str, pa.Array]) -> pa.Table:
    """``table`` with the columns of ``changes`` replaced at ``rows`` (sorted positions): 64-bit
    integer columns in numpy (values and validity), the others with one ``take`` over the old
    values followed by the new ones (``replace_with_mask`` over a whole batch of strings costs
    about twice as much)."""
    if len(rows) == 0:
        return table
    n = table.num_rows
    index = None
    columns = {name: table[name] for name in table.column_names}
    for name, values in changes.items():
        old = table[name]
        values = values.cast(old.type)
        if pa.types.is_integer(old.type) and old.type.bit_width == 64:
            data, valid = np.zeros(n, np.int64), np.zeros(n, bool)
            at = 0
            for chunk in old.chunks:
                if chunk.null_count < len(chunk):
                    data[at:at + len(chunk)] = np.frombuffer(chunk.buffers()[1], np.int64, len(chunk), chunk.offset * 8)
                    valid[at:at + len(chunk)] = (chunk.is_valid().to_numpy(zero_copy_only=False) if chunk.null_count
                                                 else True)
                at += len(chunk)
            data[rows] = values.fill_null(0).to_numpy()
            valid[rows] = values.is_valid().to_numpy(zero_copy_only=False)
            bitmap = None if valid.all() else pa.array(valid).buffers()[1]
            columns[name] = pa.Array.from_buffers(old.type, n, [bitmap, pa.py_buffer(data)])
            continue
        if old.null_count == n and pa.types.is_string(old.type):      # (bundle_split): offsets around the new values
            values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            lengths = np.zeros(n, np.int32)
            lengths[rows] = np.diff(np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4))
            valid = np.zeros(n, bool)
            valid[rows] = values.is_valid().to_numpy(zero_copy_only=False)
            offsets = np.zeros(n + 1, np.int32)
            np.cumsum(lengths, out=offsets[1:])
            data = values.buffers()[2] or pa.py_buffer(b"")
            start = int(np.frombuffer(values.buffers()[1], np.int32, 1, values.offset * 4)[0]) if len(values) else 0
            columns[name] = pa.Array.from_buffers(old.type, n, [pa.array(valid).buffers()[1], pa.py_buffer(offsets),
                                                                data.slice(start)])
            continue
        if index is None:
            index = np.arange(n)
            index[rows] = n + np.arange(len(rows))
            index = pa.array(index)
        columns[name] = pa.chunked_array(old.chunks + [values], old.type).take(index)
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
