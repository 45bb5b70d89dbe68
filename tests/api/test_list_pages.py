"""List pages are serialized by a fast path (named tuples or namespaces instead of ORM objects, one pydantic
call per page): their JSON must stay what the per-object models give, byte for byte."""

from __future__ import annotations

import datetime as dt
import uuid

from sample_operator import make_token
from sqlalchemy import select

from bluerocktel.api.crm import ServiceOut, TicketOut
from bluerocktel.api.routes import encode_cursor
from bluerocktel.api.schemas import AccountOut, InvoiceOut, Page
from bluerocktel.db.models import Account, Invoice, Service, ServiceIdentifier, Ticket


def _expected(out, objects: list, limit: int) -> bytes:
    """The page as the per-object models give it (``out.of`` of each ORM object)."""
    items = [out.of(obj) for obj in objects[:limit]]
    page = Page[out](items=items, limit=limit, next_cursor=encode_cursor(items[-1].id) if len(objects) > limit else None)
    return page.model_dump_json().encode()


def test_list_pages_equal_the_per_object_models(wb, client, sample):
    token = make_token(wb, sample.user_ids["admin"])
    auth = {"Authorization": f"Bearer {token}"}
    for i in range(3):
        assert client.post("/api/v1/tickets", json={"subject": f"Line {i}", "body": "Down since 9:00?",
                                                    "account_id": sample.account_ids["martin"]},
                           headers={**auth, "Idempotency-Key": uuid.uuid4().hex}).status_code == 201
    with wb.db.transaction() as s:                      # services' identifiers come by a query of their own
        service_id = s.scalars(select(Service.id).order_by(Service.id)).first()
        for number in ("+33140000001", "+33140000002"):
            s.add(ServiceIdentifier(service_id=service_id, kind="did", value=number,
                                    valid_from=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)))
    with wb.db.session() as s:
        lists = (("/api/v1/invoices", InvoiceOut, s.scalars(select(Invoice).order_by(Invoice.id.desc())).all()),
                 ("/api/v1/tickets", TicketOut, s.scalars(select(Ticket).order_by(Ticket.id.desc())).all()),
                 ("/api/v1/accounts", AccountOut, s.scalars(select(Account).order_by(Account.id)).all()),
                 ("/api/v1/services", ServiceOut, s.scalars(select(Service).order_by(Service.id)).all()))
        assert [len(objects) >= 2 for *_, objects in lists] == [True] * 4 and len(lists[1][2]) == 3
        for path, out, objects in lists:
            for limit in (1, 2, len(objects), 500):       # next_cursor (of 2 items: 3 tickets), an exact fit, a short page
                r = client.get(f"{path}?limit={limit}", headers=auth)
                assert r.status_code == 200
                assert r.content == _expected(out, objects, limit), path
