"""Quotes: gapless numbers per brand and year, lines priced from the price list, totals like invoices,
status flow, acceptance creating the contract and ordered services at once, and only once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.crm.catalog import create_price_list, create_product, set_price
from bluerocktel.crm.quotes import (LineIn, accept_quote, create_quote, expire_quotes, quote_totals, reject_quote,
                                    send_quote)
from bluerocktel.db.models import (Account, AuditEntry, Brand, Contact, Contract, Quote, Service, ServiceEvent, Site)
from bluerocktel.errors import ConflictError, UserFacingError

TODAY = dt.date(2026, 11, 26)


@pytest.fixture
def world(wb):
    with wb.db.transaction() as s:
        brt, azu = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS"), Brand(
            code="AZU", name="Azur", legal_name="Azur SARL")
        s.add_all([brt, azu])
        s.flush()
        martin = Account(number="C0001", brand_id=brt.id, name="Boulangerie Martin")
        durand = Account(number="C0002", brand_id=azu.id, name="Cabinet Durand", vat_regime="eu_reverse_charge")
        s.add_all([martin, durand])
        s.flush()
        signer = Contact(account_id=martin.id, first_name="Marie", last_name="Martin", role="signatory")
        accountant = Contact(account_id=martin.id, first_name="Paul", last_name="Roux", role="billing")
        site = Site(account_id=martin.id, name="Fournil", city="Lyon")
        s.add_all([signer, accountant, site])
        sip = create_product(s, code="SIP", name="SIP trunk", kind="recurring", price="30.00", actor="t")
        tv = create_product(s, code="TV", name="TV option", kind="recurring", price="9.99", vat_rate="0.10",
                            actor="t")
        sms = create_product(s, code="SMS", name="SMS pack", kind="one_off", price="0.125", actor="t")
        plist = create_price_list(s, brand_id=brt.id, code="BRT-2026", name="2026", valid_from=dt.date(2026, 1, 1),
                                  actor="t")
        set_price(s, plist.id, sip.id, "28.00", actor="t")
        s.flush()
        return {"martin": martin.id, "durand": durand.id, "signer": signer.id, "accountant": accountant.id,
                "site": site.id, "sip": sip.id, "tv": tv.id, "sms": sms.id}


def _quote(wb, world, account="martin", on=TODAY):
    lines = [LineIn(world["sip"], 2, world["site"] if account == "martin" else None), LineIn(world["tv"]),
             LineIn(world["sms"], 3, description="300 SMS")]
    with wb.db.transaction() as s:
        quote = create_quote(s, world[account], lines, valid_until=on + dt.timedelta(days=30), on=on,
                             term_months=24, actor="sales@x")
        return quote.id, quote.number


def test_numbers_per_brand_and_year_and_priced_lines_with_totals(wb, world):
    assert _quote(wb, world)[1] == "DV-BRT-2026-000001"
    assert _quote(wb, world)[1] == "DV-BRT-2026-000002"
    assert _quote(wb, world, "durand")[1] == "DV-AZU-2026-000001"
    assert _quote(wb, world, on=dt.date(2027, 1, 4))[1] == "DV-BRT-2027-000001"
    with wb.db.session() as s:
        quote = s.scalar(sa.select(Quote).where(Quote.number == "DV-BRT-2026-000001"))
        assert [(ln.description, ln.quantity, ln.unit_price) for ln in quote.lines] == [
            ("SIP trunk", 2, Decimal("28.00")), ("TV option", 1, Decimal("9.99")), ("300 SMS", 3, Decimal("0.125"))]
        totals = quote_totals(s, quote)
        # 2 × 28.00 = 56.00; 9.99; 3 × 0.125 = 0.375 -> 0.38 (half up)
        assert totals.line_amounts_minor == [5600, 999, 38]
        # 10 %: 999 × 0.10 = 99.9 -> 100; 20 %: (5600 + 38) × 0.20 = 1127.6 -> 1128
        assert totals.vat == [{"rate": "0.10", "base_minor": 999, "vat_minor": 100},
                              {"rate": "0.20", "base_minor": 5638, "vat_minor": 1128}]
        assert (totals.subtotal_minor, totals.vat_minor, totals.total_minor) == (6637, 1228, 7865)
        reverse = quote_totals(s, s.scalar(sa.select(Quote).where(Quote.number == "DV-AZU-2026-000001")))
        # Azur has no price list: SIP at the product's 30.00; reverse charge: no VAT
        assert reverse.line_amounts_minor == [6000, 999, 38] and reverse.vat_minor == 0
        assert reverse.total_minor == 7037


def test_line_checks(wb, world):
    with wb.db.transaction() as s:
        other_site = Site(account_id=world["durand"], name="Nice office")
        s.add(other_site)
        s.flush()
        site_id = other_site.id
    cases = [([LineIn(999)], "lines[1].product_id 999: no such active product"),
             ([LineIn(world["sip"], 0)], "lines[1].quantity 0: a whole number, at least 1"),
             ([LineIn(world["tv"]), LineIn(world["sip"], 1, site_id)],
              f"lines[2].site_id {site_id}: not a site of account C0001"),
             ([], "lines: a quote needs at least one line")]
    for lines, message in cases:
        with pytest.raises(UserFacingError, match=message.replace("[", r"\[").replace("]", r"\]")):
            with wb.db.transaction() as s:
                create_quote(s, world["martin"], lines, valid_until=TODAY, on=TODAY, actor="t")


def test_accepting_creates_contract_and_ordered_services_once(wb, world):
    quote_id, number = _quote(wb, world)
    at = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.timezone.utc)
    with pytest.raises(ConflictError, match="is draft: cannot make it accepted"):
        with wb.db.transaction() as s:
            accept_quote(s, quote_id, signatory_contact_id=world["signer"], actor="t", at=at)
    with wb.db.transaction() as s:
        assert send_quote(s, quote_id, actor="sales@x", today=TODAY).status == "sent"
    with pytest.raises(UserFacingError, match="Paul Roux is a billing contact, not a signatory"):
        with wb.db.transaction() as s:
            accept_quote(s, quote_id, signatory_contact_id=world["accountant"], actor="t", at=at)
    with wb.db.transaction() as s:
        result = accept_quote(s, quote_id, signatory_contact_id=world["signer"], actor="marie@martin.example",
                              at=at, start_date=dt.date(2026, 11, 27))
        assert len(result.service_ids) == 3
    with pytest.raises(ConflictError, match=f"quote {number} was accepted already"):
        with wb.db.transaction() as s:
            accept_quote(s, quote_id, signatory_contact_id=world["signer"], actor="t", at=at)
    with wb.db.session() as s:
        quote = s.get(Quote, quote_id)
        contract = s.get(Contract, quote.contract_id)
        assert (quote.status, quote.accepted_at) == ("accepted", at)
        assert (contract.reference, contract.start_date, contract.term_months, contract.commitment_end,
                contract.signed_at, contract.signatory_contact_id) == (
            "CT-C0001-001", dt.date(2026, 11, 27), 24, dt.date(2028, 11, 27), at, world["signer"])
        services = s.scalars(sa.select(Service).order_by(Service.id)).all()
        assert [(sv.label, sv.status, sv.quantity, sv.unit_price, sv.site_id, sv.contract_id) for sv in services] == [
            ("SIP trunk", "ordered", 2, Decimal("28.00"), world["site"], contract.id),
            ("TV option", "ordered", 1, Decimal("9.99"), None, contract.id),
            ("300 SMS", "ordered", 3, Decimal("0.125"), None, contract.id)]
        events = s.scalars(sa.select(ServiceEvent).order_by(ServiceEvent.id)).all()
        assert [(e.service_id, e.kind, e.payload["quote"], e.payload["contract"]) for e in events] == [
            (sv.id, "ordered", number, "CT-C0001-001") for sv in services]
        actions = s.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions[-4:] == ["quote.sent", "quote.accepted", "contract.create", "quote.accept_order"]


def test_reject_and_expiry(wb, world):
    first, _ = _quote(wb, world)
    second, _ = _quote(wb, world)
    third, third_number = _quote(wb, world)
    with wb.db.transaction() as s:
        send_quote(s, first, actor="t", today=TODAY)
        send_quote(s, second, actor="t", today=TODAY)
        assert reject_quote(s, first, actor="t", today=TODAY).status == "rejected"
    with pytest.raises(ConflictError, match="is rejected: cannot make it accepted"):
        with wb.db.transaction() as s:
            accept_quote(s, first, signatory_contact_id=world["signer"], actor="t")
    later = TODAY + dt.timedelta(days=31)    # valid_until is TODAY + 30 days
    with pytest.raises(ConflictError, match="expired on 2026-12-26: send a new quote"):
        with wb.db.transaction() as s:
            accept_quote(s, second, signatory_contact_id=world["signer"], actor="t", start_date=later)
    with wb.db.transaction() as s:
        assert expire_quotes(s, later) == ["DV-BRT-2026-000002", third_number]
    with wb.db.session() as s:
        assert [s.get(Quote, i).status for i in (first, second, third)] == ["rejected", "expired", "expired"]


def test_concurrent_quotes_get_consecutive_numbers(wb, world):
    """Four transactions numbering at once: the brand lock serialises them (no duplicate, no gap)."""
    import threading

    barrier, numbers, errors = threading.Barrier(4), [], []

    def make():
        try:
            with wb.db.transaction() as s:
                barrier.wait(timeout=10)
                numbers.append(create_quote(s, world["martin"], [LineIn(world["tv"])], valid_until=TODAY, on=TODAY,
                                            actor="t").number)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(numbers) == [f"DV-BRT-2026-00000{n}" for n in (1, 2, 3, 4)]
