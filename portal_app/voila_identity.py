"""Sign-in for the Voila dashboards: the same signed session cookie as the web process.

Voila runs on its own port, but browsers send cookies per host name, not per port, so the
session cookie set by ``/login`` of ``bluerocktel serve`` reaches Voila too. This jupyter_server
identity provider accepts a request only when that cookie is valid and its user is staff with
the right to read invoices (finance dashboards); anyone else gets 403 with a link to sign in.
Voila's own token is then not needed. Used by :func:`bluerocktel.serving.voila_command`.
"""

from __future__ import annotations

import functools

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web

from bluerocktel.security import SESSION_COOKIE, can
from bluerocktel.web.sessions import principal_from_cookie
from bluerocktel.workbench import Workbench

DASHBOARD_PERMISSION = "invoices:read"


@functools.cache
def _workbench() -> Workbench:
    return Workbench.open(migrate=False)   # BLUEROCKTEL_DATA_DIR / _DATABASE_URL from serve


class SessionCookieIdentityProvider(IdentityProvider):
    def get_user(self, handler: web.RequestHandler) -> User | None:
        principal = principal_from_cookie(_workbench(), handler.get_cookie(SESSION_COOKIE))
        if principal is None or not principal.is_staff or not can(principal, DASHBOARD_PERMISSION):
            raise web.HTTPError(403, "sign in as a staff user allowed to read invoices (/login of the staff app)")
        return User(username=principal.email, name=principal.email, display_name=principal.email)
