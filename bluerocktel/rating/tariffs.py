"""Tariff tables for the rating kernel, loaded and checked from the system of record.

Tariff tables are small (thousands of rows), so they are read with the ORM and converted in
Python: Decimal prices become integer micro units with :func:`bluerocktel.money.to_micro`
(ROUND_HALF_UP at the 6th decimal), so that the kernel only does integer arithmetic.

:func:`load_tariffs` refuses (:class:`TariffError`, naming the deck, rate, band or account) any
table the kernel could not rate with: increments below 1 (next) or 0 (first), a prefix that is
not digits (``''`` = any destination) or longer than 18 digits, a ``unit_size`` below 1 on a
priced row, rows of one destination version (deck, call type, prefix, valid_from) with different
``unit_size`` or ``valid_to``, a band of a version without a ``group_start = 0`` row, unknown
rounding / max-cost / day / call-type words, rounding decimals outside 0..6, a maximum cost
without an action, a fallback cycle, band minutes outside 0..1440 or ``start >= end``, an
unknown time zone or holiday calendar.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from bluerocktel.db.models import (
    Account,
    Bundle,
    CarrierTrunk,
    Rate,
    RateDeck,
    Service,
    ServiceBundle,
    ServiceIdentifier,
    TimeBand,
)
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import UTC_TS
from bluerocktel.money import finer_than_micro, to_micro
from bluerocktel.vocabulary import CallType, MaxCostAction, RoundingMethod

# Service identifiers joined with their service and account: who pays for a CDR.
IDENTIFIER_SCHEMA = pa.schema([
    ("identifier_id", pa.int64()),
    ("service_id", pa.int64()),
    ("account_id", pa.int64()),
    ("rate_deck_id", pa.int64()),      # the service's plan (sell) deck; null = none
    ("kind", pa.string()),             # IdentifierKind
    ("value", pa.string()),
    ("valid_from", UTC_TS),
    ("valid_to", UTC_TS),              # null = open
    ("timezone", pa.string()),         # the account's IANA zone: time bands are evaluated there
])

DECK_SCHEMA = pa.schema([
    ("deck_id", pa.int64()),
    ("code", pa.string()),
    ("kind", pa.string()),                            # sell | buy
    ("currency", pa.string()),
    ("rounding_method", pa.string()),                 # RoundingMethod
    ("rounding_decimals", pa.int32()),                # 0..6
    ("increment_rounding_method", pa.string()),       # null = increments are not rounded
    ("increment_rounding_decimals", pa.int32()),
    ("fallback_deck_id", pa.int64()),
    ("holiday_calendar", pa.string()),                # ISO country for the ``hol`` day word
])

# One row per (deck, call type, prefix, band, group_start, valid_from); prices in micro units
# per ``unit_size`` base units (seconds, messages, bytes).
RATE_SCHEMA = pa.schema([
    ("rate_id", pa.int64()),
    ("deck_id", pa.int64()),
    ("call_type", pa.string()),
    ("prefix", pa.string()),           # E.164 digits without '+'; '' = any destination
    ("destination", pa.string()),
    ("zone", pa.string()),
    ("band", pa.string()),             # '' = any time
    ("group_start", pa.int64()),       # base units into the call from which this row applies
    ("price_micro", pa.int64()),
    ("unit_size", pa.int64()),
    ("connection_fee_micro", pa.int64()),
    ("first_increment", pa.int64()),
    ("next_increment", pa.int64()),
    ("min_charge_micro", pa.int64()),
    ("max_cost_micro", pa.int64()),    # null = no maximum
    ("max_cost_action", pa.string()),  # MaxCostAction, null when no maximum
    ("valid_from", UTC_TS),
    ("valid_to", UTC_TS),
])

BAND_SCHEMA = pa.schema([
    ("deck_id", pa.int64()),
    ("name", pa.string()),
    ("days", pa.list_(pa.string())),   # mon..sun, hol
    ("start_minute", pa.int32()),      # [start_minute, end_minute) of the local day
    ("end_minute", pa.int32()),
    ("priority", pa.int32()),          # the highest wins where bands overlap
])

TRUNK_SCHEMA = pa.schema([
    ("trunk_id", pa.int64()),
    ("deck_id", pa.int64()),           # the carrier's buy deck
    ("trunk", pa.string()),            # prefix of the CDR's dst_channel
    ("valid_from", UTC_TS),
    ("valid_to", UTC_TS),
])

SERVICE_BUNDLE_SCHEMA = pa.schema([
    ("service_bundle_id", pa.int64()),
    ("service_id", pa.int64()),
    ("bundle_id", pa.int64()),
    ("code", pa.string()),
    ("call_type", pa.string()),
    ("zones", pa.list_(pa.string())),
    ("allowance", pa.int64()),         # base units per month; null = unlimited
    ("fair_use_cap", pa.int64()),
    ("valid_from", UTC_TS),
    ("valid_to", UTC_TS),
])

DAY_WORDS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "hol")
MAX_PREFIX_DIGITS = 18       # prefixes are matched as BIGINT keys: 10**len + int(prefix)


class TariffError(UserFacingError):
    """A rate deck, rate, band or identifier cannot be used for rating (e.g. a next increment of 0)."""


@dataclass(frozen=True, eq=False)
class Tariffs:
    """Everything the kernel needs from the system of record, as Arrow tables.

    ``version`` is a fingerprint of all tables: a rated CDR records which tariffs priced it.
    Build one with :func:`load_tariffs`, or directly in tests (the kernel checks nothing more
    than the schemas, so tests may pass hand-made tables).
    """

    identifiers: pa.Table      # IDENTIFIER_SCHEMA
    decks: pa.Table            # DECK_SCHEMA
    rates: pa.Table            # RATE_SCHEMA
    bands: pa.Table            # BAND_SCHEMA
    trunks: pa.Table           # TRUNK_SCHEMA
    bundles: pa.Table          # SERVICE_BUNDLE_SCHEMA
    version: str


def fingerprint(*tables: pa.Table) -> str:
    """Hex (16) SHA-256 of the tables' schemas and values (same content, same fingerprint)."""
    digest = hashlib.sha256()
    for table in tables:
        digest.update(str(table.schema).encode())
        digest.update(str(table.num_rows).encode())
        for batch in table.combine_chunks().to_batches():
            for column in batch.columns:
                for buf in column.buffers():
                    if buf is not None:
                        digest.update(buf)
        digest.update(b"|")
    return digest.hexdigest()[:16]


def build_tariffs(identifiers: pa.Table, decks: pa.Table, rates: pa.Table, bands: pa.Table | None = None,
                  trunks: pa.Table | None = None, bundles: pa.Table | None = None) -> Tariffs:
    """A :class:`Tariffs` from tables (missing ones empty), cast to the schemas and fingerprinted."""
    tables = [identifiers.cast(IDENTIFIER_SCHEMA), decks.cast(DECK_SCHEMA), rates.cast(RATE_SCHEMA),
              (bands if bands is not None else BAND_SCHEMA.empty_table()).cast(BAND_SCHEMA),
              (trunks if trunks is not None else TRUNK_SCHEMA.empty_table()).cast(TRUNK_SCHEMA),
              (bundles if bundles is not None else SERVICE_BUNDLE_SCHEMA.empty_table()).cast(SERVICE_BUNDLE_SCHEMA)]
    return Tariffs(*tables, version=fingerprint(*tables))


def _deck_chain_ids(decks: dict[int, RateDeck], start: int) -> list[int]:
    """``start`` and its fallback decks in order; a cycle is a TariffError."""
    chain, deck_id = [], start
    while deck_id is not None:
        if deck_id in chain:
            codes = " -> ".join(decks[d].code for d in [*chain, deck_id])
            raise TariffError(f"rate deck {decks[start].code} (id {start}): fallback cycle {codes}")
        chain.append(deck_id)
        deck_id = decks[deck_id].fallback_deck_id
    return chain


def _check_deck(deck: RateDeck) -> None:
    where = f"rate deck {deck.code} (id {deck.id})"
    methods = {m.value for m in RoundingMethod}
    if deck.rounding_method not in methods:
        raise TariffError(f"{where}: rounding_method {deck.rounding_method!r} is not one of {sorted(methods)}")
    if not 0 <= deck.rounding_decimals <= 6:
        raise TariffError(f"{where}: rounding_decimals {deck.rounding_decimals} is outside 0..6")
    if deck.increment_rounding_method is not None:
        if deck.increment_rounding_method not in methods:
            raise TariffError(f"{where}: increment_rounding_method {deck.increment_rounding_method!r} "
                              f"is not one of {sorted(methods)}")
        if deck.increment_rounding_decimals is None or not 0 <= deck.increment_rounding_decimals <= 6:
            raise TariffError(f"{where}: increment_rounding_decimals {deck.increment_rounding_decimals} "
                              f"is outside 0..6")
    if deck.holiday_calendar:
        import holidays

        try:
            holidays.country_holidays(deck.holiday_calendar, years=2026)
        except NotImplementedError:
            raise TariffError(f"{where}: unknown holiday calendar {deck.holiday_calendar!r} "
                              f"(an ISO country code known to the holidays package)") from None


def _check_rates(deck: RateDeck, rates: list[Rate]) -> dict[int, int]:
    """Check the rates of ``deck``; returns the unit_size to use for each rate id."""
    where = f"rate deck {deck.code} (id {deck.id})"
    call_types, actions = {c.value for c in CallType}, {a.value for a in MaxCostAction}
    versions: dict[tuple, list[Rate]] = defaultdict(list)
    for r in rates:
        rate = f"{where}, rate {r.id} (prefix {r.prefix!r})"
        if r.call_type not in call_types:
            raise TariffError(f"{rate}: call_type {r.call_type!r} is not one of {sorted(call_types)}")
        if r.prefix != "" and not (r.prefix.isascii() and r.prefix.isdigit()):
            raise TariffError(f"{rate}: the prefix must be digits ('' = any destination)")
        if len(r.prefix) > MAX_PREFIX_DIGITS:
            raise TariffError(f"{rate}: the prefix has more than {MAX_PREFIX_DIGITS} digits")
        if r.first_increment < 0 or r.next_increment < 1:
            raise TariffError(f"{rate}: the first increment must be >= 0 and the next increment >= 1 "
                              f"(got {r.first_increment}/{r.next_increment})")
        if r.group_start < 0:
            raise TariffError(f"{rate}: group_start {r.group_start} is negative")
        if r.price < 0 or r.connection_fee < 0 or r.min_charge < 0 or (r.max_cost is not None and r.max_cost < 0):
            raise TariffError(f"{rate}: prices, fees, minimum charge and maximum cost must not be negative")
        for field_name in ("price", "connection_fee", "min_charge", "max_cost"):
            value = getattr(r, field_name)
            if value is not None and finer_than_micro(value):
                raise TariffError(f"{rate}: {field_name} {value} has more than 6 decimals (amounts are exact to "
                                  f"1e-6; price a larger unit_size instead, e.g. per minute rather than per second)")
        if r.price != 0 and r.unit_size < 1:
            raise TariffError(f"{rate}: unit_size {r.unit_size} must be >= 1")
        if r.max_cost is not None and r.max_cost_action not in actions:
            raise TariffError(f"{rate}: max_cost_action {r.max_cost_action!r} is not one of {sorted(actions)}")
        if r.max_cost is None and r.max_cost_action not in (None, "", *actions):
            raise TariffError(f"{rate}: max_cost_action {r.max_cost_action!r} is not one of {sorted(actions)}")
        versions[(r.call_type, r.prefix, r.valid_from)].append(r)
    unit_sizes: dict[int, int] = {}
    for (call_type, prefix, valid_from), rows in versions.items():
        version = f"{where}, {call_type} prefix {prefix!r} from {valid_from.isoformat()}"
        sizes = {r.unit_size for r in rows if r.price != 0}
        if len(sizes) > 1:
            raise TariffError(f"{version}: its rows (rates {', '.join(str(r.id) for r in rows)}) have different "
                              f"unit_size {sorted(sizes)}")
        ends = {r.valid_to for r in rows}
        if len(ends) > 1:
            raise TariffError(f"{version}: its rows (rates {', '.join(str(r.id) for r in rows)}) have different "
                              f"valid_to")
        for band in {r.band for r in rows}:
            groups = sorted((r for r in rows if r.band == band), key=lambda r: r.group_start)
            if groups[0].group_start != 0:
                raise TariffError(f"{version}: band {band!r} has no row with group_start 0")
            # a group must start where the previous one's increments end, or seconds are billed twice
            edge = groups[0].first_increment
            for previous, group in zip(groups, groups[1:]):
                if group.group_start < edge or (group.group_start - edge) % previous.next_increment:
                    raise TariffError(
                        f"{version}: band {band!r}: group_start {group.group_start} (rate {group.id}) does not fall on "
                        f"an increment boundary of the group before it (rate {previous.id}, increments "
                        f"{previous.first_increment if previous is groups[0] else previous.next_increment}/"
                        f"{previous.next_increment} from {previous.group_start}): seconds would be billed twice")
                edge = group.group_start
        size = sizes.pop() if sizes else 1
        unit_sizes.update((r.id, size) for r in rows)
    return unit_sizes


def _check_band(deck: RateDeck, band: TimeBand) -> list[str]:
    where = f"rate deck {deck.code} (id {deck.id}), time band {band.name!r} (id {band.id})"
    days = [d.strip().lower() for d in band.days.split(",") if d.strip()]
    unknown = [d for d in days if d not in DAY_WORDS]
    if unknown or not days:
        raise TariffError(f"{where}: days {band.days!r}: unknown day word(s) {unknown} "
                          f"(use {', '.join(DAY_WORDS)})")
    if not (0 <= band.start_minute < band.end_minute <= 1440):
        raise TariffError(f"{where}: minutes [{band.start_minute}, {band.end_minute}) must satisfy "
                          f"0 <= start < end <= 1440")
    if band.name == "":
        raise TariffError(f"{where}: a band needs a name ('' means any time)")
    return days


def load_tariffs(session: Session, extra_deck_ids: Iterable[int] = ()) -> Tariffs:
    """Every table the kernel needs, checked (see the module docstring), in the kernel's schemas.

    Identifiers carry their service's account, plan deck and the account's time zone. Decks,
    rates and bands are those of the decks rating can reach: the services' plan decks, the
    carrier trunks' buy decks, ``extra_deck_ids`` (e.g. decks of rating profiles, for quotes)
    and their fallback chains.
    """
    id_rows = session.execute(
        select(ServiceIdentifier.id, ServiceIdentifier.service_id, Service.account_id,
               Service.rate_deck_id, ServiceIdentifier.kind, ServiceIdentifier.value,
               ServiceIdentifier.valid_from, ServiceIdentifier.valid_to, Account.timezone)
        .join(Service, Service.id == ServiceIdentifier.service_id)
        .join(Account, Account.id == Service.account_id)
        .order_by(ServiceIdentifier.id)
    ).all()
    zones_ok: dict[str, bool] = {}
    for row in id_rows:
        zone = row[-1]
        if zone not in zones_ok:
            try:
                ZoneInfo(zone)
                zones_ok[zone] = True
            except (ZoneInfoNotFoundError, ValueError):
                raise TariffError(f"account {row[2]}: unknown time zone {zone!r} (an IANA name such as "
                                  f"Europe/Paris)") from None
    identifiers = pa.Table.from_pylist(
        [dict(zip(IDENTIFIER_SCHEMA.names, row)) for row in id_rows], schema=IDENTIFIER_SCHEMA)

    trunk_rows = session.scalars(select(CarrierTrunk).order_by(CarrierTrunk.id)).all()
    trunks = pa.Table.from_pylist([
        {"trunk_id": t.id, "deck_id": t.deck_id, "trunk": t.trunk, "valid_from": t.valid_from,
         "valid_to": t.valid_to} for t in trunk_rows], schema=TRUNK_SCHEMA)

    all_decks = {d.id: d for d in session.scalars(select(RateDeck).order_by(RateDeck.id))}
    service_decks = session.scalars(select(Service.rate_deck_id).where(Service.rate_deck_id.is_not(None)).distinct())
    roots = set(service_decks) | {t.deck_id for t in trunk_rows} | set(extra_deck_ids)
    unknown = sorted(roots - set(all_decks))
    if unknown:
        raise TariffError(f"no rate deck with id {', '.join(map(str, unknown))}")
    reachable = sorted({d for root in roots for d in _deck_chain_ids(all_decks, root)})
    for deck_id in reachable:
        _check_deck(all_decks[deck_id])
    decks = pa.Table.from_pylist([
        {"deck_id": d.id, "code": d.code, "kind": d.kind, "currency": d.currency,
         "rounding_method": d.rounding_method, "rounding_decimals": d.rounding_decimals,
         "increment_rounding_method": d.increment_rounding_method,
         "increment_rounding_decimals": d.increment_rounding_decimals,
         "fallback_deck_id": d.fallback_deck_id, "holiday_calendar": d.holiday_calendar or None}
        for d in (all_decks[i] for i in reachable)], schema=DECK_SCHEMA)

    rates_by_deck: dict[int, list[Rate]] = defaultdict(list)
    for r in session.scalars(select(Rate).where(Rate.deck_id.in_(reachable)).order_by(Rate.id)):
        rates_by_deck[r.deck_id].append(r)
    rate_dicts = []
    for deck_id in reachable:
        unit_sizes = _check_rates(all_decks[deck_id], rates_by_deck[deck_id])
        rate_dicts.extend(
            {"rate_id": r.id, "deck_id": r.deck_id, "call_type": r.call_type, "prefix": r.prefix,
             "destination": r.destination, "zone": r.zone, "band": r.band or "", "group_start": r.group_start,
             "price_micro": to_micro(r.price), "unit_size": unit_sizes[r.id],
             "connection_fee_micro": to_micro(r.connection_fee), "first_increment": r.first_increment,
             "next_increment": r.next_increment, "min_charge_micro": to_micro(r.min_charge),
             "max_cost_micro": None if r.max_cost is None else to_micro(r.max_cost),
             "max_cost_action": r.max_cost_action if r.max_cost is not None else None,
             "valid_from": r.valid_from, "valid_to": r.valid_to}
            for r in rates_by_deck[deck_id])
    rate_dicts.sort(key=lambda r: r["rate_id"])
    rates = pa.Table.from_pylist(rate_dicts, schema=RATE_SCHEMA)

    band_dicts = []
    for b in session.scalars(select(TimeBand).where(TimeBand.deck_id.in_(reachable)).order_by(TimeBand.id)):
        band_dicts.append({"deck_id": b.deck_id, "name": b.name, "days": _check_band(all_decks[b.deck_id], b),
                           "start_minute": b.start_minute, "end_minute": b.end_minute, "priority": b.priority})
    bands = pa.Table.from_pylist(band_dicts, schema=BAND_SCHEMA)

    bundle_rows = session.execute(
        select(ServiceBundle, Bundle).join(Bundle, Bundle.id == ServiceBundle.bundle_id).order_by(ServiceBundle.id)
    ).all()
    bundles = pa.Table.from_pylist([
        {"service_bundle_id": sb.id, "service_id": sb.service_id, "bundle_id": b.id, "code": b.code,
         "call_type": b.call_type, "zones": [str(z) for z in (b.zones or [])], "allowance": b.allowance,
         "fair_use_cap": b.fair_use_cap, "valid_from": sb.valid_from, "valid_to": sb.valid_to}
        for sb, b in bundle_rows], schema=SERVICE_BUNDLE_SCHEMA)
    return build_tariffs(identifiers, decks, rates, bands, trunks, bundles)

