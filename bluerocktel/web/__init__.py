"""Browser-facing web layer without UI libraries: brand resolution, sign-in, session cookie,
the ASGI auth middleware and authenticated downloads. The Panel apps live in ``portal_app/``."""

from bluerocktel.web.branding import BrandView, parse_host, resolve_brand
from bluerocktel.web.middleware import SessionAuthMiddleware
from bluerocktel.web.sessions import principal_from_cookie, session_cookie_attributes

__all__ = ["BrandView", "SessionAuthMiddleware", "parse_host", "principal_from_cookie", "resolve_brand",
           "session_cookie_attributes"]
