"""Every route of the live OpenAPI schema × every role: allowed or refused, as the table below says.

A role is *allowed* when the route answers something other than 401, 403, 422 (its body is
valid) or a 5xx; *refused* is a 403. A customer (Alice, account Martin) is allowed only on its own
account's objects: with another account's (Durand's) ids, every route it may use with a path id
answers 404. A route missing from :data:`EXPECTED` fails :func:`test_every_route_has_an_entry`.
Path ids name real objects of both accounts (tickets, payments, contacts, sites, contracts,
quotes...); a DELETE gets a second object of its own so later GETs still find the first. Bodies
come from :data:`BODIES`, else from the schema (required fields only). Runs on SQLite only, one
app and one sample operator for the module.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sample_operator import build_sample_operator, make_token

from bluerocktel.accounts import create_user
from bluerocktel.api.ratelimit import RateLimiter
from bluerocktel.billing.payments import record_payment
from bluerocktel.helpdesk import open_ticket
from bluerocktel.webhooks import create_subscription

ROLES = ("admin", "billing", "support", "sales", "read_only", "customer")
STAFF = frozenset(ROLES) - {"customer"}
ADMIN = frozenset({"admin"})
BILLING = frozenset({"admin", "billing"})                                  # billing:run, billing:issue, cdrs:import
INVOICES = frozenset({"admin", "billing", "support", "read_only"})         # invoices:read, rating:read
SERVICES_WRITE = frozenset({"admin", "sales", "support"})
TICKETS_WRITE = frozenset({"admin", "support"})
CRM_WRITE = frozenset({"admin", "sales"})
CUSTOMER = frozenset({"customer"})

EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/api/v1/accounts"): STAFF | CUSTOMER,
    ("GET", "/api/v1/accounts/{account_id}"): STAFF | CUSTOMER,
    ("POST", "/api/v1/accounts"): CRM_WRITE,
    ("PATCH", "/api/v1/accounts/{account_id}"): CRM_WRITE,
    ("POST", "/api/v1/accounts/{account_id}/status"): CRM_WRITE,
    ("GET", "/api/v1/accounts/{account_id}/children"): STAFF,
    ("GET", "/api/v1/accounts/{account_id}/balance"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/accounts/{account_id}/group-balance"): INVOICES,
    ("GET", "/api/v1/accounts/{account_id}/statement"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/accounts/{account_id}/contacts"): STAFF | CUSTOMER,
    ("POST", "/api/v1/accounts/{account_id}/contacts"): CRM_WRITE,
    ("GET", "/api/v1/contacts/{contact_id}"): STAFF | CUSTOMER,
    ("PATCH", "/api/v1/contacts/{contact_id}"): CRM_WRITE,
    ("DELETE", "/api/v1/contacts/{contact_id}"): CRM_WRITE,
    ("GET", "/api/v1/accounts/{account_id}/sites"): STAFF | CUSTOMER,
    ("POST", "/api/v1/accounts/{account_id}/sites"): CRM_WRITE,
    ("GET", "/api/v1/sites/{site_id}"): STAFF | CUSTOMER,
    ("PATCH", "/api/v1/sites/{site_id}"): CRM_WRITE,
    ("GET", "/api/v1/contracts"): STAFF | CUSTOMER,
    ("POST", "/api/v1/contracts"): CRM_WRITE,
    ("GET", "/api/v1/contracts/{contract_id}"): STAFF | CUSTOMER,
    ("POST", "/api/v1/contracts/{contract_id}/terminate"): CRM_WRITE,
    ("GET", "/api/v1/products"): STAFF,
    ("POST", "/api/v1/products"): ADMIN,
    ("GET", "/api/v1/products/{product_id}"): STAFF,
    ("PATCH", "/api/v1/products/{product_id}"): ADMIN,                     # catalog:write
    ("GET", "/api/v1/price-lists"): STAFF,
    ("POST", "/api/v1/price-lists"): ADMIN,
    ("POST", "/api/v1/price-lists/{price_list_id}/items"): ADMIN,
    ("GET", "/api/v1/quotes"): STAFF | CUSTOMER,
    ("POST", "/api/v1/quotes"): CRM_WRITE,
    ("GET", "/api/v1/quotes/{quote_id}"): STAFF | CUSTOMER,
    ("POST", "/api/v1/quotes/{quote_id}/send"): CRM_WRITE,
    ("POST", "/api/v1/quotes/{quote_id}/accept"): CRM_WRITE | CUSTOMER,      # the customer of the quote
    ("POST", "/api/v1/quotes/{quote_id}/reject"): CRM_WRITE | CUSTOMER,
    ("GET", "/api/v1/accounts/{account_id}/usage"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/accounts/{account_id}/usage.csv"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/invoices"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/invoices/{invoice_id}"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/invoices/{invoice_id}/pdf"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/invoices/{invoice_id}/annex"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/invoices/{invoice_id}/facturx.xml"): INVOICES | CUSTOMER,
    ("POST", "/api/v1/invoices/{invoice_id}/status"): BILLING,
    ("POST", "/api/v1/invoices/{invoice_id}/credit-notes"): BILLING,
    ("GET", "/api/v1/credit-notes"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/payments"): INVOICES | CUSTOMER,
    ("POST", "/api/v1/payments"): BILLING,
    ("POST", "/api/v1/payments/{payment_id}/return"): BILLING,
    ("GET", "/api/v1/billing-runs"): INVOICES,
    ("GET", "/api/v1/audit-log"): ADMIN,
    ("POST", "/api/v1/cdr/batches"): BILLING,
    ("POST", "/api/v1/cdr/files"): BILLING,
    ("GET", "/api/v1/cdr/files"): STAFF,
    ("GET", "/api/v1/cdr/files/{file_id}"): STAFF,
    ("GET", "/api/v1/cdr/quarantine"): STAFF,
    ("GET", "/api/v1/cdr/formats"): STAFF,
    ("GET", "/api/v1/cdr/sources"): STAFF,
    ("POST", "/api/v1/cdr/sources"): ADMIN,
    ("PATCH", "/api/v1/cdr/sources/{name}"): ADMIN,
    ("GET", "/api/v1/rated-cdrs"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/rated-cdrs/{cdr_id}"): INVOICES | CUSTOMER,
    ("GET", "/api/v1/rating/unrated"): INVOICES,
    ("GET", "/api/v1/rating/anomalies"): INVOICES,
    ("GET", "/api/v1/services"): STAFF | CUSTOMER,
    ("GET", "/api/v1/services/{service_id}"): STAFF | CUSTOMER,
    ("POST", "/api/v1/services/{service_id}/activate"): SERVICES_WRITE,
    ("POST", "/api/v1/services/{service_id}/suspend"): SERVICES_WRITE,
    ("POST", "/api/v1/services/{service_id}/reactivate"): SERVICES_WRITE,
    ("POST", "/api/v1/services/{service_id}/terminate"): SERVICES_WRITE,
    ("GET", "/api/v1/tickets"): STAFF | CUSTOMER,
    ("POST", "/api/v1/tickets"): TICKETS_WRITE | CUSTOMER,
    ("GET", "/api/v1/tickets/{ticket_id}"): STAFF | CUSTOMER,
    ("POST", "/api/v1/tickets/{ticket_id}/replies"): TICKETS_WRITE | CUSTOMER,
    ("POST", "/api/v1/tickets/{ticket_id}/status"): TICKETS_WRITE,
    ("GET", "/api/v1/webhooks"): ADMIN,
    ("POST", "/api/v1/webhooks"): ADMIN,
    ("GET", "/api/v1/webhooks/{subscription_id}/deliveries"): ADMIN,
    ("POST", "/api/v1/webhook-deliveries/{delivery_id}/replay"): ADMIN,
    ("GET", "/api/v1/3cx/template.xml"): STAFF,
    ("GET", "/api/v1/3cx/lookup"): STAFF,
    ("POST", "/api/v1/3cx/calls"): STAFF,
}

# Request bodies (JSON unless noted); routes without an entry get one built from their schema.
BODIES = {
    ("POST", "/api/v1/invoices/{invoice_id}/status"): {"status": "sent"},
    ("POST", "/api/v1/invoices/{invoice_id}/credit-notes"): {"reason": "matrix",
                                                            "lines": [{"position": 1, "amount": "0.01"}]},
    ("POST", "/api/v1/payments"): {"account_id": "{account_id}", "amount_minor": 1},
    ("POST", "/api/v1/cdr/batches"): {"source": "pbx1", "records": []},
    ("POST", "/api/v1/cdr/sources"): {"name": "matrix-src", "format": "asterisk-csv"},
    ("POST", "/api/v1/tickets"): {"subject": "matrix", "body": "hello", "account_id": "{account_id}"},
    ("POST", "/api/v1/tickets/{ticket_id}/status"): {"status": "open"},
    ("POST", "/api/v1/webhooks"): {"url": "http://127.0.0.1:9/hook"},
    ("POST", "/api/v1/3cx/calls"): {"number": "+33472000001"},
    ("POST", "/api/v1/accounts/{account_id}/status"): {"status": "active", "reason": "matrix"},
    ("POST", "/api/v1/contracts/{contract_id}/terminate"): {"on": "2026-12-01", "reason": "matrix", "early": True},
    ("POST", "/api/v1/products"): {"code": "MATRIX", "name": "Matrix", "kind": "one_off", "price": "1.00"},
    ("POST", "/api/v1/price-lists/{price_list_id}/items"): {"product_id": "{product_id}", "price": "1.00"},
    ("POST", "/api/v1/quotes"): {"account_id": "{account_id}", "valid_until": "2026-12-31",
                                 "lines": [{"product_id": 1}]},
}
MULTIPART = {("POST", "/api/v1/cdr/files"): ({"source": "pbx1"}, {"file": ("Master.csv", b"")})}
QUERY = {"period": "2026-10", "month": "2026-10", "number": "+33472000001", "start": "2026-10-01",
         "end": "2026-11-01"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One sample operator on SQLite, a token per role, and the ids of Martin's (own) and Durand's (other)
    objects for every path parameter."""
    from fastapi.testclient import TestClient

    from portal_app.server import create_app

    data_dir = tmp_path_factory.mktemp("matrix") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
        mp.setenv("BLUEROCKTEL_DATA_DIR", str(data_dir))
        from bluerocktel.workbench import Workbench

        wb = Workbench.open(data_dir)
        sample = build_sample_operator(wb)
        martin, durand = sample.account_ids["martin"], sample.account_ids["durand"]
        with wb.db.transaction() as s:
            for role in ("billing", "support", "read_only"):
                sample.user_ids[role] = create_user(s, email=f"{role}@bluerock.example", name=role, role=role,
                                                    password="correct horse battery", actor="test").id
            tickets = [open_ticket(s, acc, "matrix", "hello", actor="test").id for acc in (martin, durand)]
            payments = [record_payment(s, acc, 100, method="transfer", actor="test").id for acc in (martin, durand)]
            subscription, _ = create_subscription(s, wb.secret_key, "matrix", "http://127.0.0.1:9/h", actor="test")
            subscription_id = subscription.id
            crm = {name: [_add(s, model(account_id=acc, **fields)) for acc in (martin, martin, durand)]
                   for name, model, fields in _CRM_ROWS(sample)}
        tokens = {role: make_token(wb, sample.user_ids[role]) for role in ROLES if role != "customer"}
        tokens["customer"] = make_token(wb, sample.user_ids["alice"])
        services = _service_ids(wb, (martin, durand))
        params = {"account_id": (martin, durand), "invoice_id": (sample.invoice_ids["martin"],
                                                                 sample.invoice_ids["durand"]),
                  "service_id": services, "ticket_id": tuple(tickets), "payment_id": tuple(payments),
                  "cdr_id": (f"{martin:04d}{0:028d}", f"{durand:04d}{0:028d}"),
                  "subscription_id": (subscription_id,) * 2, "delivery_id": (999_999,) * 2,
                  "file_id": (999_999,) * 2, "name": ("pbx1",) * 2, "product_id": (1, 1),
                  "price_list_id": (999_999,) * 2,
                  **{name: (ids[0], ids[2]) for name, ids in crm.items()}}
        # DELETE takes the second own object, so the routes reading the first still find it
        params["deletable"] = {name: ids[1] for name, ids in crm.items()}
        app = create_app(wb)
        app.state.rate_limiter = RateLimiter(per_minute=1_000_000, burst=1_000_000)
        with TestClient(app, base_url="http://portal.bluerock.localhost") as client:
            yield client, tokens, params
        wb.close()


def _CRM_ROWS(sample):
    from bluerocktel.db.models import Contact, Contract, Quote, Site

    today = dt.date(2026, 11, 20)
    return [("contact_id", Contact, {"first_name": "Ada", "last_name": "Matrix", "role": "signatory"}),
            ("site_id", Site, {"name": "HQ"}),
            ("contract_id", Contract, {"start_date": today, "commitment_end": dt.date(2027, 11, 20)}),
            ("quote_id", Quote, {"brand_id": sample.brand_ids["BRT"], "status": "sent", "valid_until": today})]


def _add(session, row) -> int:
    """Insert ``row`` (numbering contracts and quotes uniquely) and return its id."""
    if hasattr(row, "reference"):
        row.reference = f"CT-{uuid.uuid4().hex[:8]}"
    if hasattr(row, "number"):
        row.number = f"DV-{uuid.uuid4().hex[:8]}"
    session.add(row)
    session.flush()
    return row.id


def _service_ids(wb, accounts) -> tuple[int, int]:
    import sqlalchemy as sa

    from bluerocktel.db.models import Service

    with wb.db.session() as s:
        return tuple(s.scalar(sa.select(Service.id).where(Service.account_id == acc)) for acc in accounts)


def _schema_routes(client) -> dict[tuple[str, str], dict]:
    schema = client.get("/api/v1/openapi.json").json()
    return {(method.upper(), path): op for path, ops in schema["paths"].items() for method, op in ops.items()}


def _example(schema: dict, components: dict, name: str, ids: dict):
    """A minimal valid value of ``schema``: required properties only, ids from ``ids``."""
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {key: _example(sub, components, key, ids) for key, sub in schema.get("properties", {}).items()
                if key in schema.get("required", ())}
    if kind == "integer":
        return ids.get(name, max(1, schema.get("minimum", 1)))
    return {"array": [], "boolean": False, "number": 1}.get(
        kind, {"date": "2026-11-20", "date-time": "2026-11-20T10:00:00Z"}.get(schema.get("format"), "matrix"))


def _call(client, method: str, path: str, op: dict, token: str, ids: dict, components: dict):
    url = path.format(**{name: ids[name] for name in ids if "{" + name + "}" in path})
    query = {p["name"]: QUERY.get(p["name"], "x") for p in op.get("parameters", ())
             if p["in"] == "query" and p.get("required")}
    kwargs = {"params": query, "headers": {"Authorization": f"Bearer {token}"}}
    if (method, path) in MULTIPART:
        kwargs["data"], kwargs["files"] = MULTIPART[method, path]
    elif (method, path) in BODIES:
        body = BODIES[method, path]
        kwargs["json"] = {k: ids[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v for k, v in body.items()}
    elif "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        kwargs["json"] = _example(schema, components, "", ids)
    return client.request(method, url, **kwargs)


def test_every_route_has_an_entry(world):
    client, _, _ = world
    routes = set(_schema_routes(client))
    assert sorted(routes - set(EXPECTED)) == [], "routes without an expected row: add them to EXPECTED"
    assert sorted(set(EXPECTED) - routes) == [], "EXPECTED lists routes the app does not have"


@pytest.mark.parametrize("route", sorted(EXPECTED), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_allows_exactly_its_roles(world, route):
    client, tokens, params = world
    method, path = route
    schema = client.get("/api/v1/openapi.json").json()
    op, components = schema["paths"][path][method.lower()], schema["components"]["schemas"]
    own = {name: values[0] for name, values in params.items() if name != "deletable"}
    if method == "DELETE":
        own.update(params["deletable"])
    answers = {role: _call(client, method, path, op, tokens[role], own, components) for role in ROLES}
    got = {role: r.status_code for role, r in answers.items()}
    allowed = {role for role, status in got.items() if status not in (401, 403, 422) and status < 500}
    assert allowed == EXPECTED[route], f"{method} {path}: statuses {got}, " + \
        "; ".join(f"{role}: {answers[role].text[:160]}" for role in ROLES if got[role] >= 422)
    assert {role: got[role] for role in ROLES if role not in allowed} == \
        {role: 403 for role in ROLES if role not in allowed}
    if "customer" in EXPECTED[route] and "{" in path:
        other = {name: values[1] for name, values in params.items() if name != "deletable"}
        answer = _call(client, method, path, op, tokens["customer"], other, components)
        assert answer.status_code == 404, f"{method} {path} on another account: {answer.status_code}"

