"""The one web process (DESIGN.md §4): REST API, sign-in pages, downloads and the Panel apps.

``create_app(wb)`` returns a FastAPI app:

- ``/api/v1/...`` REST API with bearer tokens; OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/docs``;
- ``/login``, ``/logout``, ``/``: branded sign-in pages setting the signed session cookie;
- ``/portal`` (customers) and ``/staff`` (staff roles): Panel apps mounted with
  ``panel.io.fastapi.add_applications`` (bokeh-fastapi), plus ``/portal/invoices/{id}.pdf``;
- :class:`~bluerocktel.web.middleware.SessionAuthMiddleware` guarding ``/portal`` and ``/staff``,
  HTTP and websocket.
"""

from __future__ import annotations

import hashlib
import hmac

import panel as pn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from panel.io.fastapi import add_applications
from tornado.web import create_signed_value

import bluerocktel
from bluerocktel.api import install_problem_handlers
from bluerocktel.api import router as api_router
from bluerocktel.api.concurrency import ApiConcurrencyLimit, api_concurrency_for
from bluerocktel.api.etag import ETagMiddleware
from bluerocktel.api.ratelimit import RateLimiter
from bluerocktel.security import Principal, TokenUsage
from bluerocktel.web.downloads import router as downloads_router
from bluerocktel.web.login import router as login_router
from bluerocktel.web.middleware import SessionAuthMiddleware
from bluerocktel.workbench import Workbench
from portal_app.layout import EXTENSIONS
from portal_app.portal import build_portal
from portal_app.staff import build_staff

pn.extension(*EXTENSIONS, notifications=False)


def derive_key(secret_key: str, purpose: str) -> str:
    """A key for one purpose, derived from the workbench secret (HMAC-SHA256, hex)."""
    return hmac.new(secret_key.encode(), f"bluerocktel.{purpose}".encode(), hashlib.sha256).hexdigest()


def _serve_with_title(layout) -> None:
    """Put ``layout`` in the session's document keeping the branded title the app set."""
    layout.servable(title=pn.state.curdoc.title, location=False)


def create_app(wb: Workbench) -> FastAPI:
    app = FastAPI(title="BlueRockTEL API", version=bluerocktel.__version__,
                  description="Accounts, invoices and billing runs of the BlueRockTEL workbench. "
                              "Authenticate with `Authorization: Bearer <token>` (`bluerocktel token create`). "
                              "Errors are `application/problem+json` (RFC 9457); money is integer minor units.",
                  openapi_url="/api/v1/openapi.json", docs_url="/api/docs", redoc_url=None)
    app.state.wb = wb
    install_problem_handlers(app)
    app.include_router(api_router)
    app.include_router(login_router)
    app.include_router(downloads_router)

    # Panel trusts a "user" cookie signed with its cookie_secret (pn.state.user); the middleware
    # strips the browser's and hands Panel one for the user it has verified.
    panel_secret = derive_key(wb.secret_key, "panel-user")
    pn.config.cookie_secret = panel_secret

    def panel_user_cookie(principal: Principal) -> str:
        return create_signed_value(panel_secret, "user", principal.email).decode()

    def portal_page():
        _serve_with_title(build_portal(wb))

    def staff_page():
        _serve_with_title(build_staff(wb))

    app.state.panel = add_applications({"/portal": portal_page, "/staff": staff_page}, app=app,
                     title={"/portal": "Customer area", "/staff": "Operations"}, location=False,
                     secret_key=derive_key(wb.secret_key, "bokeh-sessions").encode(), sign_sessions=True)
    for route in app.routes:            # the schema documents the REST API only
        if isinstance(route, APIRoute) and not route.path.startswith("/api/"):
            route.include_in_schema = False

    app.add_middleware(SessionAuthMiddleware, wb=wb, panel_user_cookie=panel_user_cookie)
    app.add_middleware(ETagMiddleware)
    app.add_middleware(ApiConcurrencyLimit, limit=api_concurrency_for(wb.db.engine))
    app.state.rate_limiter = RateLimiter()
    app.state.token_usage = TokenUsage(wb.db)
    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``serve --workers N``: the data dir and database that
    ``BLUEROCKTEL_DATA_DIR`` and ``BLUEROCKTEL_DATABASE_URL`` name (already migrated by ``serve``)."""
    import os

    return create_app(Workbench.open(os.environ["BLUEROCKTEL_DATA_DIR"], migrate=False))
