"""The rating kernel: set-based queries from (CDR batch, tariff tables) to rated CDRs.

:func:`price_batch` and :func:`rate_batch` are pure functions of their Arrow inputs (DESIGN.md
§2), so the same kernel rates a month on one machine or a partition on a Dask worker. There is
no per-CDR Python: the small tariff tables are prepared once per :class:`Tariffs` object
(:func:`prepare`); then Arrow hash lookups find the identifiers and carrier trunks, numpy
gathers and binary searches over the prepared arrays pick rates and bands for all CDRs at
once, numpy prices them in integer arithmetic (int64 when the batch's amounts cannot
overflow it, else Python integers; only calls crossing a band boundary go through a DuckDB
query that cuts them into segments), and gathers by row index attach the picked rows'
columns as per-call traces. A large batch is cut into one slice per core, priced in threads
(numpy, Arrow and DuckDB release the GIL; measured: Python holds it ~4% of the time).

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

# names of the views the kernel registers on the caller's connection
_V = {name: f"_rating_{name}" for name in (
    "grp", "effband", "intervals", "slow")}


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
    seg_heads: pa.Array | None = None   # grp row -> '{"band":..,"rate_id":..,"group_start":..,"increments":'


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
    _identification(prepared)
    prepared.seg_heads = _sql_table(con, """
        SELECT left(to_json(struct_pack(band := band, rate_id := rate_id, group_start := s_g)), -1)
               || ',"increments":' AS head
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
# each CDR's elementary interval with one vectorized binary search, then takes the first
# version of the list in force at the call start (a few vectorized passes). This replaces the
# candidate-prefix equi-join of DESIGN.md §2 (same result; measured in benchmarks/rating.py:
# the join and its per-CDR aggregation cost more than all the rest of the kernel).

_SPACE = 11 ** MAX_PREFIX_DIGITS


def _encode_prefix(prefix: str) -> int:
    return sum((int(d) + 1) * 11 ** (MAX_PREFIX_DIGITS - 1 - i) for i, d in enumerate(prefix))


def _encode_callees(callee: pa.ChunkedArray | pa.Array, digits: int) -> np.ndarray:
    """E of each callee's first ``digits`` E.164 digits (the digits after '+', up to the first
    non-digit); 0 (= no digit: only the prefix '' matches) for a callee without '+' or null.
    When no prefix has more than ``digits`` digits, every interval bound is a multiple of
    11**(18 - digits), so the digits after them cannot change the interval a number falls in.
    Read straight from the Arrow string buffers, one digit position at a time."""
    if isinstance(callee, pa.ChunkedArray):
        callee = callee.combine_chunks()
    n = len(callee)
    offsets = np.frombuffer(callee.buffers()[1], np.int32, n + 1, callee.offset * 4)
    data = callee.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    data = np.concatenate([data, np.zeros(digits + 1, np.uint8)])     # room to read past the last string
    position = offsets[:-1].astype(np.int64)
    length = offsets[1:] - offsets[:-1]
    if callee.null_count:
        length = np.where(callee.is_valid().to_numpy(zero_copy_only=False), length, 0)
    run = (length > 0) & (data[position] == ord("+"))
    encoded = np.zeros(n, np.int64)
    for j in range(1, digits + 1):
        position += 1
        digit = data[position] - np.uint8(ord("0"))              # wraps above 9 for non-digits
        run &= (digit < 10) & (length > j)
        encoded *= 11
        encoded += (digit + np.uint8(1)) * run
    return encoded * 11 ** (MAX_PREFIX_DIGITS - digits)


@dataclass
class _PrefixIndex:
    """Elementary intervals of one (root deck, call type): ``lo`` sorted; interval i's versions
    in preference order are ``flat[off[i]:off[i] + count[i]]``."""

    lo: np.ndarray
    off: np.ndarray
    count: np.ndarray
    flat: np.ndarray


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
    index = _PrefixIndex(np.array(lows, np.int64), np.array(offs, np.int64), np.array(counts, np.int64),
                         np.array(flat, np.int64))
    prep.indexes[(root, ct)] = index
    return index


def _match_versions(prep: Prepared, roots: np.ndarray, ct: np.ndarray, encoded: np.ndarray,
                    start_us: np.ndarray) -> np.ndarray:
    """The preferred destination version (vid) of each leg in force at its start, or -1.

    The first version of an interval's list wins at once when it is in force over the whole
    time span of the batch (most are: only prefixes with several versions need a look at the
    call start); the other legs try the list in order, one vectorized pass per position."""
    a = prep.arr
    vid = np.full(len(roots), -1, np.int64)
    keys = roots * 4 + ct
    distinct = _distinct(keys)
    for key in distinct:
        legs = np.flatnonzero(keys == key) if len(distinct) > 1 else np.arange(len(keys))
        index = _prefix_index(prep, int(key // 4), int(key % 4))
        if len(index.flat) == 0:
            continue
        at = np.searchsorted(index.lo, encoded[legs], side="right") - 1
        start = start_us[legs]
        first = np.where(index.count > 0, index.flat[np.minimum(index.off, len(index.flat) - 1)], -1)
        sure = (index.count == 0) | ((a["v_vf"][first] <= start.min()) & (start.max() < a["v_vt"][first]))
        found = np.where(sure[at], first[at], -1)
        unsure = np.flatnonzero(~sure[at])
        off, count, start = index.off[at[unsure]], index.count[at[unsure]], start[unsure]
        for k in range(int(count.max()) if len(count) else 0):
            open_ = np.flatnonzero((found[unsure] < 0) & (k < count))
            if len(open_) == 0:
                break
            candidate = index.flat[off[open_] + k]
            ok = (a["v_vf"][candidate] <= start[open_]) & (start[open_] < a["v_vt"][candidate])
            found[unsure[open_[ok]]] = candidate[ok]
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


def _look_up(lookup: _Lookup, keys: pa.Array, start_us: np.ndarray, where: np.ndarray | None) -> np.ndarray:
    """Per row: the payload of the lookup row whose key equals ``keys`` (where ``where``) and
    that is valid at ``start_us``, else -1. A hash lookup (Arrow ``index_in``) per batch, then
    one vectorized validity check per row of the longest history."""
    found = np.full(len(keys), -1, np.int64)
    if len(lookup.values) == 0:
        return found
    u = _np(pc.index_in(keys, value_set=lookup.values))
    if where is not None:
        u = np.where(where, u, -1)
    hit = np.flatnonzero(u >= 0)
    row, count, start = lookup.first[u[hit]], lookup.count[u[hit]], start_us[hit]
    for k in range(int(count.max()) if len(count) else 0):
        r = np.minimum(row + k, len(lookup.vf) - 1)
        ok = (k < count) & (lookup.vf[r] <= start) & (start < lookup.vt[r])
        found[hit[ok]] = lookup.payload[r[ok]]
    return found


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


def _identify(prep: Prepared, cdrs: pa.Table, start_us: np.ndarray, billable: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1, per CDR: the pick of the identifier that says who pays (-1: none) and, for
    billable CDRs, the buy deck of the longest carrier trunk prefix of ``dst_channel`` (-1).
    Hash lookups in Arrow (a DuckDB join per kind cost twice as much)."""
    ident = np.full(cdrs.num_rows, -1, np.int64)
    direction = cdrs["direction"]
    for column, wanted, length, lookup in prep.who:
        if len(lookup.values) == 0:
            continue
        keys = cdrs[column] if length is None else pc.utf8_slice_codeunits(cdrs[column], 0, length)
        where = _np(pc.equal(direction, wanted)).astype(bool) if wanted else None
        ident = np.where(ident >= 0, ident, _look_up(lookup, keys, start_us, where))
    buy_deck = np.full(cdrs.num_rows, -1, np.int64)
    for length, lookup in prep.carriers:
        keys = pc.utf8_slice_codeunits(cdrs["dst_channel"], 0, length)
        buy_deck = np.where(buy_deck >= 0, buy_deck, _look_up(lookup, keys, start_us, billable))
    return ident, buy_deck


# ---------------------------------------------------------------------------------------------
# Stage 2: price the legs (sell side 0, buy side 1) of every priced CDR
# ---------------------------------------------------------------------------------------------

# Per leg, Python computes the rounding constants (see :func:`_legs`): a non-negative ``x / den``
# rounded to an integer is ``(x + off) // den`` with off = 0 (down), den - 1 (up) or den // 2
# (half up: exact for odd and even den). ``den_t``/``off_t`` round the total to the deck's
# decimals (x in micro × unit_size, or in micro when increments are rounded: ``iround``);
# ``den_i``/``off_i`` round the cost of one increment (x in micro × unit_size) to micro
# multiples of ``istep``. ``{num}`` is BIGINT when the batch's largest amounts fit, else HUGEINT.
def _inc_cost(price: str, size: str) -> str:
    """SQL (micro): the rounded cost of one increment of ``size`` units at ``price``."""
    return f"((CAST({price} AS {{num}}) * {size} + off_i) // den_i * istep)"


_UNITS_SQL = "least(greatest(q, s_g), coalesce(s_next, greatest(q, s_g))) - s_g AS uu"   # clamp(q, s_g, s_next) - s_g
_BILLED_SQL = """CASE WHEN uu = 0 THEN 0 WHEN g > 0 THEN (uu + inc - 1) // inc * inc
                      WHEN uu <= fst THEN fst ELSE fst + (uu - fst + inc - 1) // inc * inc END AS b"""
_FIRST_SQL = "CASE WHEN g = 0 AND b > 0 AND fst > 0 THEN 1 ELSE 0 END AS nf"   # the first increment: 0 or 1


def _billed(source: str) -> str:
    """SQL: ``source`` rows (one per group) with billed units ``b``, first-increment count ``nf``
    and next-increment count ``nn``."""
    return (f"SELECT *, (b - nf * fst) // inc AS nn FROM (SELECT *, {_FIRST_SQL} FROM "
            f"(SELECT *, {_BILLED_SQL} FROM (SELECT *, {_UNITS_SQL} FROM {source})))")


def _pico(exact: str, usize: str) -> str:
    """SQL: ``exact`` (micro × usize) in pico units, half up, without overflowing BIGINT."""
    return (f"CAST(({exact}) // {usize} * 1000000 + (2 * (({exact}) % {usize}) * 1000000 + {usize}) // (2 * {usize})"
            f" AS BIGINT)")


def _priced(source: str, num: str, icost: str) -> str:
    """SQL: ``source`` (one row per leg, with its first row's fee, min and max) with ``price``
    (rounded, min charge and max cost applied), ``upico`` and flag bits ``fbits``; ``num`` is
    the exact sum of price × units, ``icost`` the sum of rounded increment costs."""
    capped, exceeded = _FLAG_BITS[RatingFlag.MAX_COST_CAPPED], _FLAG_BITS[RatingFlag.MAX_COST_EXCEEDED]
    return f"""
    SELECT *, CASE WHEN max_cost >= 0 AND price_m > max_cost AND action = 1 THEN max_cost ELSE price_m END AS price,
           fbits_m | CASE WHEN max_cost >= 0 AND price_m > max_cost THEN
                          CASE action WHEN 1 THEN {capped} WHEN 2 THEN {exceeded} ELSE 0 END
                     ELSE 0 END AS fbits
    FROM (SELECT *, CASE WHEN price_r > 0 AND price_r < min_charge THEN min_charge ELSE price_r END AS price_m,
                 CASE WHEN price_r > 0 AND price_r < min_charge THEN {_FLAG_BITS[RatingFlag.MIN_CHARGE]} ELSE 0 END AS fbits_m
          FROM (SELECT *, CAST(((CASE WHEN iround THEN fee + {icost} ELSE exact END) + off_t) // den_t * rstep AS BIGINT) AS price_r,
                       {_pico("exact", "usize")} AS upico
                FROM (SELECT *, CAST(fee AS {{num}}) * usize + {num} AS exact FROM {source})))"""


def _segments_json(band: str, rate_id: str, gs: str, n: str, units: str, pico: str, order: str) -> str:
    """SQL aggregate: the ``segments`` trace, a JSON array of the group's segments by ``order``
    (an unordered list sorted afterwards: much cheaper than an ordered aggregate)."""
    fields = ("band", "rate_id", "group_start", "increments", "units", "amount_pico")
    packed = ", ".join(f"{f} := {v}" for f, v in zip(fields, (band, rate_id, gs, n, units, pico)))
    unpacked = ", ".join(f"{f} := seg_.{f}" for f in fields)
    return (f"to_json(list_transform(list_sort(list(struct_pack(seq := {order}, {packed}))), "
            f"lambda seg_: struct_pack({unpacked})))")


_OK, _NO_BAND, _SLOW = 0, 1, 2
_SPLIT = _FLAG_BITS[RatingFlag.BAND_SPLIT]

_SLOW_GROUPS = f"(SELECT sl.*, g.g, g.s_g, g.s_next, g.fst, g.inc FROM sl JOIN {_V['grp']} g ON g.vbid = sl.vb0)"
_SLOW_TOTALS_SOURCE = f"""(SELECT sl.*, g.ridx AS ridx0, g.fee, coalesce(g.min_charge, 0) AS min_charge,
                                  coalesce(g.max_cost, -1) AS max_cost, g.action,
                                  l.units, l.num, l.icost, l.nseg, l.seg, b.bands
                           FROM sl JOIN {_V["grp"]} g ON g.vbid = sl.vb0 AND g.g = 0
                           JOIN leg_sum l USING (lid) JOIN leg_bands b USING (lid) ANTI JOIN missing m USING (lid))"""

# Legs crossing a band boundary: each run of equal increments is cut at the exact interval
# bounds; each piece is priced by its band's row for the group; consecutive pieces of one row merge.
_SLOW_SQL = f"""
WITH
sl AS (
    SELECT l.*, e.vbid AS vb0 FROM (
        SELECT l.*, i.bid AS bid0 FROM {_V["slow"]} l
        ASOF JOIN {_V["intervals"]} i ON i.ck = l.ck AND l.t0_us >= i.start_us) l
    JOIN {_V["effband"]} e ON e.vid = l.vid AND e.bid = l.bid0
),
gr AS ({_billed(_SLOW_GROUPS)}),
runs AS (   -- (offset o, increment size, count) of the first increment and of each group's next increments
    SELECT lid, vid, ck, t0_us, tscale, usize, iround, off_i, den_i, istep, g, s_g, 0 AS o, fst AS size, 1 AS cnt
    FROM gr WHERE nf = 1
    UNION ALL
    SELECT lid, vid, ck, t0_us, tscale, usize, iround, off_i, den_i, istep, g, s_g, s_g + nf * fst, inc, nn
    FROM gr WHERE nn > 0
),
pieces AS (   -- increments k_lo .. k_hi - 1 of a run start inside interval i
    SELECT r.*, i.bid,
           CASE WHEN i.start_us <= r.t0_us + r.o * r.tscale THEN 0
                ELSE (i.start_us - r.t0_us - r.o * r.tscale + r.size * r.tscale - 1) // (r.size * r.tscale) END AS k_lo,
           least(r.cnt, (i.end_us - r.t0_us - r.o * r.tscale + r.size * r.tscale - 1) // (r.size * r.tscale)) AS k_hi
    FROM runs r JOIN {_V["intervals"]} i
      ON i.ck = r.ck AND i.end_us > r.t0_us + r.o * r.tscale
     AND i.start_us <= r.t0_us + (r.o + (r.cnt - 1) * r.size) * r.tscale
),
priced AS (
    SELECT p.*, p.k_hi - p.k_lo AS n, p.o + p.k_lo * p.size AS po, g2.ridx, g2.price AS p2, g2.band, g2.rate_id
    FROM pieces p LEFT JOIN {_V["effband"]} e ON e.vid = p.vid AND e.bid = p.bid
    LEFT JOIN {_V["grp"]} g2 ON g2.vbid = e.vbid AND g2.s_g <= p.s_g AND (g2.s_next IS NULL OR p.s_g < g2.s_next)
    WHERE p.k_hi > p.k_lo
),
missing AS (SELECT lid, min(bid) AS missing_bid FROM priced WHERE ridx IS NULL GROUP BY lid),
seq AS (
    SELECT *, sum(CASE WHEN ridx IS DISTINCT FROM prev THEN 1 ELSE 0 END) OVER w2 AS seg_no
    FROM (SELECT *, lag(ridx) OVER w AS prev FROM priced WHERE ridx IS NOT NULL
          WINDOW w AS (PARTITION BY lid ORDER BY po, g))
    WINDOW w2 AS (PARTITION BY lid ORDER BY po, g ROWS UNBOUNDED PRECEDING)
),
segs AS (
    SELECT lid, seg_no, any_value(band) AS band, any_value(rate_id) AS rate_id, min(s_g) AS gs, any_value(usize) AS usize,
           sum(n) AS n, sum(n * size) AS units, sum(CAST(p2 AS {{num}}) * n * size) AS num,
           sum(CASE WHEN iround THEN n * {_inc_cost('p2', 'size')} ELSE 0 END) AS icost
    FROM seq GROUP BY lid, seg_no
),
band_order AS (SELECT lid, band, min(seg_no) AS first_seg FROM segs GROUP BY lid, band),
leg_sum AS (
    SELECT s.lid, sum(s.units) AS units, sum(s.num) AS num, sum(s.icost) AS icost, count(*) AS nseg,
           {_segments_json("s.band", "s.rate_id", "s.gs", "s.n", "s.units", _pico("s.num", "s.usize"), "s.seg_no")} AS seg
    FROM segs s GROUP BY s.lid
),
leg_bands AS (SELECT lid, string_agg(band, '+' ORDER BY first_seg) AS bands FROM band_order GROUP BY lid),
totals AS ({_priced(_SLOW_TOTALS_SOURCE, "num", "icost")})
SELECT lid, {_OK} AS state, ridx0, units, price, upico, fbits | CASE WHEN nseg > 1 THEN {_SPLIT} ELSE 0 END AS fbits,
       bands, CASE WHEN nseg > 1 THEN seg END AS segments, CAST(NULL AS BIGINT) AS missing_bid
FROM totals
UNION ALL
SELECT lid, {_NO_BAND}, NULL, NULL, NULL, NULL, 0, NULL, NULL, missing_bid FROM missing
"""


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

def _run(con, sql: str, views: dict[str, pa.Table], num: str = "BIGINT") -> pa.Table:
    """Run one of the kernel's queries with ``views`` registered; ``num``: the amounts' SQL type."""
    for name, table in views.items():
        con.register(_V[name], table)
    try:
        return con.sql(sql.replace("{num}", num)).to_arrow_table()
    finally:
        for name in views:
            con.unregister(_V[name])


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


@dataclass
class _Legs:
    """The priced legs of a batch (sell legs, then buy legs), as numpy columns; row = lid."""

    cols: dict                  # name -> np.ndarray
    intervals: pa.Table         # exact band intervals (ck, start_us, end_us, bid)

    def table(self, mask: np.ndarray | None, names: tuple[str, ...]) -> pa.Table:
        """Columns ``names`` of the legs selected by ``mask`` (None: all legs, without a copy)."""
        if mask is None:
            return pa.table({name: self.cols[name] for name in names})
        return pa.table({name: self.cols[name][mask] for name in names})


def _build_legs(prep: Prepared, tariffs: Tariffs, rid: np.ndarray, side: np.ndarray, vid: np.ndarray,
                q: np.ndarray, t0: np.ndarray, tzk: np.ndarray) -> _Legs:
    """Everything pricing needs per leg, gathered from the prepared arrays; the band at the answer
    instant from a per-minute table of the band calendar."""
    a = prep.arr
    cols = {"lid": np.arange(len(rid), dtype=np.int64), "rid": rid, "side": side, "vid": vid, "q": q, "t0_us": t0,
            **{name: a["v_" + name][vid] for name in _VERSION_CONSTANTS}}
    # calendar key: one per (deck, zone) pair whose version has band rows
    cal = a["v_cal"][vid]
    n_zones = len(prep.zones)
    pair = np.where(cal, a["v_deck"][vid] * n_zones + tzk, -1)
    pairs = _distinct(pair[cal])
    ck = np.where(cal, np.searchsorted(pairs, pair), -1)
    bid0 = np.zeros(len(rid), np.int64)
    iv_end = np.full(len(rid), _NO_END_US, np.int64)
    intervals = pa.table({"ck": pa.array([], pa.int64()), "start_us": pa.array([], pa.int64()),
                          "end_us": pa.array([], pa.int64()), "bid": pa.array([], pa.int64())})
    if len(pairs):
        day_us, minute_us = 86_400_000_000, 60_000_000
        t0c = t0[cal]
        days = _distinct(t0c // day_us)
        longest = int(((q[cal] + a["slack"]) * cols["tscale"][cal]).max())
        ranges = [(int(d) * day_us, int(d + 1) * day_us + longest + 1) for d in days]
        key_pairs = {i: (int(p // n_zones), prep.zones[int(p % n_zones)]) for i, p in enumerate(pairs)}
        found = band_intervals(tariffs.bands.cast(BAND_SCHEMA), prep.calendars, key_pairs, ranges)
        bid_of = {name: i for i, name in enumerate(prep.band_names)}
        iv_ck, iv_start, iv_stop = _np(found["key"]), _np(found["start_us"]), _np(found["end_us"])
        iv_bid = np.array([bid_of[name] for name in found["band"].to_pylist()], np.int64)
        intervals = pa.table({"ck": iv_ck, "start_us": iv_start, "end_us": iv_stop, "bid": iv_bid})
        # per (ck, day, minute of day): the interval containing the minute's start
        minute_starts = (days[:, None] * day_us + np.arange(1440)[None, :] * minute_us).ravel()
        per_key = []
        for key in range(len(pairs)):
            rows = np.flatnonzero(iv_ck == key)      # sorted by start within a key
            at = rows[np.searchsorted(iv_start[rows], minute_starts, side="right") - 1]
            per_key.append(at)
        minute_interval = np.stack(per_key)          # (ck, day × 1440)
        slot = np.searchsorted(days, t0c // day_us) * 1440 + (t0c % day_us) // minute_us
        at = minute_interval[ck[cal], slot]
        bid0[cal] = iv_bid[at]
        # a boundary inside the answer minute (zones with odd offsets) sends the leg to the exact path
        iv_end[cal] = np.where(t0c < iv_stop[at], iv_stop[at], t0c)
    vb0 = np.where(cal, a["eff"][vid, bid0], a["v_default_vb"][vid])
    first = np.where(vb0 >= 0, a["vb_first"][np.maximum(vb0, 0)], -1)
    ngroups = np.where(vb0 >= 0, a["vb_ngroups"][np.maximum(vb0, 0)], 0)
    fi = np.maximum(first, 0)
    cols.update({"ck": ck, "bid0": bid0, "iv_end": iv_end, "vb0": vb0, "ngroups": ngroups, "ridx0": a["g_ridx"][fi],
                 "band0": a["g_bid"][fi], "p": a["g_price"][fi], "fst": a["g_fst"][fi], "inc": a["g_inc"][fi],
                 "fee": a["g_fee"][fi], "min_charge": a["g_min"][fi], "max_cost": a["g_max"][fi],
                 "action": a["g_action"][fi]})
    return _Legs(cols, intervals)


_SLOW_COLS = ("lid", "vid", "ck", "q", "t0_us", "tscale", "usize", "rstep", "den_t", "off_t", "iround", "istep",
              "den_i", "off_i")


def _amount_bound(prep: Prepared, q: np.ndarray) -> int:
    """An upper bound of the batch's amounts in micro × unit_size (``q``: the legs' quantities)."""
    a = prep.arr
    most = int(q.max()) + a["slack"] if len(q) else 0
    return a["max_price"] * most * 4 + a["max_fee"] * a["max_usize"] + a["max_price"] * a["max_usize"]


def _num_type(prep: Prepared, q: np.ndarray) -> str:
    """BIGINT when no amount of the batch can reach 2**62 (micro × unit_size), else HUGEINT."""
    return "BIGINT" if _amount_bound(prep, q) < 2 ** 62 else "HUGEINT"


def _int64_exact(prep: Prepared, q: np.ndarray) -> bool:
    """Whether int64 holds every amount of the batch, pico amounts (micro × 10**6) included."""
    a = prep.arr
    return (_amount_bound(prep, q) // a["min_usize"] + 2 * a["max_usize"] + 1) * 1_000_000 < 2 ** 62


def _billed_np(q, s_g, s_next, g, fst, inc):
    """Per group row (numpy, as the SQL of :func:`_billed`): billed units ``b``, first-increment
    count ``nf`` (0 or 1) and next-increment count ``nn``."""
    uu = np.minimum(np.maximum(q, s_g), s_next) - s_g
    b = np.where(uu == 0, 0, np.where(g > 0, (uu + inc - 1) // inc * inc,
                                      np.where(uu <= fst, fst, fst + (uu - fst + inc - 1) // inc * inc)))
    nf = ((g == 0) & (b > 0) & (fst > 0)).astype(b.dtype)
    return b, nf, (b - nf * fst) // inc


def _pico_np(exact, usize):
    """``exact`` (micro × usize) in pico units, half up (as :func:`_pico`)."""
    return exact // usize * 1_000_000 + (2 * (exact % usize) * 1_000_000 + usize) // (2 * usize)


def _priced_np(c: dict, num, icost):
    """Per leg (numpy, as the SQL of :func:`_priced`): price (rounded, minimum charge and maximum
    cost applied), unrounded pico amount and flag bits, from the leg's first-row columns ``c``,
    the exact sum ``num`` of price × units and the sum ``icost`` of rounded increment costs."""
    exact = c["fee"] * c["usize"] + num
    price = (np.where(c["iround"], c["fee"] + icost, exact) + c["off_t"]) // c["den_t"] * c["rstep"]
    minimum = (price > 0) & (price < c["min_charge"])
    price = np.where(minimum, c["min_charge"], price)
    over = (c["max_cost"] >= 0) & (price > c["max_cost"])
    action = c["action"]
    fbits = (np.where(minimum, _FLAG_BITS[RatingFlag.MIN_CHARGE], 0)
             | np.where(over & (action == 1), _FLAG_BITS[RatingFlag.MAX_COST_CAPPED], 0)
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
    b, nf, nn = _billed_np(c["q"], 0, _NO_NEXT, 0, c["fst"], c["inc"])
    num, units, extent = c["p"] * b, b, b.copy()
    icost = (_increment_costs(c, c["p"], c["fst"], c["inc"], nf, nn) if c["iround"].any()
             else np.zeros(len(b), kind))
    nseg = np.ones(len(b), np.int64)
    segments = pa.array([], pa.string())
    many = np.flatnonzero(legs["ngroups"] > 1)
    if len(many):
        m = _price_groups(prep, {name: col[many] for name, col in c.items()}, legs["vb0"][many],
                          legs["ngroups"][many])
        num[many], units[many], extent[many], icost[many], nseg[many] = (m["num"], m["units"], m["extent"],
                                                                         m["icost"], m["nseg"])
        segments = m["segments"]
    price, upico, fbits = _priced_np(c, num, icost)
    return {"units": units.astype(np.int64), "price": price.astype(np.int64), "upico": upico.astype(np.int64),
            "fbits": fbits.astype(np.int64) | np.where(nseg > 1, _SPLIT, 0), "extent": extent.astype(np.int64),
            "split": np.flatnonzero(nseg > 1), "segments": segments}


def _price_groups(prep: Prepared, c: dict, vb0: np.ndarray, ngroups: np.ndarray) -> dict:
    """Legs with grouped intervals (columns ``c``): one row per (leg, group of its start band),
    billed and summed per leg: num, units, extent, icost, nseg (billed groups) and the
    ``segments`` JSON of the legs with nseg > 1, in leg order."""
    a = prep.arr
    starts = np.cumsum(ngroups) - ngroups                     # each leg's first row
    leg = np.repeat(np.arange(len(vb0)), ngroups)             # row -> leg
    row = np.repeat(a["vb_first"][vb0], ngroups) + np.arange(len(leg)) - starts[leg]   # grp row
    rc = {name: col[leg] for name, col in c.items()}
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
            "segments": _segments_np(prep, row[split], nseg[nseg > 1], (nf + nn)[split].astype(np.int64),
                                     b[split].astype(np.int64),
                                     _pico_np(amount[split], rc["usize"][split]).astype(np.int64))}


def _segments_np(prep: Prepared, row: np.ndarray, nseg: np.ndarray, increments: np.ndarray, units: np.ndarray,
                 pico: np.ndarray) -> pa.Array:
    """The ``segments`` JSON of legs billed in several groups, built with Arrow string kernels
    (the same text as DuckDB's ``to_json``): per billed group row, its prepared head
    ``{"band":..,"rate_id":..,"group_start":..,"increments":`` then the counts; per leg, the
    ``nseg`` consecutive rows joined into one array."""
    if len(nseg) == 0:
        return pa.array([], pa.string())
    parts = pc.binary_join_element_wise(prep.seg_heads.take(pa.array(row)), pa.array(increments).cast(pa.string()),
                                        ',"units":', pa.array(units).cast(pa.string()), ',"amount_pico":',
                                        pa.array(pico).cast(pa.string()), "}", "")
    offsets = np.zeros(len(nseg) + 1, np.int32)
    np.cumsum(nseg, out=offsets[1:])
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), parts), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def _price_legs(con, prep: Prepared, legs: _Legs, num: str) -> dict:
    """Price every leg; per-leg numpy results: state, ridx0, units, price, upico, fbits, and the
    band and segments strings as indexes into ``strings`` / ``segments`` (-1 = null). Legs that
    stay in their start band's interval are priced in numpy (:func:`_price_start_band`); the
    few that cross a band boundary are cut into segments in DuckDB (``_SLOW_SQL``)."""
    c = legs.cols
    n = len(c["lid"])
    out = {"state": np.full(n, _OK, np.int64), "units": np.zeros(n, np.int64), "price": np.zeros(n, np.int64),
           "upico": np.zeros(n, np.int64), "fbits": np.zeros(n, np.int64), "ridx0": c["ridx0"].copy(),
           "band": c["band0"].copy(), "segment": np.full(n, -1, np.int64), "missing_bid": np.full(n, -1, np.int64)}
    strings = list(prep.band_names)
    no_band = c["vb0"] < 0
    out["state"][no_band] = _NO_BAND
    out["missing_bid"][no_band] = c["bid0"][no_band]
    r = _price_start_band(prep, c, _int64_exact(prep, c["q"]))
    for name in ("units", "price", "upico", "fbits"):
        out[name] = np.where(no_band, out[name], r[name])
    extent = np.where(no_band, 0, r["extent"])
    out["segment"][r["split"]] = np.arange(len(r["split"]))
    segments = [r["segments"]]
    slow = ~no_band & (c["t0_us"] + extent * c["tscale"] > c["iv_end"])
    if slow.any():
        r = _run(con, _SLOW_SQL, {"slow": legs.table(slow, _SLOW_COLS), "grp": prep.grp, "effband": prep.effband,
                                  "intervals": legs.intervals}, num)
        lid = _np(r["lid"])
        for name in ("state", "units", "price", "upico", "fbits", "ridx0", "missing_bid"):
            out[name][lid] = _np(r[name])
        out["segment"][lid] = -1
        has = r["segments"].is_valid().to_numpy(zero_copy_only=False)
        out["segment"][lid[has]] = np.arange(has.sum()) + len(segments[0])
        segments.append(r["segments"].filter(has).combine_chunks())
        bands = r["bands"].to_pylist()
        index = {name: i for i, name in enumerate(strings)}
        for i, name in enumerate(bands):
            if name is not None and name not in index:
                index[name] = len(strings)
                strings.append(name)
        out["band"][lid] = [index[name] if name is not None else -1 for name in bands]
    out["strings"] = pa.array(strings, pa.string())
    out["segments"] = pa.concat_arrays(segments)
    return out


def _bitmap(valid: np.ndarray) -> pa.Buffer | None:
    """An Arrow validity bitmap of ``valid`` (None when every row is valid)."""
    return None if valid.all() else pa.array(valid).buffers()[1]


def _masked(values: np.ndarray, validity: pa.Buffer | None, kind: pa.DataType = pa.int64()) -> pa.Array:
    """``values`` (numpy, the width of ``kind``) as an Arrow array with a prepared validity bitmap:
    one bitmap serves every column with the same nulls (``pa.array(mask=...)`` packs its own)."""
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(np.ascontiguousarray(values))])


class _Gather:
    """Rows ``index`` (-1: null) of small prepared columns. Arrow's ``take`` with null indices
    costs ~10 ns a row; this gathers with valid indices only (numpy for 64-bit columns, a
    chunked ``take`` for strings, which is faster than an array's) and attaches one validity
    bitmap shared by all the columns."""

    def __init__(self, index: np.ndarray):
        self.index = index
        valid = index >= 0
        self.at = np.where(valid, index, 0)
        self.validity = _bitmap(valid)

    def __call__(self, array: pa.Array | pa.ChunkedArray) -> pa.Array:
        n = len(self.index)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if len(array) == 0:
            return pa.nulls(n, array.type)
        if array.null_count:
            return array.take(pa.array(self.at, mask=self.index < 0))
        if pa.types.is_string(array.type):      # null rows take an empty string appended at the end
            taken = pa.chunked_array([array, pa.array([""], array.type)]).take(
                np.where(self.index >= 0, self.index, len(array)))
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
    registers and then drops its views on it (and on cursors it opens for parallel parts).
    """
    if rated_at.tzinfo is None:
        raise ValueError(f"naive datetime {rated_at!r}: rated_at must be UTC-aware")
    prep = prepare(con, tariffs)
    cdrs = _conform(cdrs, CDR_SCHEMA)
    parts = min(os.cpu_count() or 1, cdrs.num_rows // _PART_ROWS)
    if parts <= 1:
        return _price_part(con, prep, tariffs, cdrs, rated_at)
    return _price_parallel(con, prep, tariffs, cdrs, rated_at, parts)


_PART_ROWS = 200_000     # smallest part worth a thread of its own


def _price_parallel(con, prep: Prepared, tariffs: Tariffs, cdrs: pa.Table, rated_at: dt.datetime,
                    parts: int) -> pa.Table:
    """:func:`_price_part` of ``parts`` slices of ``cdrs`` in as many threads, each with its own
    DuckDB cursor: numpy, Arrow and DuckDB release the GIL, so the slices use every core
    (rating is pure per row, so the concatenated parts are the rows of one call)."""
    size = -(-cdrs.num_rows // parts)
    zone = con.sql("SELECT current_setting('TimeZone')").fetchall()[0][0]
    cursors = [con] + [con.cursor() for _ in range(parts - 1)]
    try:
        for cursor in cursors[1:]:
            cursor.execute(f"SET TimeZone = '{zone}'")
        with ThreadPoolExecutor(parts) as pool:
            tables = list(pool.map(lambda i: _price_part(cursors[i], prep, tariffs, cdrs.slice(i * size, size),
                                                         rated_at), range(parts)))
    finally:
        for cursor in cursors[1:]:
            cursor.close()
    return pa.concat_tables(tables)


def _price_part(con, prep: Prepared, tariffs: Tariffs, cdrs: pa.Table, rated_at: dt.datetime) -> pa.Table:
    """:func:`price_batch` of conformed ``cdrs``, on one thread."""
    a = prep.arr
    n = cdrs.num_rows

    # per CDR, vectorized: call type code, quantity, billable, answer instant
    ct = _np(pc.index_in(cdrs["call_type"], value_set=pa.array(_CALL_TYPES)))
    billsec, units = np.maximum(_np(cdrs["billsec_s"].cast(pa.int64())), 0), np.maximum(_np(cdrs["units"]), 0)
    # an unknown call type is billed on whatever quantity it has: unrated, never free
    q = np.where(ct == 0, billsec, np.where(ct < 0, np.maximum(billsec, units), units))
    billable = (_np(pc.and_kleene(pc.equal(cdrs["direction"], _OUT), pc.equal(cdrs["disposition"], _ANSWERED)))
                .astype(bool) & (q > 0))
    start_us = _np(cdrs["start_at"].cast(pa.int64()))
    answer_us = cdrs["answer_at"].cast(pa.int64())
    t0 = np.where(answer_us.is_null().to_numpy(zero_copy_only=False), start_us, _np(answer_us))

    ident, buy_deck = _identify(prep, cdrs, start_us, billable)
    assigned = ident >= 0
    billable &= assigned
    if assigned.any():
        tzk = np.where(assigned, a["ids_tzk"][np.maximum(ident, 0)], 0)
        plan_deck = np.where(assigned, a["ids_deck"][np.maximum(ident, 0)], -1)
    else:     # (also when there is no identifier at all)
        tzk, plan_deck = np.zeros(n, np.int64), np.full(n, -1, np.int64)

    # which destination version prices each billable CDR, sell side (plan deck) and buy side
    sell_try, buy_try = np.flatnonzero(billable & (plan_deck >= 0)), np.flatnonzero(billable & (buy_deck >= 0))
    tries = np.concatenate([sell_try, buy_try])
    encoded = _encode_callees(cdrs["callee"], a["max_plen"]) if len(tries) else np.zeros(n, np.int64)
    vid = _match_versions(prep, np.concatenate([plan_deck[sell_try], buy_deck[buy_try]]),
                          np.where(ct[tries] >= 0, ct[tries], 3), encoded[tries],
                          start_us[tries])
    sell_vid, buy_vid = vid[:len(sell_try)], vid[len(sell_try):]
    sell_rid, buy_rid = sell_try[sell_vid >= 0], buy_try[buy_vid >= 0]

    # legs: sell legs then buy legs
    rid = np.concatenate([sell_rid, buy_rid])
    legs = _build_legs(prep, tariffs, rid, np.repeat([0, 1], [len(sell_rid), len(buy_rid)]).astype(np.int64),
                       np.concatenate([sell_vid[sell_vid >= 0], buy_vid[buy_vid >= 0]]), q[rid], t0[rid], tzk[rid])
    res = _price_legs(con, prep, legs, _num_type(prep, q[rid]))

    sell_leg, buy_leg = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    sell_leg[sell_rid] = np.arange(len(sell_rid))
    buy_leg[buy_rid] = np.arange(len(buy_rid)) + len(sell_rid)
    state = res["state"]
    sell_ok = (sell_leg >= 0) & (state[np.maximum(sell_leg, 0)] == _OK) if len(state) else np.zeros(n, bool)
    buy_ok = (buy_leg >= 0) & (state[np.maximum(buy_leg, 0)] == _OK) if len(state) else np.zeros(n, bool)
    s_leg, b_leg = np.maximum(sell_leg, 0), np.maximum(buy_leg, 0)

    def sell_col(name):
        return res[name][s_leg] if len(state) else np.zeros(n, np.int64)

    free = assigned & ~billable
    rated = billable & sell_ok
    unrated = billable & ~sell_ok
    price = np.where(rated, sell_col("price"), 0)
    cost = res["price"][b_leg] if len(state) else np.zeros(n, np.int64)
    margin_ok = rated & buy_ok
    margin = np.where(margin_ok, price - cost, 0)
    fbits = np.where(rated, sell_col("fbits"), 0)
    fbits |= np.where(billable & ~buy_ok, _FLAG_BITS[RatingFlag.NO_COST], 0)
    fbits |= np.where(margin_ok & (margin < 0), _FLAG_BITS[RatingFlag.NEGATIVE_MARGIN], 0)
    units = np.where(rated, sell_col("units"), 0)
    unpriced = ~(rated | free)                            # null price, units and amount
    rate_row = np.where(rated, sell_col("ridx0"), -1)
    cost_row = np.where(buy_ok, res["ridx0"][b_leg] if len(state) else -1, -1)
    status = np.full(n, 0, np.int64)                      # codes into _STATUSES
    status[free], status[rated], status[unrated] = 1, 2, 3
    rates = prep.rates
    who = np.where(assigned, ident, -1)
    by_who, by_rate, by_cost = _Gather(who), _Gather(rate_row), _Gather(cost_row)
    priced = _bitmap(~unpriced)
    columns = {
        **{name: cdrs[name] for name in CDR_SCHEMA.names},
        "account_id": by_who(prep.ids["account_id"]), "service_id": by_who(prep.ids["service_id"]),
        "rate_deck_id": by_rate(rates["deck_id"]), "rate_id": by_rate(rates["rate_id"]),
        "rate_valid_from": by_rate(rates["valid_from"]), "prefix": by_rate(rates["prefix"]),
        "destination": by_rate(rates["destination"]), "zone": by_rate(rates["zone"]),
        "band": _Gather(np.where(rated, sell_col("band"), -1))(res["strings"]),
        "segments": _Gather(np.where(rated, sell_col("segment"), -1))(res["segments"]),
        "first_increment": by_rate(rates["first_increment"]), "next_increment": by_rate(rates["next_increment"]),
        "billable_s": _masked(np.where(ct == 0, units, 0).astype(np.int32), priced, pa.int32()),
        "billable_units": _masked(units, priced),
        "unrounded_pico": _masked(np.where(rated, sell_col("upico"), 0), priced),
        "price_micro": _masked(price, priced),
        "bundle_id": pa.nulls(n, pa.int64()), "bundle_units": pa.nulls(n, pa.int64()),
        "bundle_split": pa.nulls(n, pa.string()),
        "cost_deck_id": by_cost(rates["deck_id"]), "cost_rate_id": by_cost(rates["rate_id"]),
        "cost_micro": _masked(cost, by_cost.validity),
        "margin_micro": _masked(margin, _bitmap(margin_ok)),
        "flags": _Gather(fbits)(_FLAG_STRINGS),
        "rating_status": _Gather(status)(_STATUSES),
        "rating_reason": _reasons(cdrs, prep, res, sell_leg, ct, unrated, assigned, plan_deck, who),
        "tariff_version": pa.repeat(pa.scalar(tariffs.version), n),
        "rated_at": pa.repeat(pa.scalar(rated_at, UTC_TS), n),
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
    return pa.concat_arrays(texts).take(pa.array(index))


def rate_batch(con, cdrs: pa.Table, tariffs: Tariffs, rated_at: dt.datetime, bundle_used: pa.Table | None = None
               ) -> pa.Table:
    """Rate ``cdrs``: :func:`price_batch`, then the service bundles
    (:func:`bluerocktel.rating.bundles.apply_bundles`, which recomputes margin and flags of the
    rows it changes). ``bundle_used``: units of each service bundle consumed in each month by
    earlier ratings (:data:`~bluerocktel.rating.bundles.BUNDLE_USED_SCHEMA`)."""
    return apply_bundles(con, price_batch(con, cdrs, tariffs, rated_at), tariffs, bundle_used)
