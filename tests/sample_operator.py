"""A small operator for the web tests: two brands, two customer accounts, staff, invoices, calls.

Shared by tests/api, tests/web and tests/portal (tests/conftest.py imports its fixtures).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import pyarrow as pa

from bluerocktel.accounts import create_user
from bluerocktel.db.models import Account, BillingRun, Brand, Invoice, InvoiceLine, Product, Service
from bluerocktel.lake import RATED_SCHEMA, write_partition
from bluerocktel.security import create_api_token

PASSWORD = "correct horse battery"
UTC = dt.timezone.utc

AZUR_LOGO = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><circle cx="20" cy="20" r="18" '
             'fill="#00796b"/><path d="M8 26 Q20 8 32 26" stroke="#ff7043" stroke-width="4" fill="none"/></svg>')


@dataclass
class SampleOperator:
    brand_ids: dict[str, int] = field(default_factory=dict)
    account_ids: dict[str, int] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    invoice_ids: dict[str, int] = field(default_factory=dict)
    invoice_numbers: dict[str, str] = field(default_factory=dict)
    billing_run_id: int = 0
    calls: dict[str, int] = field(default_factory=dict)


def render_pdf(text: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=f"<html><body><h1>Invoice {text}</h1><p>Total 36,00 EUR</p></body></html>").write_pdf()


def fake_pdf(text: str) -> bytes:
    return f"%PDF-1.4\n% invoice {text}\n%%EOF\n".encode()


def rated_calls(account_id: int, service_id: int, count: int, first: dt.datetime, caller: str) -> pa.Table:
    rows = []
    for i in range(count):
        start = first + dt.timedelta(hours=i)
        billsec = 30 + i
        rows.append({
            "cdr_id": f"{account_id:04d}{i:028d}", "source": "pbx1", "source_file": "Master.csv", "source_line": i + 1,
            "start_at": start, "answer_at": start + dt.timedelta(seconds=5),
            "end_at": start + dt.timedelta(seconds=5 + billsec), "duration_s": 5 + billsec, "billsec_s": billsec,
            "caller": caller, "callee": f"+3361234{i:04d}", "account_code": "", "channel": "SIP/trunk",
            "dst_channel": "SIP/out", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
            "unique_id": f"u{account_id}-{i}", "account_id": account_id, "service_id": service_id,
            "rate_deck_id": 1, "rate_id": 1, "prefix": "336", "destination": "France Mobile", "zone": "fr_mobile",
            "billable_s": 60 * (1 + billsec // 60), "price_micro": 12_345 + i, "rating_status": "rated",
            "rated_at": first + dt.timedelta(days=40),
        })
    return pa.Table.from_pylist(rows, schema=RATED_SCHEMA)


def build_sample_operator(wb, *, real_pdf: bool = False, calls: tuple[int, int] = (60, 5)) -> SampleOperator:
    out = SampleOperator()
    pdf = render_pdf if real_pdf else fake_pdf
    (wb.documents_dir / "invoices").mkdir(parents=True, exist_ok=True)
    with wb.db.transaction() as s:
        brt = Brand(code="BRT", name="BlueRock Telecom", host_names=["portal.bluerock.localhost"],
                    primary_color="#0b3d91", accent_color="#f5a623", legal_name="BlueRock Telecom SAS",
                    invoice_prefix="FA")
        azu = Brand(code="AZU", name="Espace Azur", host_names=["espace.azur.localhost"],
                    primary_color="#00796b", accent_color="#ff7043", legal_name="Azur Telecom SARL",
                    invoice_prefix="AZ", logo_svg=AZUR_LOGO)
        s.add_all([brt, azu])
        s.flush()
        out.brand_ids = {"BRT": brt.id, "AZU": azu.id}
        martin = Account(number="C0001", brand_id=brt.id, name="Boulangerie Martin", email="compta@martin.example",
                         city="Lyon")
        durand = Account(number="C0002", brand_id=azu.id, name="Cabinet Durand", email="admin@durand.example",
                         city="Nice")
        s.add_all([martin, durand])
        s.flush()
        out.account_ids = {"martin": martin.id, "durand": durand.id}
        for key, email, role, account in [("alice", "alice@martin.example", "customer", "C0001"),
                                          ("bob", "bob@durand.example", "customer", "C0002"),
                                          ("admin", "admin@bluerock.example", "admin", None),
                                          ("sales", "sales@bluerock.example", "sales", None)]:
            user = create_user(s, email=email, name=key.capitalize(), password=PASSWORD, role=role,
                               account_number=account, actor="test")
            out.user_ids[key] = user.id
        product = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        s.add(product)
        s.flush()
        services = {}
        for key, acc in (("martin", martin), ("durand", durand)):
            service = Service(account_id=acc.id, product_id=product.id, label=f"SIP trunk {acc.number}",
                              activated_on=dt.date(2026, 1, 1))
            s.add(service)
            s.flush()
            services[key] = service.id
        run = BillingRun(period="2026-10", status="completed", started_by="test",
                         started_at=dt.datetime(2026, 11, 1, 2, 0, tzinfo=UTC),
                         finished_at=dt.datetime(2026, 11, 1, 2, 5, tzinfo=UTC), summary={"invoices": 2})
        s.add(run)
        s.flush()
        out.billing_run_id = run.id
        for key, acc, number in (("martin", martin, "FA-2026-000001"), ("durand", durand, "AZ-2026-000001")):
            rel = f"documents/invoices/{number}.pdf"
            (wb.data_dir / rel).write_bytes(pdf(number))
            inv = Invoice(number=number, account_id=acc.id, brand_id=acc.brand_id, billing_run_id=run.id,
                          period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1),
                          issue_date=dt.date(2026, 11, 1), due_date=dt.date(2026, 12, 1),
                          subtotal_minor=3000, vat_minor=600, total_minor=3600, pdf_path=rel)
            inv.lines = [
                InvoiceLine(position=1, kind="subscription", description="SIP trunk, October 2026",
                            quantity=Decimal("1"), unit="month", unit_price_precise=Decimal("25.00"),
                            amount_precise=Decimal("25.00"), amount_minor=2500, vat_rate=Decimal("0.20")),
                InvoiceLine(position=2, kind="usage", description="Calls to France Mobile", zone="fr_mobile",
                            quantity=Decimal("41"), unit="minute", unit_price_precise=Decimal("0.12195"),
                            amount_precise=Decimal("4.99995"), amount_minor=500, vat_rate=Decimal("0.20")),
            ]
            s.add(inv)
            s.flush()
            out.invoice_ids[key] = inv.id
            out.invoice_numbers[key] = number
    first = dt.datetime(2026, 10, 2, 8, 0, tzinfo=UTC)
    write_partition(wb.lake_dir, "rated", "2026-10", rated_calls(martin.id, services["martin"], calls[0], first,
                                                                  "+33472000001"))
    write_partition(wb.lake_dir, "rated", "2026-10", rated_calls(durand.id, services["durand"], calls[1], first,
                                                                  "+33493000002"))
    out.calls = {"martin": calls[0], "durand": calls[1]}
    return out


def make_token(wb, user_id: int, name: str = "test") -> str:
    from bluerocktel.db.models import User

    with wb.db.transaction() as s:
        return create_api_token(s, s.get(User, user_id), name)


# Fixtures, imported by the conftests of tests/api, tests/web and tests/portal.
import pytest  # noqa: E402


@pytest.fixture
def sample(wb) -> SampleOperator:
    return build_sample_operator(wb)


@pytest.fixture
def app(wb):
    from portal_app.server import create_app

    return create_app(wb)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://portal.bluerock.localhost") as test_client:
        yield test_client
