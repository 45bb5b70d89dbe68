"""REST API for services (lifecycle), tickets and webhooks: roles, customer scoping, 409s, idempotent POSTs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sample_operator import make_token

from bluerocktel.db.models import AuditEntry, Service, ServiceEvent

PROBLEM = "application/problem+json"


def bearer(token: str, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


@pytest.fixture
def tokens(wb, sample):
    return {key: make_token(wb, sample.user_ids[key]) for key in ("alice", "bob", "admin", "sales")}


def _service_id(wb, account_id: int) -> int:
    with wb.db.session() as s:
        return s.scalar(sa.select(Service.id).where(Service.account_id == account_id))


def test_new_paths_are_in_the_openapi_schema(client):
    paths = set(client.get("/api/v1/openapi.json").json()["paths"])
    assert {"/api/v1/services", "/api/v1/services/{service_id}", "/api/v1/services/{service_id}/suspend",
            "/api/v1/services/{service_id}/terminate", "/api/v1/tickets", "/api/v1/tickets/{ticket_id}/replies",
            "/api/v1/tickets/{ticket_id}/status", "/api/v1/webhooks",
            "/api/v1/webhook-deliveries/{delivery_id}/replay"} <= paths


def test_customers_see_only_their_services(wb, client, sample, tokens):
    mine = client.get("/api/v1/services", headers=bearer(tokens["alice"])).json()["items"]
    assert [s["account_id"] for s in mine] == [sample.account_ids["martin"]]
    everyone = client.get("/api/v1/services", headers=bearer(tokens["admin"])).json()["items"]
    assert {s["account_id"] for s in everyone} == set(sample.account_ids.values())
    other = _service_id(wb, sample.account_ids["durand"])
    assert client.get(f"/api/v1/services/{other}", headers=bearer(tokens["alice"])).status_code == 404


def test_service_transitions_by_role_with_409_and_idempotent_retry(wb, client, sample, tokens):
    sid = _service_id(wb, sample.account_ids["martin"])
    url = f"/api/v1/services/{sid}/suspend"
    body = {"reason": "fraud suspicion: 300 calls to +882 in an hour", "effective_on": "2026-11-20"}
    refused = client.post(url, json=body, headers=bearer(tokens["alice"]))
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    first = client.post(url, json=body, headers=bearer(tokens["admin"], "susp-1"))
    assert first.status_code == 200
    assert first.json()["service"]["status"] == "suspended" and first.json()["event"] == "suspended"
    again = client.post(url, json=body, headers=bearer(tokens["admin"], "susp-1"))
    assert again.json() == first.json() and again.headers["idempotency-replayed"] == "true"
    conflict = client.post(url, json=body, headers=bearer(tokens["admin"], "susp-2"))
    assert conflict.status_code == 409 and "is suspended: cannot suspend" in conflict.json()["detail"]
    assert client.post(f"/api/v1/services/{sid}/terminate", json={"reason": "contract ended"},
                       headers=bearer(tokens["sales"])).json()["service"]["status"] == "terminated"
    assert client.post(url, json={"reason": ""}, headers=bearer(tokens["admin"])).status_code == 422
    with wb.db.session() as s:
        assert [e.kind for e in s.scalars(sa.select(ServiceEvent).order_by(ServiceEvent.id))] == [
            "suspended", "terminated"]
        actors = s.scalars(sa.select(AuditEntry.actor).where(AuditEntry.action.like("service.%"))).all()
        assert actors == ["admin@bluerock.example", "sales@bluerock.example"]


def test_ticket_conversation_between_customer_and_staff(client, sample, tokens):
    created = client.post("/api/v1/tickets", json={"subject": "Invoice question", "body": "Why 41 minutes?",
                                                  "priority": "low"}, headers=bearer(tokens["alice"], "t-1"))
    assert created.status_code == 201
    ticket = created.json()
    assert ticket["account_id"] == sample.account_ids["martin"] and ticket["status"] == "new"
    tid = ticket["id"]
    # a customer cannot open a ticket on another account, nor see someone else's
    assert client.post("/api/v1/tickets", json={"subject": "x", "body": "y",
                                               "account_id": sample.account_ids["durand"]},
                       headers=bearer(tokens["alice"])).status_code == 404
    assert client.get(f"/api/v1/tickets/{tid}", headers=bearer(tokens["bob"])).status_code == 404
    note = client.post(f"/api/v1/tickets/{tid}/replies", json={"body": "Check the CDRs of 2 Oct", "internal": True},
                       headers=bearer(tokens["admin"]))
    assert note.status_code == 201
    answer = client.post(f"/api/v1/tickets/{tid}/replies", json={"body": "41 minutes to mobiles, see annex."},
                         headers=bearer(tokens["admin"]))
    assert answer.status_code == 201
    seen = client.get(f"/api/v1/tickets/{tid}", headers=bearer(tokens["alice"])).json()
    assert [m["body"] for m in seen["messages"]] == ["Why 41 minutes?", "41 minutes to mobiles, see annex."]
    assert seen["status"] == "open" and seen["first_response_at"] is not None
    staff_view = client.get(f"/api/v1/tickets/{tid}", headers=bearer(tokens["admin"])).json()
    assert len(staff_view["messages"]) == 3
    assert client.post(f"/api/v1/tickets/{tid}/replies", json={"body": "x", "internal": True},
                       headers=bearer(tokens["alice"])).status_code == 400
    assert client.post(f"/api/v1/tickets/{tid}/status", json={"status": "resolved"},
                       headers=bearer(tokens["alice"])).status_code == 403
    assert client.post(f"/api/v1/tickets/{tid}/status", json={"status": "resolved"},
                       headers=bearer(tokens["sales"])).status_code == 403
    resolved = client.post(f"/api/v1/tickets/{tid}/status", json={"status": "resolved"},
                           headers=bearer(tokens["admin"]))
    assert resolved.json()["status"] == "resolved"
    client.post(f"/api/v1/tickets/{tid}/replies", json={"body": "Not clear yet"}, headers=bearer(tokens["alice"]))
    listed = client.get("/api/v1/tickets?status=open", headers=bearer(tokens["alice"])).json()["items"]
    assert [t["id"] for t in listed] == [tid]
    assert client.get("/api/v1/tickets", headers=bearer(tokens["bob"])).json()["items"] == []


def test_webhooks_are_admin_only_and_show_deliveries(wb, client, sample, tokens):
    assert client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x"},
                       headers=bearer(tokens["sales"])).status_code == 403
    created = client.post("/api/v1/webhooks", json={"name": "prov", "url": "http://127.0.0.1:9/hook",
                                                   "events": ["suspended"]}, headers=bearer(tokens["admin"]))
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")
    assert "secret" not in client.get("/api/v1/webhooks", headers=bearer(tokens["admin"])).json()[0]
    bad = client.post("/api/v1/webhooks", json={"url": "http://x/y", "events": ["nope"]},
                      headers=bearer(tokens["admin"]))
    assert bad.status_code == 400 and "unknown event kind" in bad.json()["detail"]
    sid = _service_id(wb, sample.account_ids["martin"])
    client.post(f"/api/v1/services/{sid}/suspend", json={"reason": "unpaid"}, headers=bearer(tokens["admin"]))
    from bluerocktel.webhooks import deliver_due

    assert deliver_due(wb, timeout=1)["pending"] == 1        # port 9 refuses: retried later
    page = client.get(f"/api/v1/webhooks/{created.json()['id']}/deliveries", headers=bearer(tokens["admin"])).json()
    [delivery] = page["items"]
    assert delivery["attempts"] == 1 and delivery["status"] == "pending" and delivery["log"][0]["error"]
    replayed = client.post(f"/api/v1/webhook-deliveries/{delivery['id']}/replay", headers=bearer(tokens["admin"]))
    assert replayed.json()["attempts"] == 0 and replayed.json()["status"] == "pending"
