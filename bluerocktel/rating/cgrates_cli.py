"""``bluerocktel rating quote`` and ``bluerocktel rating import-cgrates``.

Wiring (in ``bluerocktel/cli.py``)::

    rating = sub.add_parser("rating", help="rating plans and quotes").add_subparsers(
        dest="rating_command", required=True)
    add_rating_quote_parser(rating, common)
    add_rating_import_cgrates_parser(rating, common)

``rating quote`` prices one call or usage and prints the price and its trace (``--json``: a
JSON object with a ``price`` field). With ``--cgrates-dir DIR`` it reads a CGRateS tariff plan
folder and prices the way CGRateS does (:mod:`bluerocktel.rating.cgrates`); without, it quotes
from the system of record through the rating kernel (:mod:`bluerocktel.rating.quote`): ``--plan
CODE`` (a deck code, or an imported CGRateS RatingPlan id) or ``--tenant/--category/--subject``
(the rating profiles). ``--duration`` is seconds for calls and units for SMS/data categories.
The exit status is 0 when priced (rated, or free for a zero duration), 1 when unrated (the
JSON then has ``"price": null`` and a ``reason``), 2 on a refused request.

``rating import-cgrates DIR`` imports a CGRateS tariff plan folder into the system of record
(:mod:`bluerocktel.rating.cgrates_import`); exit 0, or 2 when refused (every problem listed).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from bluerocktel.errors import UserFacingError
from bluerocktel.timeutil import parse_instant, parse_zone


def add_rating_quote_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "quote", parents=[common], help="price one call/usage and print the price and its trace",
        description="Price one call or usage: --plan P, or --tenant/--category/--subject to go through the "
                    "rating profiles. With --cgrates-dir, the way CGRateS does from its tariff plan folder; "
                    "without, from the system of record through the rating kernel.")
    p.add_argument("--cgrates-dir", default=None,
                   help="a CGRateS tariff plan folder (Rates.csv, ...); without it, quote from the system of record")
    p.add_argument("--plan", default=None, help="price with this RatingPlan (or deck code) directly")
    p.add_argument("--tenant", default=None)
    p.add_argument("--category", default=None, help="e.g. call, sms, data")
    p.add_argument("--subject", default=None)
    p.add_argument("--to", required=True, help="destination number (matched as a string prefix)")
    p.add_argument("--start", required=True, help="ISO 8601 start with a time zone, e.g. 2019-03-11T09:00:00Z")
    p.add_argument("--duration", required=True, type=int, help="seconds (calls) or units (SMS, data)")
    p.add_argument("--tor", default=None, help="*voice, *data, *sms, ... (default: from the category)")
    p.add_argument("--timing-tz", default="UTC",
                   help="time zone the Timings / time bands are evaluated in (default UTC)")
    p.set_defaults(func=cmd_rating_quote)
    return p


def describe_quote(q) -> str:
    """A few lines a person can check by hand."""
    t = q.trace
    if q.status != "rated":
        return f"unrated: {q.reason}"
    lines = [f"price {q.price}" + (" (MaxCost reached)" if q.max_cost_hit else "")
             + (" — should have been disconnected" if q.disconnect else "")]
    lines += [f"  {n}" for n in t.get("lookups", [])]
    for s in t.get("timespans", []):
        cost = (f"{s.increments} x {s.increment}{t['unit']} x {s.increment_cost}" if s.increment_cost is not None
                else f"{s.increments} x {s.increment}{t['unit']} (raw)")
        lines.append(f"  {s.offset_from}-{s.offset_to}{t['unit']} {s.start_at.isoformat()} {s.rating_plan_id} "
                     f"{s.destination_id}/{s.matched_prefix} timing {s.timing_id} {s.destination_rate_id}/"
                     f"{s.rate_id}@{s.slot['group_interval_start']}: {cost} = {s.cost}")
    if "connect_fee" in t:
        lines.append(f"  connect fee {t['connect_fee']} ({t['connect_fee_rate_id']}); total {t['unrounded_total']}; "
                     f"rounding {t['rounding_method'] or 'none'} {t['rounding_decimals']} -> {t['rounded_total']}")
    return "\n".join(lines)


def cmd_rating_quote(args) -> int:
    if args.plan is None and not (args.tenant and args.category and args.subject):
        raise UserFacingError("give --plan P, or --tenant, --category and --subject")
    start = parse_instant(args.start, what="--start", default_tz=None)
    if args.cgrates_dir is None:
        return _quote_from_model(args, start)
    from bluerocktel.rating.cgrates import quote, read_tariff_plan

    tz = parse_zone(args.timing_tz, what="--timing-tz")
    plan = read_tariff_plan(Path(args.cgrates_dir))
    q = quote(plan, tenant=args.tenant, category=args.category, subject=args.subject, destination=args.to,
              start=start, usage=args.duration, rating_plan=args.plan, tor=args.tor, timing_tz=tz)
    if getattr(args, "json", False):
        print(json.dumps(q.as_dict(), indent=2))
    else:
        print(describe_quote(q))
    return 0 if q.status == "rated" else 1


def _quote_from_model(args, start: datetime) -> int:
    from bluerocktel.rating.quote import describe_quote as describe_model_quote
    from bluerocktel.rating.quote import quote_call
    from bluerocktel.workbench import Workbench

    parse_zone(args.timing_tz, what="--timing-tz")   # same refusal text for a bad zone
    timezone_name = "UTC" if args.timing_tz.upper() in ("UTC", "Z") else args.timing_tz
    wb = Workbench.open(getattr(args, "data_dir", None))
    try:
        result = quote_call(wb, plan=args.plan, tenant=args.tenant, category=args.category, subject=args.subject,
                            to=args.to, start=start, duration=args.duration, timezone=timezone_name,
                            call_type=args.tor)
    finally:
        wb.close()
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(describe_model_quote(result))
    return 1 if result["status"] == "unrated" else 0


def add_rating_import_cgrates_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "import-cgrates", parents=[common], help="import a CGRateS tariff plan folder into the rating model",
        description="Read a CGRateS tariff plan folder (Destinations, Timings, Rates, DestinationRates, "
                    "RatingPlans, RatingProfiles CSVs) and write its rating plans as sell decks (cgrates "
                    "rounding profile), rates, time bands and rating profiles. Re-importing the same folder "
                    "changes nothing.")
    p.add_argument("folder", metavar="DIR", help="the tariff plan folder")
    p.add_argument("--prefix", default="", help="put this before every deck code (e.g. CGR_)")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="import what our model can express and list the rest, instead of refusing the import")
    p.add_argument("--effective", default=None,
                   help="ISO 8601 instant from which changed rates of a re-import apply, UTC unless it has "
                        "an offset (default: now)")
    p.add_argument("--currency", default="EUR", help="currency of new decks (CGRateS plans do not say)")
    p.set_defaults(func=cmd_rating_import_cgrates)
    return p


def cmd_rating_import_cgrates(args) -> int:
    from bluerocktel.rating.cgrates_import import import_cgrates
    from bluerocktel.workbench import Workbench

    effective = parse_instant(args.effective, what="--effective", default_tz="UTC") if args.effective else None
    wb = Workbench.open(args.data_dir)
    try:
        with wb.db.transaction() as session:
            summary = import_cgrates(session, Path(args.folder), actor="cli", prefix=args.prefix,
                                     skip_unsupported=args.skip_unsupported, effective_at=effective,
                                     currency=args.currency)
    finally:
        wb.close()
    print(json.dumps(summary.as_dict(), indent=2) if getattr(args, "json", False) else summary.describe())
    return 0
