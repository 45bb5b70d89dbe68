"""load_tariffs: the system of record as the kernel's tables, prices in micro units, bad tariffs refused."""

from decimal import Decimal

import pytest
from rating_builders import at

from bluerocktel.db.models import (
    Account,
    Brand,
    Bundle,
    CarrierTrunk,
    Product,
    Rate,
    RateDeck,
    Service,
    ServiceBundle,
    ServiceIdentifier,
    TimeBand,
)
from bluerocktel.rating import IDENTIFIER_SCHEMA, RATE_SCHEMA, TariffError, load_tariffs
from bluerocktel.rating.tariffs import BAND_SCHEMA, DECK_SCHEMA, SERVICE_BUNDLE_SCHEMA, TRUNK_SCHEMA


def seed(s, **deck_options) -> dict:
    """A brand, an account in Europe/Paris, a service on deck USED (with ``deck_options``) and an unused deck."""
    brand = Brand(code="B", name="B", legal_name="B SAS")
    account = Account(number="C1", brand=brand, name="ACME", timezone="America/New_York")
    product = Product(code="P", name="P", kind="usage")
    used, unused = RateDeck(code="USED", name="used", **deck_options), RateDeck(code="UNUSED", name="unused")
    s.add_all([account, product, used, unused])
    s.flush()
    service = Service(account_id=account.id, product_id=product.id, rate_deck_id=used.id, label="s")
    s.add(service)
    s.flush()
    return {"account": account.id, "service": service.id, "deck": used.id, "unused": unused.id}


def fr_rate(deck_id: int, **overrides) -> Rate:
    values = dict(deck_id=deck_id, prefix="33", destination="France", zone="fr", price=Decimal("0.01"),
                  first_increment=60, next_increment=60, valid_from=at("2026-01-01"))
    return Rate(**{**values, **overrides})


def test_every_table_is_loaded_in_the_kernel_schemas(wb):
    with wb.db.transaction() as s:
        ids = seed(s, rounding_method="up", rounding_decimals=4, increment_rounding_method="half_up",
                   increment_rounding_decimals=5, holiday_calendar="FR")
        buy = RateDeck(code="CARRIER", name="carrier", kind="buy")
        bundle = Bundle(code="FR1000", name="1000 min", call_type="voice", zones=["fr", "fr-mobile"], allowance=60_000)
        s.add_all([buy, bundle])
        s.flush()
        s.add_all([
            ServiceIdentifier(service_id=ids["service"], kind="trunk", value="SIP/acme",
                              valid_from=at("2026-01-01"), valid_to=at("2026-07-01")),
            fr_rate(ids["deck"], price=Decimal("0.0125"), connection_fee=Decimal("0.000001"), first_increment=30,
                    next_increment=6, min_charge=Decimal("0.05"), max_cost=Decimal("2.5"), max_cost_action="cap"),
            fr_rate(ids["deck"], group_start=60, price=Decimal("0.5")),
            fr_rate(ids["deck"], band="peak", price=Decimal("0.02")),
            fr_rate(ids["unused"], prefix="1", price=Decimal("1")),
            fr_rate(buy.id, price=Decimal("0.004"), call_type="voice"),
            TimeBand(deck_id=ids["deck"], name="peak", days="mon, tue,wed,thu,fri", start_minute=480,
                     end_minute=1140, priority=1),
            CarrierTrunk(name="carrier", deck_id=buy.id, trunk="SIP/carrier", valid_from=at("2026-01-01")),
            ServiceBundle(service_id=ids["service"], bundle_id=bundle.id, valid_from=at("2026-10-15")),
        ])
        ids.update(buy=buy.id, bundle=bundle.id)

    with wb.db.session() as s:
        tariffs = load_tariffs(s)
    assert tariffs.identifiers.schema == IDENTIFIER_SCHEMA and tariffs.rates.schema == RATE_SCHEMA
    assert (tariffs.decks.schema, tariffs.bands.schema, tariffs.trunks.schema, tariffs.bundles.schema) == (
        DECK_SCHEMA, BAND_SCHEMA, TRUNK_SCHEMA, SERVICE_BUNDLE_SCHEMA)
    [ident] = tariffs.identifiers.to_pylist()
    assert (ident["account_id"], ident["service_id"], ident["rate_deck_id"]) == (ids["account"], ids["service"], ids["deck"])
    assert (ident["kind"], ident["value"], ident["valid_from"], ident["valid_to"], ident["timezone"]) == (
        "trunk", "SIP/acme", at("2026-01-01"), at("2026-07-01"), "America/New_York")
    # the plan deck and the carrier's buy deck are loaded; the unused deck is not
    assert sorted(tariffs.decks["code"].to_pylist()) == ["CARRIER", "USED"]
    used = [d for d in tariffs.decks.to_pylist() if d["code"] == "USED"][0]
    assert (used["rounding_method"], used["rounding_decimals"], used["increment_rounding_method"],
            used["increment_rounding_decimals"], used["holiday_calendar"]) == ("up", 4, "half_up", 5, "FR")
    plan = [r for r in tariffs.rates.to_pylist() if r["deck_id"] == ids["deck"]]
    assert [(r["band"], r["group_start"], r["price_micro"], r["unit_size"]) for r in plan] == [
        ("", 0, 12_500, 60), ("", 60, 500_000, 60), ("peak", 0, 20_000, 60)]   # per minute
    first = plan[0]
    assert (first["connection_fee_micro"], first["first_increment"], first["next_increment"]) == (1, 30, 6)  # 0.000001 = 1 micro
    assert (first["min_charge_micro"], first["max_cost_micro"], first["max_cost_action"]) == (50_000, 2_500_000, "cap")
    [band] = tariffs.bands.to_pylist()
    assert band["days"] == ["mon", "tue", "wed", "thu", "fri"] and (band["start_minute"], band["end_minute"]) == (480, 1140)
    [trunk] = tariffs.trunks.to_pylist()
    assert (trunk["deck_id"], trunk["trunk"]) == (ids["buy"], "SIP/carrier")
    [grant] = tariffs.bundles.to_pylist()
    assert (grant["service_id"], grant["bundle_id"], grant["code"], grant["zones"], grant["allowance"]) == (
        ids["service"], ids["bundle"], "FR1000", ["fr", "fr-mobile"], 60_000)
    assert len(tariffs.version) == 16


def test_rows_of_one_version_must_share_their_unit_size(wb):
    with wb.db.transaction() as s:
        ids = seed(s)
        s.add_all([fr_rate(ids["deck"]), fr_rate(ids["deck"], band="peak", unit_size=1)])
    with wb.db.session() as s, pytest.raises(TariffError, match=r"USED.*prefix '33'.*different unit_size \[1, 60\]"):
        load_tariffs(s)


def test_a_free_row_may_have_any_unit_size(wb):
    with wb.db.transaction() as s:
        ids = seed(s)
        s.add_all([fr_rate(ids["deck"]), fr_rate(ids["deck"], band="night", price=Decimal(0), unit_size=0)])
    with wb.db.session() as s:
        rates = load_tariffs(s).rates.to_pylist()
    assert [(r["band"], r["unit_size"]) for r in rates] == [("", 60), ("night", 60)]


def test_the_fingerprint_changes_with_any_table(wb):
    with wb.db.transaction() as s:
        ids = seed(s)
        s.add(fr_rate(ids["deck"]))
    with wb.db.session() as s:
        before = load_tariffs(s).version
    with wb.db.session() as s:
        assert load_tariffs(s).version == before          # same content, same fingerprint
    with wb.db.transaction() as s:
        s.add(TimeBand(deck_id=ids["deck"], name="peak", days="mon", start_minute=0, end_minute=60))
    with wb.db.session() as s:
        assert load_tariffs(s).version != before


@pytest.mark.parametrize("rate_overrides, deck_options, band, message", [
    ({"next_increment": 0}, {}, None, r"rate \d+ \(prefix '33'\): the first increment must be >= 0 and the next increment >= 1"),
    ({"first_increment": -1}, {}, None, "the first increment must be >= 0"),
    ({"prefix": "33a"}, {}, None, "the prefix must be digits"),
    ({"prefix": "1" * 19}, {}, None, "more than 18 digits"),
    ({"unit_size": 0}, {}, None, "unit_size 0 must be >= 1"),
    ({"call_type": "fax"}, {}, None, "call_type 'fax'"),
    ({"max_cost": Decimal("1"), "max_cost_action": "stop"}, {}, None, "max_cost_action 'stop'"),
    ({"max_cost": Decimal("1")}, {}, None, "max_cost_action None"),
    ({"band": "peak", "group_start": 60}, {}, None, "band 'peak' has no row with group_start 0"),
    ({"price": Decimal("0.00016667")}, {}, None, r"price 0.00016667 has more than 6 decimals"),
    ({"min_charge": Decimal("0.0000001")}, {}, None, r"min_charge 1E-7 has more than 6 decimals"),
    ({}, {"rounding_method": "nearest"}, None, "rounding_method 'nearest'"),
    ({}, {"rounding_decimals": 7}, None, "rounding_decimals 7 is outside 0..6"),
    ({}, {"increment_rounding_method": "up", "increment_rounding_decimals": -1}, None, "increment_rounding_decimals -1"),
    ({}, {"holiday_calendar": "XX"}, None, "unknown holiday calendar 'XX'"),
    ({}, {}, {"days": "mon,funday"}, r"time band 'peak'.*unknown day word\(s\) \['funday'\]"),
    ({}, {}, {"start_minute": 600, "end_minute": 600}, r"minutes \[600, 600\) must satisfy"),
    ({}, {}, {"end_minute": 1500}, r"minutes \[0, 1500\)"),
])
def test_unusable_tariffs_are_refused_naming_what_is_wrong(wb, rate_overrides, deck_options, band, message):
    with wb.db.transaction() as s:
        ids = seed(s, **deck_options)
        if rate_overrides.get("band"):
            s.add(fr_rate(ids["deck"]))
        s.add(fr_rate(ids["deck"], **rate_overrides))
        if band is not None:
            s.add(TimeBand(deck_id=ids["deck"], **{"name": "peak", "days": "mon", "start_minute": 0,
                                                  "end_minute": 1440, **band}))
    with wb.db.session() as s, pytest.raises(TariffError, match=message) as refused:
        load_tariffs(s)
    assert "USED" in str(refused.value)          # the deck is named


def test_a_fallback_cycle_is_refused(wb):
    with wb.db.transaction() as s:
        ids = seed(s)
        other = RateDeck(code="OTHER", name="other", fallback_deck_id=ids["deck"])
        s.add(other)
        s.flush()
        s.get(RateDeck, ids["deck"]).fallback_deck_id = other.id
    with wb.db.session() as s, pytest.raises(TariffError, match="fallback cycle USED -> OTHER -> USED"):
        load_tariffs(s)


def test_an_unknown_account_time_zone_is_refused(wb):
    with wb.db.transaction() as s:
        ids = seed(s)
        s.get(Account, ids["account"]).timezone = "Mars/Olympus"
        s.add(ServiceIdentifier(service_id=ids["service"], kind="number", value="+331", valid_from=at("2026-01-01")))
    with wb.db.session() as s, pytest.raises(TariffError, match=r"account \d+: unknown time zone 'Mars/Olympus'"):
        load_tariffs(s)


@pytest.mark.parametrize("groups, message", [
    # 60/60 from 0 then a second group from 45 s: a 50 s call would bill 0-60 and again 45-50
    ([(0, 60, 60), (45, 1, 1)], r"group_start 45 \(rate \d+\) does not fall on an increment boundary .* 60/60 from 0"),
    # 30/6 from 0: boundaries 30, 36, 42 ... 60 is one (30 + 5 x 6); 61 is not
    ([(0, 30, 6), (60, 1, 1), (61, 1, 1)], None),
    ([(0, 30, 6), (62, 1, 1)], r"group_start 62"),
    # a third group must sit on the second's next increment
    ([(0, 60, 60), (60, 10, 10), (95, 1, 1)], r"group_start 95 .* 10/10 from 60"),
])
def test_grouped_intervals_must_start_on_an_increment_boundary(wb, groups, message):
    with wb.db.transaction() as s:
        ids = seed(s)
        s.add_all([fr_rate(ids["deck"], group_start=start, first_increment=first, next_increment=nxt)
                   for start, first, nxt in groups])
    with wb.db.session() as s:
        if message is None:
            assert sorted(r["group_start"] for r in load_tariffs(s).rates.to_pylist()) == [0, 60, 61]
        else:
            with pytest.raises(TariffError, match=message):
                load_tariffs(s)
