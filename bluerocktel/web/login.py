"""The sign-in page (``GET``/``POST /login``), ``POST /logout`` and ``/``, branded by Host header.

Plain HTML, no JavaScript. The session cookie is HttpOnly and SameSite=Lax, so a cross-site
form cannot sign a user out or use their session; ``POST`` requests whose ``Origin`` names
another host are refused as well. Every sign-in, refused sign-in and sign-out is audited.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bluerocktel.audit import record_audit
from bluerocktel.db.models import Account
from bluerocktel.security import SESSION_COOKIE, AuthError, Principal, authenticate_password, sign_session
from bluerocktel.vocabulary import Role
from bluerocktel.web.branding import BrandView, resolve_brand
from bluerocktel.web.middleware import same_origin
from bluerocktel.web.sessions import (
    home_path,
    principal_from_cookie,
    safe_next,
    session_cookie_attributes,
)

router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store"}


def _wb(request: Request):
    return request.app.state.wb


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _brand(request: Request) -> BrandView:
    with _wb(request).db.session() as s:
        return resolve_brand(s, request.headers.get("host"))


@router.get("/")
def root(request: Request) -> Response:
    principal = principal_from_cookie(_wb(request), request.cookies.get(SESSION_COOKIE))
    return RedirectResponse(home_path(principal) if principal else "/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    brand = _brand(request)
    principal = principal_from_cookie(_wb(request), request.cookies.get(SESSION_COOKIE))
    if principal is not None:
        return RedirectResponse(safe_next(next, home_path(principal)), status_code=303)
    return HTMLResponse(render_login_page(brand, next_path=next), headers=_NO_STORE)


@router.post("/login")
def login_submit(request: Request, email: str = Form(""), password: str = Form(""),
                 next: str = Form("")) -> Response:
    if not same_origin(request.scope):
        return Response("cross-site sign-in refused", status_code=403, media_type="text/plain")
    wb = _wb(request)
    email_typed = email.strip().lower()[:200]
    with wb.db.transaction() as s:
        brand = resolve_brand(s, request.headers.get("host"))
        try:
            user = authenticate_password(s, email_typed, password)
            if user.role == Role.CUSTOMER and brand.matched_host:
                # A customer signs in on the portal of the brand their account belongs to.
                account = s.get(Account, user.account_id) if user.account_id else None
                if account is None or account.brand_id != brand.brand_id:
                    s.expire(user)          # discard the last_login_at of the refused sign-in
                    raise AuthError("customer of another brand")
        except AuthError as exc:
            record_audit(s, email_typed or "-", "auth.login_failed", "user", None,
                         reason=str(exc), ip=_client_ip(request), brand=brand.code)
            failed = True
        else:
            record_audit(s, user.email, "auth.login", "user", user.id, ip=_client_ip(request), brand=brand.code)
            principal = Principal.of(user)
            cookie = sign_session(wb.secret_key, user)
            failed = False
    if failed:
        page = render_login_page(brand, next_path=next or None, error="Unknown e-mail or wrong password.",
                                 email=email_typed)
        return HTMLResponse(page, status_code=401, headers=_NO_STORE)
    response = RedirectResponse(safe_next(next, home_path(principal)), status_code=303)
    response.set_cookie(value=cookie, **session_cookie_attributes())
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if not same_origin(request.scope):
        return Response("cross-site sign-out refused", status_code=403, media_type="text/plain")
    wb = _wb(request)
    principal = principal_from_cookie(wb, request.cookies.get(SESSION_COOKIE))
    if principal is not None:
        with wb.db.transaction() as s:
            record_audit(s, principal.email, "auth.logout", "user", principal.user_id, ip=_client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    attrs = session_cookie_attributes()
    response.delete_cookie(attrs["key"], path=attrs["path"], secure=attrs["secure"], httponly=True, samesite="lax")
    return response


def render_login_page(brand: BrandView, *, next_path: str | None = None, error: str | None = None,
                      email: str = "") -> str:
    e = html.escape
    logo = (f'<img class="logo" src="{e(brand.logo_data_uri)}" alt="">' if brand.logo_data_uri else
            f'<div class="logo mono">{e(brand.name[:1].upper())}</div>')
    error_html = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    next_field = f'<input type="hidden" name="next" value="{e(next_path)}">' if next_path else ""
    action = "/login" + (f"?next={quote(next_path, safe='/')}" if next_path else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · {e(brand.name)}</title>
<style>
  :root {{ --primary: {brand.primary_color}; --accent: {brand.accent_color}; }}
  * {{ box-sizing: border-box; }}
  body {{ margin: 0; min-height: 100vh; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: linear-gradient(160deg, var(--primary) 0 38%, #f3f5f8 38% 100%); color: #1d2430;
         display: flex; align-items: center; justify-content: center; }}
  .card {{ width: min(400px, 92vw); background: #fff; border-radius: 10px; padding: 32px 32px 24px;
          box-shadow: 0 10px 30px rgba(15, 23, 42, .18); border-top: 5px solid var(--accent); }}
  .brand {{ display: flex; align-items: center; gap: 12px; margin-bottom: 22px; }}
  .logo {{ width: 44px; height: 44px; border-radius: 8px; object-fit: contain; }}
  .mono {{ background: var(--primary); color: #fff; display: flex; align-items: center; justify-content: center;
          font-weight: 700; font-size: 22px; }}
  h1 {{ font-size: 20px; margin: 0; }}
  .sub {{ color: #5b6472; font-size: 13px; margin: 2px 0 0; }}
  label {{ display: block; font-size: 13px; font-weight: 600; margin: 14px 0 6px; }}
  input[type=email], input[type=password] {{ width: 100%; padding: 10px 12px; border: 1px solid #c8ced8;
          border-radius: 6px; font-size: 15px; }}
  input:focus {{ outline: 2px solid var(--accent); border-color: transparent; }}
  button {{ margin-top: 22px; width: 100%; padding: 11px; border: 0; border-radius: 6px; font-size: 15px;
           font-weight: 600; color: #fff; background: var(--primary); cursor: pointer; }}
  .error {{ background: #fdecec; color: #9b1c1c; border-radius: 6px; padding: 9px 12px; font-size: 14px; }}
  footer {{ margin-top: 18px; font-size: 12px; color: #8a93a3; text-align: center; }}
</style></head>
<body><main class="card">
  <div class="brand">{logo}
    <div><h1 id="brand-name">{e(brand.name)}</h1><p class="sub">Customer area sign-in</p></div>
  </div>
  {error_html}
  <form method="post" action="{e(action)}">
    {next_field}
    <label for="email">E-mail</label>
    <input id="email" name="email" type="email" autocomplete="username" required value="{e(email)}">
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" required>
    <button type="submit">Sign in</button>
  </form>
  <footer>{e(brand.name)} · powered by BlueRockTEL</footer>
</main></body></html>
"""
