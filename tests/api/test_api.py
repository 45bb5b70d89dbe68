"""The REST API on the real app: token auth, roles, customer scoping, problems, pagination."""

from __future__ import annotations

import pytest
from sample_operator import make_token
from sqlalchemy import select

from bluerocktel.db.models import ApiToken

PROBLEM = "application/problem+json"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(wb, sample):
    return {key: make_token(wb, sample.user_ids[key]) for key in ("alice", "bob", "admin", "sales")}


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["info"]["title"] == "BlueRockTEL API"
    assert {"/api/v1/accounts", "/api/v1/accounts/{account_id}", "/api/v1/invoices", "/api/v1/invoices/{invoice_id}",
            "/api/v1/invoices/{invoice_id}/pdf", "/api/v1/billing-runs"} <= set(schema["paths"])
    assert not [p for p in schema["paths"] if not p.startswith("/api/")], "only the REST API is documented"
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "/api/v1/openapi.json" in docs.text


@pytest.mark.parametrize("headers, detail", [
    ({}, "send an API token"),
    ({"Authorization": "Bearer brt_not-a-real-token"}, "invalid or revoked"),
    ({"Authorization": "Basic YWxpY2U6eA=="}, "send an API token"),
])
def test_missing_or_bad_token_is_a_401_problem(client, sample, headers, detail):
    r = client.get("/api/v1/accounts", headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized" and detail in body["detail"]
    assert body["instance"] == "/api/v1/accounts"


def test_revoked_token_is_refused(wb, client, tokens):
    import datetime as dt

    with wb.db.transaction() as s:
        for row in s.scalars(select(ApiToken)):
            row.revoked_at = dt.datetime.now(dt.timezone.utc)
    assert client.get("/api/v1/accounts", headers=bearer(tokens["admin"])).status_code == 401


def test_staff_token_lists_accounts_with_cursor_pagination(client, sample, tokens):
    first = client.get("/api/v1/accounts?limit=1", headers=bearer(tokens["admin"]))
    assert first.status_code == 200
    page1 = first.json()
    assert [a["number"] for a in page1["items"]] == ["C0001"] and page1["next_cursor"]
    page2 = client.get(f"/api/v1/accounts?limit=1&cursor={page1['next_cursor']}",
                       headers=bearer(tokens["admin"])).json()
    assert [a["number"] for a in page2["items"]] == ["C0002"] and page2["next_cursor"] is None
    one = client.get(f"/api/v1/accounts/{sample.account_ids['durand']}", headers=bearer(tokens["sales"])).json()
    assert one["name"] == "Cabinet Durand" and one["brand_id"] == sample.brand_ids["AZU"]


def test_bad_cursor_and_bad_limit_are_problems(client, tokens):
    r = client.get("/api/v1/accounts?cursor=%%%garbage", headers=bearer(tokens["admin"]))
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM and "cursor" in r.json()["detail"]
    r = client.get("/api/v1/accounts?limit=0", headers=bearer(tokens["admin"]))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM and r.json()["errors"]


def test_invoice_detail_has_lines_and_money_in_minor_units(client, sample, tokens):
    r = client.get(f"/api/v1/invoices/{sample.invoice_ids['martin']}", headers=bearer(tokens["admin"]))
    assert r.status_code == 200
    inv = r.json()
    assert inv["number"] == "FA-2026-000001" and inv["currency"] == "EUR"
    assert (inv["subtotal_minor"], inv["vat_minor"], inv["total_minor"]) == (3000, 600, 3600)
    assert inv["period_start"] == "2026-10-01" and inv["period_end"] == "2026-11-01"
    assert [line["amount_minor"] for line in inv["lines"]] == [2500, 500]
    assert inv["lines"][1]["amount_precise"] == "4.99995" and inv["lines"][1]["vat_rate"] == "0.20"
    assert inv["pdf_url"] == f"/api/v1/invoices/{inv['id']}/pdf"


def test_invoice_filters(client, sample, tokens):
    h = bearer(tokens["admin"])
    both = client.get("/api/v1/invoices", headers=h).json()["items"]
    assert {i["number"] for i in both} == {"FA-2026-000001", "AZ-2026-000001"}
    durand = client.get(f"/api/v1/invoices?account_id={sample.account_ids['durand']}", headers=h).json()["items"]
    assert [i["number"] for i in durand] == ["AZ-2026-000001"]
    assert len(client.get("/api/v1/invoices?period=2026-10", headers=h).json()["items"]) == 2
    assert client.get("/api/v1/invoices?period=2026-09", headers=h).json()["items"] == []
    assert client.get("/api/v1/invoices?period=2026-13", headers=h).status_code == 400


def test_invoice_pdf_download(client, sample, tokens):
    r = client.get(f"/api/v1/invoices/{sample.invoice_ids['martin']}/pdf", headers=bearer(tokens["alice"]))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and b"FA-2026-000001" in r.content
    assert "FA-2026-000001.pdf" in r.headers["content-disposition"]


def test_invoice_annex_is_rendered_on_first_download_then_kept(wb, client, sample, tokens):
    from bluerocktel.db.models import Invoice

    url = f"/api/v1/invoices/{sample.invoice_ids['martin']}/annex"
    with wb.db.session() as s:
        assert s.get(Invoice, sample.invoice_ids["martin"]).annex_path is None     # the cycle renders none
    r = client.get(url, headers=bearer(tokens["alice"]))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and "FA-2026-000001-annex.pdf" in r.headers["content-disposition"]
    with wb.db.session() as s:
        kept = s.get(Invoice, sample.invoice_ids["martin"]).annex_path
    assert kept and (wb.data_dir / kept).read_bytes() == r.content
    assert client.get(url, headers=bearer(tokens["admin"])).content == r.content      # the same file, not rendered again
    other = client.get(f"/api/v1/invoices/{sample.invoice_ids['durand']}/annex", headers=bearer(tokens["alice"]))
    assert other.status_code == 404 and other.headers["content-type"] == PROBLEM


def test_customer_token_sees_only_its_own_account(client, sample, tokens):
    h = bearer(tokens["alice"])
    accounts = client.get("/api/v1/accounts", headers=h).json()["items"]
    assert [a["number"] for a in accounts] == ["C0001"]
    assert client.get(f"/api/v1/accounts/{sample.account_ids['martin']}", headers=h).status_code == 200
    invoices = client.get("/api/v1/invoices", headers=h).json()["items"]
    assert [i["number"] for i in invoices] == ["FA-2026-000001"]
    # filtering on another account does not widen the scope
    assert client.get(f"/api/v1/invoices?account_id={sample.account_ids['durand']}", headers=h).json()["items"] == []


@pytest.mark.parametrize("path", ["/api/v1/accounts/{durand}", "/api/v1/invoices/{durand_invoice}",
                                  "/api/v1/invoices/{durand_invoice}/pdf"])
def test_customer_asking_for_another_account_gets_404(client, sample, tokens, path):
    url = path.format(durand=sample.account_ids["durand"], durand_invoice=sample.invoice_ids["durand"])
    r = client.get(url, headers=bearer(tokens["alice"]))
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert b"AZ-2026" not in r.content and b"Durand" not in r.content
    # the same answer as for an id that does not exist
    missing = client.get(path.format(durand=999999, durand_invoice=999999), headers=bearer(tokens["alice"]))
    assert missing.status_code == 404


def test_roles_are_checked(client, tokens):
    r = client.get("/api/v1/billing-runs", headers=bearer(tokens["alice"]))
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM and "customer" in r.json()["detail"]
    r = client.get("/api/v1/invoices", headers=bearer(tokens["sales"]))     # sales: accounts only
    assert r.status_code == 403 and r.json()["title"] == "Forbidden"
    assert client.get("/api/v1/accounts", headers=bearer(tokens["sales"])).status_code == 200


def test_billing_runs_for_staff(client, sample, tokens):
    runs = client.get("/api/v1/billing-runs", headers=bearer(tokens["admin"])).json()["items"]
    assert [(r["id"], r["period"], r["status"]) for r in runs] == [(sample.billing_run_id, "2026-10", "completed")]
    assert runs[0]["summary"] == {"invoices": 2}


def test_token_use_is_recorded_at_most_once_a_minute(wb, client, tokens):
    import datetime as dt

    usage = client.app.state.token_usage          # writes off the request, in a thread of its own
    client.get("/api/v1/accounts", headers=bearer(tokens["admin"]))
    usage.flush()
    with wb.db.session() as s:
        first = {t.id: t.last_used_at for t in s.scalars(select(ApiToken))}
    assert any(first.values())
    client.get("/api/v1/accounts", headers=bearer(tokens["admin"]))     # within the minute: no write
    usage.flush()
    with wb.db.transaction() as s:
        assert {t.id: t.last_used_at for t in s.scalars(select(ApiToken))} == first
        for t in s.scalars(select(ApiToken)):
            if t.last_used_at is not None:
                t.last_used_at -= dt.timedelta(minutes=2)
    client.get("/api/v1/accounts", headers=bearer(tokens["admin"]))     # older than a minute: refreshed
    usage.flush()
    with wb.db.session() as s:
        assert any(t.last_used_at is not None and t.last_used_at > first[t.id] for t in s.scalars(select(ApiToken)))


def test_unknown_route_is_a_404_problem(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
