"""3CX CRM integration: the XML template 3CX imports, caller lookup and call journaling.

In 3CX (Admin → Settings → CRM Integration → Add, "upload template") the operator uploads the
template from ``GET /api/v1/3cx/template.xml`` and pastes an API token (role ``support`` or
``sales`` is enough). 3CX then

- looks up every caller: ``GET /api/v1/3cx/lookup?number=[Number]`` → the matching contacts
  (:func:`lookup`), each with a ``url`` that opens the account in the staff app;
- journals every call when it ends: ``POST /api/v1/3cx/calls`` → an
  :class:`~bluerocktel.db.models.Activity` on the account (:func:`journal_call`), once per 3CX
  call id even if 3CX retries.

Numbers are compared on their national significant digits (the last 9 digits): 3CX may send
``+33472000001``, ``0033472000001`` or ``0472000001`` for the same line. A number matches a
contact's phone, an account's phone, or a number/DID identifier of one of the account's services.
"""

from __future__ import annotations

import datetime as dt
import re
from xml.sax.saxutils import escape, quoteattr

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Account, Activity, Contact, Service, ServiceIdentifier
from bluerocktel.errors import UserFacingError
from bluerocktel.timeutil import parse_instant
from bluerocktel.vocabulary import ActivityKind, CallDirection, IdentifierKind

MATCH_DIGITS = 9
_DURATION = re.compile(r"^(?:(\d+):)?([0-5]?\d):([0-5]\d)$")


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number or "")[-MATCH_DIGITS:]


def crm_template_xml(base_url: str, name: str = "BlueRockTEL") -> str:
    """The CRM template for 3CX, pointing at ``base_url`` (e.g. ``https://ops.example.fr``)."""
    base = base_url.rstrip("/")
    auth = '<Headers><Value Key="Authorization" Passes="0" Type="String">Bearer [ApiToken]</Value></Headers>'
    outputs = "".join(f'<Output Type="{kind}" Passes="0" Value="[{var}]" />' for kind, var in (
        ("ContactID", "ContactID"), ("FirstName", "FirstName"), ("LastName", "LastName"),
        ("CompanyName", "CompanyName"), ("Email", "Email"), ("PhoneBusiness", "PhoneBusiness"),
        ("PhoneMobile", "PhoneMobile"), ("ContactUrl", "ContactUrl"), ("EntityType", "EntityType"),
        ("EntityId", "EntityId")))
    variables = "".join(f'<Variable Name="{var}" Path="contacts.{path}"><Filter /></Variable>' for var, path in (
        ("ContactID", "id"), ("FirstName", "first_name"), ("LastName", "last_name"), ("CompanyName", "company"),
        ("Email", "email"), ("PhoneBusiness", "phone_business"), ("PhoneMobile", "phone_mobile"),
        ("ContactUrl", "url"), ("EntityType", "entity_type"), ("EntityId", "account_number")))
    journal = ",".join(f'"{key}":"[{var}]"' for key, var in (
        ("call_id", "CallId"), ("number", "Number"), ("call_type", "CallType"), ("direction", "CallDirection"),
        ("agent", "Agent"), ("agent_name", "AgentFirstName"), ("duration", "Duration"),
        ("started_at", "CallStartTimeUTC"), ("subject", "Subject"), ("contact_id", "EntityId")))
    return (
        '<?xml version="1.0"?>\n'
        f'<Crm Country="FR" Name={quoteattr(name)} Version="1" SupportsEmojis="true">'
        '<Number Prefix="Plus" MaxLength="" />'
        '<Connection MaxConcurrentRequests="4" />'
        '<Parameters><Parameter Name="ApiToken" Type="Password" Parent="General Configuration" '
        'Editor="String" Title="BlueRockTEL API token:" /></Parameters>'
        '<Authentication Type="No" />'
        '<Scenarios>'
        '<Scenario Id="" Type="REST">'
        f'<Request Url={quoteattr(base + "/api/v1/3cx/lookup?number=[Number]")} MessagePasses="0" '
        f'RequestEncoding="UrlEncoded" RequestType="Get" ResponseType="Json">{auth}</Request>'
        '<Rules><Rule Type="Any">contacts.id</Rule></Rules>'
        f'<Variables>{variables}</Variables>'
        f'<Outputs AllowEmpty="false">{outputs}</Outputs>'
        '</Scenario>'
        '<Scenario Id="ReportCall" Type="REST">'
        f'<Request SkipIf="[IIf([ReportCallEnabled]!=True,True,False)]" '
        f'Url={quoteattr(base + "/api/v1/3cx/calls")} MessagePasses="0" RequestContentType="application/json" '
        f'RequestEncoding="Json" RequestType="Post" ResponseType="Json">{auth}'
        f'<PostValues><Value Key="" Passes="1" Type="String">{escape("{" + journal + "}")}</Value></PostValues>'
        '</Request>'
        '<Rules><Rule Type="Any">id</Rule></Rules>'
        '<Variables><Variable Name="ActivityID" Path="id"><Filter /></Variable></Variables>'
        '<Outputs Next="" AllowEmpty="true"><Output Type="Result" Passes="0" Value="[ActivityID]" /></Outputs>'
        '</Scenario>'
        '</Scenarios>'
        '</Crm>\n')


def _ends_with(column, digits: str):
    """SQL: ``column`` with its separators removed ends with ``digits``."""
    stripped = column
    for separator in (" ", ".", "-", "(", ")", "/"):
        stripped = sa.func.replace(stripped, separator, "")
    return stripped.like(f"%{digits}")


def _accounts_by_number(session: Session, digits: str) -> dict[int, Account]:
    """Accounts whose phone, or a current number/DID of a service, ends with ``digits``."""
    found: dict[int, Account] = {}
    for account in session.scalars(sa.select(Account).where(_ends_with(Account.phone, digits))):
        found[account.id] = account
    query = (sa.select(Account).join(Service, Service.account_id == Account.id)
             .join(ServiceIdentifier, ServiceIdentifier.service_id == Service.id)
             .where(ServiceIdentifier.kind.in_([IdentifierKind.NUMBER, IdentifierKind.DID]),
                    _ends_with(ServiceIdentifier.value, digits),
                    sa.or_(ServiceIdentifier.valid_to.is_(None),
                           ServiceIdentifier.valid_to > dt.datetime.now(dt.timezone.utc))))
    for account in session.scalars(query):
        found[account.id] = account
    return found


def lookup(session: Session, number: str, staff_url: str) -> list[dict]:
    """Contacts matching ``number`` (or, for an account without contacts, the account itself)."""
    digits = _digits(number)
    if len(digits) < 6:
        return []
    contacts = list(session.scalars(sa.select(Contact).where(_ends_with(Contact.phone, digits))
                                    .order_by(Contact.id)))
    matched_accounts = {c.account_id for c in contacts}
    by_account = _accounts_by_number(session, digits)
    for account_id in by_account:
        if account_id not in matched_accounts:
            contacts.extend(session.scalars(sa.select(Contact).where(Contact.account_id == account_id)
                                            .order_by(Contact.id)))
    accounts = {a.id: a for a in session.scalars(
        sa.select(Account).where(Account.id.in_({c.account_id for c in contacts} | set(by_account))))}
    rows = [_contact_row(c, accounts[c.account_id], staff_url) for c in contacts]
    with_contact = {c.account_id for c in contacts}
    rows += [_account_row(a, staff_url) for a in by_account.values() if a.id not in with_contact]
    return rows


def _account_link(account: Account, staff_url: str) -> str:
    return f"{staff_url.rstrip('/')}/staff?account={account.number}"


def _contact_row(contact: Contact, account: Account, staff_url: str) -> dict:
    mobile = (contact.phone or "").replace(" ", "")
    is_mobile = bool(re.match(r"^(\+33|0033|0)[67]", mobile))
    return {"id": f"contact-{contact.id}", "first_name": contact.first_name, "last_name": contact.last_name,
            "company": account.name, "email": contact.email or "",
            "phone_business": "" if is_mobile else contact.phone or "", "phone_mobile": contact.phone if is_mobile
            else "", "url": _account_link(account, staff_url), "entity_type": "contacts",
            "account_number": account.number}


def _account_row(account: Account, staff_url: str) -> dict:
    return {"id": f"account-{account.id}", "first_name": "", "last_name": account.name, "company": account.name,
            "email": account.email or "", "phone_business": account.phone or "", "phone_mobile": "",
            "url": _account_link(account, staff_url), "entity_type": "accounts", "account_number": account.number}


def parse_duration(text: str) -> int:
    """3CX durations (``hh:mm:ss`` or ``mm:ss``) or plain seconds, as seconds."""
    text = (text or "").strip()
    if text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if not match:
        raise UserFacingError(f"duration {text!r} is not hh:mm:ss, mm:ss or seconds")
    return int(match[1] or 0) * 3600 + int(match[2]) * 60 + int(match[3])


def _direction(call_type: str, direction: str) -> str:
    text = f"{direction} {call_type}".lower()
    if "outbound" in text or "outgoing" in text:
        return CallDirection.OUT
    if "inbound" in text or "incoming" in text or "missed" in text:
        return CallDirection.IN
    return CallDirection.INTERNAL


def journal_call(session: Session, *, number: str, call_type: str = "", direction: str = "", agent: str = "",
                 agent_name: str = "", duration: str = "0", started_at: str = "", subject: str = "",
                 call_id: str = "", actor: str) -> tuple[Activity | None, bool]:
    """Record a call reported by 3CX on the account its number matches.

    Returns (activity, created): the existing activity when 3CX reports the same ``call_id``
    again, and ``(None, False)`` when the number matches no account (nothing to journal on).
    """
    call_id = (call_id or "").strip()[:100] or None
    if call_id:
        existing = session.scalar(sa.select(Activity).where(Activity.external_id == f"3cx:{call_id}"))
        if existing is not None:
            return existing, False
    matches = lookup(session, number, "")
    if not matches:
        return None, False
    account = session.scalar(sa.select(Account).where(Account.number == matches[0]["account_number"]))
    contact_id = int(matches[0]["id"].split("-")[1]) if matches[0]["id"].startswith("contact-") else None
    # 3CX sends CallStartTimeUTC without a zone
    start = (parse_instant(started_at, what="started_at", default_tz="UTC") if started_at.strip()
             else dt.datetime.now(dt.timezone.utc))
    seconds = parse_duration(duration)
    kind_text = (call_type or "call").strip()
    activity = Activity(account_id=account.id, contact_id=contact_id, kind=ActivityKind.CALL,
                        direction=_direction(call_type, direction), number=number.strip()[:64],
                        agent=" ".join(p for p in (agent.strip(), agent_name.strip()) if p)[:200] or None,
                        subject=(subject.strip() or f"{kind_text} call, {seconds} s")[:300],
                        started_at=start, duration_s=seconds,
                        external_id=f"3cx:{call_id}" if call_id else None)
    session.add(activity)
    session.flush()
    record_audit(session, actor, "activity.call", "account", account.id, activity_id=activity.id, number=number)
    return activity, True
