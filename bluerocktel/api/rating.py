"""REST API v1, rating: the trace of any rated CDR, a month's rated CDRs, the unrated queue, anomalies.

==========================================  ==============  =============================================
route                                       permission      what
==========================================  ==============  =============================================
``GET /api/v1/rated-cdrs/{cdr_id}``         rating:read     the latest rating of a CDR with its whole
                                                            trace, and its earlier ratings (``history``)
``GET /api/v1/rated-cdrs``                  rating:read     a month's rated CDRs (latest rating of each),
                                                            newest call first, offset-paginated
``GET /api/v1/rating/unrated``              rating:read     CDRs no rate or no service priced: counts by
                                                            reason and a page of them (staff only)
``GET /api/v1/rating/anomalies``            rating:read     anomalies over rated traffic (staff only)
==========================================  ==============  =============================================

A customer's token reads its own account's rated CDRs (another account's answer 404 as if they
did not exist), without the buy side: no cost, margin, buy deck or carrier trunk, no
``negative_margin``/``no_cost`` flag. It gets 403 on the unrated queue and the anomalies.
Money is exact Decimal strings in the deck's ``currency`` (per-call amounts have up to 6
decimals; ``amount_precise`` up to 12).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bluerocktel.api.problems import ForbiddenError
from bluerocktel.api.routes import Caller, account_scope
from bluerocktel.errors import NotFoundError
from bluerocktel.rating.anomalies import find_anomalies
from bluerocktel.rating.queries import add_deck_codes, check_month, hide_buy_side, rated_cdr, rated_cdrs
from bluerocktel.rating.unrated import unrated_counts, unrated_queue
from bluerocktel.security import Principal, can

router = APIRouter(tags=["rating"])      # under /api/v1

PERMISSION = "rating:read"
_PROBLEMS = {401: {"description": "missing, invalid or revoked token"},
             403: {"description": "the token's role may not do this"}}


# --- response models ---------------------------------------------------------------------------

class SegmentOut(BaseModel):
    """A stretch of the call priced by one rate row (a time band or a grouped interval)."""

    model_config = ConfigDict(extra="allow")
    band: str | None = Field(None, description="time band ('' = any time)")
    rate_id: int | None = None
    group_start: int | None = Field(None, description="base units into the call where this row's price starts")
    increments: int | None = Field(None, description="billing increments priced in this segment")
    units: int | None = Field(None, description="billed base units of this segment")
    amount_pico: int | None = Field(None, description="exact amount of the segment, 1e-12 of the currency")
    amount_precise: str | None = Field(None, description="the same amount as a decimal string")


class RatingHistoryOut(BaseModel):
    rated_at: dt.datetime | None
    rating_status: str | None
    price: str | None
    tariff_version: str | None


class RatedCdrOut(BaseModel):
    """The latest rating of one CDR and its trace (lake ``rated``; see ``bluerocktel.lake``)."""

    cdr_id: str
    source: str | None
    source_file: str | None
    source_line: int | None
    start_at: dt.datetime | None
    answer_at: dt.datetime | None
    end_at: dt.datetime | None
    duration_s: int | None
    billsec_s: int | None
    caller: str | None
    callee: str | None
    account_code: str | None
    channel: str | None
    dst_channel: str | None = Field(description="carrier trunk; null for a customer token")
    disposition: str | None
    direction: str | None
    call_type: str | None
    units: int | None
    unique_id: str | None
    account_id: int | None
    service_id: int | None
    rate_deck_id: int | None = Field(description="the deck that priced the call (the plan or a fallback)")
    rate_deck_code: str | None
    currency: str | None = Field(description="ISO 4217 code of price and amount_precise (the deck's)")
    rate_id: int | None = Field(description="rate row of the first increment")
    rate_valid_from: dt.datetime | None = Field(description="the rate version: when it took effect")
    prefix: str | None = Field(description="matched prefix (digits)")
    destination: str | None
    zone: str | None
    band: str | None = Field(description="time band(s) in call order, '+'-joined; '' = all-time rate")
    bands: list[str]
    segments: list[SegmentOut] | None = Field(description="in call order; null when one rate row priced it all")
    first_increment: int | None
    next_increment: int | None
    billable_s: int | None
    billable_units: int | None = Field(description="billed base units after increments")
    amount_precise: str | None = Field(description="exact amount before rounding, minimum, maximum and bundle")
    price: str | None = Field(description="what the customer pays; null when unrated or unassigned")
    bundle_id: int | None
    bundle_units: int | None
    cost_deck_id: int | None
    cost_deck_code: str | None
    cost_currency: str | None
    cost_rate_id: int | None
    cost: str | None = Field(description="what the call costs us; null when no buy rate priced it (or customer)")
    margin: str | None = Field(description="price - cost")
    flags: list[str]
    rating_status: str | None = Field(description="rated, unrated, unassigned or free")
    rating_reason: str | None
    tariff_version: str | None = Field(description="fingerprint of the tariff tables that rated it")
    rated_at: dt.datetime | None
    history: list[RatingHistoryOut] = Field(description="earlier ratings of the CDR, newest first")


class RatedCdrRowOut(BaseModel):
    cdr_id: str
    start_at: dt.datetime | None
    account_id: int | None
    service_id: int | None
    caller: str | None
    callee: str | None
    direction: str | None
    call_type: str | None
    billsec_s: int | None
    units: int | None
    billable_units: int | None
    prefix: str | None
    destination: str | None
    zone: str | None
    band: str | None
    price: str | None
    cost: str | None
    margin: str | None
    bundle_units: int | None
    flags: list[str]
    rating_status: str | None
    rating_reason: str | None
    tariff_version: str | None
    rated_at: dt.datetime | None


class RatedCdrPageOut(BaseModel):
    items: list[RatedCdrRowOut]
    month: str
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class UnratedCountOut(BaseModel):
    status: str = Field(description="unrated (no rate) or unassigned (no service)")
    reason: str
    calls: int
    first_start_at: dt.datetime | None
    last_start_at: dt.datetime | None


class UnratedCdrOut(BaseModel):
    cdr_id: str
    start_at: dt.datetime | None
    caller: str | None
    callee: str | None
    account_code: str | None
    channel: str | None
    status: str
    reason: str
    account_id: int | None
    rated_at: dt.datetime | None
    source_file: str | None
    source_line: int | None


class UnratedQueueOut(BaseModel):
    counts: list[UnratedCountOut] = Field(description="the whole queue (of the months asked) by status and reason")
    total: int = Field(description="CDRs in the queue (of the months asked, every account)")
    items: list[UnratedCdrOut] = Field(description="a page of the queue, oldest call first")
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class AnomalyOut(BaseModel):
    kind: str = Field(description="high_cost_spike, long_call or off_hours_burst")
    severity: str = Field(description="warning or critical")
    account_id: int
    account_number: str | None
    account_name: str | None
    window_start: dt.datetime
    window_end: dt.datetime = Field(description="exclusive")
    calls: int
    billsec_s: int
    minutes: str
    amount_micro: int = Field(description="customer price of those calls, 1e-6 of currency")
    amount: str
    currency: str | None
    destinations: list[str]
    zones: list[str]
    cdr_id: str | None = Field(description="the call, for a long_call")
    detail: str = Field(description="values, thresholds and baseline, in one sentence")


class AnomaliesOut(BaseModel):
    since: dt.datetime
    until: dt.datetime = Field(description="exclusive")
    items: list[AnomalyOut]


# --- routes ------------------------------------------------------------------------------------

def require_staff(principal: Principal) -> None:
    """Refuse anyone without ``rating:read`` (customers included)."""
    if not can(principal, PERMISSION):
        raise ForbiddenError(f"role {principal.role.value!r} may not use this endpoint ({PERMISSION})")


@router.get("/rated-cdrs/{cdr_id}", response_model=RatedCdrOut,
            responses={**_PROBLEMS, 400: {"description": "month not YYYY-MM"},
                       404: {"description": "no rated CDR of that id visible to this token"}})
def get_rated_cdr(cdr_id: str, principal: Caller, request: Request,
                  month: Annotated[str | None, Query(description="the call's UTC month YYYY-MM, when known: "
                                                                 "reads that month only (faster)")] = None):
    """The trace of a rated CDR: matched prefix, deck and rate version, band(s), segments,
    increments, unrounded and rounded amounts, bundle, cost, margin, flags, and earlier ratings."""
    scope = account_scope(principal, PERMISSION)
    wb = request.app.state.wb
    trace = rated_cdr(wb.lake_dir, cdr_id, [check_month(month)] if month else None)
    if trace is None or (scope is not None and trace["account_id"] != scope):
        raise NotFoundError(f"no rated CDR {cdr_id!r}")
    trace = add_deck_codes(wb.db, trace)
    return hide_buy_side(trace) if scope is not None else trace


@router.get("/rated-cdrs", response_model=RatedCdrPageOut,
            responses={**_PROBLEMS, 400: {"description": "month not YYYY-MM, or unknown status"}})
def list_rated_cdrs(principal: Caller, request: Request,
                    month: Annotated[str, Query(description="UTC month of the calls, YYYY-MM")],
                    account: Annotated[int | None, Query(description="only this account's CDRs")] = None,
                    status: Annotated[str | None, Query(description="rated, unrated, unassigned or free")] = None,
                    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
                    offset: Annotated[int, Query(ge=0, description="CDRs to skip")] = 0):
    """A month's rated CDRs (the latest rating of each), newest call first; a customer token
    lists only its own account's."""
    scope = account_scope(principal, PERMISSION)
    month = check_month(month)
    if scope is not None:
        if account is not None and account != scope:
            return RatedCdrPageOut(items=[], month=month, offset=offset, limit=limit, next_offset=None)
        account = scope
    page = rated_cdrs(request.app.state.wb.lake_dir, month=month, account_id=account, status=status,
                      limit=limit, offset=offset)
    rows = [hide_buy_side(r) for r in page.rows] if scope is not None else page.rows
    return RatedCdrPageOut(items=[RatedCdrRowOut(**r) for r in rows], month=page.month, offset=page.offset,
                           limit=page.limit, next_offset=page.offset + page.limit if page.has_more else None)


Months = Annotated[list[str] | None, Query(description="UTC months YYYY-MM (repeat the parameter); "
                                                        "default: every month of the lake")]


@router.get("/rating/unrated", response_model=UnratedQueueOut,
            responses={**_PROBLEMS, 400: {"description": "a month not YYYY-MM"}})
def get_unrated_queue(principal: Caller, request: Request, month: Months = None,
                      account: Annotated[int | None, Query(description="only this account's CDRs")] = None,
                      limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 100,
                      offset: Annotated[int, Query(ge=0, description="CDRs to skip")] = 0):
    """CDRs whose latest rating found no price (``unrated``) or nobody to bill (``unassigned``),
    with the reason: counts by reason and a page of the CDRs, oldest call first. They leave the
    queue when a rating after the fix (deck or mapping) prices them."""
    require_staff(principal)
    lake_dir = request.app.state.wb.lake_dir
    counts = unrated_counts(lake_dir, month)
    rows = unrated_queue(lake_dir, month, limit=limit + 1, offset=offset, account_id=account)
    return UnratedQueueOut(counts=counts, total=sum(c["calls"] for c in counts), items=rows[:limit],
                           offset=offset, limit=limit, next_offset=offset + limit if len(rows) > limit else None)


ANOMALY_DAYS = 7


@router.get("/rating/anomalies", response_model=AnomaliesOut,
            responses={**_PROBLEMS, 400: {"description": "since not before until, a time without offset, "
                                                         "or a malformed anomaly setting"}})
def get_anomalies(principal: Caller, request: Request,
                  since: Annotated[dt.datetime | None, Query(description="ISO 8601 with offset; default: "
                                                                         "7 days before until")] = None,
                  until: Annotated[dt.datetime | None, Query(description="ISO 8601 with offset, exclusive; "
                                                                         "default: now")] = None,
                  account: Annotated[int | None, Query(description="only this account")] = None):
    """Anomalies over rated traffic of the calls started in ``[since, until)``: high-cost spikes
    (IRSF), very long calls, bursts outside business hours, per account (staff only)."""
    require_staff(principal)
    until = until or dt.datetime.now(dt.timezone.utc)
    since = since or until - dt.timedelta(days=ANOMALY_DAYS)
    found = find_anomalies(request.app.state.wb, since=since, until=until, account_id=account)
    return AnomaliesOut(since=since, until=until, items=[a.as_dict() for a in found])
