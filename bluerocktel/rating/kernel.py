"""The rating kernel: set-based queries from (CDR batch, tariff tables) to rated CDRs.

:func:`price_batch` and :func:`rate_batch` are pure functions of their Arrow inputs (DESIGN.md
§2), so the same kernel rates a month on one machine or a partition on a Dask worker. There is
no per-CDR Python: the small tariff tables are prepared once per :class:`Tariffs` object
(:func:`prepare`, in DuckDB); then Arrow hash lookups find the identifiers and carrier
trunks, numpy gathers and table lookups over the prepared arrays pick rates and bands for all
CDRs at once, numpy prices them in integer arithmetic (int64 when the batch's amounts cannot
overflow it, else Python integers; the few calls crossing a band boundary are cut into
segments by a second, vectorized pass), and gathers by row index attach the picked rows'
columns as per-call traces. A large batch is cut into one slice per core, priced in threads
(numpy and Arrow release the GIL; measured: Python holds it ~4% of the time).

Who pays
    Each CDR is resolved to a service through identifier rows valid at the call start
    (``valid_from <= start_at < valid_to``, a null ``valid_to`` is open). Kinds, in priority
    order: ``account_code`` (equals ``cdr.account_code``, any direction), ``number`` (equals
    ``cdr.caller``, outbound calls), ``did`` (equals ``cdr.callee``, inbound calls), ``trunk``
    (a prefix of ``cdr.channel``; the longest wins). Ties go to the lowest identifier id. The
    service gives the account, the plan (sell) deck and the account's time zone. None:
    ``unassigned``.

Billable
    Outbound answered calls with a quantity > 0: ``billsec_s`` for voice, ``units`` for sms
    (messages) and data (bytes); an unknown call type is billable on either (and ``unrated``:
    no rate has its type). Others are ``free`` (price 0).

Which rate
    The callee's E.164 digits (``+`` removed, up to the first non-digit, at most 18; a callee
    without ``+`` only matches the prefix ``''``) are looked up in a sorted interval index of
    the CDR's deck chain and call type (see "Longest-prefix matching" below). Among rates of the
    CDR's call type in force at the call start (``valid_from <= start_at < valid_to``), the
    plan deck wins over its fallback decks (in chain order), then the longest prefix, then the
    newest ``valid_from``. That picks a destination *version* (deck, call type, prefix,
    valid_from): all its rows (bands × grouped intervals). No match: ``unrated``.

Increments and bands
    The version's rows of the band in force when the call is answered (evaluated in the
    account's zone, :mod:`bluerocktel.rating.bands`; ``''`` rows when that band has none) give
    the call's structure: groups ``s_0 = 0 < s_1 < ...`` (``group_start``) and their first/next
    increments. Group ``g`` bills ``u_g = clamp(q, s_g, s_{g+1}) - s_g`` units as
    ``b_0 = first + ceil((u_0 - first) / inc_0) * inc_0`` (at least ``first``; 0 when
    ``u_0 = 0``) and ``b_g = ceil(u_g / inc_g) * inc_g``; ``billable_units = sum(b_g)``.
    Increments of group ``g`` start at ``s_g`` (after the first increment for ``g = 0``);
    each is priced by the band in force at its start instant (``answer_at + offset`` seconds;
    sms and data have no duration: all their increments are at ``answer_at``), with that
    band's row for the group (its row with the greatest ``group_start <= s_g``, or the ``''``
    rows when the band has none; neither: ``unrated``, "no rate for band B"). Most calls lie
    within one band interval and are priced in one pass; only calls crossing a boundary are
    cut into segments.

Amount
    ``connection_fee + sum(price * size / unit_size)`` over the increments, exact in integer
    arithmetic (int64 / BIGINT when the batch's largest amounts cannot overflow it, else
    Python integers / HUGEINT; never floating point); ``unrounded_pico`` = that amount in
    1e-12, half-up. With the deck's
    ``increment_rounding_method`` the cost of one increment is rounded first (to
    ``increment_rounding_decimals``) and multiplied by the increment count; then the total is
    rounded with ``rounding_method`` at ``rounding_decimals`` (up = ceiling, half_up, down =
    floor). Then the first increment's row applies its minimum charge (``0 < price < min``)
    and its maximum cost (``cap``: charge the maximum; ``disconnect``: flag only).

Cost
    The carrier trunk whose ``trunk`` is the longest prefix of ``dst_channel`` (valid at the
    start) gives a buy deck, priced by the same steps (account zone for bands): ``cost_micro``,
    ``margin_micro = price - cost``; flags ``no_cost`` (billable, no buy price) and
    ``negative_margin``.

Status (first that applies): ``unassigned`` (no service; nulls), ``free`` (not billable:
billable units 0, price 0), ``unrated`` (billable, no rate: price and billable units null,
never free, ``rating_reason`` says why), ``rated``.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.lake import CDR_SCHEMA, RATED_SCHEMA, UTC_TS
from bluerocktel.rating.bands import band_intervals
from bluerocktel.rating.bundles import apply_bundles
from bluerocktel.rating.tariffs import (
    BAND_SCHEMA,
    DECK_SCHEMA,
    IDENTIFIER_SCHEMA,
    MAX_PREFIX_DIGITS,
    RATE_SCHEMA,
    SERVICE_BUNDLE_SCHEMA,
    TRUNK_SCHEMA,
    Tariffs,
)
from bluerocktel.vocabulary import (
    CallDirection,
    CallType,
    Disposition,
    IdentifierKind,
    MaxCostAction,
    RatingFlag,
    RatingStatus,
    RoundingMethod,
)

__all__ = ["IDENTIFIER_SCHEMA", "RATE_SCHEMA", "prepare", "price_batch", "rate_batch"]

# vocabulary values spelled into the SQL
_OUT, _IN, _ANSWERED = CallDirection.OUT.value, CallDirection.IN.value, Disposition.ANSWERED.value
_ACCOUNT_CODE, _NUMBER, _DID, _TRUNK = (k.value for k in (IdentifierKind.ACCOUNT_CODE, IdentifierKind.NUMBER,
                                                          IdentifierKind.DID, IdentifierKind.TRUNK))
_CALL_TYPES = [CallType.VOICE.value, CallType.SMS.value, CallType.DATA.value]   # codes 0, 1, 2 (0 = timed)
_METHOD_CODES = {RoundingMethod.DOWN.value: 0, RoundingMethod.HALF_UP.value: 1, RoundingMethod.UP.value: 2}
_CAP, _DISCONNECT = MaxCostAction.CAP.value, MaxCostAction.DISCONNECT.value
_NO_END_US = 2 ** 62                       # "valid forever" in µs comparisons
_NO_NEXT = 2 ** 62                         # s_next of a last group: no upper clamp
_FLAG_BITS = {flag: 1 << i for i, flag in enumerate(RatingFlag)}
_FLAG_STRINGS = pa.array([",".join(f.value for f in RatingFlag if mask & _FLAG_BITS[f])
                          for mask in range(1 << len(RatingFlag))], pa.string())



# ---------------------------------------------------------------------------------------------
# Tariff preparation (once per Tariffs object)
# ---------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """Tariff tables reshaped for the kernel's joins; built by :func:`prepare`."""

    ids: pa.Table           # identifiers ranked by precedence; row i has pick = i; tzk = zone index
    zones: list[str]        # tzk -> IANA zone
    rates: pa.Table         # RATE_SCHEMA + ridx (row index)
    versions: pa.Table      # one row per destination version, row i has vid = i
    grp: pa.Table           # rows of each (version, band) in group order: vbid, g, s_g, s_next, ...
    effband: pa.Table       # (vid, bid) -> vbid for versions with band rows
    band_names: list[str]   # bid -> band name (0 = '')
    id_flat: pa.Table       # identifiers with disjoint validity per (kind, value): kind, value, key_len, vf_us, vt_us, pick
    trunk_flat: pa.Table    # carrier trunks with disjoint validity per trunk: trunk, key_len, vf_us, vt_us, deck_id
    decks: pa.Table         # DECK_SCHEMA + codes and the chain text for reasons
    calendars: dict         # deck_id -> holiday calendar
    deck_codes: dict        # deck_id -> code
    arr: dict               # numpy views of the small tables, for gathers by index (see _arrays)
    chains: dict            # root deck -> [deck ids of its fallback chain]
    deck_versions: dict     # (deck_id, call type code) -> [vid]
    v_prefix: list          # vid -> prefix
    indexes: dict           # (root deck, call type code) -> _PrefixIndex, built on first use
    who: list | None = None         # stage 1 lookups (see _identification)
    carriers: list | None = None
    seg_heads: pa.Array | None = None   # grp row -> '{"band":..,"rate_id":..,"group_start":'


_PREPARED: "weakref.WeakKeyDictionary[Tariffs, Prepared]" = weakref.WeakKeyDictionary()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.select(schema.names).cast(schema)


def _sql_table(con, sql: str, **tables: pa.Table) -> pa.Table:
    """Run ``sql`` with ``tables`` registered under their names; an Arrow table."""
    for name, table in tables.items():
        con.register(name, table)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)


def _flatten(rows) -> list[tuple]:
    """``(key, vf, vt, rank, payload)`` rows -> ``(key, vf, vt, payload)`` whose validity periods
    do not overlap for one key: at each instant the row of lowest rank in force wins. Then a
    key and an instant match at most one row, so an equi-join needs no aggregation after it."""
    by_key: dict = {}
    for key, vf, vt, rank, payload in rows:
        by_key.setdefault(key, []).append((vf, vt, rank, payload))
    out = []
    for key, items in by_key.items():
        if len(items) == 1:
            vf, vt, _, payload = items[0]
            out.append((key, vf, vt, payload))
            continue
        bounds = sorted({b for vf, vt, _, _ in items for b in (vf, vt)})
        for lo, hi in zip(bounds, bounds[1:]):
            live = [(rank, payload) for vf, vt, rank, payload in items if vf <= lo < vt]
            if not live:
                continue
            payload = min(live)[1]
            if out and out[-1][0] == key and out[-1][2] == lo and out[-1][3] == payload:
                out[-1] = (key, out[-1][1], hi, payload)
            else:
                out.append((key, lo, hi, payload))
    return out


def _chains(decks: pa.Table, roots: set[int]) -> tuple[list[dict], dict[int, str]]:
    """(root, level, deck) rows of each root deck's fallback chain, and each root's chain text."""
    fallback = dict(zip(decks["deck_id"].to_pylist(), decks["fallback_deck_id"].to_pylist()))
    code = dict(zip(decks["deck_id"].to_pylist(), decks["code"].to_pylist()))
    rows, texts = [], {}
    for root in sorted(roots):
        chain, deck = [], root
        while deck is not None and deck not in chain:
            chain.append(deck)
            deck = fallback.get(deck)
        rows.extend({"root": root, "level": level, "deck_id": d} for level, d in enumerate(chain))
        names = [code.get(d) or f"#{d}" for d in chain]
        texts[root] = "deck " + names[0] + "".join(f", fallback {n}" for n in names[1:])
    return rows, texts


def prepare(con, tariffs: Tariffs) -> Prepared:
    """The kernel's view of ``tariffs`` (cached per Tariffs object: a batch loop prepares once)."""
    cached = _PREPARED.get(tariffs)
    if cached is not None:
        return cached
    identifiers = _conform(tariffs.identifiers, IDENTIFIER_SCHEMA)
    decks = _conform(tariffs.decks, DECK_SCHEMA)
    rates = _conform(tariffs.rates, RATE_SCHEMA)
    bands = _conform(tariffs.bands, BAND_SCHEMA)
    trunks = _conform(tariffs.trunks, TRUNK_SCHEMA)
    _conform(tariffs.bundles, SERVICE_BUNDLE_SCHEMA)

    known = set(decks["deck_id"].to_pylist())
    missing = sorted(set(rates["deck_id"].to_pylist()) - known)
    if missing:
        raise ValueError(f"rates of deck(s) {missing} but no such row in tariffs.decks")
    zones = sorted({z or "UTC" for z in identifiers["timezone"].to_pylist()}) or ["UTC"]
    zone_index = {z: i for i, z in enumerate(zones)}
    tzk = pa.array([zone_index[z or "UTC"] for z in identifiers["timezone"].to_pylist()], pa.int32())
    ids = _sql_table(con, f"""
        SELECT * EXCLUDE (priority) FROM (
            SELECT *, CASE kind WHEN '{_ACCOUNT_CODE}' THEN 1 WHEN '{_NUMBER}' THEN 2
                                WHEN '{_DID}' THEN 3 WHEN '{_TRUNK}' THEN 4 END AS priority,
                      CASE kind WHEN '{_TRUNK}' THEN length(value) ELSE 0 END AS key_len,
                      epoch_us(valid_from) AS vf_us, coalesce(epoch_us(valid_to), {_NO_END_US}) AS vt_us
            FROM _p_ids)
        WHERE priority IS NOT NULL
        ORDER BY priority, key_len DESC, identifier_id""", _p_ids=identifiers.append_column("tzk", tzk))
    ids = ids.append_column("pick", pa.array(np.arange(ids.num_rows, dtype=np.int64)))

    rates = rates.append_column("ridx", pa.array(np.arange(rates.num_rows, dtype=np.int64)))
    band_names = [""] + sorted({n for n in bands["name"].to_pylist()} | set(rates["band"].to_pylist()) - {""})
    bid_of = {n: i for i, n in enumerate(band_names)}
    names_table = pa.table({"band": pa.array(band_names), "bid": pa.array(range(len(band_names)), pa.int64())})
    deck_bands = pa.Table.from_pylist(
        [{"deck_id": d, "bid": 0} for d in sorted(known)]
        + [{"deck_id": d, "bid": bid_of[n]} for d, n in
           sorted(set(zip(bands["deck_id"].to_pylist(), bands["name"].to_pylist())))],
        schema=pa.schema([("deck_id", pa.int64()), ("bid", pa.int64())]))
    decks_with_bands = pa.array(sorted(set(bands["deck_id"].to_pylist())), pa.int64())

    ct_case = "CASE call_type " + " ".join(f"WHEN '{c}' THEN {i}" for i, c in enumerate(_CALL_TYPES)) + " END"
    rows = _sql_table(con, """
        SELECT r.*, n.bid,
               dense_rank() OVER (ORDER BY deck_id, call_type, prefix, valid_from) - 1 AS vid,
               dense_rank() OVER (ORDER BY deck_id, call_type, prefix, valid_from, band) - 1 AS vbid
        FROM _p_rates r JOIN _p_names n USING (band)""", _p_rates=rates, _p_names=names_table)
    versions = _sql_table(con, f"""
        SELECT vid, deck_id, call_type, {ct_case} AS ct, prefix, length(prefix) AS plen,
               CAST('1' || prefix AS BIGINT) AS key, valid_from, epoch_us(valid_from) AS vf_us,
               coalesce(min(epoch_us(valid_to)), {_NO_END_US}) AS vt_us,
               greatest(max(unit_size), 1) AS unit_size,
               bool_or(band <> '') AND list_contains($decks_with_bands, deck_id) AS cal,
               bool_or(band <> '') AS banded,
               min(vbid) FILTER (WHERE band = '') AS default_vb
        FROM _p_rows
        GROUP BY vid, deck_id, call_type, prefix, valid_from
        ORDER BY vid""".replace("$decks_with_bands", f"[{', '.join(map(str, decks_with_bands.to_pylist())) or 'NULL'}]"),
        _p_rows=rows)
    grp = _sql_table(con, f"""
        SELECT vbid, vid, bid, band, row_number() OVER w - 1 AS g, group_start AS s_g,
               lead(group_start) OVER w AS s_next, count(*) OVER (PARTITION BY vbid) AS ngroups,
               ridx, price_micro AS price, first_increment AS fst, next_increment AS inc,
               connection_fee_micro AS fee, min_charge_micro AS min_charge, max_cost_micro AS max_cost,
               CASE max_cost_action WHEN '{_CAP}' THEN 1 WHEN '{_DISCONNECT}' THEN 2 ELSE 0 END AS action,
               rate_id
        FROM _p_rows
        WINDOW w AS (PARTITION BY vbid ORDER BY group_start, rate_id)
        ORDER BY vbid, g""", _p_rows=rows)
    effband = _sql_table(con, """
        SELECT v.vid, b.bid, coalesce(x.vbid, v.default_vb) AS vbid
        FROM _p_versions v JOIN _p_deck_bands b ON b.deck_id = v.deck_id
        LEFT JOIN (SELECT DISTINCT vid, bid, vbid FROM _p_grp) x ON x.vid = v.vid AND x.bid = b.bid
        WHERE v.banded""", _p_versions=versions, _p_deck_bands=deck_bands, _p_grp=grp)

    roots = known | {d for d in identifiers["rate_deck_id"].to_pylist() if d is not None} \
        | set(trunks["deck_id"].to_pylist())
    chain_rows, chain_texts = _chains(decks, roots)
    trunks = _sql_table(con, f"""
        SELECT *, length(trunk) AS key_len, epoch_us(valid_from) AS vf_us,
               coalesce(epoch_us(valid_to), {_NO_END_US}) AS vt_us
        FROM _p_trunks ORDER BY key_len DESC, trunk_id""", _p_trunks=trunks)
    # identifiers and carrier trunks with disjoint validity per (kind, value) / trunk
    flat_ids = _flatten(((k, v), vf, vt, pick, pick) for k, v, vf, vt, pick in zip(
        *(ids[c].to_pylist() for c in ("kind", "value", "vf_us", "vt_us", "pick"))))
    id_flat = pa.table({"kind": pa.array([k[0] for k, *_ in flat_ids], pa.string()),
                        "value": pa.array([k[1] for k, *_ in flat_ids], pa.string()),
                        "key_len": pa.array([len(k[1]) for k, *_ in flat_ids], pa.int64()),
                        "vf_us": pa.array([r[1] for r in flat_ids], pa.int64()),
                        "vt_us": pa.array([r[2] for r in flat_ids], pa.int64()),
                        "pick": pa.array([r[3] for r in flat_ids], pa.int64())})
    flat_trunks = _flatten((t, vf, vt, tid, deck) for t, vf, vt, tid, deck in zip(
        *(trunks[c].to_pylist() for c in ("trunk", "vf_us", "vt_us", "trunk_id", "deck_id"))))
    trunk_flat = pa.table({"trunk": pa.array([r[0] for r in flat_trunks], pa.string()),
                           "key_len": pa.array([len(r[0]) for r in flat_trunks], pa.int64()),
                           "vf_us": pa.array([r[1] for r in flat_trunks], pa.int64()),
                           "vt_us": pa.array([r[2] for r in flat_trunks], pa.int64()),
                           "deck_id": pa.array([r[3] for r in flat_trunks], pa.int64())})

    deck_rows = decks.to_pylist()
    for d in deck_rows:
        d["chain_text"] = chain_texts.get(d["deck_id"], f"deck {d['code']}")
        d["rmeth"] = _METHOD_CODES.get(d["rounding_method"], 1)
        d["rstep"] = 10 ** (6 - (d["rounding_decimals"] if d["rounding_decimals"] is not None else 6))
        d["imeth"] = _METHOD_CODES.get(d["increment_rounding_method"]) if d["increment_rounding_method"] else None
        d["istep"] = (10 ** (6 - (d["increment_rounding_decimals"] or 0))) if d["imeth"] is not None else None
    extra = [{"deck_id": root, "code": f"#{root}", "chain_text": text, "rmeth": 1, "rstep": 1, "imeth": None,
              "istep": None} for root, text in chain_texts.items() if root not in known]
    deck_table = pa.Table.from_pylist([{k: d.get(k) for k in ("deck_id", "code", "chain_text", "rmeth", "rstep",
                                                              "imeth", "istep")} for d in deck_rows + extra],
                                      schema=pa.schema([("deck_id", pa.int64()), ("code", pa.string()),
                                                        ("chain_text", pa.string()), ("rmeth", pa.int64()),
                                                        ("rstep", pa.int64()), ("imeth", pa.int64()),
                                                        ("istep", pa.int64())]))
    prepared = Prepared(
        ids=ids, zones=zones, rates=rates, versions=versions, grp=grp, effband=effband,
        band_names=band_names, id_flat=id_flat, trunk_flat=trunk_flat, decks=deck_table,
        calendars={d["deck_id"]: d["holiday_calendar"] for d in deck_rows},
        deck_codes={d["deck_id"]: d["code"] for d in deck_rows}, arr={},
        chains={root: [r["deck_id"] for r in chain_rows if r["root"] == root] for root in roots},
        deck_versions={}, v_prefix=versions["prefix"].to_pylist(), indexes={})
    for vid, (deck_id, ct) in enumerate(zip(versions["deck_id"].to_pylist(), versions["ct"].to_pylist())):
        if ct is not None:
            prepared.deck_versions.setdefault((deck_id, ct), []).append(vid)
    prepared.arr.update(_arrays(prepared))
    prepared.arr.update(_version_constants(prepared.arr))
    prepared.arr.update(_vb_arrays(prepared.arr, _np(grp["vid"])))
    _identification(prepared)
    prepared.seg_heads = _sql_table(con, """
        SELECT left(to_json(struct_pack(band := band, rate_id := rate_id)), -1) || ',"group_start":' AS head
        FROM _p_grp ORDER BY vbid, g""", _p_grp=grp)["head"].combine_chunks()
    _PREPARED[tariffs] = prepared
    return prepared


def _arrays(prep: Prepared) -> dict:
    """Numpy columns of the prepared tables (nulls as -1) for index gathers."""
    v, g, d = prep.versions, prep.grp, prep.decks
    deck_pos = {deck_id: i for i, deck_id in enumerate(d["deck_id"].to_pylist())}
    n_vb = (int(pc.max(g["vbid"]).as_py()) + 1) if g.num_rows else 0
    first = np.full(n_vb, -1, np.int64)
    ngroups = np.zeros(n_vb, np.int64)
    vbid, gidx = _np(g["vbid"]), _np(g["g"])
    first[vbid[gidx == 0]] = np.flatnonzero(gidx == 0)
    ngroups[vbid[gidx == 0]] = _np(g["ngroups"])[gidx == 0]
    eff = np.full((v.num_rows, len(prep.band_names)), -1, np.int64)
    if prep.effband.num_rows:
        eff[_np(prep.effband["vid"]), _np(prep.effband["bid"])] = _np(prep.effband["vbid"])
    return {
        "v_vf": _np(v["vf_us"]), "v_vt": _np(v["vt_us"]),
        "v_deck": _np(v["deck_id"]), "v_ct": _np(v["ct"]), "v_usize": _np(v["unit_size"]),
        "v_cal": _np(v["cal"].fill_null(False)).astype(bool) if v.num_rows else np.zeros(0, bool),
        "v_default_vb": _np(v["default_vb"]), "v_deckpos": np.array([deck_pos[x] for x in v["deck_id"].to_pylist()],
                                                                    np.int64),
        "eff": eff, "vb_first": first, "vb_ngroups": ngroups,
        "g_price": _np(g["price"]), "g_fst": _np(g["fst"]), "g_inc": _np(g["inc"]), "g_fee": _np(g["fee"]),
        "g_min": _np(g["min_charge"]), "g_max": _np(g["max_cost"]), "g_maxnull": g["max_cost"].is_null().to_numpy(
            zero_copy_only=False), "g_action": _np(g["action"]), "g_ridx": _np(g["ridx"]), "g_bid": _np(g["bid"]),
        "d_rmeth": _np(d["rmeth"]), "d_rstep": _np(d["rstep"]), "d_imeth": _np(d["imeth"]), "d_istep": _np(d["istep"]),
        "ids_deck": _np(prep.ids["rate_deck_id"]), "ids_tzk": _np(prep.ids["tzk"]),
        "max_price": int(pc.max(g["price"]).as_py() or 0), "max_fee": int(pc.max(g["fee"]).as_py() or 0),
        "max_usize": int(pc.max(v["unit_size"]).as_py() or 1), "min_usize": int(pc.min(v["unit_size"]).as_py() or 1),
        "max_plen": int(pc.max(v["plen"]).as_py() or 0),
        "g_g": _np(g["g"]), "g_sg": _np(g["s_g"]), "g_snext": _np(g["s_next"].fill_null(_NO_NEXT)),
        "slack": int(pc.max(pc.add(g["fst"], g["inc"])).as_py() or 0) * int(pc.max(g["ngroups"]).as_py() or 1),
    }


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a non-negative int array (counting when the range is small)."""
    if len(values) == 0:
        return values
    low, high = int(values.min()), int(values.max())
    if low == high:          # (often: one deck, one zone)
        return values[:1].copy()
    if high - low < 4 * len(values) + 1024:
        return np.flatnonzero(np.bincount(values - low)) + low
    return np.unique(values)


def _np(column) -> np.ndarray:
    """A numeric (or bool) Arrow column as numpy; nulls become -1 (False for bool)."""
    if column.null_count:
        column = pc.fill_null(column, False if pa.types.is_boolean(column.type) else -1)
    return column.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# Longest-prefix matching: a sorted interval index per (root deck, call type)
# ---------------------------------------------------------------------------------------------
# A callee's digits d_1..d_k (k <= 18) are encoded as E = sum((d_i + 1) * 11**(18 - i)): the
# numbers starting with a prefix p of length l are exactly the encodings in the interval
# [E(p), E(p) + 11**(18 - l)) (a shorter number, padded with 0, falls before it). Prefix
# intervals nest or are disjoint, so the digit space cuts into elementary intervals, each with
# the fixed list of destination versions whose prefix covers it, in order of preference (plan
# deck before its fallbacks, then the longest prefix, then the newest version). A batch finds
# each CDR's elementary interval (a direct table of the first digits, then a table per further
# digit for the numbers whose first digits do not settle it), then takes the first version of
# the list in force at the call start (a few vectorized passes). This replaces the
# candidate-prefix equi-join of DESIGN.md §2 (same result; measured in benchmarks/rating.py:
# the join and its per-CDR aggregation cost more than all the rest of the kernel).

_SPACE = 11 ** MAX_PREFIX_DIGITS


def _encode_prefix(prefix: str) -> int:
    return sum((int(d) + 1) * 11 ** (MAX_PREFIX_DIGITS - 1 - i) for i, d in enumerate(prefix))


def _encode_callees(callee: pa.ChunkedArray | pa.Array, digits: int) -> np.ndarray:
    """E of each callee's first ``digits`` E.164 digits (the digits after '+', up to the first
    non-digit) *without* its 11**(18 - digits) scale; 0 (= no digit: only the prefix '' matches)
    for a callee without '+' or null. When no prefix has more than ``digits`` digits, every
    interval bound is a multiple of 11**(18 - digits), so the digits after them cannot change
    the interval a number falls in. Read straight from the Arrow string buffers: each callee's
    first ``digits + 1`` bytes gathered as 8-byte words read at any byte offset (3.5x faster
    than a gather of byte windows), then one pass per digit position over bytes."""
    if isinstance(callee, pa.ChunkedArray):
        callee = callee.combine_chunks()
    n = len(callee)
    offsets = np.frombuffer(callee.buffers()[1], np.int32, n + 1, callee.offset * 4)
    data = callee.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    data = np.concatenate([data, np.zeros(digits + 8, np.uint8)])     # room to read past the last string
    start = offsets[:-1]
    length = offsets[1:] - start
    if callee.null_count:
        length = np.where(callee.is_valid().to_numpy(zero_copy_only=False), length, 0)
    word_at = np.ndarray((len(data) - 7,), np.uint64, data, strides=(1,))    # word_at[i]: bytes i .. i + 7
    words = np.stack([word_at[start + 8 * k] for k in range(-(-(digits + 1) // 8))], axis=1)
    chars = words.view(np.uint8).T                                             # (position, callee)
    run = (chars[0] == ord("+")) & (length > 0)
    encoded = np.zeros(n, np.int32 if 11 ** digits < 2 ** 31 else np.int64)
    for j in range(1, digits + 1):
        digit = chars[j] - np.uint8(ord("0"))              # wraps above 9 for non-digits
        run &= (digit < 10) & (length > j)
        encoded *= 11
        encoded += (digit + np.uint8(1)) * run
    return encoded.astype(np.int64, copy=False)


@dataclass
class _PrefixIndex:
    """Elementary intervals of one (root deck, call type): ``lo`` sorted; interval i's versions
    in preference order are ``flat[off[i]:off[i] + count[i]]``."""

    lo: np.ndarray
    off: np.ndarray
    count: np.ndarray
    flat: np.ndarray
    direct: np.ndarray      # code b of the first D digits -> the interval of all their numbers, or -2 - k
    levels: list            # per next digit: 11 * k + its code -> the interval, or -2 - k' at the level after


def _prefix_index(prep: Prepared, root: int, ct: int) -> _PrefixIndex:
    """The index of ``root``'s fallback chain for call type ``ct`` (cached on ``prep``)."""
    cached = prep.indexes.get((root, ct))
    if cached is not None:
        return cached
    a = prep.arr
    by_prefix: dict[str, list[tuple]] = {}
    for level, deck_id in enumerate(prep.chains.get(root, [root])):
        for vid in prep.deck_versions.get((deck_id, ct), ()):
            by_prefix.setdefault(prep.v_prefix[vid], []).append((level, -len(prep.v_prefix[vid]), -a["v_vf"][vid], vid))
    intervals = sorted((_encode_prefix(p), _encode_prefix(p) + 11 ** (MAX_PREFIX_DIGITS - len(p)), p)
                       for p in by_prefix)
    bounds = sorted({0, _SPACE} | {lo for lo, _, _ in intervals} | {hi for _, hi, _ in intervals})
    starts: dict[int, list] = {}
    for lo, hi, p in intervals:
        starts.setdefault(lo, []).append((hi, p))
    lows, offs, counts, flat, stack = [], [], [], [], []
    for b in bounds[:-1]:
        while stack and stack[-1][0] <= b:
            stack.pop()
        for hi, p in sorted(starts.get(b, ()), key=lambda item: -item[0]):   # outer (longer interval) first
            stack.append((hi, p))
        versions = sorted(v for _, p in stack for v in by_prefix[p])
        lows.append(b)
        offs.append(len(flat))
        counts.append(len(versions))
        flat.extend(v[3] for v in versions)
    lows = np.array(lows, np.int64)

    def settled(bucket_lo: np.ndarray, size: int) -> np.ndarray:     # the interval holding [lo, lo + size), or -1
        first, last = (np.searchsorted(lows, bucket_lo + end, side="right") - 1 for end in (0, size - 1))
        return np.where(first == last, first, -1)

    # the numbers whose first D digits have the code b lie in [b, b + 1) * 11**(18 - D); when an
    # interval bound falls inside, the next digit cuts the bucket into 11, and so on (no bound
    # falls inside a bucket of max_plen digits)
    step = 11 ** (MAX_PREFIX_DIGITS - _direct_digits(prep, len(lows)))
    direct = settled(np.arange(_SPACE // step, dtype=np.int64) * step, step)
    split = np.flatnonzero(direct < 0)
    direct[split] = -2 - np.arange(len(split))
    levels, bucket_lo = [], split * step
    while len(bucket_lo):
        step //= 11
        bucket_lo = (bucket_lo[:, None] + np.arange(11)[None, :] * step).ravel()
        level = settled(bucket_lo, step)
        split = np.flatnonzero(level < 0)
        level[split] = -2 - np.arange(len(split))
        levels.append(level.astype(np.int32))
        bucket_lo = bucket_lo[split]
    index = _PrefixIndex(lows, np.array(offs, np.int64), np.array(counts, np.int64), np.array(flat, np.int64),
                         direct.astype(np.int32), levels)
    prep.indexes[(root, ct)] = index
    return index


def _direct_digits(prep: Prepared, intervals: int) -> int:
    """How many leading digits D the direct table of a :class:`_PrefixIndex` of ``intervals``
    elementary intervals covers: at most the longest prefix, and 11**D entries at most 16 per
    interval (at least 11**4, at most 11**6: 7 MB)."""
    d = 4
    while d < 6 and 11 ** (d + 1) <= 16 * intervals:
        d += 1
    return min(prep.arr["max_plen"], d)


def _match_versions(prep: Prepared, roots: np.ndarray, ct: np.ndarray, encoded: np.ndarray,
                    start_us: np.ndarray) -> np.ndarray:
    """The preferred destination version (vid) of each leg in force at its start, or -1;
    ``encoded``: :func:`_encode_callees` of the legs' callees.

    The leg's elementary interval comes from the direct table of its first digits, then one
    digit at a time while they do not settle it. The first version of an interval's list wins at once
    when it is in force over the whole time span of the batch (most are: only prefixes with
    several versions need a look at the call start); the other legs try the list in order, one
    vectorized pass per position."""
    a = prep.arr
    vid = np.full(len(roots), -1, np.int64)
    if len(roots) == 0:
        return vid
    digits = a["max_plen"]
    keys = roots * 4 + ct
    distinct = _distinct(keys)
    for key in distinct:
        legs = np.flatnonzero(keys == key) if len(distinct) > 1 else None
        index = _prefix_index(prep, int(key // 4), int(key % 4))
        if len(index.flat) == 0:
            continue
        code = encoded if legs is None else encoded[legs]
        start = start_us if legs is None else start_us[legs]
        shift = 11 ** (digits - _direct_digits(prep, len(index.lo)))
        at = index.direct[code // shift if shift > 1 else code].astype(np.int64)
        deep = np.flatnonzero(at < 0)
        for level in index.levels:      # the next digit, while a bucket holds an interval bound
            if len(deep) == 0:
                break
            shift //= 11
            at[deep] = level[(-2 - at[deep]) * 11 + code[deep] // shift % 11]
            deep = deep[at[deep] < 0]
        first = np.where(index.count > 0, index.flat[np.minimum(index.off, len(index.flat) - 1)], -1)
        sure = (index.count == 0) | ((a["v_vf"][first] <= start.min()) & (start.max() < a["v_vt"][first]))
        found = np.where(sure, first, -2)[at]
        unsure = np.flatnonzero(found == -2)
        found[unsure] = -1
        off, count, start = index.off[at[unsure]], index.count[at[unsure]], start[unsure]
        for k in range(int(count.max()) if len(count) else 0):
            open_ = np.flatnonzero((found[unsure] < 0) & (k < count))
            if len(open_) == 0:
                break
            candidate = index.flat[off[open_] + k]
            ok = (a["v_vf"][candidate] <= start[open_]) & (start[open_] < a["v_vt"][candidate])
            found[unsure[open_[ok]]] = candidate[ok]
        if legs is None:
            vid = found
        else:
            vid[legs] = found
    return vid


# ---------------------------------------------------------------------------------------------
# Stage 1: who pays, which rate version (sell and buy)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Lookup:
    """Exact-match lookup of string keys whose rows have disjoint validity (:func:`_flatten`):
    key ``values[u]`` owns rows ``first[u]`` .. ``first[u] + count[u] - 1`` (sorted by start)."""

    values: pa.Array
    first: np.ndarray
    count: np.ndarray
    vf: np.ndarray
    vt: np.ndarray
    payload: np.ndarray


def _lookup(rows) -> _Lookup:
    """A :class:`_Lookup` of ``(key, vf_us, vt_us, payload)`` rows."""
    rows = sorted(rows)
    keys = [r[0] for r in rows]
    values = list(dict.fromkeys(keys))
    first = np.array([i for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k], np.int64)
    return _Lookup(pa.array(values, pa.string()), first, np.diff(np.append(first, len(keys))),
                   *(np.array([r[i] for r in rows], np.int64) for i in (1, 2, 3)))


def _look_up(lookup: _Lookup, keys: pa.Array | pa.ChunkedArray, length: int | None,
             start_us: np.ndarray) -> np.ndarray:
    """Per row: the payload of the lookup row whose key equals ``keys`` (their first ``length``
    characters when given) and that is valid at ``start_us``, else -1. A hash lookup (Arrow
    ``index_in``), or for a few prefix keys one ``starts_with`` each (no sliced copy of the
    strings); keys with one row valid over the whole span of ``start_us`` (most) give their
    payload at once, the others are checked with one vectorized pass per row of the longest
    history."""
    if len(lookup.values) == 0 or len(keys) == 0:
        return np.full(len(keys), -1, np.int64)
    if length is not None and len(lookup.values) <= 8:     # keys of one length: at most one is a prefix
        u = np.full(len(keys), -1, np.int64)
        for i, value in enumerate(lookup.values.to_pylist()):
            u[_np(pc.starts_with(keys, value)).astype(bool)] = i
    else:
        if length is not None:
            keys = pc.utf8_slice_codeunits(keys, 0, length)
        u = _np(pc.index_in(keys, value_set=lookup.values))
    head = lookup.first
    sure = (lookup.count == 1) & (lookup.vf[head] <= start_us.min()) & (start_us.max() < lookup.vt[head])
    found = np.append(np.where(sure, lookup.payload[head], -2), -1)[u]      # u = -1 (no key) -> -1
    hit = np.flatnonzero(found == -2)
    if len(hit) == 0:
        return found
    found[hit] = -1
    row, count, start = lookup.first[u[hit]], lookup.count[u[hit]], start_us[hit]
    for k in range(int(count.max())):
        r = np.minimum(row + k, len(lookup.vf) - 1)
        ok = (k < count) & (lookup.vf[r] <= start) & (start < lookup.vt[r])
        found[hit[ok]] = lookup.payload[r[ok]]
    return found


def _fill_from(found: np.ndarray, todo: np.ndarray, lookup: _Lookup, column: pa.ChunkedArray, length: int | None,
               start_us: np.ndarray) -> None:
    """``found[todo]`` = :func:`_look_up` of ``column`` at those rows. A small ``todo`` gathers
    its rows' keys first; a large one looks up the whole column (no string copy)."""
    if len(lookup.values) == 0:
        return
    rows = np.flatnonzero(todo)
    if len(rows) == 0:
        return
    if 4 * len(rows) < len(todo):
        found[rows] = _look_up(lookup, column.take(pa.array(rows)), length, start_us[rows])
    else:
        np.copyto(found, _look_up(lookup, column, length, start_us), where=todo)


def _identification(prep: Prepared) -> None:
    """The lookups of stage 1, in precedence order (see "Who pays"): ``prep.who`` holds
    (CDR column, required direction, key length or None for the whole value, lookup of picks),
    ``prep.carriers`` (dst_channel key length, lookup of buy decks), longest first."""
    kinds, values, vfs, vts, picks = (prep.id_flat[c].to_pylist() for c in ("kind", "value", "vf_us", "vt_us", "pick"))
    rows = list(zip(kinds, values, vfs, vts, picks))

    def of(kind, length=None):       # an empty account code matches nothing
        return _lookup((v, vf, vt, pick) for k, v, vf, vt, pick in rows if k == kind
                       and (length is None or len(v) == length) and not (kind == _ACCOUNT_CODE and v == ""))

    prep.who = [("account_code", None, None, of(_ACCOUNT_CODE)), ("caller", _OUT, None, of(_NUMBER)),
                ("callee", _IN, None, of(_DID))]
    prep.who += [("channel", None, n, of(_TRUNK, n))
                 for n in sorted({len(v) for k, v, *_ in rows if k == _TRUNK}, reverse=True)]
    trunks = list(zip(*(prep.trunk_flat[c].to_pylist() for c in ("trunk", "vf_us", "vt_us", "deck_id"))))
    prep.carriers = [(n, _lookup(t for t in trunks if len(t[0]) == n))
                     for n in sorted({len(t[0]) for t in trunks}, reverse=True)]


def _identify(prep: Prepared, cdrs: pa.Table, start_us: np.ndarray, billable: np.ndarray, outbound: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1, per CDR: the pick of the identifier that says who pays (-1: none) and, for
    billable CDRs, the buy deck of the longest carrier trunk prefix of ``dst_channel`` (-1).
    Hash lookups in Arrow (a DuckDB join per kind cost twice as much), each over the rows
    that earlier kinds left unidentified. ``outbound``: the CDRs whose direction is out."""
    n = cdrs.num_rows
    ident = np.full(n, -1, np.int64)
    directions = {_OUT: outbound}
    for column, wanted, length, lookup in prep.who:
        if len(lookup.values) == 0:
            continue
        todo = ident < 0
        if wanted:
            if wanted not in directions:
                directions[wanted] = _np(pc.equal(cdrs["direction"], wanted)).astype(bool)
            todo &= directions[wanted]
        _fill_from(ident, todo, lookup, cdrs[column], length, start_us)
    buy_deck = np.full(n, -1, np.int64)
    for length, lookup in prep.carriers:
        _fill_from(buy_deck, billable & (buy_deck < 0), lookup, cdrs["dst_channel"], length, start_us)
    return ident, buy_deck


# ---------------------------------------------------------------------------------------------
# Stage 2: price the legs (sell side 0, buy side 1) of every priced CDR
# ---------------------------------------------------------------------------------------------

# Per leg, the rounding constants come from its version (:func:`_version_constants`): a
# non-negative ``x / den`` rounded to an integer is ``(x + off) // den`` with off = 0 (down),
# den - 1 (up) or den // 2 (half up: exact for odd and even den). ``den_t``/``off_t`` round the
# total to the deck's decimals (x in micro × unit_size, or in micro when increments are rounded:
# ``iround``); ``den_i``/``off_i`` round the cost of one increment (x in micro × unit_size) to
# micro multiples of ``istep``. Amounts are int64 when the batch's largest ones fit
# (:func:`_int64_exact`), else Python integers.

_OK, _NO_BAND = 0, 1
_SPLIT = _FLAG_BITS[RatingFlag.BAND_SPLIT]


def _offset(method: np.ndarray, den: np.ndarray) -> np.ndarray:
    """What to add before ``// den`` to round with ``method`` (0 down, 1 half up, 2 up)."""
    return np.select([method == 0, method == 2], [np.zeros_like(den), den - 1], den // 2)


_VERSION_CONSTANTS = ("tscale", "usize", "rstep", "den_t", "off_t", "iround", "istep", "den_i", "off_i")


def _version_constants(a: dict) -> dict:
    """Per destination version, the pricing constants of :data:`_VERSION_CONSTANTS` (they depend
    on the version's deck and unit size only): computed once here, gathered per leg."""
    dpos = a["v_deckpos"]
    usize, rstep, rmeth = a["v_usize"], a["d_rstep"][dpos], a["d_rmeth"][dpos]
    imeth, istep = a["d_imeth"][dpos], a["d_istep"][dpos]
    iround = imeth >= 0
    istep = np.where(iround, istep, 1)
    den_i, den_t = usize * istep, np.where(iround, 1, usize) * rstep
    return {"v_tscale": np.where(a["v_ct"] == 0, 1_000_000, 0).astype(np.int64), "v_rstep": rstep,
            "v_den_t": den_t, "v_off_t": _offset(rmeth, den_t), "v_iround": iround, "v_istep": istep,
            "v_den_i": den_i, "v_off_i": _offset(np.where(iround, imeth, 0), den_i)}


# per (version, band) "vb", the columns of its first row and of its version that pricing needs
_VB_ROW_COLS = {"ridx0": "g_ridx", "band0": "g_bid", "p": "g_price", "fst": "g_fst", "inc": "g_inc", "fee": "g_fee",
                "min_charge": "g_min", "max_cost": "g_max", "action": "g_action"}
_VB_OPTIONAL = {"min_charge": 0, "max_cost": -1, "action": 0, "iround": False, "istep": 1, "den_i": 1, "off_i": 0}


def _vb_arrays(a: dict, g_vid: np.ndarray) -> dict:
    """Per vb, the columns of :data:`_VB_ROW_COLS` (its first row), its group count and its
    version's constants, each with one more entry at the end (index -1, "no rows": harmless
    values, the leg's results are not used); ``eff_flat[vid * n_bands + bid]``: the vb of a
    version in a band (``eff``), with the version's all-time vb in band 0 when the version has
    no band calendar; ``any_*``: whether any row has a minimum charge, a maximum cost, whether
    any deck rounds its increments (otherwise pricing skips those steps)."""
    first = a["vb_first"]
    row = np.append(first, first[0] if len(first) else 0) if len(a["g_price"]) else np.zeros(1, np.int64)
    out = {"vb_" + name: (a[column][row] if len(a[column]) else np.zeros(1, np.int64))
           for name, column in _VB_ROW_COLS.items()}
    out["vb_ngroups"] = np.append(a["vb_ngroups"], 0)
    vid = g_vid[row] if len(g_vid) else np.zeros(1, np.int64)
    for name in _VERSION_CONSTANTS:
        values = a["v_" + name]
        out["vb_" + name] = values[vid] if len(values) else np.ones(1, values.dtype)
    eff = a["eff"].copy()
    if eff.shape[1]:
        eff[~a["v_cal"], 0] = a["v_default_vb"][~a["v_cal"]]
    out["eff_flat"] = eff.ravel()
    out["any_min"] = bool((a["g_min"] > 0).any())
    out["any_max"] = bool((a["g_max"] >= 0).any())
    out["any_iround"] = bool(a["v_iround"].any())
    return out


@dataclass
class _Legs:
    """The priced legs of a batch (sell legs, then buy legs), as numpy columns; row = lid."""

    cols: dict                  # name -> np.ndarray
    intervals: dict             # exact band intervals sorted by (ck, start): ck, start, stop, bid, and
                                # first[k] .. first[k + 1] - 1: the rows of calendar key k


def _build_legs(prep: Prepared, tariffs: Tariffs, vid: np.ndarray, q: np.ndarray, t0: np.ndarray,
                tzk: np.ndarray) -> _Legs:
    """Everything pricing needs per leg: the band at the answer instant from a per-minute table of
    the band calendar, then the (version, band) ``vb0`` it gives and that vb's columns (those
    no tariff row uses are constants, not arrays)."""
    a = prep.arr
    n = len(vid)
    ck = np.full(n, -1, np.int64)
    bid0 = np.zeros(n, np.int64)
    iv_end = np.full(n, _NO_END_US, np.int64)
    intervals = {"ck": np.zeros(0, np.int64), "start": np.zeros(0, np.int64), "stop": np.zeros(0, np.int64),
                 "bid": np.zeros(0, np.int64), "first": np.zeros(1, np.int64)}
    cal = np.flatnonzero(a["v_cal"][vid])
    if len(cal):
        # calendar key: one per (deck, zone) pair whose version has band rows
        n_zones = len(prep.zones)
        pair = a["v_deck"][vid[cal]] * n_zones + tzk[cal]
        pairs = _distinct(pair)
        ck[cal] = np.searchsorted(pairs, pair) if len(pairs) > 1 else 0
        day_us, minute_us = 86_400_000_000, 60_000_000
        t0c = t0[cal]
        minute = t0c // minute_us
        day = minute // 1440
        days = _distinct(day)
        longest = int(((q[cal] + a["slack"]) * a["v_tscale"][vid[cal]]).max())
        ranges = [(int(d) * day_us, int(d + 1) * day_us + longest + 1) for d in days]
        key_pairs = {i: (int(p // n_zones), prep.zones[int(p % n_zones)]) for i, p in enumerate(pairs)}
        found = band_intervals(tariffs.bands.cast(BAND_SCHEMA), prep.calendars, key_pairs, ranges)
        bid_of = {name: i for i, name in enumerate(prep.band_names)}
        iv_ck, iv_start, iv_stop = _np(found["key"]), _np(found["start_us"]), _np(found["end_us"])
        iv_bid = np.array([bid_of[name] for name in found["band"].to_pylist()], np.int64)
        intervals = {"ck": iv_ck, "start": iv_start, "stop": iv_stop, "bid": iv_bid,
                     "first": np.searchsorted(iv_ck, np.arange(len(pairs) + 1))}
        # per (ck, day, minute of day): the interval containing the minute's start
        minute_starts = (days[:, None] * day_us + np.arange(1440)[None, :] * minute_us).ravel()
        minute_interval = np.concatenate([
            iv_lo + np.searchsorted(iv_start[iv_lo:iv_hi], minute_starts, side="right") - 1
            for iv_lo, iv_hi in zip(intervals["first"][:-1], intervals["first"][1:])])
        day_pos = np.zeros(int(days[-1] - days[0]) + 1, np.int64)
        day_pos[days - days[0]] = np.arange(len(days)) * 1440
        at = minute_interval[ck[cal] * (len(days) * 1440) + day_pos[day - days[0]] + (minute - day * 1440)]
        bid0[cal] = iv_bid[at]
        # a boundary inside the answer minute (zones with odd offsets) sends the leg to the exact path
        stop = iv_stop[at]
        iv_end[cal] = np.where(t0c < stop, stop, t0c)
    vb0 = a["eff_flat"][vid * len(prep.band_names) + bid0]
    cols = {"vid": vid, "q": q, "t0_us": t0, "ck": ck, "bid0": bid0, "iv_end": iv_end, "vb0": vb0}
    optional = {"min_charge": a["any_min"], "max_cost": a["any_max"], "action": a["any_max"],
                **dict.fromkeys(("iround", "istep", "den_i", "off_i"), a["any_iround"])}
    for name in (*_VB_ROW_COLS, "ngroups", *_VERSION_CONSTANTS):
        if optional.get(name, True):
            cols[name] = a["vb_" + name][vb0]
        else:
            cols[name] = np.broadcast_to(np.array(_VB_OPTIONAL[name], a["vb_" + name].dtype), (n,))
    return _Legs(cols, intervals)


def _amount_bound(prep: Prepared, q: np.ndarray) -> int:
    """An upper bound of the batch's amounts in micro × unit_size (``q``: the legs' quantities)."""
    a = prep.arr
    most = int(q.max()) + a["slack"] if len(q) else 0
    return a["max_price"] * most * 4 + a["max_fee"] * a["max_usize"] + a["max_price"] * a["max_usize"]


def _int64_exact(prep: Prepared, q: np.ndarray) -> bool:
    """Whether int64 holds every amount of the batch, pico amounts (micro × 10**6) included."""
    a = prep.arr
    return (_amount_bound(prep, q) // a["min_usize"] + 2 * a["max_usize"] + 1) * 1_000_000 < 2 ** 62


def _billed_np(q, s_g, s_next, g, fst, inc):
    """Per group row: billed units ``b`` (see "Increments and bands" in the module docstring:
    ``u = clamp(q, s_g, s_next) - s_g``, at least the first increment in group 0, whole
    increments), first-increment count ``nf`` (0 or 1) and next-increment count ``nn``."""
    uu = np.minimum(np.maximum(q, s_g), s_next) - s_g
    b = np.where(uu == 0, 0, np.where(g > 0, (uu + inc - 1) // inc * inc,
                                      np.where(uu <= fst, fst, fst + (uu - fst + inc - 1) // inc * inc)))
    nf = ((g == 0) & (b > 0) & (fst > 0)).astype(b.dtype)
    return b, nf, (b - nf * fst) // inc


def _pico_np(exact, usize):
    """``exact`` (micro × usize) in pico units, half up, without overflow: one division when
    2e6 × ``exact`` fits in int64 (the same number: ``exact = k × usize + r`` gives
    ``(2e6 × exact + usize) // (2 × usize) = 1e6 × k + (2e6 × r + usize) // (2 × usize)``)."""
    if exact.dtype == np.int64 and (len(exact) == 0 or max(int(exact.max()), -int(exact.min())) < 2 ** 61 // 1_000_000):
        return (exact * 2_000_000 + usize) // (2 * usize)
    return exact // usize * 1_000_000 + (2 * (exact % usize) * 1_000_000 + usize) // (2 * usize)


def _priced_np(c: dict, num, icost):
    """Per leg (see "Amount" in the module docstring): price (rounded, minimum charge and maximum
    cost applied), unrounded pico amount and flag bits, from the leg's first-row columns ``c``,
    the exact sum ``num`` of price × units and the sum ``icost`` of rounded increment costs
    (None when no leg rounds its increments). The minimum and maximum steps are skipped when
    no leg has one."""
    exact = c["fee"] * c["usize"] + num
    price = exact if icost is None else np.where(c["iround"], c["fee"] + icost, exact)
    price = (price + c["off_t"]) // c["den_t"] * c["rstep"]
    fbits = np.zeros(len(price), np.int64)
    if c["min_charge"].any():
        minimum = (price > 0) & (price < c["min_charge"])
        price = np.where(minimum, c["min_charge"], price)
        fbits |= np.where(minimum, _FLAG_BITS[RatingFlag.MIN_CHARGE], 0)
    if (c["max_cost"] >= 0).any():
        over = (c["max_cost"] >= 0) & (price > c["max_cost"])
        action = c["action"]
        fbits |= (np.where(over & (action == 1), _FLAG_BITS[RatingFlag.MAX_COST_CAPPED], 0)
                  | np.where(over & (action == 2), _FLAG_BITS[RatingFlag.MAX_COST_EXCEEDED], 0))
        price = np.where(over & (action == 1), c["max_cost"], price)
    return price, _pico_np(exact, c["usize"]), fbits


_AMOUNT_COLS = ("q", "p", "fst", "inc", "fee", "usize", "off_t", "den_t", "rstep", "min_charge", "max_cost", "action",
                "off_i", "den_i", "istep")


def _increment_costs(c: dict, p, fst, inc, nf, nn):
    """Per group row: the sum of its rounded increment costs (used when ``iround``)."""
    return (nf * ((p * fst + c["off_i"]) // c["den_i"] * c["istep"])
            + nn * ((p * inc + c["off_i"]) // c["den_i"] * c["istep"]))


def _price_start_band(prep: Prepared, legs: dict, exact_ints: bool) -> dict:
    """Price every leg as if the whole call stayed in its start band, in numpy (replacing DuckDB
    projections that cost more than all the rest of the kernel). All legs are first priced as
    single-group legs straight from their columns (no gather; most legs have one group, and
    the results of legs without band rows are ignored); legs with grouped intervals are then
    expanded to one row per group and summed. ``exact_ints``: int64 cannot overflow; otherwise
    Python integers (object arrays: exact but slow, for rare huge amounts). Returns per leg
    units, price, upico, fbits and extent (units to the end of the last billed group), and the
    ``segments`` JSON of the legs ``split`` (billed in several groups)."""
    kind = np.int64 if exact_ints else object
    c = {name: legs[name].astype(kind, copy=False) for name in _AMOUNT_COLS}
    c["iround"] = legs["iround"]
    q, fst, inc = c["q"], c["fst"], c["inc"]
    # group 0 without an upper bound (as _billed_np with s_g = 0, s_next = none, g = 0), in place
    b = np.maximum(q, fst) - fst
    b += inc - 1
    b //= inc
    b *= inc
    b += fst
    none = q <= 0
    if none.any():
        b[none] = 0
    num, units, extent = c["p"] * b, b, b
    icost = None
    if c["iround"].any():
        nf = ((b > 0) & (fst > 0)).astype(b.dtype)
        icost = _increment_costs(c, c["p"], fst, inc, nf, (b - nf * fst) // inc)
    split = np.zeros(0, np.int64)
    segments = pa.array([], pa.string())
    many = np.flatnonzero(legs["ngroups"] > 1)
    if len(many):
        m = _price_groups(prep, {name: col[many] for name, col in c.items()}, legs["vb0"][many],
                          legs["ngroups"][many])
        units, extent = b.copy(), b.copy()
        num[many], units[many], extent[many] = m["num"], m["units"], m["extent"]
        if icost is not None:
            icost[many] = m["icost"]
        split, segments = many[m["nseg"] > 1], m["segments"]
    price, upico, fbits = _priced_np(c, num, icost)
    fbits[split] |= _SPLIT
    return {"units": units.astype(np.int64, copy=False), "price": price.astype(np.int64, copy=False),
            "upico": upico.astype(np.int64, copy=False), "fbits": fbits, "extent": extent.astype(np.int64, copy=False),
            "split": split, "segments": segments}


def _price_groups(prep: Prepared, c: dict, vb0: np.ndarray, ngroups: np.ndarray) -> dict:
    """Legs with grouped intervals (columns ``c``): one row per (leg, group of its start band),
    billed and summed per leg: num, units, extent, icost, nseg (billed groups) and the
    ``segments`` JSON of the legs with nseg > 1, in leg order."""
    a = prep.arr
    starts = np.cumsum(ngroups) - ngroups                     # each leg's first row
    leg = np.repeat(np.arange(len(vb0)), ngroups)             # row -> leg
    row = np.repeat(a["vb_first"][vb0], ngroups) + np.arange(len(leg)) - starts[leg]   # grp row
    rc = {name: c[name][leg] for name in ("q", "usize", "iround", "off_i", "den_i", "istep")}
    p, fst, inc = (a[name][row].astype(c["q"].dtype, copy=False) for name in ("g_price", "g_fst", "g_inc"))
    s_g = a["g_sg"][row]
    b, nf, nn = _billed_np(rc["q"], s_g, a["g_snext"][row], a["g_g"][row], fst, inc)
    amount = p * b
    icost = (np.where(rc["iround"], _increment_costs(rc, p, fst, inc, nf, nn), 0) if c["iround"].any()
             else np.zeros(len(b), b.dtype))
    billed = b > 0
    nseg = np.add.reduceat(billed.astype(np.int64), starts)
    split = np.flatnonzero(billed & (nseg[leg] > 1))
    return {"num": np.add.reduceat(amount, starts), "units": np.add.reduceat(b, starts),
            "extent": np.maximum.reduceat(np.where(billed, s_g + b, -1), starts),
            "icost": np.add.reduceat(icost, starts), "nseg": nseg,
            "segments": _segments_np(prep, row[split], s_g[split], nseg[nseg > 1], (nf + nn)[split].astype(np.int64),
                                     b[split].astype(np.int64),
                                     _pico_np(amount[split], rc["usize"][split]).astype(np.int64))}


def _segments_np(prep: Prepared, row: np.ndarray, group_start: np.ndarray, nseg: np.ndarray,
                 increments: np.ndarray, units: np.ndarray, pico: np.ndarray) -> pa.Array:
    """The ``segments`` JSON of legs billed in several segments, built with Arrow string kernels
    (the same text as DuckDB's ``to_json``): per segment, '[' (a leg's first) or ',', the
    prepared head ``{"band":..,"rate_id":..,"group_start":`` of its rate row ``row``, the
    numbers, and ']' after a leg's last; a leg's segments are consecutive, so its JSON is
    their bytes end to end (offsets at the legs' first segments, no copy)."""
    if len(nseg) == 0:
        return pa.array([], pa.string())
    starts = np.cumsum(nseg) - nseg
    first = np.zeros(len(row), np.int8)
    first[starts] = 1
    last = np.zeros(len(row), np.int8)
    last[starts + nseg - 1] = 1
    parts = pc.binary_join_element_wise(pa.array([",", "["]).take(pa.array(first)), prep.seg_heads.take(pa.array(row)),
                                        pa.array(group_start).cast(pa.string()), ',"increments":',
                                        pa.array(increments).cast(pa.string()), ',"units":',
                                        pa.array(units).cast(pa.string()), ',"amount_pico":',
                                        pa.array(pico).cast(pa.string()), pa.array(["}", "}]"]).take(pa.array(last)), "")
    offsets = np.frombuffer(parts.buffers()[1], np.int32, len(parts) + 1, parts.offset * 4)
    return pa.Array.from_buffers(pa.string(), len(nseg), [None, pa.py_buffer(offsets[np.append(starts, len(row))]),
                                                          parts.buffers()[2]])


def _intervals_at(iv: dict, ck: np.ndarray, at_us: np.ndarray) -> np.ndarray:
    """Per leg: the row of calendar ``ck``'s interval that contains ``at_us`` (the last one
    starting at or before it)."""
    row = np.empty(len(ck), np.int64)
    for key in _distinct(ck):
        legs = np.flatnonzero(ck == key)
        lo, hi = iv["first"][key], iv["first"][key + 1]
        row[legs] = lo + np.searchsorted(iv["start"][lo:hi], at_us[legs], side="right") - 1
    return row


def _segments_of(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal consecutive ``key``: each run's first position, and the run of each position."""
    new = np.ones(len(key), bool)
    new[1:] = key[1:] != key[:-1]
    return np.flatnonzero(new), np.cumsum(new) - 1


def _price_crossing(prep: Prepared, c: dict, lid: np.ndarray, iv: dict, exact_ints: bool) -> dict:
    """Legs ``lid`` whose billed increments cross a band boundary (columns ``c``, intervals ``iv``).

    The band at the answer instant is taken from the exact intervals (the per-minute table can
    miss a boundary inside the minute); legs whose version has no rows for it keep their start
    band price. Each group of that band is billed as usual; its increments form runs (the first
    increment, then the next increments), each run is cut at the interval bounds into pieces,
    and each piece is priced by its band's row for the group (the row with the greatest
    ``group_start <= s_g``, or the ``''`` rows when the band has none). A leg with a piece that
    has no row is ``_NO_BAND`` (``missing_bid``: the smallest such band). Consecutive pieces with
    the same row form a segment; the amount is summed over segments and priced with the leg's
    first row (fee, minimum, maximum). Returns per kept leg (``lid``): state, ridx0, units,
    price, upico, fbits, missing_bid (-1 where null, as the fast path leaves them), the band
    names in call order joined by '+' (``bands``, null for ``_NO_BAND``) and the ``segments``
    JSON (null unless several segments)."""
    a = prep.arr
    kind = np.int64 if exact_ints else object
    vid, q, t0, ck = c["vid"][lid], c["q"][lid], c["t0_us"][lid], c["ck"][lid]
    vb0 = a["eff"][vid, iv["bid"][_intervals_at(iv, ck, t0)]]
    kept = vb0 >= 0
    lid, vid, q, t0, ck, vb0 = lid[kept], vid[kept], q[kept], t0[kept], ck[kept], vb0[kept]
    leg = {name: c[name][lid] for name in ("tscale", "usize", "rstep", "den_t", "off_t", "iround", "istep",
                                           "den_i", "off_i")}

    # one row per (leg, group of its answer band)
    ngroups = a["vb_ngroups"][vb0]
    gleg = np.repeat(np.arange(len(lid)), ngroups)
    grow = np.repeat(a["vb_first"][vb0], ngroups) + np.arange(len(gleg)) - np.repeat(np.cumsum(ngroups) - ngroups,
                                                                                     ngroups)
    s_g, g, fst, inc = a["g_sg"][grow], a["g_g"][grow], a["g_fst"][grow], a["g_inc"][grow]
    b, nf, nn = _billed_np(q[gleg], s_g, a["g_snext"][grow], g, fst, inc)

    # runs (offset o, increment size, count): the first increment, then each group's next increments
    first, more = np.flatnonzero(nf == 1), np.flatnonzero(nn > 0)
    rg = np.concatenate([first, more])                                   # run -> group row
    o = np.concatenate([np.zeros(len(first), np.int64), (s_g + nf * fst)[more]])
    size = np.concatenate([fst[first], inc[more]])
    count = np.concatenate([np.ones(len(first), np.int64), nn[more]])
    rleg = gleg[rg]
    scale = leg["tscale"][rleg]
    t_first = t0[rleg] + o * scale
    j_first = _intervals_at(iv, ck[rleg], t_first)
    j_last = _intervals_at(iv, ck[rleg], t_first + (count - 1) * size * scale)

    # pieces: the increments k_lo .. k_hi - 1 of a run that start inside interval j
    npieces = j_last - j_first + 1
    pr = np.repeat(np.arange(len(rg)), npieces)
    j = np.repeat(j_first, npieces) + np.arange(len(pr)) - np.repeat(np.cumsum(npieces) - npieces, npieces)
    step, since = (size * scale)[pr], iv["start"][j] - t_first[pr]
    k_lo = np.where(since <= 0, 0, (since + step - 1) // np.maximum(step, 1))
    k_hi = np.minimum(count[pr], (iv["stop"][j] - t_first[pr] + step - 1) // np.maximum(step, 1))
    live = k_hi > k_lo
    pr, j, k_lo, n = pr[live], j[live], k_lo[live], (k_hi - k_lo)[live]
    pleg, pg = rleg[pr], rg[pr]                                          # piece -> leg, group row
    psize, ps_g, pbid = size[pr], s_g[pg], iv["bid"][j]
    po = o[pr] + k_lo * psize

    # each piece's rate row: its band's row for the group (or the '' rows)
    vb = a["eff"][vid[pleg], pbid]
    base = a["vb_first"][np.maximum(vb, 0)]
    nrows = np.where(vb >= 0, a["vb_ngroups"][np.maximum(vb, 0)], 0)
    row2 = np.full(len(pleg), -1, np.int64)
    last_row = len(a["g_sg"]) - 1
    for k in range(int(nrows.max()) if len(nrows) else 0):
        candidate = np.minimum(base + k, last_row)
        hit = (k < nrows) & (a["g_sg"][candidate] <= ps_g) & (ps_g < a["g_snext"][candidate])
        row2 = np.where(hit, candidate, row2)
    missing = np.full(len(lid), -1, np.int64)
    holes = np.flatnonzero(row2 < 0)
    if len(holes):
        order = np.lexsort((pbid[holes], pleg[holes]))
        at, _ = _segments_of(pleg[holes][order])
        missing[pleg[holes][order][at]] = pbid[holes][order][at]      # the smallest band of each leg's holes
    ok = missing[pleg] < 0
    order = np.flatnonzero(ok)[np.lexsort((g[pg[ok]], po[ok], pleg[ok]))]
    pleg, row2, n, psize, ps_g = pleg[order], row2[order], n[order], psize[order], ps_g[order]

    # segments: consecutive pieces of a leg with the same rate row
    seg_at, _ = _segments_of(pleg * (last_row + 2) + row2)
    p2 = a["g_price"][row2].astype(kind, copy=False)
    amount = p2 * (n * psize)
    seg_leg, seg_row = pleg[seg_at], row2[seg_at]
    seg_n, seg_units = np.add.reduceat(n, seg_at), np.add.reduceat(n * psize, seg_at)
    seg_num, seg_gs = np.add.reduceat(amount, seg_at), np.minimum.reduceat(ps_g, seg_at)
    icost = None
    if leg["iround"].any():
        il = pleg
        piece_icost = np.where(leg["iround"][il], n * ((p2 * psize + leg["off_i"][il]) // leg["den_i"][il]
                                                       * leg["istep"][il]), 0)
        seg_icost = np.add.reduceat(piece_icost, seg_at)

    # per leg (the legs with a hole have no segment)
    done = np.flatnonzero(missing < 0)
    leg_at, _ = _segments_of(seg_leg)
    nseg = np.diff(np.append(leg_at, len(seg_leg)))
    num = np.add.reduceat(seg_num, leg_at) if len(leg_at) else np.zeros(0, kind)
    if leg["iround"].any():
        icost = np.add.reduceat(seg_icost, leg_at) if len(leg_at) else np.zeros(0, kind)
    head = a["vb_first"][vb0[done]]
    priced = {name: col[done].astype(kind, copy=False) for name, col in leg.items() if name != "iround"}
    priced.update({"iround": leg["iround"][done], "fee": a["g_fee"][head].astype(kind, copy=False),
                   "min_charge": a["g_min"][head].astype(kind, copy=False),
                   "max_cost": a["g_max"][head].astype(kind, copy=False), "action": a["g_action"][head]})
    price, upico, fbits = _priced_np(priced, num, icost)
    fbits = fbits | np.where(nseg > 1, _SPLIT, 0)

    # band names in call order (each band once) and the segments JSON of the split legs
    seg_bid = a["g_bid"][seg_row]
    _, first_of_band = np.unique(seg_leg * (len(prep.band_names) + 1) + seg_bid, return_index=True)
    shown = np.sort(first_of_band)
    counts = np.bincount(np.searchsorted(leg_at, shown, side="right") - 1, minlength=len(leg_at))
    offsets = np.zeros(len(leg_at) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    names = pa.array(prep.band_names, pa.string()).take(pa.array(seg_bid[shown]))
    bands = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), names), "+")
    split = nseg > 1
    in_split = np.repeat(split, nseg)
    segments = _segments_np(prep, seg_row[in_split], seg_gs[in_split], nseg[split], seg_n[in_split].astype(np.int64),
                            seg_units[in_split].astype(np.int64),
                            _pico_np(seg_num[in_split], leg["usize"][seg_leg[in_split]]).astype(np.int64))

    out = {"lid": lid, "state": np.where(missing < 0, _OK, _NO_BAND), "missing_bid": missing,
           "ridx0": np.full(len(lid), -1, np.int64), "units": np.full(len(lid), -1, np.int64),
           "price": np.full(len(lid), -1, np.int64), "upico": np.full(len(lid), -1, np.int64),
           "fbits": np.zeros(len(lid), np.int64)}
    out["ridx0"][done] = a["g_ridx"][head]
    out["units"][done] = np.add.reduceat(seg_units, leg_at).astype(np.int64) if len(leg_at) else 0
    out["price"][done], out["upico"][done], out["fbits"][done] = (price.astype(np.int64), upico.astype(np.int64),
                                                                 fbits.astype(np.int64))
    out["done"], out["bands"] = done, bands
    out["split"], out["segments"] = done[split], segments
    return out


def _price_legs(prep: Prepared, legs: _Legs) -> dict:
    """Price every leg; per-leg numpy results: state, ridx0, units, price, upico, fbits, and the
    band and segments strings as indexes into ``strings`` / ``segments`` (-1 = null). Legs that
    stay in their start band's interval are priced in one pass (:func:`_price_start_band`); the
    few that cross a band boundary are cut into segments (:func:`_price_crossing`)."""
    c = legs.cols
    n = len(c["vid"])
    exact_ints = _int64_exact(prep, c["q"])
    out = {"state": np.full(n, _OK, np.int64), "ridx0": c["ridx0"].copy(),
           "band": c["band0"].copy(), "segment": np.full(n, -1, np.int64), "missing_bid": np.full(n, -1, np.int64)}
    no_band = c["vb0"] < 0
    out["state"][no_band] = _NO_BAND
    out["missing_bid"][no_band] = c["bid0"][no_band]
    r = _price_start_band(prep, c, exact_ints)
    if no_band.any():
        for name in ("units", "price", "upico", "fbits", "extent"):
            r[name] = np.where(no_band, 0, r[name])
    out.update({name: r[name] for name in ("units", "price", "upico", "fbits")})
    extent = r["extent"]
    out["segment"][r["split"]] = np.arange(len(r["split"]))
    strings, segments = [pa.array(prep.band_names, pa.string())], [r["segments"]]
    slow = np.flatnonzero(~no_band & (c["t0_us"] + extent * c["tscale"] > c["iv_end"]))
    if len(slow):
        r = _price_crossing(prep, c, slow, legs.intervals, exact_ints)
        lid = r["lid"]
        for name in ("state", "units", "price", "upico", "fbits", "ridx0", "missing_bid"):
            out[name][lid] = r[name]
        out["segment"][lid] = -1
        out["segment"][lid[r["split"]]] = np.arange(len(r["split"])) + len(segments[0])
        segments.append(r["segments"])
        out["band"][lid] = -1
        out["band"][lid[r["done"]]] = np.arange(len(r["done"])) + len(prep.band_names)
        strings.append(r["bands"])
    out["strings"] = pa.concat_arrays(strings)
    out["segments"] = pa.concat_arrays(segments)
    return out


def _with_default(values: np.ndarray, default: int) -> np.ndarray:
    """``values`` and then ``default``: gathered by an index whose -1 means "none"."""
    return np.append(values, np.array(default, values.dtype))


def _bitmap(valid: np.ndarray) -> pa.Buffer | None:
    """An Arrow validity bitmap of ``valid`` (None when every row is valid)."""
    return None if valid.all() else pa.array(valid).buffers()[1]


def _masked(values: np.ndarray, validity: pa.Buffer | None, kind: pa.DataType = pa.int64()) -> pa.Array:
    """``values`` (numpy, the width of ``kind``) as an Arrow array with a prepared validity bitmap:
    one bitmap serves every column with the same nulls (``pa.array(mask=...)`` packs its own)."""
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(np.ascontiguousarray(values))])


def _strings_at(n: int, rows: np.ndarray, values: pa.Array, fill_null: bool = True) -> pa.Array:
    """An ``n``-row string array holding ``values`` at ``rows`` (ascending positions) and null
    (``fill_null``) or '' elsewhere: only offsets and a bitmap around the values' own buffers,
    for columns that few rows fill."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    out = np.zeros(n + 1, np.int32)
    data = pa.py_buffer(b"")
    if len(values):
        lengths = np.zeros(n, np.int32)
        offsets = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
        lengths[rows] = np.diff(offsets)
        np.cumsum(lengths, out=out[1:])
        data = (values.buffers()[2] or data).slice(int(offsets[0]))
    valid = None
    if fill_null or values.null_count:
        mask = np.ones(n, bool) if not fill_null else np.zeros(n, bool)
        mask[rows] = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else True
        valid = _bitmap(mask)
    return pa.Array.from_buffers(values.type, n, [valid, pa.py_buffer(out), data])


class _Gather:
    """Rows ``index`` (-1: null) of small prepared columns. Arrow's ``take`` with null indices
    costs ~10 ns a row; this gathers with valid indices only (numpy for 64-bit columns, a
    chunked ``take`` for strings, which is faster than an array's) and attaches one validity
    bitmap shared by all the columns. The string index (int32: ~15 % faster takes) is made
    once for all the string columns of one length; an index without nulls is used as it is."""

    def __init__(self, index: np.ndarray):
        self.index = index
        valid = index >= 0
        self.nulls = not valid.all()
        self.at = np.maximum(index, 0) if self.nulls else index
        self.validity = _bitmap(valid) if self.nulls else None
        self.string_at: dict[int, pa.Array] = {}      # string column length -> index of a take

    def __call__(self, array: pa.Array | pa.ChunkedArray) -> pa.Array:
        n = len(self.index)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if len(array) == 0:
            return pa.nulls(n, array.type)
        if array.null_count:
            return array.take(pa.array(self.at, mask=self.index < 0))
        if pa.types.is_string(array.type):      # null rows take an empty string appended at the end
            if len(array) not in self.string_at:
                at = np.where(self.index >= 0, self.index, len(array)) if self.nulls else self.index
                self.string_at[len(array)] = pa.array(at.astype(np.int32, copy=False))
            taken = pa.chunked_array([array, pa.array([""], array.type)]).take(self.string_at[len(array)])
            taken = taken.chunk(0) if taken.num_chunks == 1 else taken.combine_chunks()
            return pa.Array.from_buffers(array.type, n, [self.validity, *taken.buffers()[1:]], offset=taken.offset)
        if array.type.bit_width == 64:
            values = np.frombuffer(array.buffers()[1], np.int64, len(array), array.offset * 8)
            return _masked(values[self.at], self.validity, array.type)
        return array.take(pa.array(self.at, mask=self.index < 0))


def price_batch(con, cdrs: pa.Table, tariffs: Tariffs, rated_at: dt.datetime) -> pa.Table:
    """Rate ``cdrs`` (:data:`~bluerocktel.lake.CDR_SCHEMA`) without bundles: steps 1-8, 10, 11.

    Returns one row per CDR, in input order, with :data:`~bluerocktel.lake.RATED_SCHEMA`
    (``bundle_id``/``bundle_units`` null). Pure per row, so any partition of a batch gives the
    same rows. ``con`` is a DuckDB connection used by one caller at a time; the kernel
    registers and then drops views on it while it prepares ``tariffs`` (once per object).
    """
    if rated_at.tzinfo is None:
        raise ValueError(f"naive datetime {rated_at!r}: rated_at must be UTC-aware")
    if cdrs.num_rows >= _LARGE_BATCH_ROWS:
        _keep_freed_memory()
    prep = prepare(con, tariffs)
    cdrs = _conform(cdrs, CDR_SCHEMA)
    parts = min(os.cpu_count() or 1, cdrs.num_rows // _PART_ROWS)
    if parts <= 1:
        return _price_part(prep, tariffs, cdrs, rated_at)
    return _price_parallel(prep, tariffs, cdrs, rated_at, parts)


_PART_ROWS = 200_000     # smallest part worth a thread of its own
_LARGE_BATCH_ROWS = 100_000   # batches from this size tune the allocators (see _keep_freed_memory)
_MEMORY_TUNED = False


def _keep_freed_memory() -> None:
    """Let freed memory be reused instead of returned to the operating system, once per process.

    A batch allocates and frees hundreds of arrays of a few MB (numpy through glibc's malloc,
    Arrow through its default pool). By default glibc maps the larger ones afresh (``mmap``
    above its threshold, ``munmap`` when freed), trims its heaps, and Arrow's mimalloc purges
    freed pages after 10 ms, so most arrays page-fault their memory in again: measured on 2M
    CDRs, 25-40 % of the kernel's CPU time was system time. This raises glibc's mmap threshold
    to its 32 MB maximum, its trim threshold to 2 GiB and its top pad to 64 MB (a thread's
    heap then stays mapped when it empties), and makes Arrow allocate through the same malloc
    (``system_memory_pool``). Process-wide and harmless for results: only freed memory is kept
    for reuse (peak RSS does not grow). Skipped where the C library has no ``mallopt``."""
    global _MEMORY_TUNED
    if _MEMORY_TUNED:
        return
    _MEMORY_TUNED = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    if mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 2 ** 31 - 1) and mallopt(m_top_pad, 64 << 20):
        pa.set_memory_pool(pa.system_memory_pool())


_WORKERS: tuple[int, int, ThreadPoolExecutor] | None = None   # (pid, count, pool) of the threads that price slices


def _workers(count: int) -> ThreadPoolExecutor:
    """At least ``count`` threads that outlive a batch (made again in a forked child, whose copy
    of the pool has no threads). Long-lived threads keep their malloc arenas: new threads per
    batch land on other arenas and page-fault every array in again (measured: 0.8-1.7 s of
    system time per 2M CDRs)."""
    global _WORKERS
    if _WORKERS is None or _WORKERS[0] != os.getpid() or _WORKERS[1] < count:
        _WORKERS = (os.getpid(), count, ThreadPoolExecutor(count, thread_name_prefix="rating"))
    return _WORKERS[2]


def _price_parallel(prep: Prepared, tariffs: Tariffs, cdrs: pa.Table, rated_at: dt.datetime,
                    parts: int) -> pa.Table:
    """:func:`_price_part` of ``parts`` slices of ``cdrs``: the first in this thread, the others in
    as many worker threads (numpy and Arrow release the GIL, so the slices use every core;
    rating is pure per row, so the concatenated parts are the rows of one call)."""
    size = -(-cdrs.num_rows // parts)
    others = [_workers(parts - 1).submit(_price_part, prep, tariffs, cdrs.slice(i * size, size), rated_at)
              for i in range(1, parts)]
    first = _price_part(prep, tariffs, cdrs.slice(0, size), rated_at)
    return pa.concat_tables([first] + [future.result() for future in others])


def _price_part(prep: Prepared, tariffs: Tariffs, cdrs: pa.Table, rated_at: dt.datetime) -> pa.Table:
    """:func:`price_batch` of conformed ``cdrs``, on one thread."""
    a = prep.arr
    n = cdrs.num_rows

    # per CDR, vectorized: call type code, quantity, billable, answer instant
    ct = _np(pc.index_in(cdrs["call_type"], value_set=pa.array(_CALL_TYPES)))
    billsec = np.maximum(_np(cdrs["billsec_s"].cast(pa.int64())), 0)
    if (ct == 0).all():       # (voice only: the usual batch)
        q = billsec
    else:                     # an unknown call type is billed on whatever quantity it has: unrated, never free
        units = np.maximum(_np(cdrs["units"]), 0)
        q = np.where(ct == 0, billsec, np.where(ct < 0, np.maximum(billsec, units), units))
    outbound = _np(pc.equal(cdrs["direction"], _OUT)).astype(bool)
    billable = outbound & _np(pc.equal(cdrs["disposition"], _ANSWERED)).astype(bool) & (q > 0)
    start_us = _np(cdrs["start_at"].cast(pa.int64()))
    answer_us = cdrs["answer_at"].cast(pa.int64())
    t0 = (np.where(answer_us.is_null().to_numpy(zero_copy_only=False), start_us, _np(answer_us)) if answer_us.null_count
          else _np(answer_us))

    ident, buy_deck = _identify(prep, cdrs, start_us, billable, outbound)
    assigned = ident >= 0
    billable &= assigned
    tzk, plan_deck = _with_default(a["ids_tzk"], 0)[ident], _with_default(a["ids_deck"], -1)[ident]

    # which destination version prices each billable CDR, sell side (plan deck) and buy side
    # (one call per side: a side's legs mostly share one deck, matched without splitting them)
    sell_try, buy_try = np.flatnonzero(billable & (plan_deck >= 0)), np.flatnonzero(billable & (buy_deck >= 0))
    encoded = (_encode_callees(cdrs["callee"], a["max_plen"]) if len(sell_try) or len(buy_try)
               else np.zeros(n, np.int64))
    type_code = np.where(ct >= 0, ct, 3)
    sell_vid, buy_vid = (_match_versions(prep, deck[tried], type_code[tried], encoded[tried], start_us[tried])
                         for deck, tried in ((plan_deck, sell_try), (buy_deck, buy_try)))
    sell_rid, buy_rid = sell_try[sell_vid >= 0], buy_try[buy_vid >= 0]

    # legs: sell legs then buy legs
    rid = np.concatenate([sell_rid, buy_rid])
    legs = _build_legs(prep, tariffs, np.concatenate([sell_vid[sell_vid >= 0], buy_vid[buy_vid >= 0]]), q[rid],
                       t0[rid], tzk[rid])
    res = _price_legs(prep, legs)

    # per CDR, its priced sell / buy leg (the sell legs are the first ``ns`` legs), else -1: each
    # column gathers from its legs' results with the default appended (no masking pass)
    ns = len(sell_rid)
    ok = res["state"] == _OK
    sell_leg = np.full(n, -1, np.int64)
    sell_leg[sell_rid] = np.arange(ns)
    sell_pick, buy_pick = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    sell_pick[sell_rid] = np.where(ok[:ns], np.arange(ns), -1)
    buy_pick[buy_rid] = np.where(ok[ns:], np.arange(len(buy_rid)), -1)

    def sell_col(name, default):
        return _with_default(res[name][:ns], default)[sell_pick]

    def buy_col(name, default):
        return _with_default(res[name][ns:], default)[buy_pick]

    rated, buy_ok = sell_pick >= 0, buy_pick >= 0      # (legs are billable)
    free = assigned & ~billable
    unrated = billable & ~rated
    price = sell_col("price", 0)
    cost = buy_col("price", 0)
    margin_ok = rated & buy_ok
    margin = np.where(margin_ok, price - cost, 0)
    fbits = sell_col("fbits", 0)
    fbits |= np.where(billable & ~buy_ok, _FLAG_BITS[RatingFlag.NO_COST], 0)
    fbits |= np.where(margin_ok & (margin < 0), _FLAG_BITS[RatingFlag.NEGATIVE_MARGIN], 0)
    units = sell_col("units", 0)
    unpriced = ~(rated | free)                            # null price, units and amount
    rate_row = sell_col("ridx0", -1)
    cost_row = buy_col("ridx0", -1)
    split_rows = np.flatnonzero(sell_col("segment", -1) >= 0)
    status = assigned.astype(np.int8) + billable + unrated     # codes into _STATUSES (billable: assigned)
    rates = prep.rates
    by_who, by_rate, by_cost = _Gather(ident), _Gather(rate_row), _Gather(cost_row)
    priced = _bitmap(~unpriced)
    columns = {
        **{name: cdrs[name] for name in CDR_SCHEMA.names},
        "account_id": by_who(prep.ids["account_id"]), "service_id": by_who(prep.ids["service_id"]),
        "rate_deck_id": by_rate(rates["deck_id"]), "rate_id": by_rate(rates["rate_id"]),
        "rate_valid_from": by_rate(rates["valid_from"]), "prefix": by_rate(rates["prefix"]),
        "destination": by_rate(rates["destination"]), "zone": by_rate(rates["zone"]),
        "band": _Gather(sell_col("band", -1))(res["strings"]),
        "segments": _strings_at(n, split_rows, res["segments"].take(pa.array(res["segment"][sell_leg[split_rows]]))),
        "first_increment": by_rate(rates["first_increment"]), "next_increment": by_rate(rates["next_increment"]),
        "billable_s": _masked(np.where(ct == 0, units, 0).astype(np.int32), priced, pa.int32()),
        "billable_units": _masked(units, priced),
        "unrounded_pico": _masked(sell_col("upico", 0), priced),
        "price_micro": _masked(price, priced),
        "bundle_id": pa.nulls(n, pa.int64()), "bundle_units": pa.nulls(n, pa.int64()),
        "bundle_split": pa.nulls(n, pa.string()),
        "cost_deck_id": by_cost(rates["deck_id"]), "cost_rate_id": by_cost(rates["rate_id"]),
        "cost_micro": _masked(cost, by_cost.validity),
        "margin_micro": _masked(margin, _bitmap(margin_ok)),
        "flags": _Gather(fbits)(_FLAG_STRINGS),
        "rating_status": _Gather(status)(_STATUSES),
        "rating_reason": _reasons(cdrs, prep, res, sell_leg, ct, unrated, assigned, plan_deck, ident),
        "tariff_version": pa.repeat(pa.scalar(tariffs.version), n),
        "rated_at": _masked(np.full(n, pa.scalar(rated_at, UTC_TS).value, np.int64), None, UTC_TS),
    }
    return pa.table({name: columns[name] for name in RATED_SCHEMA.names}).cast(RATED_SCHEMA)


_STATUSES = pa.array([RatingStatus.UNASSIGNED.value, RatingStatus.FREE.value, RatingStatus.RATED.value,
                      RatingStatus.UNRATED.value], pa.string())


def _reasons(cdrs: pa.Table, prep: Prepared, res: dict, sell_leg: np.ndarray, ct: np.ndarray, unrated: np.ndarray,
             assigned: np.ndarray, plan_deck: np.ndarray, who: np.ndarray) -> pa.Array:
    """``rating_reason``: '' when rated or free; why for unassigned and unrated CDRs (Arrow
    string functions over those rows only)."""
    n = cdrs.num_rows
    texts: list[pa.Array] = [pa.array([""], pa.string())]     # texts[0][0] = '' for the rated and the free
    index = np.zeros(n, np.int64)
    rows = np.flatnonzero(~assigned)
    if len(rows):
        sel = cdrs.select(["caller", "callee", "account_code", "channel", "direction"]).take(pa.array(rows))
        inbound = pc.equal(sel["direction"], _IN)
        who_text = pc.if_else(inbound, pc.binary_join_element_wise("callee ", pc.fill_null(sel["callee"], ""), ""),
                              pc.binary_join_element_wise("caller ", pc.fill_null(sel["caller"], ""), ""))
        code = pc.fill_null(sel["account_code"], "")
        code = pc.if_else(pc.equal(code, ""), "(none)", code)
        index[rows] = np.arange(len(rows)) + 1
        texts.append(pc.binary_join_element_wise(
            "no service identifier matches ", who_text, " / account code ", code, " / channel ",
            pc.fill_null(sel["channel"], ""), ""))
    rows = np.flatnonzero(unrated)
    if len(rows):
        at = pa.array(rows)
        callee = pc.fill_null(cdrs["callee"].take(at), "")
        number = pc.if_else(pc.starts_with(callee, "+"),
                            pc.replace_substring_regex(callee, r"^(\+[0-9]*).*$", r"\1"), callee)
        kind = pa.array(_CALL_TYPES + ["unknown call type"]).take(pa.array(np.where(ct[rows] >= 0, ct[rows], 3)))
        chain = prep.decks["chain_text"].take(pc.index_in(pa.array(plan_deck[rows]), prep.decks["deck_id"]))
        service = _Gather(who[rows])(prep.ids["service_id"]).cast(pa.string())
        legs = sell_leg[rows]
        bid = np.where(legs >= 0, res["missing_bid"][np.maximum(legs, 0)] if len(res["missing_bid"]) else -1, -1)
        band = _Gather(bid)(pa.array(prep.band_names, pa.string()))
        shown = pc.if_else(pc.equal(band, ""), "(all-time)", band)
        texts.append(pc.if_else(
            pa.array(plan_deck[rows] < 0),
            pc.binary_join_element_wise("service ", pc.fill_null(service, "?"), " has no rate deck", ""),
            pc.if_else(pa.array(legs < 0),
                       pc.binary_join_element_wise("no rate for ", number, " (", kind, ") in ",
                                                   pc.fill_null(chain, "?"), ""),
                       pc.binary_join_element_wise("no rate for band ", pc.fill_null(shown, "?"), ": the rate for ",
                                                   number, " (", kind, ") has no '", pc.fill_null(band, "?"),
                                                   "' row and no all-time row", ""))))
        index[rows] = np.arange(len(rows)) + sum(len(t) for t in texts[:-1])
    texts = [t.combine_chunks() if isinstance(t, pa.ChunkedArray) else t for t in texts]
    rows = np.flatnonzero(index)
    return _strings_at(n, rows, pa.concat_arrays(texts).take(pa.array(index[rows])), fill_null=False)


def rate_batch(con, cdrs: pa.Table, tariffs: Tariffs, rated_at: dt.datetime, bundle_used: pa.Table | None = None
               ) -> pa.Table:
    """Rate ``cdrs``: :func:`price_batch`, then the service bundles
    (:func:`bluerocktel.rating.bundles.apply_bundles`, which recomputes margin and flags of the
    rows it changes). ``bundle_used``: units of each service bundle consumed in each month by
    earlier ratings (:data:`~bluerocktel.rating.bundles.BUNDLE_USED_SCHEMA`). The bundles rewrite
    the slices that :func:`price_batch` priced per core in the same threads."""
    priced = price_batch(con, cdrs, tariffs, rated_at)
    pool = _workers(1) if priced["rating_status"].num_chunks > 1 else None     # (one chunk per slice)
    return apply_bundles(con, priced, tariffs, bundle_used, pool)
