"""Rates and service identifiers apply by the call's start time (UTC)."""

from rating_builders import cdr, cdr_table, identifier, identifier_table, rate, rate_rows, rate_table

# France at 0.0200/min from 2026-01-01, 0.0300/min from 2026-10-15; mobiles get their own
# prefix 336 at 0.1000/min from 2026-11-01 only. 60/60 increments and 60 s calls throughout.
DECK = rate_table(
    rate("33", 20_000, valid_from="2026-01-01"),
    rate("33", 30_000, valid_from="2026-10-15"),
    rate("336", 100_000, valid_from="2026-11-01"),
)


def test_the_newest_rate_version_not_after_the_call_applies(one_number):
    rows = rate_rows(cdr_table(
        cdr("+33145678901", start="2026-10-14 23:59:59"),
        cdr("+33145678901", start="2026-10-15 00:00:00"),
        cdr("+33145678901", start="2027-03-01 12:00"),
    ), one_number, DECK)
    assert [(r["rate_id"], r["price_micro"]) for r in rows] == [(1, 20_000), (2, 30_000), (2, 30_000)]


def test_a_prefix_does_not_exist_before_its_first_version():
    since_2025 = identifier_table(identifier(valid_from="2025-01-01"))
    rows = rate_rows(cdr_table(
        cdr("+33612345678", start="2026-10-31 23:59:59"),   # 336 not yet: France 33 v2
        cdr("+33612345678", start="2026-11-01 00:00:00"),   # 336
        cdr("+33612345678", start="2025-12-31 23:59:59"),   # before any version: unrated
    ), since_2025, DECK)
    assert [(r["prefix"], r["rate_id"], r["price_micro"], r["rating_status"]) for r in rows] == [
        ("33", 2, 30_000, "rated"),
        ("336", 3, 100_000, "rated"),
        (None, None, None, "unrated"),
    ]


def test_identifier_validity_is_half_open():
    # the number moved from service 1 (account 10) to service 2 (account 20) on 2026-07-01
    identifiers = identifier_table(
        identifier(service_id=1, account_id=10, valid_from="2026-01-01", valid_to="2026-07-01"),
        identifier(service_id=2, account_id=20, valid_from="2026-07-01"),
    )
    rows = rate_rows(cdr_table(
        cdr("+33145678901", start="2025-12-31 23:59:59"),
        cdr("+33145678901", start="2026-01-01 00:00:00"),
        cdr("+33145678901", start="2026-06-30 23:59:59"),
        cdr("+33145678901", start="2026-07-01 00:00:00"),
    ), identifiers, DECK)
    assert [(r["service_id"], r["account_id"], r["rating_status"]) for r in rows] == [
        (None, None, "unassigned"), (1, 10, "rated"), (1, 10, "rated"), (2, 20, "rated")]


def test_identifier_kinds_by_priority():
    identifiers = identifier_table(
        identifier("SIP/acme", kind="trunk", service_id=4, identifier_id=1),
        identifier("SIP/acme-paris", kind="trunk", service_id=5, identifier_id=2),
        identifier("+33140000000", kind="did", service_id=3, identifier_id=3),
        identifier("+33123456789", kind="number", service_id=2, identifier_id=4),
        identifier("ACME-42", kind="account_code", service_id=1, identifier_id=5),
        identifier("ACME-OLD", kind="account_code", service_id=6, valid_to="2026-02-01", identifier_id=6),
    )
    rows = rate_rows(cdr_table(
        # account code beats number and trunk
        cdr("+33145678901", account_code="ACME-42", channel="SIP/acme-paris-0001"),
        # number beats trunk
        cdr("+33145678901", channel="SIP/acme-paris-0002"),
        # the longest trunk prefix wins; an expired account code does not count
        cdr("+33145678901", caller="+33100000000", channel="SIP/acme-paris-0003", account_code="ACME-OLD"),
        cdr("+33145678901", caller="+33100000000", channel="SIP/acme-lyon-0004"),
        # inbound: the DID (callee), not the caller number
        cdr("+33140000000", caller="+33123456789", direction="in", channel="SIP/carrier-0005"),
        # nothing matches
        cdr("+33145678901", caller="+33100000000", channel="SIP/other-0006"),
    ), identifiers, DECK)
    assert [r["service_id"] for r in rows] == [1, 2, 5, 4, 3, None]
