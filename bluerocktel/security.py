"""Passwords, signed session cookies, API tokens and what each role may do."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from bluerocktel.db.models import ApiToken, User
from bluerocktel.vocabulary import STAFF_ROLES, Role

SESSION_COOKIE = "brt_session"
TOKEN_PREFIX = "brt_"
LAST_USED_PRECISION = dt.timedelta(minutes=1)   # how fresh an API token's last_used_at is kept

_hasher = PasswordHasher()


class AuthError(PermissionError):
    """A refused sign-in, session or token."""


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A hash of a random password, verified when the e-mail is unknown so that a sign-in takes
# the same time whether or not the account exists.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def authenticate_password(session: Session, email: str, password: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        raise AuthError("unknown e-mail or wrong password")
    if not user.active or not verify_password(user.password_hash, password):
        raise AuthError("unknown e-mail or wrong password")
    user.last_login_at = dt.datetime.now(dt.timezone.utc)
    return user


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in user or an API token's user."""

    user_id: int
    email: str
    role: Role
    account_id: int | None
    scopes: frozenset[str] = frozenset({"*"})   # an API token's scopes; "*" = everything its role may do

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @classmethod
    def of(cls, user: User, scopes=None) -> "Principal":
        return cls(user.id, user.email, Role(user.role), user.account_id,
                   frozenset(scopes) if scopes else frozenset({"*"}))


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="bluerocktel.session")


def sign_session(secret_key: str, user: User) -> str:
    return _serializer(secret_key).dumps({"uid": user.id})


def read_session(secret_key: str, cookie: str, max_age_s: int) -> int:
    """The user id in a session cookie; AuthError when forged or expired."""
    try:
        data = _serializer(secret_key).loads(cookie, max_age=max_age_s)
    except SignatureExpired:
        raise AuthError("session expired") from None
    except BadSignature:
        raise AuthError("invalid session") from None
    return int(data["uid"])


def load_active_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise AuthError("no such active user")
    return user


def _fernet(key: str):
    """A Fernet cipher keyed by the workbench secret key (HKDF-SHA256, its own context)."""
    import base64

    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bluerocktel.secrets-at-rest").derive(
        key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_text(key: str, plaintext: str) -> str:
    """``plaintext`` encrypted and authenticated (Fernet: AES-128-CBC + HMAC-SHA256) for storage at rest."""
    return _fernet(key).encrypt(plaintext.encode()).decode()


def decrypt_text(key: str, token: str) -> str:
    """The text :func:`encrypt_text` stored; a wrong key or a tampered value raises ``AuthError``."""
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise AuthError("stored secret cannot be decrypted with this data dir's secret key") from exc


def check_scopes(scopes: list[str] | None) -> list[str]:
    """``["*"]`` (the role's whole reach) or known permission names; an unknown one is refused."""
    if not scopes:
        return ["*"]
    known = {p for permissions in PERMISSIONS.values() for p in permissions}
    unknown = sorted(set(scopes) - known - {"*"})
    if unknown:
        from bluerocktel.errors import UserFacingError

        raise UserFacingError(f"unknown token scope(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return sorted(set(scopes))


def create_api_token(session: Session, user: User, name: str, scopes: list[str] | None = None) -> str:
    """Create a token for ``user`` limited to ``scopes`` (default all its role may do); returns the
    token text, which is never stored."""
    scopes = check_scopes(scopes)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_prefix=token[:12],
                         token_sha256=hashlib.sha256(token.encode()).hexdigest(), scopes=scopes))
    return token


# Built once: the statement of every API request (building it cost more CPU than running it).
_TOKEN_QUERY = (select(ApiToken.id, ApiToken.scopes, ApiToken.revoked_at, ApiToken.last_used_at,
                       User.id.label("user_id"), User.email, User.role, User.account_id, User.active)
                .join(User, User.id == ApiToken.user_id).where(ApiToken.token_sha256 == bindparam("digest")))


def authenticate_token(session: Session, token: str) -> tuple[Principal, int | None]:
    """The caller of an API token (its active user, with the token's scopes), in one query; and the
    token's id when its ``last_used_at`` is older than :data:`LAST_USED_PRECISION` (for
    :class:`TokenUsage`), else None."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    row = session.connection().execute(_TOKEN_QUERY, {"digest": digest}).first()    # Core: no ORM compile step
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or revoked API token")
    if not row.active:
        raise AuthError("no such active user")
    principal = Principal(row.user_id, row.email, Role(row.role), row.account_id,
                          frozenset(row.scopes) if row.scopes else frozenset({"*"}))
    now = dt.datetime.now(dt.timezone.utc)
    stale = row.last_used_at is None or now - row.last_used_at > LAST_USED_PRECISION
    return principal, (row.id if stale else None)


class TokenUsage:
    """Writes API tokens' ``last_used_at`` in a thread of its own, one short transaction per
    write, off the requests (at most once a minute per token: a write per request would
    serialize the API). ``flush()`` waits for the writes asked so far."""

    def __init__(self, db):
        from concurrent.futures import ThreadPoolExecutor

        self.db = db
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-usage")
        self._pending: set[int] = set()

    def touch(self, token_id: int) -> None:
        if token_id not in self._pending:       # requests racing on a stale token: one write
            self._pending.add(token_id)
            self._executor.submit(self._write, token_id)

    def _write(self, token_id: int) -> None:
        try:
            with self.db.transaction() as session:
                session.execute(update(ApiToken).where(ApiToken.id == token_id)
                                .values(last_used_at=dt.datetime.now(dt.timezone.utc)))
        finally:
            self._pending.discard(token_id)

    def flush(self) -> None:
        self._executor.submit(lambda: None).result()


# What each role may do; customers reach only their own account through the portal.
# CDR mediation: ``cdrs:read`` (the file ledger, the quarantine, the sources: every staff role),
# ``cdrs:import`` (push batches, upload files: admin and billing, who run the billing cycle the
# CDRs feed), ``cdrs:sources`` (add or change CDR sources and their collector URLs: admin only).
# Rating: ``rating:read`` (any rated CDR's trace with cost and margin, the unrated queue, the
# anomalies: admin, billing, support, read_only; not sales). A customer sees its own account's
# traces only, without the buy side, and never the queue or the anomalies.
# CRM and helpdesk: ``services:write`` (activate, suspend, reactivate, terminate: admin, sales,
# support), ``tickets:read`` (every staff role) and ``tickets:write`` (reply, change status:
# admin, support), ``webhooks:write`` (subscriptions, delivery log, replay: admin only),
# ``crm:write`` (accounts, contacts, sites, contracts, quotes: admin, sales), ``catalog:write``
# (products, price lists: admin).
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset({"accounts:read", "accounts:write", "invoices:read", "billing:run", "billing:issue",
                           "cdrs:read", "cdrs:import", "cdrs:sources", "users:write", "audit:read",
                           "tickets:read", "tickets:write", "rating:read", "services:write", "webhooks:write",
                           "crm:write", "catalog:write"}),
    Role.BILLING: frozenset({"accounts:read", "invoices:read", "billing:run", "billing:issue", "cdrs:read",
                             "cdrs:import", "rating:read", "tickets:read"}),
    Role.SUPPORT: frozenset({"accounts:read", "invoices:read", "tickets:read", "tickets:write", "cdrs:read",
                             "rating:read", "services:write"}),
    Role.SALES: frozenset({"accounts:read", "accounts:write", "cdrs:read", "tickets:read", "services:write",
                           "crm:write"}),
    Role.READ_ONLY: frozenset({"accounts:read", "invoices:read", "cdrs:read", "rating:read", "tickets:read"}),
    Role.CUSTOMER: frozenset({"portal"}),
}


def can(principal: Principal, permission: str) -> bool:
    """The principal's role may do it, and (for an API token) the token's scopes include it."""
    return permission in PERMISSIONS[principal.role] and ("*" in principal.scopes or permission in principal.scopes)
