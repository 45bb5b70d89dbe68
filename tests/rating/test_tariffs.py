"""load_tariffs: the system of record as the kernel's tables, prices in micro units."""

from decimal import Decimal

import pytest
from rating_builders import at

from bluerocktel.db.models import Account, Brand, Product, Rate, RateDeck, Service, ServiceIdentifier
from bluerocktel.rating import IDENTIFIER_SCHEMA, RATE_SCHEMA, TariffError, load_tariffs


def test_identifiers_carry_their_service_and_rates_are_micro_units(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="B", name="B", legal_name="B SAS")
        account = Account(number="C1", brand=brand, name="ACME")
        product = Product(code="P", name="P", kind="usage")
        used, unused = RateDeck(code="USED", name="used"), RateDeck(code="UNUSED", name="unused")
        s.add_all([account, product, used, unused])
        s.flush()
        service = Service(account_id=account.id, product_id=product.id, rate_deck_id=used.id, label="s")
        s.add(service)
        s.flush()
        s.add_all([
            ServiceIdentifier(service_id=service.id, kind="trunk", value="SIP/acme",
                              valid_from=at("2026-01-01"), valid_to=at("2026-07-01")),
            Rate(deck_id=used.id, prefix="33", destination="France", zone="fr", price=Decimal("0.0125"),
                 connection_fee=Decimal("0.0000005"), first_increment=30, next_increment=6,
                 valid_from=at("2026-01-01")),
            Rate(deck_id=unused.id, prefix="1", destination="NANP", zone="w", price=Decimal("1"),
                 valid_from=at("2026-01-01")),
        ])
        ids = (account.id, service.id, used.id)

    with wb.db.session() as s:
        tariffs = load_tariffs(s)
        identifiers, rates = tariffs.identifiers, tariffs.rates
    assert identifiers.schema == IDENTIFIER_SCHEMA and rates.schema == RATE_SCHEMA
    [ident] = identifiers.to_pylist()
    assert (ident["account_id"], ident["service_id"], ident["rate_deck_id"]) == ids
    assert (ident["kind"], ident["value"], ident["valid_from"], ident["valid_to"]) == (
        "trunk", "SIP/acme", at("2026-01-01"), at("2026-07-01"))
    [rate] = rates.to_pylist()   # the unused deck is not loaded
    assert (rate["deck_id"], rate["prefix"], rate["price_per_minute_micro"], rate["connection_fee_micro"]) == (
        ids[2], "33", 12_500, 1)   # 0.0000005 -> 0.000001 (half up)
    assert (rate["first_increment_s"], rate["next_increment_s"]) == (30, 6)


def test_a_zero_second_next_increment_is_refused(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="B", name="B", legal_name="B SAS")
        account = Account(number="C1", brand=brand, name="ACME")
        product = Product(code="P", name="P", kind="usage")
        deck = RateDeck(code="D", name="d")
        s.add_all([account, product, deck])
        s.flush()
        s.add(Service(account_id=account.id, product_id=product.id, rate_deck_id=deck.id, label="s"))
        s.add(Rate(deck_id=deck.id, prefix="33", destination="France", zone="fr", price=Decimal("0.01"),
                   first_increment=60, next_increment=0, valid_from=at("2026-01-01")))
    with wb.db.session() as s, pytest.raises(TariffError, match="next increment >= 1 s"):
        load_tariffs(s)
