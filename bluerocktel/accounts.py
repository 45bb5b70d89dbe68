"""Users and accounts: creation with the checks and the audit entry they need."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Account, User
from bluerocktel.errors import UserFacingError
from bluerocktel.security import hash_password
from bluerocktel.vocabulary import Role


def create_user(session: Session, *, email: str, name: str, password: str, role: str,
                account_number: str | None = None, actor: str = "system") -> User:
    role = Role(role)
    account_id = None
    if role is Role.CUSTOMER:
        if not account_number:
            raise UserFacingError("a customer user needs --account (the account number it belongs to)")
        account = session.scalar(select(Account).where(Account.number == account_number))
        if account is None:
            raise UserFacingError(f"no account numbered {account_number!r}")
        account_id = account.id
    email = email.strip().lower()
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise UserFacingError(f"a user with e-mail {email!r} exists already")
    user = User(email=email, name=name, password_hash=hash_password(password), role=role.value,
                account_id=account_id)
    session.add(user)
    session.flush()
    record_audit(session, actor, "user.create", "user", user.id, email=email, role=role.value)
    return user
