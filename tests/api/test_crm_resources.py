"""REST API for CRM records: role checks (allowed and refused) per endpoint, customer scoping (404 for another
account's objects), idempotent POSTs, If-Match on PATCH (428/412), pagination and updated_since."""

from __future__ import annotations

import pytest
from sample_operator import PASSWORD, make_token

from bluerocktel.accounts import create_user

PROBLEM = "application/problem+json"
V1 = "/api/v1"


@pytest.fixture
def api(wb, sample, app, client):
    with wb.db.transaction() as s:
        support = create_user(s, email="support@bluerock.example", name="Sam", password=PASSWORD, role="support",
                              actor="test").id
    tokens = {key: make_token(wb, sample.user_ids[key]) for key in ("alice", "bob", "admin", "sales")}
    tokens["support"] = make_token(wb, support)
    return tokens


def h(token: str, key: str | None = None, **extra) -> dict:
    headers = {"Authorization": f"Bearer {token}", **extra}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def test_paths_are_in_the_openapi_schema(client, api):
    paths = set(client.get(f"{V1}/openapi.json").json()["paths"])
    assert {f"{V1}{p}" for p in (
        "/accounts/{account_id}/children", "/accounts/{account_id}/balance", "/accounts/{account_id}/statement",
        "/accounts/{account_id}/contacts", "/contacts/{contact_id}", "/accounts/{account_id}/sites",
        "/contracts", "/contracts/{contract_id}/terminate", "/products", "/price-lists",
        "/price-lists/{price_list_id}/items", "/quotes", "/quotes/{quote_id}/accept")} <= paths


def test_accounts_create_patch_with_if_match_and_roles(client, sample, api):
    body = {"brand_id": sample.brand_ids["BRT"], "name": "Acme SAS", "siren": "443061841",
            "siret": "44306184100047", "vat_number": "FR64443061841", "parent_id": sample.account_ids["martin"]}
    assert client.post(f"{V1}/accounts", json=body, headers=h(api["alice"])).status_code == 403
    assert client.post(f"{V1}/accounts", json=body, headers=h(api["support"])).status_code == 403
    created = client.post(f"{V1}/accounts", json=body, headers=h(api["sales"], "acc-1"))
    assert created.status_code == 201
    acme = created.json()
    assert (acme["number"], acme["siren"], acme["parent_id"]) == ("C000003", "443061841", sample.account_ids["martin"])
    replay = client.post(f"{V1}/accounts", json=body, headers=h(api["sales"], "acc-1"))
    assert replay.json() == acme and replay.headers["idempotency-replayed"] == "true"
    bad = client.post(f"{V1}/accounts", json={**body, "siren": "443061842", "siret": None}, headers=h(api["admin"]))
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert bad.json()["detail"] == "siren '443061842': the Luhn checksum is wrong (a typo?)"

    url = f"{V1}/accounts/{acme['id']}"
    etag = client.get(url, headers=h(api["sales"])).headers["etag"]
    change = {"city": "Paris", "email": "compta@acme.example"}
    assert client.patch(url, json=change, headers=h(api["sales"])).status_code == 428
    assert client.patch(url, json=change, headers=h(api["alice"], **{"If-Match": etag})).status_code == 403
    patched = client.patch(url, json=change, headers=h(api["sales"], **{"If-Match": etag}))
    assert patched.status_code == 200 and patched.json()["city"] == "Paris"
    assert patched.headers["etag"] == client.get(url, headers=h(api["sales"])).headers["etag"] != etag
    stale = client.patch(url, json={"city": "Lyon"}, headers=h(api["sales"], **{"If-Match": etag}))
    assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
    refused = client.patch(url, json={"country": "XX"},
                           headers=h(api["sales"], **{"If-Match": patched.headers["etag"]}))
    assert refused.status_code == 400 and "country 'XX'" in refused.json()["detail"]

    children = client.get(f"{V1}/accounts/{sample.account_ids['martin']}/children", headers=h(api["support"]))
    assert [c["name"] for c in children.json()["items"]] == ["Acme SAS"]
    assert client.get(f"{V1}/accounts/{sample.account_ids['martin']}/children",
                      headers=h(api["alice"])).status_code == 403
    closing = client.post(f"{V1}/accounts/{sample.account_ids['martin']}/status", json={"status": "closed"},
                          headers=h(api["admin"]))
    assert closing.status_code == 409 and "1 service(s) not terminated" in closing.json()["detail"]


def test_balance_statement_and_group_view(client, sample, api):
    martin, durand = sample.account_ids["martin"], sample.account_ids["durand"]
    mine = client.get(f"{V1}/accounts/{martin}/balance", headers=h(api["alice"])).json()
    # FA-2026-000001: 30.00 + 6.00 VAT = 3600 minor units open, nothing paid
    assert (mine["due_minor"], mine["credit_minor"], mine["balance_minor"], mine["open_invoices"]) == (
        3600, 0, 3600, 1)
    assert client.get(f"{V1}/accounts/{durand}/balance", headers=h(api["alice"])).status_code == 404
    assert client.get(f"{V1}/accounts/{martin}/balance", headers=h(api["sales"])).status_code == 403
    lines = client.get(f"{V1}/accounts/{martin}/statement", params={"start": "2026-10-01", "end": "2026-12-01"},
                       headers=h(api["alice"])).json()
    assert [(ln["kind"], ln["reference"], ln["debit_minor"], ln["balance_minor"]) for ln in lines] == [
        ("opening", "", 0, 0), ("invoice", "FA-2026-000001", 3600, 3600)]
    assert client.get(f"{V1}/accounts/{durand}/statement", params={"start": "2026-10-01", "end": "2026-12-01"},
                      headers=h(api["alice"])).status_code == 404
    group = client.get(f"{V1}/accounts/{martin}/group-balance", headers=h(api["support"])).json()
    assert group["totals"] == {"EUR": {"due_minor": 3600, "credit_minor": 0, "overdue_minor": 0,
                                       "balance_minor": 3600}}
    assert client.get(f"{V1}/accounts/{martin}/group-balance", headers=h(api["alice"])).status_code == 403


def test_contacts_and_sites_scoped_paginated_and_patched(client, sample, api):
    martin, durand = sample.account_ids["martin"], sample.account_ids["durand"]
    url = f"{V1}/accounts/{martin}/contacts"
    people = [("Marie", "Martin", "signatory"), ("Paul", "Roux", "billing"), ("Léa", "Blanc", "technical")]
    assert client.post(url, json={"first_name": "A", "last_name": "B"}, headers=h(api["alice"])).status_code == 403
    ids = []
    for i, (first, last, role) in enumerate(people):
        r = client.post(url, json={"first_name": first, "last_name": last, "role": role},
                        headers=h(api["sales"], f"c{i}"))
        assert r.status_code == 201
        ids.append(r.json()["id"])
    second_billing = client.post(url, json={"first_name": "X", "last_name": "Y", "role": "billing"},
                                 headers=h(api["sales"]))
    assert second_billing.status_code == 409 and "primary billing contact already" in second_billing.json()["detail"]
    page = client.get(url, params={"limit": 2}, headers=h(api["alice"])).json()
    assert [c["first_name"] for c in page["items"]] == ["Marie", "Paul"]
    rest = client.get(url, params={"limit": 2, "cursor": page["next_cursor"]}, headers=h(api["alice"])).json()
    assert [c["first_name"] for c in rest["items"]] == ["Léa"] and rest["next_cursor"] is None
    later = client.get(url, params={"updated_since": "2999-01-01T00:00:00Z"}, headers=h(api["alice"])).json()
    assert later["items"] == []
    assert client.get(f"{V1}/accounts/{martin}/contacts", headers=h(api["bob"])).status_code == 404
    assert client.get(f"{V1}/contacts/{ids[0]}", headers=h(api["bob"])).status_code == 404

    contact_url = f"{V1}/contacts/{ids[2]}"
    etag = client.get(contact_url, headers=h(api["alice"])).headers["etag"]
    assert client.patch(contact_url, json={"phone": "+33472000009"},
                        headers=h(api["alice"], **{"If-Match": etag})).status_code == 403
    patched = client.patch(contact_url, json={"phone": "+33472000009"}, headers=h(api["sales"], **{"If-Match": etag}))
    assert patched.json()["phone"] == "+33472000009"
    assert client.delete(contact_url, headers=h(api["alice"])).status_code == 403
    assert client.delete(contact_url, headers=h(api["sales"])).status_code == 204
    assert client.get(contact_url, headers=h(api["sales"])).status_code == 404

    site = client.post(f"{V1}/accounts/{martin}/sites", json={"name": "Fournil", "city": "Lyon"},
                       headers=h(api["sales"], "s1"))
    assert site.status_code == 201 and site.json()["country"] == "FR"
    assert client.post(f"{V1}/accounts/{durand}/sites", json={"name": "X"}, headers=h(api["bob"])).status_code == 403
    assert [s["name"] for s in client.get(f"{V1}/accounts/{martin}/sites", headers=h(api["alice"])).json()["items"]] \
        == ["Fournil"]
    assert client.get(f"{V1}/sites/{site.json()['id']}", headers=h(api["bob"])).status_code == 404


def test_catalog_roles_and_price_lists(client, sample, api):
    body = {"code": "FIBRE", "name": "Fibre 1G", "kind": "recurring", "price": "49.90"}
    assert client.post(f"{V1}/products", json=body, headers=h(api["sales"])).status_code == 403
    assert client.get(f"{V1}/products", headers=h(api["alice"])).status_code == 403
    created = client.post(f"{V1}/products", json=body, headers=h(api["admin"], "p1"))
    assert created.status_code == 201 and created.json()["price"] == "49.90"
    pid = created.json()["id"]
    codes = [p["code"] for p in client.get(f"{V1}/products", headers=h(api["support"])).json()["items"]]
    assert codes == ["SIP", "FIBRE"]
    etag = client.get(f"{V1}/products/{pid}", headers=h(api["sales"])).headers["etag"]
    assert client.patch(f"{V1}/products/{pid}", json={"price": "44.90"},
                        headers=h(api["sales"], **{"If-Match": etag})).status_code == 403
    assert client.patch(f"{V1}/products/{pid}", json={"price": "44.90"},
                        headers=h(api["admin"], **{"If-Match": etag})).json()["price"] == "44.90"
    plist = {"brand_id": sample.brand_ids["BRT"], "code": "BRT-2026", "name": "2026", "valid_from": "2026-01-01"}
    assert client.post(f"{V1}/price-lists", json=plist, headers=h(api["sales"])).status_code == 403
    made = client.post(f"{V1}/price-lists", json=plist, headers=h(api["admin"], "pl1"))
    assert made.status_code == 201
    overlap = client.post(f"{V1}/price-lists", json={**plist, "code": "BRT-B"}, headers=h(api["admin"]))
    assert overlap.status_code == 409
    item = client.post(f"{V1}/price-lists/{made.json()['id']}/items", json={"product_id": pid, "price": "39.90"},
                       headers=h(api["admin"], "it1"))
    assert item.json()["items"] == [{"product_id": pid, "price": "39.90"}]
    listed = client.get(f"{V1}/price-lists", params={"brand_id": sample.brand_ids["BRT"]}, headers=h(api["support"]))
    assert [p["code"] for p in listed.json()["items"]] == ["BRT-2026"]


def test_quote_to_contract_and_termination(client, sample, api):
    martin = sample.account_ids["martin"]
    signer = client.post(f"{V1}/accounts/{martin}/contacts",
                         json={"first_name": "Marie", "last_name": "Martin", "role": "signatory"},
                         headers=h(api["sales"])).json()["id"]
    quote_body = {"account_id": martin, "valid_until": "2030-12-31", "term_months": 12,
                  "lines": [{"product_id": _sip(client, api), "quantity": 2}]}
    assert client.post(f"{V1}/quotes", json=quote_body, headers=h(api["alice"])).status_code == 403
    quote = client.post(f"{V1}/quotes", json=quote_body, headers=h(api["sales"], "q1")).json()
    # SIP trunk at the product's 30.00 (no price list): 2 × 30.00 = 6000; VAT 6000 × 0.20 = 1200; total 7200
    assert (quote["number"], quote["status"], quote["subtotal_minor"], quote["vat_minor"], quote["total_minor"]) == (
        "DV-BRT-2026-000001", "draft", 6000, 1200, 7200)
    qid = quote["id"]
    assert client.post(f"{V1}/quotes/{qid}/send", headers=h(api["alice"])).status_code == 403
    assert client.post(f"{V1}/quotes/{qid}/send", headers=h(api["sales"])).json()["status"] == "sent"
    accept = {"signatory_contact_id": signer}
    assert client.post(f"{V1}/quotes/{qid}/accept", json=accept, headers=h(api["bob"])).status_code == 404
    assert client.post(f"{V1}/quotes/{qid}/accept", json=accept, headers=h(api["support"])).status_code == 403
    done = client.post(f"{V1}/quotes/{qid}/accept", json=accept, headers=h(api["alice"], "acc"))
    assert done.status_code == 200
    contract = done.json()["contract"]
    assert (done.json()["quote"]["status"], contract["reference"], contract["signatory_contact_id"]) == (
        "accepted", "CT-C0001-001", signer)
    again = client.post(f"{V1}/quotes/{qid}/accept", json=accept, headers=h(api["alice"], "acc-2"))
    assert again.status_code == 409 and "was accepted already" in again.json()["detail"]
    assert [q["number"] for q in client.get(f"{V1}/quotes", headers=h(api["alice"])).json()["items"]] == [
        "DV-BRT-2026-000001"]
    assert client.get(f"{V1}/quotes", headers=h(api["bob"])).json()["items"] == []
    assert client.get(f"{V1}/contracts/{contract['id']}", headers=h(api["bob"])).status_code == 404
    assert [c["id"] for c in client.get(f"{V1}/contracts", headers=h(api["alice"])).json()["items"]] == [
        contract["id"]]

    stop = {"on": contract["start_date"], "reason": "moving abroad"}
    url = f"{V1}/contracts/{contract['id']}/terminate"
    assert client.post(url, json=stop, headers=h(api["alice"])).status_code == 403
    refused = client.post(url, json=stop, headers=h(api["sales"]))
    assert refused.status_code == 409 and "early termination" in refused.json()["detail"]
    ended = client.post(url, json={**stop, "early": True}, headers=h(api["sales"], "end")).json()
    # 12 months remaining from the start × (2 × 30.00) a month = 720.00
    assert (ended["contract"]["status"], ended["fee_amount"], ended["terminated_service_ids"]) == (
        "ended", "720.00", done.json()["service_ids"])


def _sip(client, api) -> int:
    return next(p["id"] for p in client.get(f"{V1}/products", headers=h(api["support"])).json()["items"]
                if p["code"] == "SIP")


def test_account_list_filters(wb, sample):
    """The filters of GET /accounts (parent_id, status, q on name or number), alone and combined."""
    import json

    from bluerocktel.api.routes import _ACCOUNTS, like_pattern
    from bluerocktel.api.schemas import AccountOut
    from bluerocktel.crm.accounts import create_account, set_account_status

    martin = sample.account_ids["martin"]
    with wb.db.transaction() as s:
        annex = create_account(s, brand_id=sample.brand_ids["BRT"], name="Martin 100% Bio", parent_id=martin,
                               actor="t").id
        set_account_status(s, annex, "suspended", actor="t")
    with wb.db.session() as s:
        def names(**filters):
            if "q" in filters:
                filters["q"] = like_pattern(filters["q"])
            page = _ACCOUNTS.page(s, AccountOut, None, 50, **filters)
            return [item["name"] for item in json.loads(page.body)["items"]]

        assert names(parent_id=martin) == ["Martin 100% Bio"]
        assert names(q="MARTIN") == ["Boulangerie Martin", "Martin 100% Bio"]
        assert names(q="c0002") == ["Cabinet Durand"]
        # % and _ are plain characters, not wildcards: unescaped, "n%o" would match "Martin 100% Bio" and "c_002" C0002
        assert names(q="100%") == ["Martin 100% Bio"]
        assert names(q="n%o") == [] and names(q="c_002") == []
        assert names(status="suspended") == ["Martin 100% Bio"]
        assert names(q="martin", status="active") == ["Boulangerie Martin"]
        assert names(q="martin", status="suspended", parent_id=martin) == ["Martin 100% Bio"]
