"""REST API, billing side: Factur-X XML, invoice status, credit notes, payments, usage, audit log.

The sample operator's invoices (tests/sample_operator.py) total 36.00 EUR: line 1 subscription
25.00 (2500), line 2 usage 41 minutes 4.99995 (500), VAT 20 % 600. Martin has 60 rated calls in
October 2026, call ``i`` at 2026-10-02 08:00 UTC + i hours priced 12,345 + i micro-EUR.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import _pg_admin, PG_SERVER
from lxml import etree
from sample_operator import SampleOperator, build_sample_operator, make_token

from bluerocktel.accounts import create_user
from bluerocktel.db.models import Invoice, InvoiceLine

PROBLEM = "application/problem+json"
RAM = "{urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100}"


@dataclass
class World:
    client: object
    wb: object
    sample: SampleOperator
    tokens: dict


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory, pg_template):
    """One app and sample operator per backend for the module; each test bills invoices of its own."""
    from fastapi.testclient import TestClient

    from bluerocktel.workbench import Workbench
    from portal_app.server import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLUEROCKTEL_DATA_DIR", str(tmp_path_factory.mktemp("billing") / "data"))
        mp.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
        name = None
        if request.param == "postgresql":
            if isinstance(pg_template, Exception):
                pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {pg_template}")
            name = f"brt_t_{uuid.uuid4().hex[:12]}"
            with _pg_admin().connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
            mp.setenv("BLUEROCKTEL_DATABASE_URL", f"{PG_SERVER}/{name}")
        wb = Workbench.open()
        sample = build_sample_operator(wb)
        with wb.db.transaction() as s:
            sample.user_ids["billing"] = create_user(s, email="billing@bluerock.example", name="Bill",
                                                     password="correct horse battery", role="billing").id
        tokens = {key: make_token(wb, sample.user_ids[key]) for key in ("alice", "bob", "admin", "sales", "billing")}
        app = create_app(wb)
        with TestClient(app, base_url="http://portal.bluerock.localhost") as client:
            yield World(client, wb, sample, tokens)
        wb.close()
        if name:
            with _pg_admin().connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def new_invoice(world: World, month: int) -> int:
    """A fresh issued invoice of Martin for ``month`` of 2026, of the sample's shape (25.00 + 4.99995 for
    41 minutes, VAT 20 %: 36.00)."""
    with world.wb.db.transaction() as s:
        inv = Invoice(number=f"FA-2026-0001{month:02d}", account_id=world.sample.account_ids["martin"],
                      brand_id=world.sample.brand_ids["BRT"], period_start=dt.date(2026, month, 1),
                      period_end=dt.date(2026, month + 1, 1), issue_date=dt.date(2026, month + 1, 1),
                      due_date=dt.date(2026, month + 1, 28),
                      subtotal_minor=3000, vat_minor=600, total_minor=3600, lines=[
                          InvoiceLine(position=1, kind="subscription", description="SIP trunk", quantity=Decimal(1),
                                      unit="month", unit_price_precise=Decimal("25.00"),
                                      amount_precise=Decimal("25.00"), amount_minor=2500, vat_rate=Decimal("0.20")),
                          InvoiceLine(position=2, kind="usage", description="Calls to France Mobile",
                                      zone="fr_mobile", quantity=Decimal(41), unit="minute",
                                      unit_price_precise=Decimal("0.12195"), amount_precise=Decimal("4.99995"),
                                      amount_minor=500, vat_rate=Decimal("0.20"))])
        s.add(inv)
        s.flush()
        return inv.id


def bearer(token: str, key: str | None = None) -> dict:
    return {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}


def test_facturx_xml_of_an_invoice_for_its_readers_only(world):
    client, tokens = world.client, world.tokens
    url = f"/api/v1/invoices/{world.sample.invoice_ids['martin']}/facturx.xml"
    r = client.get(url, headers=bearer(tokens["alice"]))
    assert r.status_code == 200 and r.headers["content-type"] == "application/xml"
    root = etree.fromstring(r.content)
    assert root.findtext(".//{*}ExchangedDocument/{*}ID") == "FA-2026-000001"
    assert root.findtext(f".//{RAM}GrandTotalAmount") == "36.00"           # 3000 + 600 minor units
    assert client.get(url, headers=bearer(tokens["bob"])).status_code == 404
    assert client.get(url, headers=bearer(tokens["sales"])).status_code == 403


def test_invoice_status_moves_and_paid_is_refused(world):
    client, tokens = world.client, world.tokens
    url = f"/api/v1/invoices/{new_invoice(world, 7)}/status"
    assert client.post(url, json={"status": "sent"}, headers=bearer(tokens["sales"])).status_code == 403
    assert client.post(url, json={"status": "sent"}, headers=bearer(tokens["alice"])).status_code == 403
    sent = client.post(url, json={"status": "sent"}, headers=bearer(tokens["billing"], "st-1"))
    assert sent.status_code == 200 and sent.json()["status"] == "sent"
    assert client.post(url, json={"status": "disputed"}, headers=bearer(tokens["billing"])).json()["status"] == \
        "disputed"
    wrong = client.post(url, json={"status": "issued"}, headers=bearer(tokens["billing"]))
    assert wrong.status_code == 409 and "leaves dispute as sent, not issued" in wrong.json()["detail"]
    assert client.post(url, json={"status": "sent"}, headers=bearer(tokens["admin"])).json()["status"] == "sent"
    paid = client.post(url, json={"status": "paid"}, headers=bearer(tokens["admin"]))
    assert paid.status_code == 409 and paid.headers["content-type"] == PROBLEM
    assert "only when payments" in paid.json()["detail"]
    assert client.post(url, json={"status": "lost"}, headers=bearer(tokens["admin"])).status_code == 422
    assert client.post("/api/v1/invoices/999999/status", json={"status": "sent"},
                       headers=bearer(tokens["admin"])).status_code == 404


def test_partial_then_full_credit_notes(world):
    client, tokens = world.client, world.tokens
    invoice_id = new_invoice(world, 8)
    url = f"/api/v1/invoices/{invoice_id}/credit-notes"
    assert client.post(url, json={"reason": "x"}, headers=bearer(tokens["sales"])).status_code == 403
    partial = client.post(url, json={"reason": "outage 3 days", "issue_date": "2026-11-20", "lines": [
        {"position": 1, "amount": "10.00"}, {"position": 2, "quantity": "4.1"}]}, headers=bearer(tokens["billing"]))
    assert partial.status_code == 201
    note = partial.json()
    # line 2: 500 × 4.1 / 41 = 50; subtotal 1000 + 50 = 1050, VAT 20 % = 210, total 1260
    assert [(line["position"], line["amount_minor"]) for line in note["lines"]] == [(1, 1000), (2, 50)]
    assert (note["subtotal_minor"], note["vat_minor"], note["total_minor"]) == (1050, 210, 1260)
    assert note["kind"] == "credit_note" and note["credits_invoice_id"] == invoice_id
    assert (note["number"], note["issue_date"], note["reason"]) == ("AV-2026-000001", "2026-11-20", "outage 3 days")
    both = client.post(url, json={"reason": "r", "lines": [{"position": 1, "amount": "1", "quantity": "1"}]},
                       headers=bearer(tokens["billing"]))
    assert both.status_code == 422
    too_much = client.post(url, json={"reason": "r", "lines": [{"position": 1, "amount": "15.01"}]},
                           headers=bearer(tokens["billing"]))
    assert too_much.status_code == 400 and "only 15.00 EUR is left" in too_much.json()["detail"]
    body = {"reason": "contract cancelled", "issue_date": "2026-11-21"}
    full = client.post(url, json=body, headers=bearer(tokens["admin"], "cn-1")).json()
    # what is left: line 1 2500 - 1000 = 1500, line 2 500 - 50 = 450; VAT 20 % of 1950 = 390
    assert (full["number"], full["subtotal_minor"], full["vat_minor"], full["total_minor"]) == (
        "AV-2026-000002", 1950, 390, 2340)
    invoice = client.get(f"/api/v1/invoices/{invoice_id}", headers=bearer(tokens["admin"])).json()
    assert invoice["status"] == "credited"
    again = client.post(url, json={"reason": "again"}, headers=bearer(tokens["admin"]))
    assert again.status_code == 409 and "fully credited already" in again.json()["detail"]
    replay = client.post(url, json=body, headers=bearer(tokens["admin"], "cn-1"))
    assert replay.json() == full and replay.headers["idempotency-replayed"] == "true"
    mine = client.get("/api/v1/credit-notes", headers=bearer(tokens["alice"])).json()["items"]
    assert [n["id"] for n in mine] == [full["id"], note["id"]]                  # newest first
    assert client.get("/api/v1/credit-notes", headers=bearer(tokens["bob"])).json()["items"] == []
    page = client.get(f"/api/v1/credit-notes?invoice_id={invoice_id}&limit=1", headers=bearer(tokens["admin"])).json()
    assert [n["id"] for n in page["items"]] == [full["id"]] and page["next_cursor"]


def test_payments_settle_then_return(world):
    client, tokens, martin = world.client, world.tokens, world.sample.account_ids["martin"]
    invoice_id = new_invoice(world, 9)
    body = {"account_id": martin, "amount_minor": 1000, "method": "transfer", "bank_reference": "VIR-77",
            "invoice_ids": [invoice_id]}
    assert client.post("/api/v1/payments", json=body, headers=bearer(tokens["sales"])).status_code == 403
    created = client.post("/api/v1/payments", json=body, headers=bearer(tokens["billing"], "pay-1"))
    assert created.status_code == 201
    payment = created.json()
    assert (payment["amount_minor"], payment["currency"], payment["status"]) == (1000, "EUR", "received")
    invoice = client.get(f"/api/v1/invoices/{invoice_id}", headers=bearer(tokens["admin"])).json()
    assert invoice["status"] == "partially_paid"                                  # 1000 of 3600
    dup = client.post("/api/v1/payments", json=body, headers=bearer(tokens["billing"]))
    assert dup.status_code == 409 and "VIR-77" in dup.json()["detail"]
    assert client.post("/api/v1/payments", json={**body, "bank_reference": None, "currency": "USD"},
                       headers=bearer(tokens["billing"])).status_code == 400
    assert client.post("/api/v1/payments", json={**body, "account_id": 999999},
                       headers=bearer(tokens["billing"])).status_code == 404
    assert client.post("/api/v1/payments", json={**body, "amount_minor": 0},
                       headers=bearer(tokens["billing"])).status_code == 422
    mine = client.get("/api/v1/payments", headers=bearer(tokens["alice"])).json()["items"]
    assert payment["id"] in [p["id"] for p in mine] and {p["account_id"] for p in mine} == {martin}
    assert payment["id"] not in [p["id"] for p in client.get("/api/v1/payments",
                                                             headers=bearer(tokens["bob"])).json()["items"]]
    url = f"/api/v1/payments/{payment['id']}/return"
    returned = client.post(url, json={"reason": "AC04 account closed"}, headers=bearer(tokens["billing"]))
    assert returned.status_code == 200 and returned.json()["status"] == "returned"
    assert returned.json()["return_reason"] == "AC04 account closed"
    invoice = client.get(f"/api/v1/invoices/{invoice_id}", headers=bearer(tokens["admin"])).json()
    assert invoice["status"] == "issued"
    twice = client.post(url, json={"reason": "again"}, headers=bearer(tokens["billing"]))
    assert twice.status_code == 409 and "returned already" in twice.json()["detail"]
    listed = client.get(f"/api/v1/payments?status=returned&account_id={martin}",
                        headers=bearer(tokens["admin"])).json()["items"]
    assert [p["id"] for p in listed] == [payment["id"]]


def test_usage_pages_by_cursor_and_hides_cost_from_customers(world):
    client, tokens = world.client, world.tokens
    url = f"/api/v1/accounts/{world.sample.account_ids['martin']}/usage?period=2026-10&limit=25"
    seen, cursor = [], None
    while True:
        page = client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=bearer(tokens["admin"])).json()
        seen.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(items) for items in seen] == [25, 25, 10]                         # 60 calls
    newest = seen[0][0]
    assert newest["start_at"] == "2026-10-04T19:00:00Z"                          # 08:00 + 59 h
    assert newest["price"] == "0.012404"                                          # 12,345 + 59 micro-EUR
    assert len({row["cdr_id"] for items in seen for row in items}) == 60
    mine = client.get(url, headers=bearer(tokens["alice"])).json()["items"]
    assert mine[0]["cdr_id"] == newest["cdr_id"] and mine[0]["cost"] is None and mine[0]["margin"] is None
    assert client.get(url, headers=bearer(tokens["bob"])).status_code == 404
    assert client.get(url, headers=bearer(tokens["sales"])).status_code == 403
    assert client.get(url.replace("2026-10", "2026-13"), headers=bearer(tokens["admin"])).status_code == 400
    assert client.get(url + "&cursor=bm9wZQ", headers=bearer(tokens["admin"])).status_code == 400
    assert client.get("/api/v1/accounts/999999/usage?period=2026-10",
                      headers=bearer(tokens["admin"])).status_code == 404


def test_usage_csv_streams_every_call(world):
    client, tokens = world.client, world.tokens
    url = f"/api/v1/accounts/{world.sample.account_ids['martin']}/usage.csv?period=2026-10"
    staff = client.get(url, headers=bearer(tokens["admin"]))
    assert staff.status_code == 200 and staff.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(staff.text)))
    assert len(rows) == 60 and {"cost", "margin"} <= set(rows[0])
    assert (rows[0]["start_at"], rows[0]["price"], rows[0]["billsec_s"]) == ("2026-10-04T19:00:00+00:00",
                                                                            "0.012404", "89")
    assert (rows[-1]["start_at"], rows[-1]["price"]) == ("2026-10-02T08:00:00+00:00", "0.012345")
    customer = list(csv.DictReader(io.StringIO(client.get(url, headers=bearer(tokens["alice"])).text)))
    assert len(customer) == 60 and not {"cost", "margin"} & set(customer[0])
    assert client.get(url, headers=bearer(tokens["bob"])).status_code == 404
    empty = client.get(url.replace("2026-10", "2026-09"), headers=bearer(tokens["admin"]))
    assert empty.status_code == 200 and empty.text.count("\r\n") == 1                # the header only


def test_audit_log_is_admin_only_and_filters(world):
    client, tokens = world.client, world.tokens
    invoice_id = world.sample.invoice_ids["durand"]
    since = {"since": dt.datetime.now(dt.timezone.utc).isoformat()}
    client.post(f"/api/v1/invoices/{invoice_id}/status", json={"status": "sent"}, headers=bearer(tokens["billing"]))
    client.post("/api/v1/payments", json={"account_id": world.sample.account_ids["durand"], "amount_minor": 3600},
                headers=bearer(tokens["admin"]))
    for role in ("billing", "sales", "alice"):
        assert client.get("/api/v1/audit-log", headers=bearer(tokens[role])).status_code == 403
    recent = client.get("/api/v1/audit-log", params=since, headers=bearer(tokens["admin"])).json()["items"]
    assert [e["action"] for e in recent] == ["payment.record", "invoice.status"]  # newest first
    every = client.get("/api/v1/audit-log", headers=bearer(tokens["admin"])).json()["items"]
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    status = client.get(f"/api/v1/audit-log?target_type=invoice&target_id={invoice_id}",
                        headers=bearer(tokens["admin"])).json()["items"]
    assert [(e["actor"], e["details"]["before"], e["details"]["after"]) for e in status] == [
        ("billing@bluerock.example", "issued", "sent")]
    by_prefix = client.get("/api/v1/audit-log", params={**since, "action": "payment."},
                           headers=bearer(tokens["admin"])).json()["items"]
    assert [e["details"]["amount_minor"] for e in by_prefix] == [3600]
    by_actor = client.get("/api/v1/audit-log?actor=test&limit=2", headers=bearer(tokens["admin"])).json()
    assert len(by_actor["items"]) == 2 and {e["action"] for e in by_actor["items"]} == {"user.create"}
    later = client.get("/api/v1/audit-log", params={"since": "2999-01-01T00:00:00Z"},
                       headers=bearer(tokens["admin"])).json()["items"]
    assert later == []
