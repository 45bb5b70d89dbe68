"""``bluerocktel rating import-cgrates DIR``: a CGRateS tariff plan into our rating model.

:func:`build_import` turns a plan read by :func:`bluerocktel.rating.cgrates.read_tariff_plan`
into the rows our model needs (pure, no database); :func:`import_cgrates` writes them in one
transaction, idempotently, with an audit entry.

The mapping
-----------
- **RatingPlan → sell RateDeck**. Code: ``prefix + plan id``, characters other than
  ``A-Z a-z 0-9 _ . -`` replaced by ``_``, cut to 32 (a clash between two plans of the folder
  gets ``~2``, ``~3`` ... at the end). Name ``CGRateS RatingPlan <id>``: that name is how a deck is
  known to come from CGRateS; a code already used by another deck is refused. Rounding: the
  "cgrates" profile = each increment's cost rounded half-up to 5 decimals, then the total with
  the DestinationRates' ``RoundingMethod`` (``*up`` → up, ``*middle`` → half_up, ``*down`` → down)
  at ``RoundingDecimals``. CGRateS does not round a total when the method is empty or the
  decimals are 0: that is ``half_up`` at 6 decimals here (exact: increments have 5 decimals and
  prices at most 6). Decimals above 6 become 6 for the same reason. A plan whose
  DestinationRates round differently is refused (CGRateS picks a rounding per call).
- **Call type**: from the categories of the RatingProfiles that use the plan, as
  :func:`bluerocktel.rating.cgrates.quote` does: ``data`` → data, ``sms`` → sms, any other
  category → voice; ``mms`` and ``generic`` have no call type here (unsupported). A plan no
  profile uses is voice (CGRateS' default ToR). A plan used by several call types gets its rows
  once per call type.
- **Rates**: one Rate row per (destination prefix, time band, rate slot): ``GroupIntervalStart``
  → ``group_start``, ``RateUnit`` → ``unit_size``, ``RateIncrement`` → ``next_increment`` (in
  seconds for voice, in units for sms/data: CGRateS counts units as nanoseconds, and a ``0``
  unit or increment means 1 s), ``first_increment`` = the increment of the slot at 0,
  ``Rate`` → ``price``, ``ConnectFee`` of the Rate's first slot (as CGRateS) on the
  ``group_start`` 0 row, ``MaxCost`` > 0 with ``*free`` → cap, ``*disconnect`` → disconnect.
  Destination and zone are the CGRateS destination id. A ``*any`` destination is the prefix
  ``''``; a leading ``+`` of a prefix is dropped (our prefixes are E.164 digits). Rows are
  valid from 1970-01-01 (CGRateS rates are not dated; profiles carry the activations). The
  rows of one prefix share one ``unit_size`` (our model wants it): when its bands or groups
  use different RateUnits, every row is priced per their least common multiple (0.01 per 1 s
  next to 1.2 per 60 s becomes 0.6 per 60 s: exact, the factor is an integer).
- **Timings → TimeBands** (the timings the plan's bindings use): week days (``0``/``7`` =
  sun) and a start minute; a band ends where the next timing of the plan starts on that day,
  else at 1440. A timing whose end differs by day gets one TimeBand row per group of days.
  Priority: rank of (highest binding weight, start, id), so that two bands never tie. A
  ``*any`` timing is the band ``''``.
- **Which rate at which time**: bands are per deck in our model and per destination in
  CGRateS. So for every prefix and every band, the importer works out what CGRateS would
  charge in that band (longest prefix with a binding active then, heaviest destination, then
  the heaviest binding and the latest start, ``*any`` last) and writes that rate for the band;
  the ``''`` rows hold what CGRateS charges when no timing is active. Where that differs
  between days of one band the prefix cannot be expressed (refused).
- **RatingProfiles → RatingProfile rows** (tenant, category, subject, activation, deck,
  fallback subjects space-separated).

Unsupported (listed as problems naming the file, line and id): timings with years, months or
month days (our bands have week days and times of day), times with seconds, prefixes that are
not digits (``voicemail``), categories without a call type, prices with more than 6 decimals,
voice durations that are not whole seconds, a plan mixing roundings, a prefix priced
differently on two days of one band. By default any problem refuses the whole import;
``skip_unsupported=True`` (``--skip-unsupported``) imports the rest and reports what was left
out (the binding, prefix, plan or profile concerned).

Re-importing
------------
The same folder again changes nothing (0 changes, no audit entry). A changed folder updates
the decks in place for rounding and bands, and the rates effective-dated: the current rows of
a (call type, prefix) whose rows changed or disappeared get ``valid_to = effective_at`` and
the new rows ``valid_from = effective_at`` (default: now), so calls before that instant keep
their price. This is the rate sheet import's version logic
(:func:`~bluerocktel.rating.deckimport.diff_deck` and
:func:`~bluerocktel.rating.deckimport.write_version`) over every call type of the deck:
versions are append-only, so an ``effective_at`` before a deck's latest version is refused, and
one equal to it replaces that version while it is pending and is refused once in force.
Profiles are updated, added, and removed when they pointed to a deck of this import and are no
longer in the folder.

Known differences with :func:`~bluerocktel.rating.cgrates.quote` (the kernel's semantics):
``*disconnect`` keeps the full price with a flag (CGRateS' reference charges MaxCost); a
destination with no rate in the band of the call is unrated (CGRateS would try a shorter
prefix or a fallback subject); the cost of one increment is rounded once (CGRateS rounds the
span's cost, then divides: both agree unless a rate has more than 5 significant decimals per
increment); a call crossing an activation time is priced by the activation at its start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import RateDeck, RatingProfile, TimeBand
from bluerocktel.errors import UserFacingError
from bluerocktel.money import finer_than_micro
from bluerocktel.rating.cgrates import (
    ANY,
    NS_PER_S,
    RateInterval,
    TariffPlan,
    read_tariff_plan,
)
from bluerocktel.rating.deckimport import DeckImportError, RateRow, diff_deck, write_version
from bluerocktel.rating.tariffs import MAX_PREFIX_DIGITS
from bluerocktel.vocabulary import CallType, MaxCostAction, RateDeckKind, RoundingMethod

UTC = dt.timezone.utc
#: Imported rates are valid from here: CGRateS rates carry no date.
CGRATES_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
#: A deck whose name starts with this was imported from CGRateS (the rest is the plan id).
DECK_NAME_PREFIX = "CGRateS RatingPlan "
#: The "cgrates" rounding profile: every increment's cost, half-up at 5 decimals.
INCREMENT_ROUNDING = (RoundingMethod.HALF_UP.value, 5)
NO_ROUNDING = (RoundingMethod.HALF_UP.value, 6)
ROUNDING_WORDS = {"*up": RoundingMethod.UP.value, "*middle": RoundingMethod.HALF_UP.value,
                  "*down": RoundingMethod.DOWN.value}
MAX_COST_WORDS = {"*free": MaxCostAction.CAP.value, "*disconnect": MaxCostAction.DISCONNECT.value}
#: Categories counted in units (as :data:`bluerocktel.rating.cgrates.UNIT_CATEGORIES`); the
#: others are voice. ``None``: no call type of ours.
UNIT_CATEGORY_CALL_TYPES = {"data": CallType.DATA.value, "sms": CallType.SMS.value, "mms": None, "generic": None}
DAY_WORDS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_GO_DAY = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}   # CGRateS week days
_CODE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
CODE_LEN, BAND_LEN = 32, 32                      # rate_decks.code, time_bands.name


class CgratesImportError(UserFacingError):
    """The tariff plan cannot be imported as asked; ``problems`` lists every reason."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        super().__init__(message + ("".join(f"\n  {p}" for p in self.problems)))


def call_type_of_category(category: str) -> str | None:
    """Our call type for a CGRateS category (``None``: mms, generic: none of ours)."""
    return UNIT_CATEGORY_CALL_TYPES.get(category, CallType.VOICE.value)


# --------------------------------------------------------------------------------------------
# What the model should hold (pure)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BandRow:
    name: str
    days: str                       # "mon,tue,..." in week order
    start_minute: int
    end_minute: int
    priority: int


@dataclass
class DeckPlan:
    plan_id: str
    code: str
    rounding: tuple[str, int]
    call_types: tuple[str, ...]
    bands: list[BandRow] = field(default_factory=list)
    rates: list[RateRow] = field(default_factory=list)

    @property
    def name(self) -> str:
        return (DECK_NAME_PREFIX + self.plan_id)[:200]


@dataclass(frozen=True)
class ProfileRow:
    tenant: str
    category: str
    subject: str
    activation_at: dt.datetime
    plan_id: str
    fallback_subjects: str


@dataclass
class CgratesImport:
    """The decks and profiles a tariff plan becomes, and what could not be carried over."""

    decks: list[DeckPlan]
    profiles: list[ProfileRow]
    problems: list[str]


def deck_code(plan_id: str, prefix: str = "") -> str:
    """``prefix + plan_id`` with unusual characters replaced by ``_``, cut to 32 characters."""
    return _CODE_CHARS.sub("_", prefix + plan_id)[:CODE_LEN] or "_"


def _unique(name: str, taken: set[str], limit: int) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        suffix = f"~{n}"
        candidate = name[:limit - len(suffix)] + suffix
    taken.add(candidate)
    return candidate


def _digits(prefix: str) -> str | None:
    """A CGRateS destination prefix as E.164 digits (leading ``+`` dropped), else None."""
    p = prefix[1:] if prefix.startswith("+") else prefix
    return p if p.isdigit() else None


class _Builder:
    def __init__(self, plan: TariffPlan):
        self.plan = plan
        self.problems: dict[str, None] = {}        # ordered set
        # stripped digit prefix -> destination ids (Destinations.csv order), and the reverse
        self.dests_by_prefix: dict[str, list[str]] = defaultdict(list)
        self.prefixes_by_dest: dict[str, list[str]] = defaultdict(list)
        for dest in plan.destinations.values():
            for raw in dest.prefixes:
                digits = _digits(raw)
                if digits is None:
                    self.problem(f"Destinations.csv: destination {dest.id} prefix {raw!r} is not digits "
                                  "(E.164 without '+'); that prefix is left out")
                elif len(digits) > MAX_PREFIX_DIGITS:
                    self.problem(f"Destinations.csv: destination {dest.id} prefix {raw!r} is longer than "
                                 f"{MAX_PREFIX_DIGITS} digits (the rating kernel's limit); that prefix is left out")
                elif dest.id not in self.dests_by_prefix[digits]:
                    self.dests_by_prefix[digits].append(dest.id)
                    self.prefixes_by_dest[dest.id].append(digits)

    def problem(self, text: str) -> None:
        self.problems.setdefault(text, None)

    # -- rates -------------------------------------------------------------------------------
    def _amount_ok(self, what: str, value: Decimal) -> bool:
        if finer_than_micro(value):
            self.problem(f"{what} {value} has more than 6 decimals (prices are exact to 1e-6 here)")
            return False
        return True

    def rate_rows(self, ri: RateInterval, dest_id: str, call_type: str, prefix: str, band: str) -> list[RateRow] | None:
        """Rows of one binding for one prefix and band; None (with a problem) when unusable."""
        rate, dr = ri.rate, ri.destination_rate
        voice = call_type == CallType.VOICE.value
        ok = True
        converted = []
        for slot in sorted(rate.slots, key=lambda s: s.group_interval_start_ns):
            values = []
            for label, ns in (("GroupIntervalStart", slot.group_interval_start_ns), ("RateUnit", slot.unit_ns),
                              ("RateIncrement", slot.increment_ns)):
                if voice and ns % NS_PER_S:
                    seconds = format(Decimal(ns).scaleb(-9).normalize(), "f")
                    self.problem(f"Rates.csv:{slot.line}: Rate {rate.id} {label} {seconds}s is not "
                                 "a whole number of seconds (voice is billed in seconds)")
                    ok = False
                values.append(ns // NS_PER_S if voice else ns)
            ok = self._amount_ok(f"Rates.csv:{slot.line}: Rate {rate.id} Rate", slot.rate) and ok
            converted.append((slot, *values))
        ok = self._amount_ok(f"Rates.csv:{rate.slots[0].line}: Rate {rate.id} ConnectFee", rate.connect_fee) and ok
        max_cost = action = None
        if dr.max_cost_strategy and dr.max_cost > 0:
            max_cost, action = dr.max_cost, MAX_COST_WORDS[dr.max_cost_strategy]
            ok = self._amount_ok(f"DestinationRates.csv:{dr.line}: {dr.id} MaxCost", dr.max_cost) and ok
        if not ok:
            return None
        first = converted[0][3]                         # the increment of the slot at 0
        return [RateRow(line=None, call_type=call_type, prefix=prefix, destination=dest_id, zone=dest_id[:64],
                        band=band, group_start=gis, price=slot.rate, unit_size=unit,
                        connection_fee=rate.connect_fee if gis == 0 else slot.connect_fee,
                        first_increment=first, next_increment=inc, min_charge=Decimal(0), max_cost=max_cost,
                        max_cost_action=action)
                for slot, gis, unit, inc in converted]

    # -- timings -----------------------------------------------------------------------------
    def timing_ok(self, plan_id: str, binding, timing) -> bool:
        if timing.id == ANY:
            return True
        why = [f"{label} {';'.join(map(str, sorted(v)))}" for label, v in
               (("Years", timing.years), ("Months", timing.months), ("MonthDays", timing.month_days)) if v]
        if why:
            self.problem(f"Timings.csv:{timing.line}: Timing {timing.id} ({', '.join(why)}) cannot be a time band "
                         f"(ours have week days and times of day only); RatingPlans.csv:{binding.line} binding "
                         f"{plan_id} -> {binding.destination_rate_id} is left out")
            return False
        if timing.start_time.second or timing.start_time.microsecond:
            self.problem(f"Timings.csv:{timing.line}: Timing {timing.id} starts at {timing.time_text}: time bands "
                         f"start on whole minutes; RatingPlans.csv:{binding.line} binding {plan_id} -> "
                         f"{binding.destination_rate_id} is left out")
            return False
        return True

    # -- one plan ----------------------------------------------------------------------------
    def deck(self, plan_id: str, code: str, call_types: tuple[str, ...]) -> DeckPlan | None:
        plan = self.plan
        rating_plan = plan.rating_plans[plan_id]
        kept = {(b.destination_rate_id, b.timing_id, b.weight) for b in rating_plan.bindings
                if b.timing_id == ANY or self.timing_ok(plan_id, b, plan.timings[b.timing_id])}
        intervals: dict[str, list[RateInterval]] = {}
        for dest_id, ris in plan.plan_intervals[plan_id].items():
            ris = [ri for ri in ris if (ri.destination_rate.id, ri.timing.id, ri.weight) in kept]
            if ris:
                intervals[dest_id] = ris
        if not intervals:
            self.problem(f"RatingPlans.csv: RatingPlan {plan_id} has no binding left; the plan is left out")
            return None

        # rounding: one for the whole deck
        roundings: dict[tuple[str, int], set[str]] = defaultdict(set)
        for ris in intervals.values():
            for ri in ris:
                dr = ri.destination_rate
                if dr.rounding_method and dr.rounding_decimals > 0:
                    key = (ROUNDING_WORDS[dr.rounding_method], min(dr.rounding_decimals, 6))
                else:
                    key = NO_ROUNDING
                roundings[key].add(dr.id)
        if len(roundings) > 1:
            listed = "; ".join(f"{m} {d}: {', '.join(sorted(ids))}" for (m, d), ids in sorted(roundings.items()))
            self.problem(f"RatingPlan {plan_id}: its DestinationRates round differently ({listed}); a deck has one "
                         "rounding; the plan is left out")
            return None
        [rounding] = roundings

        # bands: the timings used, cut where the next one starts that day
        timings = {ri.timing.id: ri.timing for ris in intervals.values() for ri in ris if ri.timing.id != ANY}
        weight = {tid: max(ri.weight for ris in intervals.values() for ri in ris if ri.timing.id == tid)
                  for tid in timings}
        order = sorted(timings, key=lambda t: (weight[t], timings[t].start_time, t))
        priority = {tid: rank for rank, tid in enumerate(order)}
        band_names: dict[str, str] = {}
        taken: set[str] = set()
        for tid in sorted(timings):
            band_names[tid] = _unique(_CODE_CHARS.sub("_", tid)[:BAND_LEN], taken, BAND_LEN)

        def minute(tid):
            t = timings[tid].start_time
            return t.hour * 60 + t.minute

        on_day = {day: [tid for tid in timings if not timings[tid].week_days or _GO_DAY[day] in timings[tid].week_days]
                  for day in DAY_WORDS}
        band_days: dict[tuple[str, int, int], list[str]] = defaultdict(list)    # (timing, start, end) -> days
        cells: list[tuple[str, set[str]]] = []          # (band in force, timings active) per cell
        for day in DAY_WORDS:
            starts = sorted({minute(t) for t in on_day[day]})
            for tid in on_day[day]:
                later = [s for s in starts if s > minute(tid)]
                band_days[(tid, minute(tid), later[0] if later else 1440)].append(day)
            for a in sorted({0, *starts}):
                active = {t for t in on_day[day] if minute(t) <= a}
                latest = max((minute(t) for t in active), default=None)
                covering = [t for t in active if minute(t) == latest]
                cells.append((max(covering, key=priority.__getitem__) if covering else "", active))
        bands = [BandRow(band_names[tid], ",".join(days), start, end, priority[tid])
                 for (tid, start, end), days in sorted(band_days.items(), key=lambda kv: (kv[0][1], kv[0][0]))]

        deck = DeckPlan(plan_id, code, rounding, call_types, bands=bands)
        prefixes = sorted({p for dest_id in intervals for p in self.prefixes_by_dest.get(dest_id, ())})
        if ANY in intervals:
            prefixes.insert(0, "")
        for p in prefixes:
            choice_any = self._winner(intervals, p, {ANY})
            by_band: dict[str, dict] = defaultdict(dict)
            for band, active in cells:
                if band:
                    w = self._winner(intervals, p, active | {ANY})
                    by_band[band][_key(w)] = w
            plan_rows: list[tuple[str, tuple]] = []
            if choice_any:
                plan_rows.append(("", choice_any))
            clash = False
            for tid in sorted(by_band, key=lambda t: (minute(t), t)):
                found = by_band[tid]
                if len(found) > 1:
                    what = ", ".join(sorted("nothing" if k is None else f"{k[1]} ({k[0]})" for k in found))
                    self.problem(f"RatingPlan {plan_id}: prefix {p or ANY} is priced by {what} on different days of "
                                 f"band {band_names[tid]}; our bands cannot express it; the prefix is left out")
                    clash = True
                    break
                [(k, w)] = found.items()
                if w is not None and k != _key(choice_any):
                    plan_rows.append((band_names[tid], w))
            if clash:
                continue
            for call_type in call_types:
                rows = []
                for band, (dest_id, ri) in plan_rows:
                    got = self.rate_rows(ri, dest_id, call_type, p, band)
                    if got is None:
                        rows = None
                        self.problem(f"RatingPlan {plan_id}: prefix {p or ANY} ({call_type}) is left out "
                                     f"(Rate {ri.rate.id} cannot be used, see above)")
                        break
                    rows.extend(got)
                if rows:
                    deck.rates.extend(_one_unit_size(rows))
        if not deck.rates:
            self.problem(f"RatingPlan {plan_id}: no rate is left (see above); the plan is left out")
            return None
        return deck

    def _winner(self, intervals: dict[str, list[RateInterval]], number: str, active: set[str]):
        """(destination id, binding) CGRateS picks for ``number`` while the timings ``active`` are
        (``*any`` included); None when nothing prices it then."""

        def is_active(ri):
            return ri.timing.id in active

        for n in range(len(number), 0, -1):
            best = None
            for dest_id in self.dests_by_prefix.get(number[:n], ()):
                ris = intervals.get(dest_id)
                if not ris or not any(is_active(ri) for ri in ris):
                    continue
                w = max([Decimal(0), *(ri.weight for ri in ris)])       # RateIntervalList.GetWeight
                if best is None or w > best[0]:
                    best = (w, dest_id, ris)
            if best:
                return best[1], _heaviest([ri for ri in best[2] if is_active(ri)])
        ris = [ri for ri in intervals.get(ANY, ()) if is_active(ri)]
        return (ANY, _heaviest(ris)) if ris else None


def _heaviest(ris: list[RateInterval]) -> RateInterval:
    best = ris[0]
    for ri in ris[1:]:
        if (ri.weight, ri.timing.start_time) > (best.weight, best.timing.start_time):
            best = ri
    return best


def _one_unit_size(rows: list[RateRow]) -> list[RateRow]:
    """The rows of one prefix priced per one unit size: the least common multiple of theirs.

    Our model wants one ``unit_size`` per destination version (bands and groups included);
    ``price`` per ``u`` units is ``price x L / u`` per ``L`` units, exactly (an integer factor):
    0.01 per 1 s next to 1.2 per 60 s becomes 0.6 per 60 s."""
    sizes = {r.unit_size for r in rows}
    if len(sizes) == 1:
        return rows
    common = math.lcm(*sizes)
    return [dataclasses.replace(r, unit_size=common, price=r.price * (common // r.unit_size)) for r in rows]


def _key(choice) -> tuple | None:
    if choice is None:
        return None
    dest_id, ri = choice
    return (dest_id, ri.destination_rate.id, ri.rate.id)


def build_import(plan: TariffPlan, prefix: str = "") -> CgratesImport:
    """The decks, rates, bands and profiles ``plan`` becomes, and the problems met (see the
    module docstring). Pure: reads nothing else and writes nothing."""
    b = _Builder(plan)
    # call types of each plan, from the categories of the profiles that use it
    used_by: dict[str, set[str]] = defaultdict(set)
    profiles: list[ProfileRow] = []
    for (tenant, category, subject), profile in plan.rating_profiles.items():
        call_type = call_type_of_category(category)
        for act in profile.activations:
            where = f"RatingProfiles.csv:{act.line}: {tenant}:{category}:{subject}"
            if call_type is None:
                b.problem(f"{where}: category {category} has no call type here (voice, sms, data); the profile "
                          "is left out")
                continue
            too_long = [n for n, v, lim in (("Tenant", tenant, 100), ("Category", category, 32),
                                            ("Subject", subject, 100)) if len(v) > lim]
            if too_long:
                b.problem(f"{where}: {', '.join(too_long)} too long; the profile is left out")
                continue
            used_by[act.rating_plan_id].add(call_type)
            profiles.append(ProfileRow(tenant, category, subject, act.activation_at, act.rating_plan_id,
                                       " ".join(act.fallback_subjects)))
    users = {act.rating_plan_id for p in plan.rating_profiles.values() for act in p.activations}
    decks: list[DeckPlan] = []
    taken: set[str] = set()
    for plan_id in sorted(plan.rating_plans):
        if plan_id in users and not used_by[plan_id]:
            b.problem(f"RatingPlans.csv: RatingPlan {plan_id} is used only by profiles left out; the plan is left out")
            continue
        call_types = tuple(sorted(used_by[plan_id])) if plan_id in users else (CallType.VOICE.value,)
        code = _unique(deck_code(plan_id, prefix), taken, CODE_LEN)
        deck = b.deck(plan_id, code, call_types)
        if deck is not None:
            decks.append(deck)
    kept = {d.plan_id for d in decks}
    for row in profiles:
        if row.plan_id not in kept:
            b.problem(f"RatingProfiles: {row.tenant}:{row.category}:{row.subject} at {row.activation_at.isoformat()} "
                      f"uses RatingPlan {row.plan_id}, which is left out; the profile is left out")
    return CgratesImport(decks, [r for r in profiles if r.plan_id in kept], list(b.problems))


# --------------------------------------------------------------------------------------------
# Writing (one transaction)
# --------------------------------------------------------------------------------------------

@dataclass
class CgratesImportSummary:
    """What an import changed; ``changes`` is 0 when the model already held the plan."""

    folder: str
    decks: dict[str, str] = field(default_factory=dict)      # code -> created | updated | unchanged
    decks_created: int = 0
    decks_updated: int = 0                                   # decks with any change (not counted twice)
    deck_settings_updated: int = 0                           # rounding changed on an existing deck
    rates_added: int = 0
    rates_closed: int = 0
    rates_replaced: int = 0                                  # rows of a pending version deleted
    bands_added: int = 0
    bands_updated: int = 0
    bands_removed: int = 0
    profiles_added: int = 0
    profiles_updated: int = 0
    profiles_removed: int = 0
    left_out: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return (self.decks_created + self.deck_settings_updated + self.rates_added + self.rates_closed
                + self.rates_replaced + self.bands_added + self.bands_updated + self.bands_removed
                + self.profiles_added + self.profiles_updated + self.profiles_removed)

    def as_dict(self) -> dict:
        counts = {k: v for k, v in self.__dict__.items() if isinstance(v, int)}
        return {"folder": self.folder, "changes": self.changes, **counts, "decks": self.decks,
                "left_out": self.left_out}

    def describe(self) -> str:
        lines = [f"CGRateS tariff plan {self.folder}: {self.changes} change{'s' if self.changes != 1 else ''}",
                 f"  decks: {self.decks_created} created, {self.decks_updated} updated "
                 f"({', '.join(f'{c} {s}' for c, s in self.decks.items())})",
                 f"  rates: {self.rates_added} added, {self.rates_closed} closed"
                 + (f", {self.rates_replaced} of a pending version replaced" if self.rates_replaced else ""),
                 f"  time bands: {self.bands_added} added, {self.bands_updated} updated, {self.bands_removed} removed",
                 f"  rating profiles: {self.profiles_added} added, {self.profiles_updated} updated, "
                 f"{self.profiles_removed} removed"]
        if self.left_out:
            lines.append(f"  left out ({len(self.left_out)}):")
            lines += [f"    {p}" for p in self.left_out]
        return "\n".join(lines)


def import_cgrates(session: Session, folder: str | Path, *, actor: str, prefix: str = "",
                   skip_unsupported: bool = False, effective_at: dt.datetime | None = None,
                   currency: str = "EUR") -> CgratesImportSummary:
    """Read the CGRateS tariff plan in ``folder`` and write it into the model (see the module
    docstring) in ``session``'s transaction; the caller commits. Raises
    :class:`~bluerocktel.rating.cgrates.TariffPlanError` for an unreadable folder and
    :class:`CgratesImportError` for what cannot be imported (every problem listed), for a deck
    code already used by a deck not imported from this CGRateS plan, and for an
    ``effective_at`` before the deck's latest version (or equal to it once in force)."""
    folder = Path(folder)
    now = dt.datetime.now(UTC)
    effective_at = effective_at or now
    if effective_at.tzinfo is None:
        raise CgratesImportError(f"effective_at {effective_at.isoformat()} has no time zone")
    wanted = build_import(read_tariff_plan(folder), prefix)
    if wanted.problems and not skip_unsupported:
        raise CgratesImportError(
            f"CGRateS tariff plan {folder} cannot be imported whole ({len(wanted.problems)} problem"
            f"{'s' if len(wanted.problems) != 1 else ''}); fix them, or import the rest with --skip-unsupported "
            "(skip_unsupported=True):", wanted.problems)
    summary = CgratesImportSummary(folder=str(folder), left_out=wanted.problems)

    codes = [d.code for d in wanted.decks]
    locked = select(RateDeck).where(RateDeck.code.in_(codes)).with_for_update()   # as activate() locks a deck
    existing = {d.code: d for d in session.scalars(locked)} if codes else {}
    clashes = [f"deck {code} ({d.name!r}, id {d.id})" for code, d in existing.items()
               if d.name != next(w.name for w in wanted.decks if w.code == code)]
    if clashes:
        raise CgratesImportError(
            "deck codes already used by decks that are not these CGRateS rating plans; import with a --prefix "
            "(e.g. --prefix CGR_) to give the imported decks other codes:", clashes)

    deck_ids: dict[str, int] = {}
    for want in wanted.decks:
        deck = existing.get(want.code)
        fields = dict(rounding_method=want.rounding[0], rounding_decimals=want.rounding[1],
                      increment_rounding_method=INCREMENT_ROUNDING[0],
                      increment_rounding_decimals=INCREMENT_ROUNDING[1])
        if deck is None:
            deck = RateDeck(code=want.code, name=want.name, kind=RateDeckKind.SELL.value, currency=currency, **fields)
            session.add(deck)
            session.flush()
            summary.decks_created += 1
            summary.decks[want.code] = "created"
            version_at = CGRATES_EPOCH
        else:
            changed = {k: v for k, v in fields.items() if getattr(deck, k) != v}
            for k, v in changed.items():
                setattr(deck, k, v)
            summary.deck_settings_updated += bool(changed)
            summary.decks[want.code] = "updated" if changed else "unchanged"
            version_at = effective_at
        deck_ids[want.plan_id] = deck.id
        before = summary.changes
        _sync_bands(session, deck, want, summary)
        _write_rates(session, deck, want, version_at, now, summary)
        if summary.decks[want.code] == "unchanged" and summary.changes > before:
            summary.decks[want.code] = "updated"
        summary.decks_updated += summary.decks[want.code] == "updated"
    _sync_profiles(session, wanted, deck_ids, summary)
    if summary.changes:
        session.flush()
        record_audit(session, actor, "rating.import_cgrates", "cgrates_tariff_plan", folder.name,
                     folder=str(folder), prefix=prefix, changes=summary.changes,
                     **{k: v for k, v in summary.as_dict().items() if k not in ("folder", "changes")})
    return summary


def _sync_bands(session: Session, deck: RateDeck, want: DeckPlan, summary: CgratesImportSummary) -> None:
    have = {(b.name, b.days, b.start_minute): b
            for b in session.scalars(select(TimeBand).where(TimeBand.deck_id == deck.id))}
    wanted = {(b.name, b.days, b.start_minute): b for b in want.bands}
    for key, row in have.items():
        if key not in wanted:
            session.delete(row)
            summary.bands_removed += 1
    session.flush()
    for key, b in wanted.items():
        row = have.get(key)
        if row is None:
            session.add(TimeBand(deck_id=deck.id, name=b.name, days=b.days, start_minute=b.start_minute,
                                 end_minute=b.end_minute, priority=b.priority))
            summary.bands_added += 1
        elif (row.end_minute, row.priority) != (b.end_minute, b.priority):
            row.end_minute, row.priority = b.end_minute, b.priority
            summary.bands_updated += 1


def _write_rates(session: Session, deck: RateDeck, want: DeckPlan, version_at: dt.datetime, now: dt.datetime,
                 summary: CgratesImportSummary) -> None:
    """The deck's rates (every call type) as a version from ``version_at``, as a rate sheet's are
    (:func:`bluerocktel.rating.deckimport.diff_deck`): only the prefixes that changed are written."""
    try:
        diff = diff_deck(session, deck, want.rates, version_at, now=now, call_types=[c.value for c in CallType])
    except DeckImportError as exc:
        raise CgratesImportError(str(exc)) from None
    write_version(session, deck.id, diff)
    summary.rates_added += len(diff.to_insert)
    summary.rates_closed += len(diff.to_close)
    summary.rates_replaced += len(diff.to_delete)


def _sync_profiles(session: Session, wanted: CgratesImport, deck_ids: dict[str, int],
                   summary: CgratesImportSummary) -> None:
    ours = set(deck_ids.values())
    have = {(p.tenant, p.category, p.subject, p.activation_at): p for p in session.scalars(select(RatingProfile))}
    keep = set()
    for w in wanted.profiles:
        key = (w.tenant, w.category, w.subject, w.activation_at)
        keep.add(key)
        row = have.get(key)
        deck_id = deck_ids[w.plan_id]
        if row is None:
            session.add(RatingProfile(tenant=w.tenant, category=w.category, subject=w.subject,
                                      activation_at=w.activation_at, deck_id=deck_id,
                                      fallback_subjects=w.fallback_subjects))
            summary.profiles_added += 1
        elif (row.deck_id, row.fallback_subjects) != (deck_id, w.fallback_subjects):
            row.deck_id, row.fallback_subjects = deck_id, w.fallback_subjects
            summary.profiles_updated += 1
    for key, row in have.items():
        if key not in keep and row.deck_id in ours:
            session.delete(row)
            summary.profiles_removed += 1
