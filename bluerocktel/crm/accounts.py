"""Accounts, contacts and sites: creation and changes with their checks, each write audited.

An account is a company (``business``: SIREN, SIRET, intra-EU VAT number) or a person
(``consumer``: none of those). Identifiers are checked as INSEE and the EU define them:

- SIREN: 9 digits whose Luhn checksum is 0;
- SIRET: 14 digits, the SIREN first, Luhn checksum 0 (La Poste's establishments, SIREN
  356000000, use INSEE's exception: the sum of the 14 digits is a multiple of 5);
- VAT number: :func:`bluerocktel.billing.vat.validate_vat_number` (format per member state, the
  French key checked against the SIREN);
- country: ISO 3166-1 alpha-2; e-mail: one ``@``, a dotted domain, no spaces.

Groups: an account may have a parent of the same brand (no cycles); :func:`group_balances` adds
the balances of the whole group. Closing an account is refused while it still has services not
terminated or money due. A contact has one role (billing, technical, signatory, other); an
account has at most one billing contact, its primary billing contact (invoices go to it).
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.payments import account_balance
from bluerocktel.billing.vat import validate_vat_number
from bluerocktel.db.models import Account, Activity, Brand, Contact, Contract, Service, Site, Ticket
from bluerocktel.crm import fetch
from bluerocktel.errors import ConflictError, UserFacingError
from bluerocktel.vocabulary import AccountKind, AccountStatus, ContactRole, ServiceStatus

ISO_COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO
FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE
JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO
MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM
TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split())
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
LA_POSTE_SIREN = "356000000"

# Fields a caller may set on an account, with the check each one needs (see _clean_account).
ACCOUNT_FIELDS = ("name", "kind", "email", "phone", "address", "postcode", "city", "country", "siren", "siret",
                  "vat_number", "vat_regime", "currency", "language", "timezone", "billing_day",
                  "payment_terms_days", "payment_method", "parent_id")
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "role")
SITE_FIELDS = ("name", "address", "postcode", "city", "country")


def luhn_ok(digits: str) -> bool:
    """True when the Luhn checksum of ``digits`` is 0 (every second digit from the right doubled)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def validate_siren(value: str) -> str:
    siren = re.sub(r"\s", "", value or "")
    if not re.fullmatch(r"\d{9}", siren):
        raise UserFacingError(f"siren {value!r}: a SIREN is 9 digits")
    if not luhn_ok(siren):
        raise UserFacingError(f"siren {value!r}: the Luhn checksum is wrong (a typo?)")
    return siren


def validate_siret(value: str, siren: str | None) -> str:
    siret = re.sub(r"\s", "", value or "")
    if not re.fullmatch(r"\d{14}", siret):
        raise UserFacingError(f"siret {value!r}: a SIRET is 14 digits")
    if siren and siret[:9] != siren:
        raise UserFacingError(f"siret {value!r}: its first 9 digits must be the SIREN {siren}")
    valid = sum(map(int, siret)) % 5 == 0 if siret[:9] == LA_POSTE_SIREN else luhn_ok(siret)
    if not valid:
        raise UserFacingError(f"siret {value!r}: the Luhn checksum is wrong (a typo?)")
    return siret


def validate_email(value: str | None, field: str = "email") -> str | None:
    if value is None or not value.strip():
        return None
    email = value.strip()
    if not _EMAIL.match(email):
        raise UserFacingError(f"{field} {value!r} is not an e-mail address (name@domain.tld)")
    return email


def validate_country(value: str, field: str = "country") -> str:
    country = (value or "").strip().upper()
    if country not in ISO_COUNTRIES:
        raise UserFacingError(f"{field} {value!r} is not an ISO 3166-1 alpha-2 country code (FR, BE, DE...)")
    return country


def _check_parent(session: Session, account: Account, parent_id: int | None) -> None:
    """The parent exists, has the same brand, and is not the account or one of its descendants."""
    if parent_id is None:
        return
    parent = session.get(Account, parent_id)
    if parent is None:
        raise UserFacingError(f"parent_id {parent_id}: no such account")
    if parent.brand_id != account.brand_id:
        raise UserFacingError(f"parent_id {parent_id}: a group's accounts share one brand "
                              f"(parent brand {parent.brand_id}, this account's {account.brand_id})")
    seen, node = set(), parent
    while node is not None:
        if account.id is not None and node.id == account.id:
            raise UserFacingError(f"parent_id {parent_id}: account {account.number} would be its own ancestor")
        if node.id in seen:  # a cycle already stored: stop rather than loop
            break
        seen.add(node.id)
        node = session.get(Account, node.parent_id) if node.parent_id else None


def _clean_account(session: Session, account: Account, changes: dict) -> None:
    """Apply ``changes`` to ``account`` after checking every field, then the identifiers together."""
    unknown = set(changes) - set(ACCOUNT_FIELDS)
    if unknown:
        raise UserFacingError(f"account: unknown field(s) {', '.join(sorted(unknown))}")
    values = dict(changes)
    if "kind" in values:
        try:
            values["kind"] = AccountKind(values["kind"]).value
        except ValueError:
            raise UserFacingError(f"kind {values['kind']!r}: use business or consumer") from None
    if "name" in values and not (values["name"] or "").strip():
        raise UserFacingError("name is required")
    if "email" in values:
        values["email"] = validate_email(values["email"])
    if "country" in values:
        values["country"] = validate_country(values["country"])
    if "parent_id" in values:
        _check_parent(session, account, values["parent_id"])
    for key, value in values.items():
        setattr(account, key, value.strip() if isinstance(value, str) and key == "name" else value)
    if account.kind == AccountKind.CONSUMER:
        for field in ("siren", "siret", "vat_number"):
            if getattr(account, field):
                raise UserFacingError(f"{field}: a consumer account (a person) has no {field.upper()}")
        return
    account.siren = validate_siren(account.siren) if account.siren else None
    account.siret = validate_siret(account.siret, account.siren) if account.siret else None
    account.vat_number = validate_vat_number(account.vat_number) if account.vat_number else None


def _next_account_number(session: Session) -> str:
    count = session.scalar(select(func.count(Account.id)))
    return f"C{count + 1:06d}"


def create_account(session: Session, *, brand_id: int, name: str, actor: str, number: str | None = None,
                   **fields) -> Account:
    """A new active account of ``brand_id``; ``number`` defaults to ``C`` + 6 digits (the count + 1)."""
    if session.get(Brand, brand_id) is None:
        raise UserFacingError(f"brand_id {brand_id}: no such brand")
    number = (number or _next_account_number(session)).strip()
    if session.scalar(select(Account.id).where(Account.number == number)) is not None:
        raise ConflictError(f"number {number!r}: an account has this number already")
    account = Account(number=number, brand_id=brand_id, name="", kind=AccountKind.BUSINESS,
                      status=AccountStatus.ACTIVE)
    _clean_account(session, account, {"name": name, **fields})
    session.add(account)
    session.flush()
    record_audit(session, actor, "account.create", "account", account.id, number=number, **_audit_view(fields))
    return account


def _audit_view(fields: dict) -> dict:
    return {k: (str(v) if v is not None else None) for k, v in fields.items()}


def get_account(session: Session, account_id: int) -> Account:
    return fetch(session, Account, account_id, "account")


def update_account(session: Session, account_id: int, changes: dict, *, actor: str) -> Account:
    """Change fields of an account (status apart: :func:`set_account_status`)."""
    account = get_account(session, account_id)
    _clean_account(session, account, changes)
    session.flush()
    record_audit(session, actor, "account.update", "account", account.id, **_audit_view(changes))
    return account


def set_account_status(session: Session, account_id: int, status: str, *, actor: str, reason: str = "") -> Account:
    """Move an account to active, suspended or closed; closing needs every service terminated and nothing due."""
    try:
        status = AccountStatus(status).value
    except ValueError:
        raise UserFacingError(f"status {status!r}: use active, suspended or closed") from None
    account = get_account(session, account_id)
    if account.status == AccountStatus.CLOSED and status != AccountStatus.CLOSED:
        raise ConflictError(f"account {account.number} is closed: it cannot be reopened")
    if status == AccountStatus.CLOSED:
        live = session.scalars(select(Service.label).where(
            Service.account_id == account.id, Service.status != ServiceStatus.TERMINATED).order_by(Service.id)).all()
        if live:
            raise ConflictError(f"account {account.number} cannot be closed: {len(live)} service(s) not terminated "
                                f"({', '.join(live[:5])})")
        due = account_balance(session, account.id)["due_minor"]
        if due > 0:
            raise ConflictError(f"account {account.number} cannot be closed: {due} minor units of "
                                f"{account.currency} are still due")
    previous, account.status = account.status, status
    session.flush()
    record_audit(session, actor, "account.status", "account", account.id, previous=previous, status=status,
                 reason=reason)
    return account


def children(session: Session, account_id: int) -> list[Account]:
    """The direct children of an account, by id."""
    get_account(session, account_id)
    return list(session.scalars(select(Account).where(Account.parent_id == account_id).order_by(Account.id)))


def group_members(session: Session, account_id: int) -> list[Account]:
    """The account and all its descendants, parents before children."""
    out, frontier, seen = [get_account(session, account_id)], [account_id], {account_id}
    while frontier:
        rows = session.scalars(select(Account).where(Account.parent_id.in_(frontier)).order_by(Account.id)).all()
        rows = [a for a in rows if a.id not in seen]
        seen.update(a.id for a in rows)
        out += rows
        frontier = [a.id for a in rows]
    return out


def group_balances(session: Session, account_id: int) -> dict:
    """Balances of the account and its descendants (:func:`account_balance` each) and their sums.

    Sums are per currency, since a group may bill in several."""
    members = [account_balance(session, a.id) | {"account_id": a.id} for a in group_members(session, account_id)]
    totals: dict[str, dict[str, int]] = {}
    for m in members:
        t = totals.setdefault(m["currency"], {"due_minor": 0, "credit_minor": 0, "overdue_minor": 0,
                                              "balance_minor": 0})
        for key in t:
            t[key] += m[key]
    return {"account_id": account_id, "members": members, "totals": totals}


# ------------------------------------------------------------------------------------------ contacts

def _clean_contact(session: Session, contact: Contact, changes: dict) -> None:
    unknown = set(changes) - set(CONTACT_FIELDS)
    if unknown:
        raise UserFacingError(f"contact: unknown field(s) {', '.join(sorted(unknown))}")
    values = dict(changes)
    for field in ("first_name", "last_name"):
        if field in values and not (values[field] or "").strip():
            raise UserFacingError(f"{field} is required")
    if "role" in values:
        try:
            values["role"] = ContactRole(values["role"]).value
        except ValueError:
            raise UserFacingError(f"role {values['role']!r}: use billing, technical, signatory or other") from None
    if "email" in values:
        values["email"] = validate_email(values["email"])
    for key, value in values.items():
        setattr(contact, key, value)
    if contact.role == ContactRole.BILLING:
        other = session.scalar(select(Contact).where(Contact.account_id == contact.account_id,
                                                     Contact.role == ContactRole.BILLING,
                                                     Contact.id != (contact.id or 0)))
        if other is not None:
            raise ConflictError(f"role billing: account {contact.account_id} has a primary billing contact already "
                                f"({other.first_name} {other.last_name}, contact {other.id}); change its role first")


def create_contact(session: Session, account_id: int, *, actor: str, **fields) -> Contact:
    get_account(session, account_id)
    contact = Contact(account_id=account_id, role=ContactRole.OTHER)
    _clean_contact(session, contact, {"first_name": fields.pop("first_name", ""),
                                      "last_name": fields.pop("last_name", ""), **fields})
    session.add(contact)
    session.flush()
    record_audit(session, actor, "contact.create", "contact", contact.id, account_id=account_id,
                 **_audit_view(fields))
    return contact


def get_contact(session: Session, contact_id: int) -> Contact:
    return fetch(session, Contact, contact_id, "contact")


def update_contact(session: Session, contact_id: int, changes: dict, *, actor: str) -> Contact:
    contact = get_contact(session, contact_id)
    _clean_contact(session, contact, changes)
    session.flush()
    record_audit(session, actor, "contact.update", "contact", contact.id, **_audit_view(changes))
    return contact


def delete_contact(session: Session, contact_id: int, *, actor: str) -> None:
    """Delete a contact; refused (409) while it signed a contract or is named on a ticket or activity."""
    contact = get_contact(session, contact_id)
    for model, column, what in ((Contract, Contract.signatory_contact_id, "signed a contract"),
                                (Ticket, Ticket.contact_id, "is named on a ticket"),
                                (Activity, Activity.contact_id, "is named on an activity")):
        if session.scalar(select(model.id).where(column == contact_id).limit(1)) is not None:
            raise ConflictError(f"contact {contact_id} {what}: it cannot be deleted (change its role to other)")
    record_audit(session, actor, "contact.delete", "contact", contact.id, account_id=contact.account_id,
                 name=f"{contact.first_name} {contact.last_name}", role=contact.role)
    session.delete(contact)
    session.flush()


# --------------------------------------------------------------------------------------------- sites

def _clean_site(site: Site, changes: dict) -> None:
    unknown = set(changes) - set(SITE_FIELDS)
    if unknown:
        raise UserFacingError(f"site: unknown field(s) {', '.join(sorted(unknown))}")
    values = dict(changes)
    if "name" in values and not (values["name"] or "").strip():
        raise UserFacingError("name is required")
    if "country" in values:
        values["country"] = validate_country(values["country"])
    for key, value in values.items():
        setattr(site, key, value)


def create_site(session: Session, account_id: int, *, actor: str, **fields) -> Site:
    get_account(session, account_id)
    site = Site(account_id=account_id, country="FR")
    _clean_site(site, {"name": fields.pop("name", ""), **fields})
    session.add(site)
    session.flush()
    record_audit(session, actor, "site.create", "site", site.id, account_id=account_id, **_audit_view(fields))
    return site


def get_site(session: Session, site_id: int) -> Site:
    return fetch(session, Site, site_id, "site")


def update_site(session: Session, site_id: int, changes: dict, *, actor: str) -> Site:
    site = get_site(session, site_id)
    _clean_site(site, changes)
    session.flush()
    record_audit(session, actor, "site.update", "site", site.id, **_audit_view(changes))
    return site
