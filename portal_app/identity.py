"""Who is signed in, seen from inside a Panel session.

The auth middleware has already refused requests without a valid session cookie. It hands Panel
a ``user`` cookie signed with ``pn.config.cookie_secret`` (and strips any the browser sent), so
``pn.state.user`` is the signed-in e-mail; reading it verifies that signature again, and the user
is re-loaded here so that a deactivated user or a wrong role is refused by the app as well.
"""

from __future__ import annotations

import html

import panel as pn
from sqlalchemy import select

from bluerocktel.db.models import User
from bluerocktel.security import AuthError, Principal
from bluerocktel.vocabulary import Role
from bluerocktel.web.branding import BrandView, brand_by_id, resolve_brand


def signed_in(wb, roles: frozenset[Role]) -> Principal:
    email = pn.state.user
    if not email:
        raise AuthError("no signed-in user in this session")
    with wb.db.session() as s:
        user = s.scalar(select(User).where(User.email == email))
        if user is None or not user.active:
            raise AuthError("no such active user")
        principal = Principal.of(user)
    if principal.role not in roles:
        raise AuthError(f"role {principal.role.value} may not use this app")
    return principal


def request_host() -> str | None:
    headers = pn.state.headers or {}
    return headers.get("Host") or headers.get("host")


def page_brand(wb, account_brand_id: int | None = None) -> BrandView:
    """The brand of the Host header; when no brand claims the host, the account's own brand."""
    with wb.db.session() as s:
        brand = resolve_brand(s, request_host())
        if not brand.matched_host and account_brand_id is not None:
            brand = brand_by_id(s, account_brand_id)
    return brand


def refused_page(message: str) -> pn.viewable.Viewable:
    pn.state.curdoc.title = "Sign in"
    return pn.pane.HTML(f'<div style="padding:40px;font-family:system-ui">{html.escape(message)} '
                        '<a href="/login">Sign in</a></div>')
