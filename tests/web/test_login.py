"""Sign-in pages, the signed session cookie, the audit trail and the auth middleware."""

from __future__ import annotations

import re

import itsdangerous.timed
import pytest
from sample_operator import PASSWORD
from sqlalchemy import select
from starlette.testclient import WebSocketDisconnect

from bluerocktel.db.models import AuditEntry, User
from bluerocktel.security import SESSION_COOKIE, sign_session

BRT = "http://portal.bluerock.localhost"
AZU = "http://espace.azur.localhost:8000"


def sign_in(client, email, password=PASSWORD, base=BRT, next_path=None):
    data = {"email": email, "password": password}
    if next_path:
        data["next"] = next_path
    return client.post(f"{base}/login", data=data, follow_redirects=False)


def rendered(client, path: str) -> str:
    """What the newest Panel session of ``path`` renders (its document as text)."""
    sessions = list(client.app.state.panel._applications[path].sessions)
    return str(sessions[-1].document.to_json())


def session_token_payload(page_html: str) -> dict:
    from bokeh.util.token import get_token_payload

    token = re.search(r'"token":"([^"]+)"', page_html).group(1)
    return get_token_payload(token)


def audit(wb, action):
    with wb.db.session() as s:
        return s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def test_login_page_is_branded_by_host(client, sample):
    brt = client.get(f"{BRT}/login")
    assert brt.status_code == 200 and "BlueRock Telecom" in brt.text and "#0b3d91" in brt.text
    azu = client.get(f"{AZU}/login")
    assert "Espace Azur" in azu.text and "#00796b" in azu.text and "BlueRock Telecom" not in azu.text
    assert "data:image/svg+xml;base64," in azu.text        # the logo, as an <img>, never inline SVG
    fallback = client.get("http://127.0.0.1:8000/login")
    assert "BlueRock Telecom" in fallback.text             # no brand claims the host: the first brand


def test_login_success_sets_a_signed_httponly_lax_cookie(wb, client, sample, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_SESSION_MAX_AGE_S", "3600")
    r = sign_in(client, "Alice@Martin.example")
    assert r.status_code == 303 and r.headers["location"] == "/portal"
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith(f"{SESSION_COOKIE}=")
    attrs = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert {"httponly", "max-age", "path", "samesite"} <= attrs and "secure" not in attrs
    assert "samesite=lax" in set_cookie.lower() and "max-age=3600" in set_cookie.lower()
    [entry] = audit(wb, "auth.login")
    assert entry.actor == "alice@martin.example" and entry.target_id == str(sample.user_ids["alice"])
    assert entry.details["brand"] == "BRT"
    with wb.db.session() as s:
        assert s.get(User, sample.user_ids["alice"]).last_login_at is not None


def test_cookie_secure_setting(client, sample, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_COOKIE_SECURE", "1")
    assert "secure" in sign_in(client, "alice@martin.example").headers["set-cookie"].lower()


def test_login_failure_is_a_401_page_and_audited(wb, client, sample):
    r = sign_in(client, "alice@martin.example", "wrong password!")
    assert r.status_code == 401 and "Unknown e-mail or wrong password" in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    r = sign_in(client, "nobody@nowhere.example")
    assert r.status_code == 401
    failures = audit(wb, "auth.login_failed")
    assert [f.actor for f in failures] == ["alice@martin.example", "nobody@nowhere.example"]
    assert audit(wb, "auth.login") == []


def test_customer_signs_in_only_on_their_brand_host(wb, client, sample):
    assert sign_in(client, "bob@durand.example", base=BRT).status_code == 401
    assert sign_in(client, "bob@durand.example", base=AZU).status_code == 303
    assert "another brand" in audit(wb, "auth.login_failed")[0].details["reason"]


def test_next_is_followed_only_when_local(client, sample):
    assert sign_in(client, "alice@martin.example", next_path="/portal?tab=1").headers["location"] == "/portal?tab=1"
    client.cookies.clear()
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        assert sign_in(client, "alice@martin.example", next_path=evil).headers["location"] == "/portal"
        client.cookies.clear()


def test_cross_site_login_post_is_refused(client, sample):
    r = client.post(f"{BRT}/login", data={"email": "alice@martin.example", "password": PASSWORD},
                    headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403


def test_unauthenticated_browser_is_redirected_to_login(client, sample):
    r = client.get(f"{BRT}/portal?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/portal%3Fx%3D1"
    r = client.get(f"{BRT}/staff", follow_redirects=False)
    assert r.headers["location"] == "/login?next=/staff"
    r = client.get(f"{BRT}/portal/invoices/{sample.invoice_ids['martin']}.pdf", follow_redirects=False)
    assert r.status_code == 303


def test_tampered_or_expired_cookie_is_refused(wb, client, sample, monkeypatch):
    sign_in(client, "alice@martin.example")
    good = client.cookies[SESSION_COOKIE]
    assert client.get(f"{BRT}/portal", follow_redirects=False).status_code == 200
    for forged in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
                   good.replace(good.split(".")[0], "eyJ1aWQiOjJ9"),     # {"uid":2} with alice's signature
                   "garbage"):
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, forged)
        r = client.get(f"{BRT}/portal", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), forged
    # a cookie older than the session lifetime is refused by its signed timestamp
    with wb.db.session() as s:
        old = sign_session(wb.secret_key, s.get(User, sample.user_ids["alice"]))
    real_time = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() + 8 * 3600 + 5)
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, old)
    assert client.get(f"{BRT}/portal", follow_redirects=False).status_code == 303


def test_deactivated_user_loses_the_session(wb, client, sample):
    sign_in(client, "alice@martin.example")
    with wb.db.transaction() as s:
        s.get(User, sample.user_ids["alice"]).active = False
    assert client.get(f"{BRT}/portal", follow_redirects=False).status_code == 303


def test_customers_use_portal_and_staff_use_staff(client, sample):
    sign_in(client, "alice@martin.example")
    r = client.get(f"{BRT}/staff", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal"
    client.cookies.clear()
    r = sign_in(client, "admin@bluerock.example")
    assert r.headers["location"] == "/staff"
    r = client.get(f"{BRT}/portal", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/staff"
    assert client.get(f"{BRT}/staff").status_code == 200
    page = rendered(client, "/staff")
    assert "Boulangerie Martin" in page and "Cabinet Durand" in page and "admin@bluerock.example" in page


def test_portal_page_renders_only_the_customers_own_data(client, sample):
    sign_in(client, "alice@martin.example")
    html_page = client.get(f"{BRT}/portal").text
    assert "<title>BlueRock Telecom · Customer area</title>" in html_page
    page = rendered(client, "/portal")
    assert "BlueRock Telecom" in page and "FA-2026-000001" in page and "Boulangerie Martin" in page
    assert f"/portal/invoices/{sample.invoice_ids['martin']}.pdf" in page     # the PDF link
    assert "AZ-2026-000001" not in page and "Durand" not in page
    # The Panel session token (readable by the page's scripts) must not carry the HttpOnly session
    # cookie; Panel gets a "user" cookie it verifies itself (pn.state.user) instead.
    cookies = session_token_payload(html_page)["cookies"]
    assert SESSION_COOKIE not in cookies and set(cookies) == {"user"}


def test_portal_on_the_second_brand_host(client, sample):
    sign_in(client, "bob@durand.example", base=AZU)
    assert client.get(f"{AZU}/portal").status_code == 200
    page = rendered(client, "/portal")
    assert "Espace Azur" in page and "#00796b" in page and "AZ-2026-000001" in page
    assert "BlueRock Telecom" not in page and "FA-2026-000001" not in page


def test_portal_pdf_download_is_scoped(client, sample):
    sign_in(client, "alice@martin.example")
    own = client.get(f"{BRT}/portal/invoices/{sample.invoice_ids['martin']}.pdf")
    assert own.status_code == 200 and own.content.startswith(b"%PDF") and b"FA-2026-000001" in own.content
    other = client.get(f"{BRT}/portal/invoices/{sample.invoice_ids['durand']}.pdf")
    assert other.status_code == 404 and b"AZ-2026" not in other.content


def test_portal_call_detail_download_is_scoped(client, sample):
    sign_in(client, "alice@martin.example")
    own = client.get(f"{BRT}/portal/invoices/{sample.invoice_ids['martin']}-annex.pdf")
    assert own.status_code == 200 and own.content.startswith(b"%PDF")
    assert "FA-2026-000001-annex.pdf" in own.headers["content-disposition"]
    other = client.get(f"{BRT}/portal/invoices/{sample.invoice_ids['durand']}-annex.pdf")
    assert other.status_code == 404 and b"AZ-2026" not in other.content


def test_logout_clears_the_cookie_and_is_audited(wb, client, sample):
    sign_in(client, "alice@martin.example")
    r = client.post(f"{BRT}/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in r.headers["set-cookie"] or "max-age=0" in r.headers["set-cookie"].lower()
    assert [e.actor for e in audit(wb, "auth.logout")] == ["alice@martin.example"]
    assert client.get(f"{BRT}/portal", follow_redirects=False).status_code == 303


def test_root_redirects(client, sample):
    assert client.get(f"{BRT}/", follow_redirects=False).headers["location"] == "/login"
    sign_in(client, "alice@martin.example")
    assert client.get(f"{BRT}/", follow_redirects=False).headers["location"] == "/portal"


@pytest.mark.parametrize("path", ["/portal/ws", "/staff/ws"])
def test_websocket_without_session_is_closed(client, sample, path):
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect(f"ws://portal.bluerock.localhost{path}", subprotocols=["bokeh", "x"]):
            pass
    assert refused.value.code == 1008


def test_websocket_of_the_wrong_area_or_origin_is_closed(client, sample):
    sign_in(client, "alice@martin.example")
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("ws://portal.bluerock.localhost/staff/ws", subprotocols=["bokeh", "x"]):
            pass
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("ws://portal.bluerock.localhost/portal/ws", subprotocols=["bokeh", "x"],
                                      headers={"Origin": "https://evil.example"}):
            pass
    assert refused.value.code == 1008
