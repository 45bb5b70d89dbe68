"""CGRateS tariff plans: an exact reader and the reference pricing engine (the "cgrates" profile).

This module reads a CGRateS tariff plan folder (the CSV files ``cgr-loader`` loads) and prices
one call or usage the way CGRateS' rater (``CallDescriptor.GetCost``, v0.10) does. It is pure
Python and :class:`~decimal.Decimal` (money never touches a float): it is the reference the
set-based kernel checks itself against, and the engine behind ``bluerocktel rating quote``.

Reading (:func:`read_tariff_plan`)
----------------------------------
Files, all optional (as for ``cgr-loader``), but a folder with none of them is refused:

================== =======================================================================
file               columns
================== =======================================================================
Destinations.csv   ID, Prefix (one row per prefix)
Timings.csv        ID, Years, Months, MonthDays, WeekDays, Time
Rates.csv          ID, ConnectFee, Rate, RateUnit, RateIncrement, GroupIntervalStart (a slot)
DestinationRates   ID, DestinationsID, RatesID, RoundingMethod, RoundingDecimals, MaxCost,
.csv               MaxCostStrategy (one row per destination)
RatingPlans.csv    ID, DestinationRatesID, TimingID, Weight (one row per binding)
RatingProfiles.csv Tenant, Category, Subject, ActivationTime, RatingPlanID, FallbackSubjects
                   (v0.10; the v0.9 layout with a leading Direction and a trailing
                   CdrStatQueueIds column is read too)
================== =======================================================================

Lines starting with ``#`` and blank lines are skipped; fields are trimmed. Every malformed row
and every reference to an unknown id becomes one problem ``File.csv:LINE: what was wrong``; all
problems are collected and raised together as :class:`TariffPlanError` (a
:class:`~bluerocktel.errors.FormatError`). Values:

- money (ConnectFee, Rate, MaxCost) and Weight: decimal text, empty = 0, never negative;
- durations (RateUnit, RateIncrement, GroupIntervalStart): CGRateS' ``ParseDurationWithNanosecs``:
  a Go duration (``60s``, ``1m``, ``1m30s``, ``1.5s``) or a bare integer, which counts
  **nanoseconds** (``1024`` = 1024 ns). Data and SMS usage is counted in the same nanosecond
  units (2048 bytes = 2048 ns), so ``RateUnit 1024`` means "per 1024 units";
- Timings: ``*any`` or ``;``-separated integers; week days 0..7 with 0 and 7 = Sunday (Go's
  numbering, ``day % 7``); Time ``HH:MM:SS`` (an optional ``;HH:MM:SS`` end is read but, as in
  CGRateS, not used for rating: a time band runs from its start to the end of the day). A
  Time such as ``*asap`` is accepted in the file but refused where a RatingPlan uses it;
- RoundingMethod ``*up``, ``*middle`` (half-up), ``*down`` or empty (no rounding);
  MaxCostStrategy ``*free``, ``*disconnect`` or empty;
- ActivationTime: ISO 8601 / RFC 3339 (``2014-01-14T00:00:00Z``), or Unix seconds; a time
  without an offset is read as UTC (CGRateS uses its configured default time zone);
- a Rate must have a slot at GroupIntervalStart 0 (otherwise the start of a call has no price).

Pricing (:func:`quote`), step by step as CGRateS does it
---------------------------------------------------------
1. **Rating profile**: ``tenant:category:subject``; only when that profile does not exist at all,
   ``tenant:category:*any``. The activations used are the newest one at or before the call
   start, then every later one up to the call end (a call crossing an activation time is split
   there). When the profile's rating plan has no rate for the destination, its
   FallbackSubjects are tried in order (at most 3 levels deep); the part of a call before the
   first activation falls back to ``*any``. Anything left uncovered makes the call **unrated**
   (a destination no plan prices is never free).
2. **Destination**: the longest prefix of the dialled number (exact string prefixes, down to
   one character) that belongs to a destination the rating plan binds; when several
   destinations share that prefix, the one whose bindings have the highest Weight among those
   with a Timing active at the call start wins; then ``*any`` as the last resort.
3. **Timespans** (voice only; data/SMS/other units are one span rated by the band active at
   the start): the call is cut at rating-plan activations, at midnights of the time zone the
   Timings are evaluated in, and wherever the winning binding changes. At each instant the
   winning binding is, among those whose Timing is active (matching day, time of day >= its
   start), the highest Weight, then the latest start (the "closest" band: evening 19:00 beats
   peak 08:00 which beats morning 00:00). Each span is cut again at the GroupIntervalStart of
   its Rate's slots (positions counted from the start of the *call*); a span is priced by the
   slot with the highest GroupIntervalStart <= the span's position in the call.
4. **Increments**: each span is stretched to a whole number of its slot's RateIncrement (a
   span shorter than one increment becomes one increment and swallows, or trims, the spans
   it now overlaps). RateUnit or RateIncrement 0 means 1 s.
5. **Cost of a span** with ``n`` increments: ``raw = round5(duration x Rate / RateUnit)``,
   ``increment = round5(raw / n)``, ``cost = n x increment`` — every increment cost is rounded
   to 5 decimals half-up **before** multiplying (CGRateS ``general.rounding_decimals = 5``;
   ``0.1/60s`` in 1 s increments costs ``0.00167`` a second, 60 s cost ``0.1002``). Above
   ``MAX_INCREMENTS`` (rals.max_increments = 1,000,000) increments, CGRateS keeps ``raw``.
6. **Total**: the connect fee of the *first* span's Rate (its first slot in file order) plus the
   span costs in call order. MaxCost (> 0, with a strategy): as soon as the running total
   reaches the MaxCost of the span's DestinationRate it is capped there: ``*free`` = the cost
   stops growing; ``*disconnect`` = same cap plus ``disconnect=True``.
7. **Rounding**: the total is rounded with the RoundingMethod/RoundingDecimals of the span
   whose DestinationRate has the most decimals (the first such span). With RoundingDecimals
   0 everywhere nothing is rounded (CGRateS' ``GetLongestRounding`` starts at 0 decimals and
   an empty method).

What we do differently from CGRateS, on purpose
-----------------------------------------------
- Arithmetic is exact (Fraction/Decimal); CGRateS uses float64, so on an exact half-way value
  at the 5th decimal it may round the other way, and its ``*up`` ignores excesses below
  1e-7 of a unit of the last decimal ("float chaos" guard).
- ``*free``: CGRateS compares MaxCost to ``MaxCostSoFar``, to which it adds the *running* total
  after every span, so a call of two or more spans can be charged MaxCost while costing less.
  We compare MaxCost to the running total itself: the cost stops growing at MaxCost.
- ``*disconnect``: CGRateS' offline ``GetCost`` ignores it; its online session would have been
  cut when the cost reached MaxCost. A CDR longer than that describes a call that should have
  been disconnected: we charge MaxCost (what the session could have cost at most) and set
  ``disconnect=True`` (and ``max_cost_hit``) so that it can be looked into.
- Time bands: CGRateS evaluates Timings in the location of the call start it is given. Here
  the start is an aware datetime and Timings are evaluated in ``timing_tz`` (default UTC);
  pass ``ZoneInfo("Europe/Paris")`` for local-time bands.
- Where two bindings of different weights for one destination begin mid-call, CGRateS' split
  loop (its interval sorter is not a strict order) may keep the band of the call start; we
  switch at the instant the heavier band begins. A call spanning three or more activations of
  one profile is split at every activation (CGRateS splits only at the first).
- A zero usage is priced 0 (CGRateS charges nothing, not even the connect fee) but only when
  the destination is rated; otherwise it is unrated.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

from bluerocktel.errors import FormatError, NotFoundError, UserFacingError
from bluerocktel.money import D, MoneyError, quantize
from bluerocktel.timeutil import parse_instant

ANY = "*any"
NS_PER_S = 1_000_000_000
GLOBAL_ROUNDING_DECIMALS = 5        # CGRateS general.rounding_decimals (default 5)
MAX_INCREMENTS = 1_000_000          # CGRateS rals.max_increments (default)
RECURSION_MAX_DEPTH = 3             # CGRateS engine.RECURSION_MAX_DEPTH (fallback subjects)
ROUNDING_METHODS = {"*up": ROUND_CEILING, "*middle": ROUND_HALF_UP, "*down": ROUND_FLOOR}
MAX_COST_STRATEGIES = ("*free", "*disconnect")
#: Categories whose usage is counted in units (SMS, bytes, ...) rather than seconds.
UNIT_CATEGORIES = {"data": "*data", "sms": "*sms", "mms": "*mms", "generic": "*generic"}
TORS = ("*voice", "*data", "*sms", "*mms", "*generic")

FILES = ("Destinations.csv", "Timings.csv", "Rates.csv", "DestinationRates.csv", "RatingPlans.csv",
         "RatingProfiles.csv")


class TariffPlanError(FormatError):
    """A tariff plan folder cannot be used; ``problems`` lists every ``File.csv:LINE: ...``."""

    def __init__(self, folder: Path, problems: list[str]):
        self.folder = folder
        self.problems = problems
        super().__init__(f"CGRateS tariff plan {folder} is unusable ({len(problems)} problem"
                         f"{'s' if len(problems) != 1 else ''}):\n" + "\n".join(problems))


# --------------------------------------------------------------------------------------------
# The tariff plan
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Destination:
    id: str
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Timing:
    """A time band: the days it matches (empty set = any) and the time of day it starts."""

    id: str
    years: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    month_days: frozenset[int] = frozenset()
    week_days: frozenset[int] = frozenset()     # 0 = Sunday .. 6 = Saturday (Go's numbering)
    start_time: time | None = time(0)           # None: e.g. *asap, not a time of day
    end_time: time | None = None                # read, ignored by rating (as in CGRateS)
    time_text: str = "00:00:00"
    line: int = 0

    def matches_day(self, day: date) -> bool:
        return ((not self.years or day.year in self.years)
                and (not self.months or day.month in self.months)
                and (not self.month_days or day.day in self.month_days)
                and (not self.week_days or day.isoweekday() % 7 in self.week_days))

    def is_active_at(self, local: datetime) -> bool:
        """CGRateS ``RITiming.IsActiveAt``: the day matches and the time of day >= the start."""
        return self.matches_day(local.date()) and local.time() >= self.start_time


ANY_TIMING = Timing(id=ANY, time_text="*any")


@dataclass(frozen=True)
class RateSlot:
    """One row of Rates.csv. Durations are integer nanoseconds (CGRateS ``time.Duration``)."""

    connect_fee: Decimal
    rate: Decimal
    rate_unit_ns: int
    rate_increment_ns: int
    group_interval_start_ns: int
    line: int = 0

    @property
    def unit_ns(self) -> int:
        return self.rate_unit_ns or NS_PER_S            # GetRateParameters: 0 means 1 s

    @property
    def increment_ns(self) -> int:
        return self.rate_increment_ns or NS_PER_S


@dataclass(frozen=True)
class Rate:
    id: str
    slots: tuple[RateSlot, ...]                         # in file order

    @property
    def connect_fee(self) -> Decimal:
        """CGRateS takes the connect fee of a Rate from its first slot (``RateSlots[0]``)."""
        return self.slots[0].connect_fee

    def slot_at(self, position_ns: int) -> RateSlot:
        """The slot with the highest GroupIntervalStart <= ``position_ns`` (position in the call)."""
        best = None
        for slot in self.slots:
            if slot.group_interval_start_ns <= position_ns and (
                    best is None or slot.group_interval_start_ns > best.group_interval_start_ns):
                best = slot
        assert best is not None, "the reader guarantees a slot at GroupIntervalStart 0"
        return best


@dataclass(frozen=True)
class DestinationRate:
    id: str
    destination_id: str                                 # a Destinations id or *any
    rate_id: str
    rounding_method: str                                # *up, *middle, *down or "" (none)
    rounding_decimals: int
    max_cost: Decimal
    max_cost_strategy: str                              # *free, *disconnect or ""
    line: int = 0


@dataclass(frozen=True)
class RatingPlanBinding:
    destination_rate_id: str
    timing_id: str
    weight: Decimal
    line: int = 0


@dataclass(frozen=True)
class RatingPlan:
    id: str
    bindings: tuple[RatingPlanBinding, ...]


@dataclass(frozen=True)
class RatingActivation:
    activation_at: datetime                             # aware, UTC
    rating_plan_id: str
    fallback_subjects: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class RatingProfile:
    tenant: str
    category: str
    subject: str
    activations: tuple[RatingActivation, ...]           # sorted by activation time

    @property
    def key(self) -> str:
        return f"{self.tenant}:{self.category}:{self.subject}"


@dataclass(frozen=True)
class RateInterval:
    """One binding of a rating plan for one destination (CGRateS ``RateInterval``)."""

    rating_plan_id: str
    timing: Timing
    weight: Decimal
    destination_rate: DestinationRate
    rate: Rate


@dataclass
class TariffPlan:
    """A whole tariff plan; ``reverse_destinations`` and ``plan_intervals`` are derived indexes."""

    folder: Path | None
    destinations: dict[str, Destination]
    timings: dict[str, Timing]
    rates: dict[str, Rate]
    destination_rates: dict[str, tuple[DestinationRate, ...]]
    rating_plans: dict[str, RatingPlan]
    rating_profiles: dict[tuple[str, str, str], RatingProfile]
    reverse_destinations: dict[str, tuple[str, ...]] = field(init=False, repr=False)
    plan_intervals: dict[str, dict[str, tuple[RateInterval, ...]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        reverse: dict[str, list[str]] = {}
        for dest in self.destinations.values():
            for prefix in dest.prefixes:
                ids = reverse.setdefault(prefix, [])
                if dest.id not in ids:
                    ids.append(dest.id)
        self.reverse_destinations = {p: tuple(ids) for p, ids in reverse.items()}
        plans: dict[str, dict[str, tuple[RateInterval, ...]]] = {}
        for plan in self.rating_plans.values():
            by_dest: dict[str, list[RateInterval]] = {}
            for b in plan.bindings:
                timing = ANY_TIMING if b.timing_id == ANY else self.timings[b.timing_id]
                for dr in self.destination_rates[b.destination_rate_id]:
                    by_dest.setdefault(dr.destination_id, []).append(
                        RateInterval(plan.id, timing, b.weight, dr, self.rates[dr.rate_id]))
            plans[plan.id] = {d: tuple(ris) for d, ris in by_dest.items()}
        self.plan_intervals = plans

    def describe(self) -> str:
        return (f"{len(self.destinations)} destinations, {len(self.timings)} timings, {len(self.rates)} rates, "
                f"{len(self.destination_rates)} destination rates, {len(self.rating_plans)} rating plans, "
                f"{len(self.rating_profiles)} rating profiles")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

_GO_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": NS_PER_S,
                "m": 60 * NS_PER_S, "h": 3600 * NS_PER_S}
_GO_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_GO_DURATION = re.compile(rf"(?:{_GO_PART})+")
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})")


def parse_duration_ns(text: str) -> int:
    """CGRateS ``ParseDurationWithNanosecs``: '' -> 0, a bare number -> nanoseconds, else a Go
    duration ('60s', '1m30s', '1.5s'). Negative or fractional-nanosecond values are refused."""
    s = text.strip()
    if s == "":
        return 0
    if s.isdigit():
        return int(s)
    if re.fullmatch(r"\d*\.\d+|\d+\.\d*", s):
        s += "ns"
    if s == "0" or not _GO_DURATION.fullmatch(s):
        raise ValueError(f"{text!r} is not a duration (e.g. 60s, 1m, 1m30s, or nanoseconds as 1024)")
    total = sum((Fraction(num) * _GO_UNITS_NS[unit] for num, unit in re.findall(_GO_PART, s)), Fraction(0))
    if total.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of nanoseconds")
    return int(total)


class _Reader:
    """Reads the CSV files of one folder, collecting problems instead of stopping at the first."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[str] = []

    def problem(self, name: str, line: int, message: str) -> None:
        self.problems.append(f"{name}:{line}: {message}")

    def rows(self, name: str, widths: tuple[int, ...], columns: str):
        """(line, fields) of every data row; rows of another width are problems.

        CGRateS records are one line each, so every line is parsed on its own: comment lines
        (``#``) and blank lines never reach the CSV parser and line numbers are exact."""
        path = self.folder / name
        if not path.is_file():
            return
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
        for line, text in enumerate(lines, start=1):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            try:
                row = next(csv.reader([text], skipinitialspace=True, strict=True))
            except csv.Error as exc:
                self.problem(name, line, f"unreadable CSV ({exc}): {text!r}")
                continue
            fields_ = [f.strip() for f in row]
            if len(fields_) not in widths:
                self.problem(name, line, f"expected {widths[0]} columns ({columns}), got {len(fields_)}: {text!r}")
                continue
            yield line, fields_

    def money(self, name: str, line: int, column: str, text: str) -> Decimal | None:
        if text == "":
            return Decimal(0)
        try:
            value = D(text)
        except MoneyError:
            self.problem(name, line, f"{column} {text!r} is not a decimal number")
            return None
        if value < 0:
            self.problem(name, line, f"{column} {text!r} is negative")
            return None
        return value

    def duration(self, name: str, line: int, column: str, text: str) -> int | None:
        try:
            return parse_duration_ns(text)
        except ValueError as exc:
            self.problem(name, line, f"{column} {exc}")
            return None

    def integer(self, name: str, line: int, column: str, text: str) -> int | None:
        if text == "":
            return 0
        if not re.fullmatch(r"\d+", text):
            self.problem(name, line, f"{column} {text!r} is not a non-negative integer")
            return None
        return int(text)

    def int_set(self, name: str, line: int, column: str, text: str, low: int, high: int) -> frozenset[int] | None:
        if text in ("", ANY):
            return frozenset()
        values = set()
        for part in text.split(";"):
            part = part.strip()
            if not re.fullmatch(r"\d+", part) or not low <= int(part) <= high:
                self.problem(name, line, f"{column} {text!r}: {part!r} is not *any or an integer {low}..{high}")
                return None
            values.add(int(part))
        return frozenset(values)

    def time_of_day(self, name: str, line: int, text: str) -> time | None:
        m = _TIME_OF_DAY.fullmatch(text)
        if not m or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3]) > 59:
            self.problem(name, line, f"Time {text!r} is not HH:MM:SS")
            return None
        return time(int(m[1]), int(m[2]), int(m[3]))

    def activation(self, name: str, line: int, text: str) -> datetime | None:
        """An ActivationTime: Unix seconds, or ISO 8601 (UTC unless it has an offset)."""
        s = text.strip()
        try:
            if s.isdigit():
                return datetime.fromtimestamp(int(s), timezone.utc)
            return parse_instant(s, what="ActivationTime", default_tz="UTC")
        except (ValueError, OverflowError, UserFacingError):
            self.problem(name, line, f"ActivationTime {text!r} is not an ISO 8601 time (e.g. 2014-01-14T00:00:00Z)")
            return None


def read_tariff_plan(folder: Path) -> TariffPlan:
    """Read a CGRateS tariff plan folder; raise :class:`TariffPlanError` listing every problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(f"CGRateS tariff plan folder {folder} does not exist")
    if not any((folder / name).is_file() for name in FILES):
        raise TariffPlanError(folder, [f"{folder}: none of {', '.join(FILES)} is there"])
    r = _Reader(folder)

    # Destinations
    name = "Destinations.csv"
    dest_prefixes: dict[str, list[str]] = {}
    for line, (dest_id, prefix) in r.rows(name, (2,), "ID,Prefix"):
        if not dest_id or not prefix:
            r.problem(name, line, "ID and Prefix must not be empty")
            continue
        if dest_id == ANY:
            r.problem(name, line, f"ID {ANY} is reserved (it means every destination)")
            continue
        prefixes = dest_prefixes.setdefault(dest_id, [])
        if prefix not in prefixes:
            prefixes.append(prefix)
    destinations = {d: Destination(d, tuple(p)) for d, p in dest_prefixes.items()}

    # Timings
    name = "Timings.csv"
    timings: dict[str, Timing] = {}
    for line, (tid, years, months, mdays, wdays, tod) in r.rows(
            name, (6,), "ID,Years,Months,MonthDays,WeekDays,Time"):
        if not tid or tid == ANY:
            r.problem(name, line, f"ID {tid!r} is empty or reserved")
            continue
        if tid in timings:
            r.problem(name, line, f"Timing {tid!r} is defined twice (first at line {timings[tid].line})")
            continue
        ys = r.int_set(name, line, "Years", years, 1, 9999)
        ms = r.int_set(name, line, "Months", months, 1, 12)
        mds = r.int_set(name, line, "MonthDays", mdays, 1, 31)
        wds = r.int_set(name, line, "WeekDays", wdays, 0, 7)
        start = end = None
        ok = True
        if tod.startswith("*"):
            pass                                       # *asap & co: for action plans, not rating
        elif tod == "":
            start = time(0)
        else:
            parts = tod.split(";")
            start = r.time_of_day(name, line, parts[0].strip())
            end = r.time_of_day(name, line, parts[1].strip()) if len(parts) > 1 else None
            ok = start is not None and (len(parts) == 1 or end is not None) and len(parts) <= 2
        if None in (ys, ms, mds, wds) or not ok:
            continue
        timings[tid] = Timing(tid, ys, ms, mds, frozenset(d % 7 for d in wds), start, end, tod, line)

    # Rates
    name = "Rates.csv"
    rate_slots: dict[str, list[RateSlot]] = {}
    rate_first_line: dict[str, int] = {}
    for line, (rid, fee, value, unit, incr, gis) in r.rows(
            name, (6,), "ID,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart"):
        if not rid:
            r.problem(name, line, "ID must not be empty")
            continue
        parsed = (r.money(name, line, "ConnectFee", fee), r.money(name, line, "Rate", value),
                  r.duration(name, line, "RateUnit", unit), r.duration(name, line, "RateIncrement", incr),
                  r.duration(name, line, "GroupIntervalStart", gis))
        rate_first_line.setdefault(rid, line)
        if None in parsed:
            rate_slots.setdefault(rid, [])
            continue
        slots = rate_slots.setdefault(rid, [])
        slot = RateSlot(*parsed, line=line)
        clash = [s for s in slots if s.group_interval_start_ns == slot.group_interval_start_ns]
        if clash:
            r.problem(name, line, f"Rate {rid!r} has two slots at GroupIntervalStart {gis or '0'} "
                                  f"(lines {clash[0].line} and {line})")
            continue
        slots.append(slot)
    rates: dict[str, Rate] = {}
    for rid, slots in rate_slots.items():
        if slots and not any(s.group_interval_start_ns == 0 for s in slots):
            r.problem(name, rate_first_line[rid], f"Rate {rid!r} has no slot at GroupIntervalStart 0: "
                                                  "the start of a call would have no price")
        elif slots:
            rates[rid] = Rate(rid, tuple(slots))

    # DestinationRates
    name = "DestinationRates.csv"
    drs: dict[str, list[DestinationRate]] = {}
    for line, (drid, dest_id, rid, method, decimals, max_cost, strategy) in r.rows(
            name, (7,), "ID,DestinationsID,RatesID,RoundingMethod,RoundingDecimals,MaxCost,MaxCostStrategy"):
        problems_before = len(r.problems)
        if not drid:
            r.problem(name, line, "ID must not be empty")
        if dest_id != ANY and dest_id not in destinations:
            r.problem(name, line, f"DestinationsID {dest_id!r} is not in Destinations.csv")
        if rid not in rates:
            r.problem(name, line, f"RatesID {rid!r} is not in Rates.csv" if rid not in rate_slots
                      else f"RatesID {rid!r} is unusable (see Rates.csv)")
        if method not in ROUNDING_METHODS and method != "":
            r.problem(name, line, f"RoundingMethod {method!r} is not one of *up, *middle, *down")
        n_decimals = r.integer(name, line, "RoundingDecimals", decimals)
        cap = r.money(name, line, "MaxCost", max_cost)
        if strategy not in MAX_COST_STRATEGIES and strategy != "":
            r.problem(name, line, f"MaxCostStrategy {strategy!r} is not one of *free, *disconnect")
        known = drs.setdefault(drid, [])
        if any(d.destination_id == dest_id for d in known):
            r.problem(name, line, f"DestinationRate {drid!r} binds {dest_id!r} twice")
        if len(r.problems) == problems_before:
            known.append(DestinationRate(drid, dest_id, rid, method, n_decimals, cap, strategy, line))
    destination_rates = {k: tuple(v) for k, v in drs.items() if v}

    # RatingPlans
    name = "RatingPlans.csv"
    bindings: dict[str, list[RatingPlanBinding]] = {}
    plan_ids: set[str] = set()
    for line, (rpid, drid, tid, weight) in r.rows(name, (4,), "ID,DestinationRatesID,TimingID,Weight"):
        plan_ids.add(rpid)
        problems_before = len(r.problems)
        if not rpid:
            r.problem(name, line, "ID must not be empty")
        if drid not in destination_rates:
            r.problem(name, line, f"DestinationRatesID {drid!r} is not in DestinationRates.csv" if drid not in drs
                      else f"DestinationRatesID {drid!r} is unusable (see DestinationRates.csv)")
        if tid != ANY and tid not in timings:
            r.problem(name, line, f"TimingID {tid!r} is not in Timings.csv")
        elif tid != ANY and timings[tid].start_time is None:
            r.problem(name, line, f"TimingID {tid!r} has Time {timings[tid].time_text!r}, not a time of day")
        w = r.money(name, line, "Weight", weight)
        if len(r.problems) == problems_before:
            bindings.setdefault(rpid, []).append(RatingPlanBinding(drid, tid, w, line))
    rating_plans = {k: RatingPlan(k, tuple(v)) for k, v in bindings.items()}
    bad_plans = plan_ids - set(rating_plans)

    # RatingProfiles
    name = "RatingProfiles.csv"
    activations: dict[tuple[str, str, str], list[RatingActivation]] = {}
    for line, row in r.rows(name, (6, 8),
                            "Tenant,Category,Subject,ActivationTime,RatingPlanID,FallbackSubjects"):
        if len(row) == 8:                                # v0.9: Direction first, CdrStatQueueIds last
            row = row[1:7]
        tenant, category, subject, when, rpid, fallbacks = row
        problems_before = len(r.problems)
        if not tenant or not category or not subject:
            r.problem(name, line, "Tenant, Category and Subject must not be empty")
        at = r.activation(name, line, when)
        if rpid not in rating_plans:
            r.problem(name, line, f"RatingPlanID {rpid!r} is not in RatingPlans.csv" if rpid not in bad_plans
                      else f"RatingPlanID {rpid!r} is unusable (see RatingPlans.csv)")
        key = (tenant, category, subject)
        if at is not None and any(a.activation_at == at for a in activations.get(key, ())):
            r.problem(name, line, f"RatingProfile {':'.join(key)} is activated twice at {when}")
        if len(r.problems) == problems_before:
            fb = tuple(s.strip() for s in fallbacks.split(";") if s.strip())
            activations.setdefault(key, []).append(RatingActivation(at, rpid, fb, line))
    rating_profiles = {k: RatingProfile(*k, tuple(sorted(v, key=lambda a: a.activation_at)))
                       for k, v in activations.items()}

    if r.problems:
        raise TariffPlanError(folder, r.problems)
    return TariffPlan(folder, destinations, timings, rates, destination_rates, rating_plans, rating_profiles)


# --------------------------------------------------------------------------------------------
# Quote
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpanTrace:
    """One priced timespan. Offsets and durations are in the quote's unit (seconds or units)."""

    start_at: datetime
    end_at: datetime
    offset_from: Decimal
    offset_to: Decimal
    rating_profile: str | None
    activation_at: datetime | None
    rating_plan_id: str
    destination_id: str
    matched_prefix: str
    timing_id: str
    weight: Decimal
    destination_rate_id: str
    rate_id: str
    slot: dict
    increments: int
    increment: Decimal
    increment_cost: Decimal | None          # None above MAX_INCREMENTS (CGRateS keeps the raw cost)
    raw_cost: Decimal                       # round5(duration x rate / unit)
    cost: Decimal                           # increments x increment_cost


@dataclass(frozen=True)
class Quote:
    """The price of one call or usage. ``price`` is None when unrated (never 0 for "no rate")."""

    status: str                             # "rated" | "unrated"
    price: Decimal | None
    reason: str | None = None
    max_cost_hit: bool = False
    disconnect: bool = False
    trace: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return _jsonable({"status": self.status, "price": self.price, "reason": self.reason,
                          "max_cost_hit": self.max_cost_hit, "disconnect": self.disconnect, "trace": self.trace})


def _jsonable(value):
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class QuoteRequestError(UserFacingError):
    """A quote request that cannot be answered as asked (naive start, negative usage, ...)."""


@dataclass
class _RatingInfo:
    """CGRateS ``RatingInfo``: which plan prices the call from ``activation_at`` on."""

    activation_at: datetime
    profile: str | None = None
    rating_plan_id: str | None = None
    destination_id: str | None = None
    matched_prefix: str | None = None
    intervals: tuple[RateInterval, ...] | None = None
    fallback_subjects: tuple[str, ...] = ()


@dataclass
class _Span:
    start: int                              # ns offsets from the call start
    end: int
    info: _RatingInfo
    interval: RateInterval


def _round_fraction(x: Fraction, decimals: int) -> Decimal:
    """``x`` (>= 0) rounded half-up to ``decimals`` decimals, exactly."""
    return Decimal(math.floor(x * 10**decimals + Fraction(1, 2))).scaleb(-decimals)


def _td_ns(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * NS_PER_S + td.microseconds * 1_000


def _in_unit(ns: int, voice: bool) -> Decimal:
    value = Decimal(ns).scaleb(-9) if voice else Decimal(ns)
    return Decimal(format(value.normalize(), "f")) if value else Decimal(0)


def _continuous(infos: list[_RatingInfo], start: datetime) -> bool:
    return bool(infos) and infos[0].activation_at <= start and all(i.intervals for i in infos)


def _match_destination(plan: TariffPlan, rating_plan_id: str, destination: str, at_local: datetime):
    """(prefix, destination id, intervals) of the longest prefix the rating plan prices, or *any."""
    by_dest = plan.plan_intervals[rating_plan_id]
    if destination not in ("", ANY):
        for n in range(len(destination), 0, -1):
            prefix = destination[:n]
            best = None
            for dest_id in plan.reverse_destinations.get(prefix, ()):
                intervals = by_dest.get(dest_id)
                if not intervals or not any(ri.timing.is_active_at(at_local) for ri in intervals):
                    continue
                weight = max([Decimal(0), *(ri.weight for ri in intervals)])   # RateIntervalList.GetWeight
                if best is None or weight > best[0]:
                    best = (weight, prefix, dest_id, intervals)
            if best:
                return best[1:]
    if ANY in by_dest:
        return ANY, ANY, by_dest[ANY]
    return None


class _Resolver:
    """Rating profile selection with activations and fallback subjects (CGRateS LoadRatingPlans)."""

    def __init__(self, plan: TariffPlan, tenant: str, category: str, destination: str, tz: tzinfo):
        self.plan, self.tenant, self.category, self.destination, self.tz = plan, tenant, category, destination, tz
        self.notes: list[str] = []

    def profile_infos(self, subject: str, start: datetime, end: datetime, depth: int):
        """(found, infos) for ``tenant:category:subject`` over [start, end]."""
        key = (self.tenant, self.category, subject)
        label = ":".join(key)
        if depth > RECURSION_MAX_DEPTH:
            self.notes.append(f"{label}: fallback depth {depth} > {RECURSION_MAX_DEPTH}, not tried")
            return False, []
        profile = self.plan.rating_profiles.get(key)
        if profile is None:
            self.notes.append(f"{label}: no such RatingProfile")
            return False, []
        acts = list(profile.activations)
        first, stop = 0, len(acts)                      # RatingPlanActivations.GetActiveForCall
        for index, act in enumerate(acts):
            if act.activation_at <= start:
                first = index
            if act.activation_at > end:
                stop = index
                break
        active = acts[first:stop]
        if not active:
            self.notes.append(f"{label}: no activation between {start.isoformat()} and {end.isoformat()}")
        infos: list[_RatingInfo] = []
        for index, act in enumerate(active):
            at_local = start.astimezone(self.tz)
            match = _match_destination(self.plan, act.rating_plan_id, self.destination, at_local)
            if index == 0 and start < act.activation_at:
                self.notes.append(f"{label}: the call starts before its first activation "
                                  f"{act.activation_at.isoformat()}; that part falls back to {ANY}")
                infos.append(_RatingInfo(start, fallback_subjects=(ANY,)))
            if match:
                prefix, dest_id, intervals = match
                self.notes.append(f"{label}: activation {act.activation_at.isoformat()} -> {act.rating_plan_id}: "
                                  f"{self.destination} matches {dest_id} (prefix {prefix})")
                infos.append(_RatingInfo(act.activation_at, label, act.rating_plan_id, dest_id, prefix, intervals,
                                         act.fallback_subjects))
            else:
                self.notes.append(f"{label}: activation {act.activation_at.isoformat()} -> {act.rating_plan_id}: "
                                  f"no rate for {self.destination or ANY}"
                                  + (f"; fallback subjects {', '.join(act.fallback_subjects)}"
                                     if act.fallback_subjects else ""))
                if act.fallback_subjects:
                    infos.append(_RatingInfo(act.activation_at, fallback_subjects=act.fallback_subjects))
        infos.sort(key=lambda i: i.activation_at)
        if not _continuous(infos, start):
            depth += 1
            index = 0
            while index < len(infos):
                info = infos[index]
                if info.intervals or not info.fallback_subjects:
                    index += 1
                    continue
                t0 = start if index == 0 else info.activation_at
                t1 = end if index == len(infos) - 1 else infos[index + 1].activation_at
                for subject_fb in info.fallback_subjects:
                    found, sub = self.profile_infos(subject_fb, t0, t1, depth)
                    if not found:
                        continue
                    for k, new in enumerate(sub):
                        if not new.intervals:
                            continue
                        if k == 0:
                            infos[index] = new
                        else:
                            infos.insert(index + k, new)
                    if _continuous(sub, t0):
                        break
                index += 1
        return True, infos


def _local_utc(day: date, at: time, tz: tzinfo) -> datetime:
    return datetime.combine(day, at, tzinfo=tz).astimezone(timezone.utc)


def _winner(intervals: tuple[RateInterval, ...], local: datetime) -> RateInterval | None:
    """Highest weight among the bands active at ``local``, then the latest-starting band."""
    best = None
    for ri in intervals:
        if ri.timing.is_active_at(local) and (
                best is None or (ri.weight, ri.timing.start_time) > (best.weight, best.timing.start_time)):
            best = ri
    return best


def _split_voice(start: datetime, a: int, b: int, info: _RatingInfo, tz: tzinfo) -> list[_Span] | str:
    """Spans of [a, b) cut at midnights and where the winning band changes; a reason if a gap."""

    def at(offset: int) -> datetime:
        return start + timedelta(microseconds=offset // 1_000)

    cuts, midnights = {a, b}, set()
    day, last_day = at(a).astimezone(tz).date(), at(b).astimezone(tz).date()
    while day <= last_day:
        midnight = _td_ns(_local_utc(day, time(0), tz) - start)
        if a < midnight < b:
            cuts.add(midnight)
            midnights.add(midnight)
        for ri in info.intervals:
            if ri.timing.matches_day(day):
                begin = _td_ns(_local_utc(day, ri.timing.start_time, tz) - start)
                if a < begin < b:
                    cuts.add(begin)
        day += timedelta(days=1)
    spans: list[_Span] = []
    points = sorted(cuts)
    for p, q in zip(points, points[1:]):
        local = at(p).astimezone(tz)
        ri = _winner(info.intervals, local)
        if ri is None:
            return (f"no Timing of rating plan {info.rating_plan_id} for {info.destination_id} is active at "
                    f"{local.isoformat()}")
        if spans and spans[-1].interval is ri and p not in midnights:
            spans[-1].end = q
        else:
            spans.append(_Span(p, q, info, ri))
    return spans


def _split_groups(spans: list[_Span]) -> list[_Span]:
    """Cut every span at the GroupIntervalStart positions of its rate's slots."""
    out = []
    for span in spans:
        gis = sorted(s.group_interval_start_ns for s in span.interval.rate.slots)
        p = span.start
        for g in gis:
            if p < g < span.end:
                out.append(_Span(p, g, span.info, span.interval))
                p = g
        out.append(_Span(p, span.end, span.info, span.interval))
    return out


def _round_to_increments(spans: list[_Span]) -> list[_Span]:
    """CGRateS ``roundTimeSpansToIncrement`` + ``RemoveOverlapedFromIndex``."""
    i = 0
    while i < len(spans):
        span = spans[i]
        increment = span.interval.rate.slot_at(span.start).increment_ns
        duration = span.end - span.start
        billed = -(-duration // increment) * increment
        if billed > duration:
            span.end = span.start + billed
            j = i + 1
            while j < len(spans) and spans[j].end <= span.end:
                j += 1
            del spans[i + 1:j]
            if i + 1 < len(spans) and spans[i + 1].start < span.end:
                spans[i + 1].start = span.end
        i += 1
    return spans


def quote(plan: TariffPlan, *, tenant: str | None = None, category: str | None = None,
          subject: str | None = None, destination: str, start: datetime, usage: int | timedelta,
          rating_plan: str | None = None, tor: str | None = None, timing_tz: tzinfo = timezone.utc) -> Quote:
    """Price one call (usage in seconds, or a timedelta) or one usage in units (SMS, bytes).

    The rating profile ``tenant:category:subject`` selects the rating plan; or give
    ``rating_plan`` to price with one rating plan directly. ``tor`` (``*voice``, ``*data``,
    ``*sms``, ...) defaults from the category (data, sms, mms, generic count units; anything else
    is voice). ``timing_tz``: the time zone Timings are evaluated in. See the module docstring.
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise QuoteRequestError(f"the start {start.isoformat()} has no time zone; give an aware datetime")
    tor = tor or UNIT_CATEGORIES.get(category or "", "*voice")
    if tor not in TORS:
        raise QuoteRequestError(f"tor {tor!r} is not one of {', '.join(TORS)}")
    voice = tor == "*voice"
    if isinstance(usage, timedelta):
        if not voice:
            raise QuoteRequestError(f"a {tor} usage is a number of units, not a duration")
        usage_ns = _td_ns(usage)
    elif isinstance(usage, int) and not isinstance(usage, bool):
        usage_ns = usage * NS_PER_S if voice else usage
    else:
        raise QuoteRequestError(f"usage {usage!r} must be an int ({'seconds' if voice else 'units'})")
    if usage_ns < 0:
        raise QuoteRequestError(f"usage {usage!r} is negative")
    start = start.astimezone(timezone.utc)
    end = start + timedelta(microseconds=usage_ns // 1_000)
    unit = "s" if voice else "units"
    trace: dict = {"tenant": tenant, "category": category, "subject": subject, "destination": destination,
                   "tor": tor, "start": start, "usage": _in_unit(usage_ns, voice), "unit": unit,
                   "timing_tz": str(timing_tz), "global_rounding_decimals": GLOBAL_ROUNDING_DECIMALS}

    # 1-2. rating infos (profile, activations, fallbacks, destination)
    if rating_plan is not None:
        if rating_plan not in plan.rating_plans:
            raise NotFoundError(f"rating plan {rating_plan!r} is not in the tariff plan "
                                f"(known: {', '.join(sorted(plan.rating_plans)) or 'none'})")
        match = _match_destination(plan, rating_plan, destination, start.astimezone(timing_tz))
        notes = [f"rating plan {rating_plan} given directly"]
        infos = [_RatingInfo(start, None, rating_plan, match[1], match[0], match[2])] if match else []
        if not match:
            notes.append(f"{rating_plan}: no rate for {destination or ANY}")
    else:
        if not (tenant and category and subject):
            raise QuoteRequestError("give tenant, category and subject (or a rating plan)")
        resolver = _Resolver(plan, tenant, category, destination, timing_tz)
        found, infos = resolver.profile_infos(subject, start, end, 1)
        if not found:
            found, infos = resolver.profile_infos(ANY, start, end, 1)
        notes = resolver.notes
    trace["lookups"] = notes
    if not _continuous(infos, start):
        return Quote("unrated", None, reason=f"no rating plan prices {destination or ANY} for "
                     f"{':'.join(str(x) for x in (tenant, category, subject)) if rating_plan is None else rating_plan}"
                     f" at {start.isoformat()}: {'; '.join(notes)}", trace=trace)
    if usage_ns == 0:
        trace.update(timespans=[], note="zero usage: CGRateS charges nothing, not even the connect fee")
        return Quote("rated", Decimal(0), trace=trace)

    # 3. timespans: activations, then (voice) midnights and bands, then group interval starts
    spans: list[_Span] = []
    if voice:
        for k, info in enumerate(infos):
            a = max(0, _td_ns(info.activation_at - start))
            b = usage_ns if k == len(infos) - 1 else min(usage_ns, _td_ns(infos[k + 1].activation_at - start))
            if b <= a:
                continue
            part = _split_voice(start, a, b, info, timing_tz)
            if isinstance(part, str):
                return Quote("unrated", None, reason=part, trace=trace)
            spans.extend(part)
    else:
        ri = _winner(infos[0].intervals, start.astimezone(timing_tz))
        if ri is None:
            return Quote("unrated", None, trace=trace, reason=(
                f"no Timing of rating plan {infos[0].rating_plan_id} for {infos[0].destination_id} "
                f"is active at {start.astimezone(timing_tz).isoformat()}"))
        spans = [_Span(0, usage_ns, infos[0], ri)]
    spans = _round_to_increments(_split_groups(spans))

    # 4-6. costs, connect fee, max cost
    first_rate = spans[0].interval.rate
    connect_fee = first_rate.connect_fee
    total = connect_fee
    sum_spans = Decimal(0)
    max_cost_hit = disconnect = False
    span_traces = []
    for span in spans:
        slot = span.interval.rate.slot_at(span.start)
        duration = span.end - span.start
        n = duration // slot.increment_ns
        raw = _round_fraction(Fraction(duration) * Fraction(slot.rate) / slot.unit_ns, GLOBAL_ROUNDING_DECIMALS)
        if n > MAX_INCREMENTS:
            increment_cost, cost = None, raw
        else:
            increment_cost = _round_fraction(Fraction(raw) / n, GLOBAL_ROUNDING_DECIMALS)
            cost = increment_cost * n
        sum_spans += cost
        total += cost
        dr = span.interval.destination_rate
        if dr.max_cost_strategy and dr.max_cost > 0 and total >= dr.max_cost:
            total = dr.max_cost
            max_cost_hit = True
            disconnect = disconnect or dr.max_cost_strategy == "*disconnect"
        span_traces.append(SpanTrace(
            start_at=start + timedelta(microseconds=span.start // 1_000),
            end_at=start + timedelta(microseconds=span.end // 1_000),
            offset_from=_in_unit(span.start, voice), offset_to=_in_unit(span.end, voice),
            rating_profile=span.info.profile, activation_at=span.info.activation_at if span.info.profile else None,
            rating_plan_id=span.interval.rating_plan_id, destination_id=span.info.destination_id,
            matched_prefix=span.info.matched_prefix, timing_id=span.interval.timing.id, weight=span.interval.weight,
            destination_rate_id=dr.id, rate_id=span.interval.rate.id,
            slot={"group_interval_start": _in_unit(slot.group_interval_start_ns, voice), "rate": slot.rate,
                  "rate_unit": _in_unit(slot.unit_ns, voice), "rate_increment": _in_unit(slot.increment_ns, voice),
                  "line": slot.line},
            increments=n, increment=_in_unit(slot.increment_ns, voice), increment_cost=increment_cost,
            raw_cost=raw, cost=cost))

    # 7. rounding: the DestinationRate with the most decimals (GetLongestRounding)
    decimals, method, rounding_dr = 0, "", None
    for span in spans:
        dr = span.interval.destination_rate
        if dr.rounding_decimals > decimals:
            decimals, method, rounding_dr = dr.rounding_decimals, dr.rounding_method, dr.id
    price = quantize(total, decimals, ROUNDING_METHODS[method]) if method in ROUNDING_METHODS else total
    trace.update(
        timespans=span_traces, billed_usage=_in_unit(spans[-1].end, voice),
        connect_fee=connect_fee, connect_fee_rate_id=first_rate.id, timespans_cost=sum_spans,
        total_before_max_cost=connect_fee + sum_spans, max_cost_hit=max_cost_hit,
        unrounded_total=total, rounding_method=method or None, rounding_decimals=decimals,
        rounding_destination_rate_id=rounding_dr, rounded_total=price)
    return Quote("rated", price, max_cost_hit=max_cost_hit, disconnect=disconnect, trace=trace)
