"""``bluerocktel rating quote``: price one call or usage with a CGRateS tariff plan, with its trace.

Wiring (in ``bluerocktel/cli.py``)::

    rating = sub.add_parser("rating", help="rating plans and quotes").add_subparsers(
        dest="rating_command", required=True)
    add_rating_quote_parser(rating, common)

For now the plan is read from ``--cgrates-dir DIR`` (a CGRateS tariff plan folder); quoting from
the system of record comes with the DB import. ``--duration`` is seconds for calls and units for
SMS/data categories (see :mod:`bluerocktel.rating.cgrates`). The exit status is 0 when rated,
1 when unrated (the JSON then has ``"price": null`` and a ``reason``), 2 on a refused request.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from bluerocktel.errors import UserFacingError


def add_rating_quote_parser(subparsers, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "quote", parents=[common], help="price one call/usage with a CGRateS tariff plan and print the trace",
        description="Price one call or usage the way CGRateS does; --plan P, or --tenant/--category/--subject "
                    "to go through the rating profiles.")
    p.add_argument("--cgrates-dir", required=True, help="a CGRateS tariff plan folder (Rates.csv, ...)")
    p.add_argument("--plan", default=None, help="price with this RatingPlan directly")
    p.add_argument("--tenant", default=None)
    p.add_argument("--category", default=None, help="e.g. call, sms, data")
    p.add_argument("--subject", default=None)
    p.add_argument("--to", required=True, help="destination number (matched as a string prefix)")
    p.add_argument("--start", required=True, help="ISO 8601 start with a time zone, e.g. 2019-03-11T09:00:00Z")
    p.add_argument("--duration", required=True, type=int, help="seconds (calls) or units (SMS, data)")
    p.add_argument("--tor", default=None, help="*voice, *data, *sms, ... (default: from the category)")
    p.add_argument("--timing-tz", default="UTC", help="time zone the Timings are evaluated in (default UTC)")
    p.set_defaults(func=cmd_rating_quote)
    return p


def _parse_start(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserFacingError(f"--start {text!r} is not an ISO 8601 time (e.g. 2019-03-11T09:00:00Z)") from None
    if value.tzinfo is None:
        raise UserFacingError(f"--start {text!r} has no time zone: add Z or an offset such as +01:00")
    return value


def _timing_tz(name: str):
    if name.upper() in ("UTC", "Z"):
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserFacingError(f"--timing-tz {name!r} is not a time zone (e.g. UTC, Europe/Paris)") from None


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
    from bluerocktel.rating.cgrates import quote, read_tariff_plan

    if args.plan is None and not (args.tenant and args.category and args.subject):
        raise UserFacingError("give --plan P, or --tenant, --category and --subject")
    start = _parse_start(args.start)
    tz = _timing_tz(args.timing_tz)
    plan = read_tariff_plan(Path(args.cgrates_dir))
    q = quote(plan, tenant=args.tenant, category=args.category, subject=args.subject, destination=args.to,
              start=start, usage=args.duration, rating_plan=args.plan, tor=args.tor, timing_tz=tz)
    if getattr(args, "json", False):
        print(json.dumps(q.as_dict(), indent=2))
    else:
        print(describe_quote(q))
    return 0 if q.status == "rated" else 1
