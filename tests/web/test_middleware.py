"""The ASGI auth middleware alone, around a stub app that records what it is given."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDisconnect

from bluerocktel.security import SESSION_COOKIE, sign_session
from bluerocktel.db.models import User
from bluerocktel.web.branding import parse_host
from bluerocktel.web.middleware import SessionAuthMiddleware
from bluerocktel.web.sessions import safe_next

seen = []


async def page(request):
    seen.append((request.scope.get("user"), dict(request.cookies)))
    return PlainTextResponse("ok")


async def ws(websocket):
    seen.append((websocket.scope.get("user"), dict(websocket.cookies)))
    await websocket.accept()
    await websocket.send_text(websocket.scope["user"].email)
    await websocket.close()


@pytest.fixture
def stub(wb, sample):
    seen.clear()
    inner = Starlette(routes=[Route("/portal", page), Route("/staff", page), Route("/public", page),
                              WebSocketRoute("/portal/ws", ws)])
    app = SessionAuthMiddleware(inner, wb=wb, panel_user_cookie=lambda p: f"signed-{p.user_id}")
    client = TestClient(app, base_url="http://portal.bluerock.localhost")
    with wb.db.session() as s:
        client.cookies.set(SESSION_COOKIE, sign_session(wb.secret_key, s.get(User, sample.user_ids["alice"])))
    return client


def test_principal_on_scope_and_cookies_rewritten(stub, sample):
    stub.cookies.set("user", "forged-admin")
    stub.cookies.set("is_guest", "1")
    stub.cookies.set("theme", "dark")
    assert stub.get("/portal").text == "ok"
    principal, cookies = seen[-1]
    assert principal.user_id == sample.user_ids["alice"] and principal.email == "alice@martin.example"
    assert cookies == {"theme": "dark", "user": f"signed-{sample.user_ids['alice']}"}


def test_public_paths_pass_untouched(stub):
    stub.get("/public")
    principal, cookies = seen[-1]
    assert principal is None and SESSION_COOKIE in cookies


def test_accepted_websocket_sees_the_user(stub):
    with stub.websocket_connect("ws://portal.bluerock.localhost/portal/ws",
                                headers={"Origin": "http://portal.bluerock.localhost"}) as sock:
        assert sock.receive_text() == "alice@martin.example"


def test_refused_websocket_never_reaches_the_app(stub):
    stub.cookies.clear()
    with pytest.raises(WebSocketDisconnect):
        with stub.websocket_connect("ws://portal.bluerock.localhost/portal/ws"):
            pass
    assert seen == []


def test_wrong_role_posting_is_403(stub):
    r = stub.post("/staff", follow_redirects=False)
    assert r.status_code == 403


@pytest.mark.parametrize("header, host", [("Portal.Bluerock.localhost:8000", "portal.bluerock.localhost"),
                                          ("espace.azur.localhost", "espace.azur.localhost"),
                                          ("[::1]:8000", "::1"), ("", "")])
def test_parse_host(header, host):
    assert parse_host(header) == host


@pytest.mark.parametrize("value, expected", [("/portal", "/portal"), ("/portal?x=1", "/portal?x=1"),
                                             ("//evil", "/d"), ("https://evil", "/d"), ("/\\evil", "/d"),
                                             ("javascript:alert(1)", "/d"), (None, "/d"), ("/a\r\nb", "/d")])
def test_safe_next(value, expected):
    assert safe_next(value, "/d") == expected
