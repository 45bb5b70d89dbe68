"""3CX CRM integration through the API: the template parses, callers are found by any number format,
calls are journaled once per 3CX call id, customers are refused."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from lxml import etree
from sample_operator import make_token

from bluerocktel.db.models import Account, Activity, Contact, Service, ServiceIdentifier

UTC = dt.timezone.utc


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def crm(wb, sample):
    with wb.db.transaction() as s:
        martin = s.get(Account, sample.account_ids["martin"])
        martin.phone = "+33 4 72 00 00 10"
        s.add(Contact(account_id=martin.id, first_name="Paul", last_name="Martin", email="paul@martin.example",
                      phone="+33612345678", role="technical"))
        durand_service = s.scalar(sa.select(Service.id).where(Service.account_id == sample.account_ids["durand"]))
        s.add(ServiceIdentifier(service_id=durand_service, kind="did", value="+33493000002",
                                valid_from=dt.datetime(2026, 1, 1, tzinfo=UTC)))
    return {key: make_token(wb, sample.user_ids[key]) for key in ("alice", "admin", "sales")}


def test_template_is_a_3cx_crm_xml_pointing_at_this_server(client, crm):
    r = client.get("/api/v1/3cx/template.xml", headers=bearer(crm["admin"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(r.content)
    assert root.tag == "Crm" and root.get("Name") == "BlueRockTEL"
    lookup, report = root.iter("Scenario")
    assert lookup.find("Request").get("Url") == "http://portal.bluerock.localhost/api/v1/3cx/lookup?number=[Number]"
    assert report.get("Id") == "ReportCall" and report.find("Request").get("RequestType") == "Post"
    assert root.find("Parameters/Parameter").get("Name") == "ApiToken"


@pytest.mark.parametrize("number", ["+33612345678", "0033612345678", "06 12 34 56 78"])
def test_a_contact_is_found_whatever_the_number_format(client, crm, sample, number):
    r = client.get("/api/v1/3cx/lookup", params={"number": number}, headers=bearer(crm["sales"]))
    [match] = r.json()["contacts"]
    assert (match["first_name"], match["last_name"], match["company"]) == ("Paul", "Martin", "Boulangerie Martin")
    assert match["phone_mobile"] == "+33612345678" and match["phone_business"] == ""
    assert match["url"] == "http://portal.bluerock.localhost/staff?account=C0001"


def test_account_phone_and_service_numbers_match_too(client, crm):
    by_phone = client.get("/api/v1/3cx/lookup?number=0472000010", headers=bearer(crm["admin"])).json()["contacts"]
    assert [(m["first_name"], m["account_number"]) for m in by_phone] == [("Paul", "C0001")]   # its contact
    by_did = client.get("/api/v1/3cx/lookup?number=%2B33493000002", headers=bearer(crm["admin"])).json()["contacts"]
    assert [(m["entity_type"], m["company"]) for m in by_did] == [("accounts", "Cabinet Durand")]  # no contact
    assert client.get("/api/v1/3cx/lookup?number=+33199999999", headers=bearer(crm["admin"])).json() == {
        "contacts": []}


def test_calls_are_journaled_once_on_the_matching_account(wb, client, crm, sample):
    call = {"call_id": "00000000-01dc-27fc", "number": "0612345678", "call_type": "Inbound", "agent": "105",
            "agent_name": "Sam", "duration": "00:03:07", "started_at": "2026-11-26 09:15:02"}
    first = client.post("/api/v1/3cx/calls", json=call, headers=bearer(crm["sales"]))
    assert first.status_code == 201 and first.json()["account_id"] == sample.account_ids["martin"]
    again = client.post("/api/v1/3cx/calls", json=call, headers=bearer(crm["sales"]))
    assert again.status_code == 200 and again.json() == {**first.json(), "created": False}
    unknown = client.post("/api/v1/3cx/calls", json={**call, "call_id": "x2", "number": "+441234567890"},
                          headers=bearer(crm["sales"]))
    assert unknown.status_code == 200 and unknown.json() == {"id": None, "account_id": None, "created": False}
    bad = client.post("/api/v1/3cx/calls", json={**call, "call_id": "x3", "duration": "three minutes"},
                      headers=bearer(crm["sales"]))
    assert bad.status_code == 400 and "duration 'three minutes'" in bad.json()["detail"]
    with wb.db.session() as s:
        [activity] = s.scalars(sa.select(Activity)).all()
        assert (activity.kind, activity.direction, activity.duration_s, activity.agent) == ("call", "in", 187,
                                                                                           "105 Sam")
        assert activity.started_at == dt.datetime(2026, 11, 26, 9, 15, 2, tzinfo=UTC)
        assert activity.contact_id is not None


def test_customers_cannot_use_the_integration(client, crm):
    assert client.get("/api/v1/3cx/lookup?number=0612345678", headers=bearer(crm["alice"])).status_code == 403
    assert client.post("/api/v1/3cx/calls", json={"number": "0612345678"},
                       headers=bearer(crm["alice"])).status_code == 403


def test_the_lookup_link_opens_the_staff_app_on_that_account(wb, crm, sample):
    from portal_app.staff import AccountsView, linked_account

    from bluerocktel.portal import StaffStore

    assert linked_account({"account": [b"C0001"]}) == "C0001"
    assert linked_account({}) == ""
    view = AccountsView(StaffStore(wb), linked_account({"account": [b"C0001"]}))
    assert list(view.table.value["Number"]) == ["C0001"]
