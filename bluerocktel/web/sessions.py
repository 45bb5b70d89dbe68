"""The signed session cookie: set at sign-in, read by the auth middleware and the Panel apps.

The cookie holds only the user id, signed and timestamped (:func:`bluerocktel.security.sign_session`).
It is HttpOnly, SameSite=Lax, Secure when ``BLUEROCKTEL_COOKIE_SECURE=1``, and lives
``BLUEROCKTEL_SESSION_MAX_AGE_S`` seconds; the signature's timestamp enforces the same limit
on the server, so an old cookie replayed after its expiry is refused.
"""

from __future__ import annotations

from urllib.parse import quote

from bluerocktel.security import SESSION_COOKIE, AuthError, Principal, load_active_user, read_session
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import Role
from bluerocktel.workbench import Workbench

LOGIN_PATH = "/login"


def session_max_age_s() -> int:
    return int(get_setting("session_max_age_s"))


def cookie_secure() -> bool:
    return get_setting("cookie_secure").strip().lower() in {"1", "true", "yes", "on"}


def session_cookie_attributes() -> dict:
    """Keyword arguments of Starlette's ``Response.set_cookie`` for the session cookie."""
    return {"key": SESSION_COOKIE, "max_age": session_max_age_s(), "path": "/", "httponly": True,
            "samesite": "lax", "secure": cookie_secure()}


def principal_from_cookie(wb: Workbench, cookie: str | None) -> Principal | None:
    """The signed-in user of a session cookie, or None when absent, forged, expired or inactive."""
    if not cookie:
        return None
    try:
        user_id = read_session(wb.secret_key, cookie, session_max_age_s())
        with wb.db.session() as s:
            return Principal.of(load_active_user(s, user_id))
    except AuthError:
        return None


def home_path(principal: Principal) -> str:
    """Where a signed-in user lands: customers on the portal, staff on the staff app."""
    return "/portal" if principal.role is Role.CUSTOMER else "/staff"


def safe_next(next_path: str | None, default: str) -> str:
    """``next_path`` when it is a local path (no scheme, no host, no ``//``), else ``default``."""
    if not next_path or not next_path.startswith("/") or next_path.startswith(("//", "/\\")):
        return default
    if any(c in next_path for c in "\r\n\\") or ":" in next_path.split("?", 1)[0]:
        return default
    return next_path


def login_url(next_path: str | None = None) -> str:
    return LOGIN_PATH if not next_path else f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"
