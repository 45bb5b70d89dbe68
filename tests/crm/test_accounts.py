"""Accounts, contacts and sites: identifier checks, groups without cycles, closing rules, one billing contact."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.crm.accounts import (children, create_account, create_contact, create_site, delete_contact,
                                      group_balances, luhn_ok, set_account_status, update_account, update_contact,
                                      validate_siren, validate_siret)
from bluerocktel.db.models import Account, AuditEntry, Brand, Invoice, Payment, Product, Service
from bluerocktel.errors import ConflictError, UserFacingError

# Google France: SIREN 443 061 841, head office SIRET 443 061 841 00047, VAT key (12 + 3 × (443061841 mod 97)) mod
# 97 = (12 + 3 × 82) mod 97 = 258 mod 97 = 64.
SIREN, SIRET, VAT = "443061841", "44306184100047", "FR64443061841"


@pytest.fixture
def brands(wb):
    with wb.db.transaction() as s:
        brt, azu = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS"), Brand(
            code="AZU", name="Azur", legal_name="Azur SARL")
        s.add_all([brt, azu])
        s.flush()
        return brt.id, azu.id


def test_identifier_checksums_by_hand():
    # 443061841 from the right: 1, 4×2=8, 8, 1×2=2, 6, 0×2=0, 3, 4×2=8, 4 -> sum 40, a multiple of 10
    assert luhn_ok(SIREN) and not luhn_ok("443061842")
    assert validate_siren("443 061 841") == SIREN
    assert validate_siret(SIRET, SIREN) == SIRET
    with pytest.raises(UserFacingError, match="siren '44306184': a SIREN is 9 digits"):
        validate_siren("44306184")
    with pytest.raises(UserFacingError, match="siret '44306184100048': the Luhn checksum is wrong"):
        validate_siret("44306184100048", SIREN)
    with pytest.raises(UserFacingError, match="its first 9 digits must be the SIREN 443061841"):
        validate_siret("73282932000074", SIREN)
    # La Poste (SIREN 356000000): the digits must add up to a multiple of 5: 3+5+6+1 = 15
    assert validate_siret("35600000000001", "356000000") == "35600000000001"
    with pytest.raises(UserFacingError, match="Luhn"):
        validate_siret("35600000000002", "356000000")   # 3+5+6+2 = 16


def test_create_business_and_consumer_accounts_with_their_checks(wb, brands):
    brt, _ = brands
    with wb.db.transaction() as s:
        acme = create_account(s, brand_id=brt, name=" Acme SAS ", siren=SIREN, siret="443 061 841 00047",
                              vat_number="fr 64 443 061 841", email="compta@acme.example", country="fr",
                              actor="sales@x")
        assert (acme.number, acme.name, acme.siret, acme.vat_number, acme.country) == (
            "C000001", "Acme SAS", SIRET, VAT, "FR")
        person = create_account(s, brand_id=brt, name="Jeanne Petit", kind="consumer", actor="sales@x")
        assert person.number == "C000002" and person.kind == "consumer"
    bad = [({"kind": "consumer", "siren": SIREN}, "siren: a consumer account (a person) has no SIREN"),
           ({"siren": "443061842"}, "siren '443061842': the Luhn checksum is wrong"),
           ({"vat_number": "FR65443061841"}, "the key 65 does not match SIREN 443061841 (expected 64)"),
           ({"country": "France"}, "country 'France' is not an ISO 3166-1 alpha-2"),
           ({"country": "UK"}, "country 'UK' is not an ISO 3166-1 alpha-2"),
           ({"email": "compta@acme"}, "email 'compta@acme' is not an e-mail address"),
           ({"kind": "company"}, "kind 'company': use business or consumer"),
           ({"brand_id": 999}, "brand_id 999: no such brand")]
    for fields, message in bad:
        with pytest.raises(UserFacingError, match=message.replace("(", r"\(").replace(")", r"\)")):
            with wb.db.transaction() as s:
                create_account(s, **{"brand_id": brt, "name": "X", "actor": "t", **fields})
    with pytest.raises(ConflictError, match="number 'C000001': an account has this number already"):
        with wb.db.transaction() as s:
            create_account(s, brand_id=brt, name="Dup", number="C000001", actor="t")
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count(Account.id))) == 2
        audit = s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(a.action, a.actor, a.details["number"]) for a in audit] == [
            ("account.create", "sales@x", "C000001"), ("account.create", "sales@x", "C000002")]


def test_groups_share_a_brand_have_no_cycles_and_add_up_balances(wb, brands):
    brt, azu = brands
    with wb.db.transaction() as s:
        head = create_account(s, brand_id=brt, name="Groupe Lumière", actor="t").id
        north = create_account(s, brand_id=brt, name="Lumière Nord", parent_id=head, actor="t").id
        lille = create_account(s, brand_id=brt, name="Lumière Lille", parent_id=north, actor="t").id
        other = create_account(s, brand_id=azu, name="Azur client", actor="t").id
    with pytest.raises(UserFacingError, match="a group's accounts share one brand"):
        with wb.db.transaction() as s:
            update_account(s, other, {"parent_id": head}, actor="t")
    with pytest.raises(UserFacingError, match="account C000001 would be its own ancestor"):
        with wb.db.transaction() as s:
            update_account(s, head, {"parent_id": lille}, actor="t")
    with pytest.raises(UserFacingError, match="would be its own ancestor"):
        with wb.db.transaction() as s:
            update_account(s, north, {"parent_id": north}, actor="t")
    with wb.db.transaction() as s:
        assert [a.name for a in children(s, head)] == ["Lumière Nord"]
        # north owes 120.00 (one invoice), lille owes 50.00 and paid 80.00 on account: credit 30.00
        for account_id, total in ((north, 12000), (lille, 5000)):
            s.add(Invoice(number=f"FA-2026-{account_id:06d}", account_id=account_id, brand_id=brt,
                          period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1),
                          issue_date=dt.date(2026, 11, 1), due_date=dt.date(2026, 12, 1),
                          subtotal_minor=total, vat_minor=0, total_minor=total))
        s.add(Payment(account_id=lille, amount_minor=8000, method="transfer"))
    with wb.db.transaction() as s:
        view = group_balances(s, head)
        assert [(m["account_id"], m["due_minor"], m["credit_minor"], m["balance_minor"]) for m in view["members"]] \
            == [(head, 0, 0, 0), (north, 12000, 0, 12000), (lille, 5000, 8000, -3000)]
        # 12000 + 5000 = 17000 due, 8000 credit, 17000 - 8000 = 9000 balance
        assert view["totals"] == {"EUR": {"due_minor": 17000, "credit_minor": 8000, "overdue_minor": 0,
                                          "balance_minor": 9000}}


def test_closing_needs_services_terminated_and_nothing_due(wb, brands):
    brt, _ = brands
    with wb.db.transaction() as s:
        account = create_account(s, brand_id=brt, name="Boulangerie Martin", actor="t")
        product = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        s.add(product)
        s.flush()
        s.add(Service(account_id=account.id, product_id=product.id, label="SIP trunk", status="active"))
        s.add(Invoice(number="FA-2026-000001", account_id=account.id, brand_id=brt,
                      period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1),
                      issue_date=dt.date(2026, 11, 1), due_date=dt.date(2026, 12, 1),
                      subtotal_minor=3000, vat_minor=600, total_minor=3600))
        account_id = account.id
    with pytest.raises(ConflictError, match=r"cannot be closed: 1 service\(s\) not terminated \(SIP trunk\)"):
        with wb.db.transaction() as s:
            set_account_status(s, account_id, "closed", actor="t")
    with wb.db.transaction() as s:
        s.scalar(sa.select(Service)).status = "terminated"
    with pytest.raises(ConflictError, match="cannot be closed: 3600 minor units of EUR are still due"):
        with wb.db.transaction() as s:
            set_account_status(s, account_id, "closed", actor="t")
    with wb.db.transaction() as s:
        s.add(Payment(account_id=account_id, invoice_id=None, amount_minor=3600, method="transfer"))
        from bluerocktel.billing.payments import apply_account_credit
        assert apply_account_credit(s, account_id) == 3600
    with wb.db.transaction() as s:
        assert set_account_status(s, account_id, "closed", actor="t", reason="moved away").status == "closed"
    with pytest.raises(ConflictError, match="is closed: it cannot be reopened"):
        with wb.db.transaction() as s:
            set_account_status(s, account_id, "active", actor="t")


def test_contacts_one_billing_contact_and_sites(wb, brands):
    brt, _ = brands
    with wb.db.transaction() as s:
        account_id = create_account(s, brand_id=brt, name="Acme", actor="t").id
        paul = create_contact(s, account_id, first_name="Paul", last_name="Roux", role="billing",
                              email="paul@acme.example", actor="t").id
        lea = create_contact(s, account_id, first_name="Léa", last_name="Blanc", role="technical", actor="t").id
        site = create_site(s, account_id, name="Siège", city="Lyon", country="fr", actor="t")
        assert site.country == "FR"
    with pytest.raises(ConflictError, match=r"has a primary billing contact already \(Paul Roux, contact"):
        with wb.db.transaction() as s:
            update_contact(s, lea, {"role": "billing"}, actor="t")
    with pytest.raises(UserFacingError, match="role 'boss': use billing, technical, signatory or other"):
        with wb.db.transaction() as s:
            create_contact(s, account_id, first_name="A", last_name="B", role="boss", actor="t")
    with wb.db.transaction() as s:
        update_contact(s, paul, {"role": "other"}, actor="t")
        assert update_contact(s, lea, {"role": "billing"}, actor="t").role == "billing"
        delete_contact(s, paul, actor="t")
    with wb.db.session() as s:
        actions = s.scalars(sa.select(AuditEntry.action).where(AuditEntry.target_type.in_(["contact", "site"]))
                            .order_by(AuditEntry.id)).all()
        assert actions == ["contact.create", "contact.create", "site.create", "contact.update", "contact.update",
                           "contact.delete"]
