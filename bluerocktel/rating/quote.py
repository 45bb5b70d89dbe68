"""Quote one call from the system of record, through the rating kernel (``bluerocktel rating quote``).

:func:`quote_call` prices one call (or SMS / data usage) exactly as the kernel prices a CDR:
it builds a one-row CDR and the tariffs of :func:`~bluerocktel.rating.tariffs.load_tariffs`
with one synthetic identifier (an account code only the quote uses) that maps the call to the
deck to price it with, and runs :func:`~bluerocktel.rating.kernel.price_batch` (no bundles, no
carrier cost: a quote is the plan's price).

Which deck
    ``plan``: a deck code (or the id of an imported CGRateS RatingPlan); its own fallback
    decks apply. Or ``tenant`` / ``category`` / ``subject`` through the rating profiles, as
    CGRateS does at the call start: the profile ``tenant:category:subject``, or
    ``tenant:category:*any`` when that profile does not exist; its newest activation at or
    before the start (a call before the first activation falls back to ``*any``); when that
    deck has no rate for the destination, the activation's fallback subjects in order (each
    resolved the same way, at most 3 levels deep). That order becomes a synthetic fallback
    chain of the decks (each deck followed by its own fallback decks), so the kernel tries
    them in turn.

Units
    ``duration`` is seconds for voice, messages for sms and bytes (units) for data. The call
    type is ``call_type``, else from the category (``data`` → data, ``sms`` → sms, otherwise
    voice; as :mod:`bluerocktel.rating.cgrates`). ``to`` is the dialled number: digits, with
    or without ``+``, are E.164; anything else matches only the any-destination prefix ``''``.
    ``timezone`` is the zone time bands are evaluated in (the account's zone for a CDR).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bluerocktel.db.models import RateDeck, RatingProfile
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.money import quantize
from bluerocktel.vocabulary import CallType, IdentifierKind, RatingFlag, RatingStatus

ANY = "*any"
RECURSION_MAX_DEPTH = 3                 # as CGRateS (fallback subjects)
QUOTE_ACCOUNT_CODE = "\x00quote"        # no switch sends this account code
_UTC = dt.timezone.utc
_CALL_TYPES_OF_CATEGORY = {"data": CallType.DATA.value, "sms": CallType.SMS.value}
_TORS = {"*voice": CallType.VOICE.value, "*sms": CallType.SMS.value, "*data": CallType.DATA.value}


class QuoteError(UserFacingError):
    """A quote request that cannot be answered as asked (naive start, no such plan, ...)."""


def _call_type(category: str | None, call_type: str | None) -> str:
    if call_type is not None:
        value = _TORS.get(call_type, call_type)
        if value not in {c.value for c in CallType}:
            raise QuoteError(f"call type {call_type!r} is not one of voice, sms, data (*voice, *sms, *data)")
        return value
    if category in ("mms", "generic"):
        raise QuoteError(f"category {category} has no call type here (voice, sms, data)")
    return _CALL_TYPES_OF_CATEGORY.get(category or "", CallType.VOICE.value)


def _callee(to: str) -> str:
    text = to.strip()
    digits = text[1:] if text.startswith("+") else text
    return "+" + digits if digits.isdigit() else text


def _plan_deck(session: Session, plan: str) -> RateDeck:
    from bluerocktel.rating.cgrates_import import DECK_NAME_PREFIX

    decks = session.scalars(select(RateDeck).where(
        or_(RateDeck.code == plan, RateDeck.name == DECK_NAME_PREFIX + plan)).order_by(RateDeck.id)).all()
    by_code = [d for d in decks if d.code == plan]
    if by_code or len(decks) == 1:
        return (by_code or decks)[0]
    if decks:
        raise QuoteError(f"several decks were imported from CGRateS RatingPlan {plan}: "
                         f"{', '.join(d.code for d in decks)}; give the deck code")
    raise NotFoundError(f"no rate deck with code {plan!r} (nor an imported CGRateS RatingPlan {plan})")


def _profile_chain(session: Session, tenant: str, category: str, subject: str, start: dt.datetime,
                   lookups: list[str]) -> list[int]:
    """Deck ids to try in order for the call start, CGRateS' way (see the module docstring)."""
    by_subject: dict[str, list[RatingProfile]] = defaultdict(list)
    for row in session.scalars(select(RatingProfile).where(RatingProfile.tenant == tenant,
                                                           RatingProfile.category == category)
                               .order_by(RatingProfile.activation_at)):
        by_subject[row.subject].append(row)
    codes = dict(session.execute(select(RateDeck.id, RateDeck.code)).all())

    def resolve(subj: str, depth: int) -> list[int] | None:
        label = f"{tenant}:{category}:{subj}"
        if depth > RECURSION_MAX_DEPTH:
            lookups.append(f"{label}: fallback depth {depth} > {RECURSION_MAX_DEPTH}, not tried")
            return None
        acts = by_subject.get(subj)
        if not acts:
            lookups.append(f"{label}: no such rating profile")
            return None
        active = [a for a in acts if a.activation_at <= start]
        if not active:
            lookups.append(f"{label}: the call starts before its first activation "
                           f"{acts[0].activation_at.isoformat()}; falls back to {ANY}")
            return resolve(ANY, depth + 1) or []
        act = active[-1]
        fallbacks = act.fallback_subjects.split()
        lookups.append(f"{label}: activation {act.activation_at.isoformat()} -> deck {codes[act.deck_id]}"
                       + (f"; fallback subjects {' '.join(fallbacks)}" if fallbacks else ""))
        chain = [act.deck_id]
        for fb in fallbacks:
            chain += resolve(fb, depth + 1) or []
        return chain

    chain = resolve(subject, 1)
    if chain is None and subject != ANY:
        chain = resolve(ANY, 1)
    return chain or []


def _with_chain(decks: pa.Table, chain: list[int]) -> tuple[pa.Table, list[int]]:
    """``decks`` with fallback pointers rewritten so that the kernel tries ``chain`` (each deck
    followed by its own fallback decks, each deck once) in order; and that full order."""
    rows = decks.to_pylist()
    fallback = {r["deck_id"]: r["fallback_deck_id"] for r in rows}
    order: list[int] = []
    for deck_id in chain:
        while deck_id is not None and deck_id not in order:
            order.append(deck_id)
            deck_id = fallback.get(deck_id)
    nxt = dict(zip(order, [*order[1:], None]))
    for r in rows:
        if r["deck_id"] in nxt:
            r["fallback_deck_id"] = nxt[r["deck_id"]]
    return pa.Table.from_pylist(rows, schema=decks.schema), order


def _cdr(start: dt.datetime, to: str, duration: int, call_type: str) -> pa.Table:
    voice = call_type == CallType.VOICE.value
    seconds = duration if voice else 0
    return pa.Table.from_pylist([{
        "cdr_id": "quote", "source": "quote", "source_file": "", "source_line": 0,
        "start_at": start, "answer_at": start, "end_at": start + dt.timedelta(seconds=seconds),
        "duration_s": seconds, "billsec_s": seconds, "caller": "quote", "callee": _callee(to),
        "account_code": QUOTE_ACCOUNT_CODE, "channel": "quote", "dst_channel": "", "disposition": "ANSWERED",
        "direction": "out", "call_type": call_type, "units": 0 if voice else duration, "unique_id": "quote",
    }], schema=CDR_SCHEMA)


def _utc_text(at: dt.datetime | None) -> str | None:
    return None if at is None else at.astimezone(_UTC).isoformat().replace("+00:00", "Z")


def _increments(row: dict, segments: list | None) -> int | None:
    if segments:
        return sum(s["increments"] for s in segments)
    billable, first, inc = row["billable_units"], row["first_increment"], row["next_increment"]
    if billable is None or first is None or not inc:
        return None
    if billable == 0:
        return 0
    return (1 if first > 0 else 0) + max(0, billable - first) // inc


def _money_text(micro: int | None, decimals: int | None) -> str | None:
    if micro is None:
        return None
    value = Decimal(micro).scaleb(-6)
    if decimals is not None:
        shown = quantize(value, decimals, ROUND_HALF_UP)
        if shown == value:                 # the deck's decimals, unless a max cost has more
            return format(shown, "f")
    return format(value.normalize(), "f")


@dataclass
class _Request:
    """One call to quote, validated, with the decks to try."""

    kind: str
    start: dt.datetime
    duration: int
    to: str
    timezone: str
    chain: list[int]
    rewrite: bool                   # the chain comes from rating profiles: fallback pointers rewritten
    trace: dict
    result: dict | None = None      # answered without the kernel (no rating profile)


def _prepare(session: Session, *, plan: str | None = None, tenant: str | None = None, category: str | None = None,
             subject: str | None = None, to: str, start: dt.datetime, duration: int, timezone: str = "UTC",
             call_type: str | None = None) -> _Request:
    if start.tzinfo is None or start.utcoffset() is None:
        raise QuoteError(f"the start {start.isoformat()} has no time zone; give an aware datetime")
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
        raise QuoteError(f"duration {duration!r} must be a whole number >= 0 (seconds, or units for sms/data)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise QuoteError(f"time zone {timezone!r} is not an IANA zone (e.g. UTC, Europe/Paris)") from None
    kind = _call_type(category, call_type)
    start = start.astimezone(_UTC)
    lookups: list[str] = []
    if plan is not None:
        deck = _plan_deck(session, plan)
        chain, rewrite = [deck.id], False
        lookups.append(f"deck {deck.code} given directly")
    else:
        if not (tenant and category and subject):
            raise QuoteError("give a plan, or tenant, category and subject")
        chain, rewrite = _profile_chain(session, tenant, category, subject, start, lookups), True
    trace: dict = {"call_type": kind, "to": to, "start": _utc_text(start),
                   "quantity": duration, "timezone": timezone, "lookups": lookups}
    request = _Request(kind, start, duration, to, timezone, chain, rewrite, trace)
    if not chain:
        request.result = {"price": None, "status": RatingStatus.UNRATED.value,
                          "reason": f"no rating profile prices {tenant}:{category}:{subject} at {trace['start']}: "
                                    + "; ".join(lookups), "trace": trace}
    return request


def quote_calls(session_or_wb, requests: list[dict], *, tariffs=None) -> list[dict]:
    """Quote several calls (each a dict of :func:`quote_call` keywords), in order.

    The kernel runs once per distinct deck chain and time zone, not once per call.
    """
    if hasattr(session_or_wb, "db"):
        with session_or_wb.db.session() as session:
            return quote_calls(session, requests, tariffs=tariffs)
    session: Session = session_or_wb
    prepared = [_prepare(session, **r) for r in requests]
    todo = [i for i, r in enumerate(prepared) if r.result is None]
    if not todo:
        return [r.result for r in prepared]

    from bluerocktel.lake import connect_duckdb
    from bluerocktel.rating.kernel import price_batch
    from bluerocktel.rating.tariffs import IDENTIFIER_SCHEMA, build_tariffs, load_tariffs

    if tariffs is None:
        tariffs = load_tariffs(session, extra_deck_ids=sorted({d for i in todo for d in prepared[i].chain}))
    known = set(tariffs.decks["deck_id"].to_pylist())
    missing = sorted({d for i in todo for d in prepared[i].chain} - known)
    if missing:
        raise QuoteError(f"deck ids {missing} are not in the tariffs given")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in todo:
        r = prepared[i]
        groups[(tuple(r.chain), r.rewrite, r.timezone)].append(i)
    rated_at = dt.datetime.now(_UTC)
    con = connect_duckdb()
    try:
        for (chain, rewrite, timezone), members in groups.items():
            decks, order = _with_chain(tariffs.decks, list(chain)) if rewrite else (tariffs.decks, list(chain))
            identifier = pa.Table.from_pylist([{
                "identifier_id": -1, "service_id": -1, "account_id": -1, "rate_deck_id": chain[0],
                "kind": IdentifierKind.ACCOUNT_CODE.value, "value": QUOTE_ACCOUNT_CODE,
                "valid_from": dt.datetime(1900, 1, 1, tzinfo=_UTC), "valid_to": None, "timezone": timezone}],
                schema=IDENTIFIER_SCHEMA)
            quoting = build_tariffs(identifier, decks, tariffs.rates, tariffs.bands)   # no trunks, no bundles
            cdrs = pa.concat_tables([_cdr(prepared[i].start, prepared[i].to, prepared[i].duration, prepared[i].kind)
                                     for i in members])
            codes = dict(zip(decks["deck_id"].to_pylist(), decks["code"].to_pylist()))
            decimals = dict(zip(decks["deck_id"].to_pylist(), decks["rounding_decimals"].to_pylist()))
            for i, row in zip(members, price_batch(con, cdrs, quoting, rated_at).to_pylist()):
                prepared[i].result = _result(row, prepared[i].trace, [codes[d] for d in order], codes, decimals)
    finally:
        con.close()
    return [r.result for r in prepared]


def _result(row: dict, trace: dict, chain_codes: list[str], codes: dict, decimals: dict) -> dict:
    segments = json.loads(row["segments"]) if row["segments"] else None
    flags = [f for f in (row["flags"] or "").split(",") if f and f != RatingFlag.NO_COST.value]
    trace = dict(trace)
    trace.update({
        "deck_chain": chain_codes,
        "deck": codes.get(row["rate_deck_id"]),
        "rate_id": row["rate_id"],
        "prefix": row["prefix"],
        "destination": row["destination"],
        "zone": row["zone"],
        "rate_valid_from": _utc_text(row["rate_valid_from"]),
        "band": row["band"],
        "segments": segments,
        "first_increment": row["first_increment"],
        "next_increment": row["next_increment"],
        "increments": _increments(row, segments),
        "billable_units": row["billable_units"],
        "unrounded": (format(Decimal(row["unrounded_pico"]).scaleb(-12).normalize(), "f")
                      if row["unrounded_pico"] is not None else None),
        "flags": flags,
    })
    return {"price": _money_text(row["price_micro"], decimals.get(row["rate_deck_id"])),
            "status": row["rating_status"], "reason": row["rating_reason"] or None, "trace": trace}


def quote_call(session_or_wb, *, plan: str | None = None, tenant: str | None = None, category: str | None = None,
               subject: str | None = None, to: str, start: dt.datetime, duration: int, timezone: str = "UTC",
               call_type: str | None = None, tariffs=None) -> dict:
    """Price one call through the kernel (see the module docstring).

    ``session_or_wb``: a SQLAlchemy session or a :class:`~bluerocktel.workbench.Workbench`.
    ``tariffs``: already loaded tariffs holding the decks involved; default
    :func:`~bluerocktel.rating.tariffs.load_tariffs` with the decks the call can reach. Returns
    ``{"price": "0.7002"`` (at the pricing deck's decimals) or None, ``"status"`` (rated,
    unrated, free), ``"reason"``, ``"trace": {...}}``. Raises :class:`QuoteError` /
    :class:`~bluerocktel.errors.NotFoundError` for a request that cannot be answered.
    """
    return quote_calls(session_or_wb, [dict(plan=plan, tenant=tenant, category=category, subject=subject, to=to,
                                            start=start, duration=duration, timezone=timezone, call_type=call_type)],
                       tariffs=tariffs)[0]


def describe_quote(result: dict) -> str:
    """A few lines a person can check by hand."""
    t = result["trace"]
    if result["status"] == RatingStatus.UNRATED.value or result["price"] is None:
        head = f"{result['status']}: {result['reason']}"
    else:
        head = f"price {result['price']}" + (f" ({', '.join(t['flags'])})" if t.get("flags") else "")
    lines = [head] + [f"  {n}" for n in t.get("lookups", [])]
    if t.get("deck"):
        lines.append(f"  deck {t['deck']} (chain {' -> '.join(t['deck_chain'])}), prefix {t['prefix'] or '(any)'} "
                     f"{t['destination']}, rate {t['rate_id']} from {t['rate_valid_from']}, "
                     f"band {t['band'] or '(any time)'}")
        lines.append(f"  {t['billable_units']} billable units in {t['increments']} increments "
                     f"({t['first_increment']}/{t['next_increment']}), unrounded {t['unrounded']}")
        for s in t.get("segments") or []:
            lines.append(f"    {s}")
    return "\n".join(lines)


__all__ = ["QUOTE_ACCOUNT_CODE", "QuoteError", "describe_quote", "quote_call", "quote_calls"]
