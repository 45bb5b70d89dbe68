"""Signed webhooks for service events, delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from bluerocktel.db.models import Account, Brand, Product, Service, ServiceEvent, ServiceIdentifier, WebhookDelivery
from bluerocktel.errors import UserFacingError
from bluerocktel.security import AuthError, decrypt_text
from bluerocktel.webhooks import (BACKOFF_S, MAX_ATTEMPTS, SIGNATURE_HEADER, create_subscription, deliver_due,
                                  replay, sign, verify_signature)

UTC = dt.timezone.utc


class Receiver:
    """An HTTP endpoint that records each POST and answers with the next status of ``statuses``."""

    def __init__(self, statuses=(200,), delay_s: float = 0.0):
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        self.delay_s = delay_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"boom")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/brt"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def service_id(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        s.add(brand)
        s.flush()
        account = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
        product = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        s.add_all([account, product])
        s.flush()
        service = Service(account_id=account.id, product_id=product.id, label="SIP trunk Lyon")
        s.add(service)
        s.flush()
        s.add(ServiceIdentifier(service_id=service.id, kind="number", value="+33472000001",
                                valid_from=dt.datetime(2026, 1, 1, tzinfo=UTC)))
        return service.id


def _event(wb, service_id: int, kind: str = "suspended", reason: str = "dunning: FA-2026-000001 overdue 30 days"):
    with wb.db.transaction() as s:
        service = s.get(Service, service_id)
        event = ServiceEvent(service_id=service.id, account_id=service.account_id, kind=kind, reason=reason,
                             actor="dunning")
        s.add(event)
        s.flush()
        return event.id


def _subscribe(wb, url: str, events=()):
    with wb.db.transaction() as s:
        sub, secret = create_subscription(s, wb.secret_key, "provisioning", url, events=events, actor="admin")
        return sub.id, secret


def _delivery(wb) -> WebhookDelivery:
    with wb.db.session() as s:
        return s.scalars(sa.select(WebhookDelivery)).one()


def test_signature_is_hmac_sha256_of_timestamp_and_body():
    body = b'{"id":1}'
    header = sign("whsec_x", 1764161400, body)
    expected = hmac.new(b"whsec_x", b'1764161400.{"id":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1764161400,v1={expected}"
    assert verify_signature("whsec_x", header, body, now=1764161400 + 299)
    assert not verify_signature("whsec_x", header, body, now=1764161400 + 301)      # too old: a replay
    assert not verify_signature("whsec_x", header, b'{"id":2}', now=1764161400)     # body changed
    assert not verify_signature("whsec_y", header, body, now=1764161400)            # other secret
    assert not verify_signature("whsec_x", "v1=abc", body, now=1764161400)          # malformed


def test_event_is_delivered_once_signed_with_the_subscription_secret(wb, service_id, receiver):
    sub_id, secret = _subscribe(wb, receiver.url)
    event_id = _event(wb, service_id)
    assert deliver_due(wb) == {"attempted": 1, "delivered": 1, "pending": 0, "failed": 0}
    assert deliver_due(wb)["attempted"] == 0                     # nothing twice
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert verify_signature(secret, request["headers"][SIGNATURE_HEADER], request["body"])
    payload = json.loads(request["body"])
    assert payload["id"] == event_id and payload["type"] == "service.suspended"
    assert payload["reason"] == "dunning: FA-2026-000001 overdue 30 days"
    assert payload["account"]["number"] == "C0001"
    assert payload["service"]["identifiers"] == [{"kind": "number", "value": "+33472000001"}]
    assert request["headers"]["BlueRockTEL-Event"] == "service.suspended"
    delivery = _delivery(wb)
    assert request["headers"]["BlueRockTEL-Delivery"] == str(delivery.id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.log[0]["status_code"] == 200 and delivery.log[0]["error"] is None


def test_failures_are_retried_with_backoff_under_the_same_delivery_id(wb, service_id):
    receiver = Receiver(statuses=(500, 503, 200))
    try:
        _subscribe(wb, receiver.url)
        _event(wb, service_id)
        start = dt.datetime.now(UTC)
        assert deliver_due(wb, now=start)["pending"] == 1
        first = _delivery(wb)
        assert first.attempts == 1 and first.last_status_code == 500 and "HTTP 500" in first.last_error
        attempted_at = dt.datetime.fromisoformat(first.log[0]["at"])
        assert first.next_attempt_at - attempted_at == dt.timedelta(seconds=BACKOFF_S[0])
        assert deliver_due(wb, now=start + dt.timedelta(seconds=30))["attempted"] == 0   # not due yet
        assert deliver_due(wb, now=first.next_attempt_at)["pending"] == 1              # 503
        second = _delivery(wb)
        assert deliver_due(wb, now=second.next_attempt_at)["delivered"] == 1
        ids = {r["headers"]["BlueRockTEL-Delivery"] for r in receiver.requests}
        assert len(receiver.requests) == 3 and len(ids) == 1
        assert [entry["status_code"] for entry in _delivery(wb).log] == [500, 503, 200]
    finally:
        receiver.close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/down"


def test_an_unreachable_endpoint_fails_after_the_last_attempt_and_can_be_replayed(wb, service_id, receiver):
    sub_id, _ = _subscribe(wb, _closed_port_url())
    _event(wb, service_id)
    now = dt.datetime.now(UTC)
    for _ in range(MAX_ATTEMPTS):
        deliver_due(wb, now=now)
        now = now + dt.timedelta(days=2)
    delivery = _delivery(wb)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", MAX_ATTEMPTS, None)
    assert "ConnectError" in delivery.last_error
    assert deliver_due(wb, now=now + dt.timedelta(days=30))["attempted"] == 0     # failed waits for a replay
    with wb.db.transaction() as s:
        s.execute(sa.text("UPDATE webhook_subscriptions SET url = :u WHERE id = :i"), {"u": receiver.url, "i": sub_id})
        replay(s, delivery.id, actor="admin")
    assert deliver_due(wb)["delivered"] == 1
    assert len(receiver.requests) == 1


def test_a_hanging_endpoint_costs_the_timeout_not_the_transition(wb, service_id):
    receiver = Receiver(delay_s=3)
    try:
        _subscribe(wb, receiver.url)
        started = time.perf_counter()
        _event(wb, service_id)                      # the transition: only the outbox row
        assert time.perf_counter() - started < 1
        started = time.perf_counter()
        assert deliver_due(wb, timeout=0.5)["pending"] == 1
        assert time.perf_counter() - started < 2.5
        assert "Timeout" in _delivery(wb).last_error
    finally:
        receiver.close()


def test_subscriptions_get_only_the_kinds_they_asked_for_and_only_later_events(wb, service_id, receiver):
    _event(wb, service_id, kind="activated", reason="before anyone subscribed")
    _subscribe(wb, receiver.url, events=["terminated"])
    _event(wb, service_id, kind="suspended")
    _event(wb, service_id, kind="terminated", reason="customer left")
    assert deliver_due(wb)["delivered"] == 1
    assert json.loads(receiver.requests[0]["body"])["type"] == "service.terminated"


def test_secret_is_encrypted_at_rest_and_inputs_are_checked(wb):
    with wb.db.transaction() as s:
        sub, secret = create_subscription(s, wb.secret_key, "p", "https://prov.example/hook", actor="admin")
        stored = sub.secret
    assert secret.startswith("whsec_") and secret not in stored
    assert decrypt_text(wb.secret_key, stored) == secret
    with pytest.raises(AuthError):
        decrypt_text("another key", stored)
    with wb.db.transaction() as s:
        with pytest.raises(UserFacingError, match="absolute http"):
            create_subscription(s, wb.secret_key, "p", "ftp://x/y", actor="admin")
        with pytest.raises(UserFacingError, match="unknown event kind"):
            create_subscription(s, wb.secret_key, "p", "https://x/y", events=["exploded"], actor="admin")


def test_cli_subscribes_delivers_lists_and_replays(wb, service_id, receiver, capsys):
    from bluerocktel.cli import main

    data = ["--data-dir", str(wb.data_dir)]
    assert main(["webhooks", "add", receiver.url, "--events", "suspended", "--json", *data]) == 0
    secret = json.loads(capsys.readouterr().out)["secret"]
    _event(wb, service_id)
    assert main(["webhooks", "deliver", *data]) == 0
    assert "delivered 1" in capsys.readouterr().out
    assert verify_signature(secret, receiver.requests[0]["headers"][SIGNATURE_HEADER], receiver.requests[0]["body"])
    assert main(["webhooks", "deliveries", "--json", *data]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert main(["webhooks", "replay", str(row["id"]), *data]) == 0
    assert main(["webhooks", "deliver", *data]) == 0
    assert len(receiver.requests) == 2
    assert main(["webhooks", "replay", "999", *data]) == 2      # no such delivery: a clear error
    assert "no webhook delivery 999" in capsys.readouterr().err
