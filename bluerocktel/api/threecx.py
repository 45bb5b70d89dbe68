"""REST API for the 3CX CRM integration (:mod:`bluerocktel.threecx`): template, caller lookup, call journal.

Staff tokens only (``accounts:read`` for the template and lookups, ``tickets:read`` — every staff
role — to journal calls): 3CX acts for the operator's agents, never for a customer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from bluerocktel.api.problems import ForbiddenError
from bluerocktel.api.routes import _PROBLEMS, Caller, DbSession
from bluerocktel.security import Principal, can
from bluerocktel.threecx import crm_template_xml, journal_call, lookup

router = APIRouter(prefix="/3cx", tags=["3cx"])


def _staff(principal: Principal, permission: str) -> None:
    if not principal.is_staff or not can(principal, permission):
        raise ForbiddenError(f"role {principal.role.value!r} may not use the 3CX integration ({permission})")


class ContactMatch(BaseModel):
    id: str
    first_name: str
    last_name: str
    company: str
    email: str
    phone_business: str
    phone_mobile: str
    url: str = Field(description="opens the account in the staff app")
    entity_type: str
    account_number: str


class LookupOut(BaseModel):
    contacts: list[ContactMatch]


class CallIn(BaseModel):
    number: str = Field(min_length=1, max_length=64)
    call_id: str = Field("", max_length=100, description="3CX call id: a call is journaled once")
    call_type: str = Field("", max_length=32, description="Inbound, Outbound, Missed, Notanswered")
    direction: str = Field("", max_length=32)
    agent: str = Field("", max_length=100)
    agent_name: str = Field("", max_length=100)
    duration: str = Field("0", max_length=16, description="hh:mm:ss, mm:ss or seconds")
    started_at: str = Field("", max_length=40, description="ISO 8601; UTC when it has no offset")
    subject: str = Field("", max_length=300)
    contact_id: str = Field("", max_length=100)


class CallOut(BaseModel):
    id: int | None = Field(description="the activity, null when the number matches no account")
    account_id: int | None
    created: bool


@router.get("/template.xml", response_class=Response, responses={
    **_PROBLEMS, 200: {"content": {"application/xml": {}}, "description": "the CRM template to upload in 3CX"}})
def get_template(principal: Caller, request: Request):
    _staff(principal, "accounts:read")
    xml = crm_template_xml(str(request.base_url))
    return Response(xml, media_type="application/xml",
                    headers={"Content-Disposition": 'attachment; filename="bluerocktel-3cx-crm.xml"'})


@router.get("/lookup", response_model=LookupOut, responses=_PROBLEMS)
def lookup_caller(principal: Caller, session: DbSession, request: Request,
                  number: Annotated[str, Query(min_length=1, max_length=64, description="the caller's number")]):
    """Contacts (or accounts) whose phone or service number matches ``number``."""
    _staff(principal, "accounts:read")
    return LookupOut(contacts=[ContactMatch(**row) for row in lookup(session, number, str(request.base_url))])


@router.post("/calls", response_model=CallOut, status_code=201, responses=_PROBLEMS)
def journal(body: CallIn, principal: Caller, session: DbSession):
    """A call reported by 3CX when it ends: an activity on the matching account (200 when already journaled)."""
    _staff(principal, "tickets:read")
    activity, created = journal_call(session, number=body.number, call_type=body.call_type, direction=body.direction,
                                     agent=body.agent, agent_name=body.agent_name, duration=body.duration,
                                     started_at=body.started_at, subject=body.subject, call_id=body.call_id,
                                     actor=principal.email)
    out = CallOut(id=activity.id if activity else None, account_id=activity.account_id if activity else None,
                  created=created)
    return JSONResponse(out.model_dump(), status_code=201 if created else 200)
