"""Kernel v2: fallback decks, the any-destination prefix, unrated and unassigned reasons, version traces."""

from rating_builders import at, cdr, cdr_table, deck, identifier, identifier_table, rate, rate_rows, rate_table

IDS = identifier_table(identifier())
# plan PLAN (100) falls back to WHOLESALE (200), which falls back to ANY (300)
DECKS = [deck(100, code="PLAN", fallback=200), deck(200, code="WHOLESALE", fallback=300), deck(300, code="ANY")]
RATES = rate_table(
    rate("33", 20_000, deck_id=100, rate_id=1),                  # France, plan price
    rate("3361", 900_000, deck_id=200, rate_id=2),               # a longer prefix, but in a fallback deck
    rate("44", 30_000, deck_id=200, rate_id=3),                  # UK only in the fallback
    rate("", 500_000, deck_id=300, rate_id=4),                   # anything else, last resort
)


def test_an_earlier_deck_wins_even_with_a_shorter_prefix():
    rows = rate_rows(cdr_table(
        cdr("+33612345678"),      # 33 in PLAN beats 3361 in WHOLESALE
        cdr("+447911123456"),     # not in PLAN: WHOLESALE's 44
        cdr("+12125550100"),      # in neither: ANY's '' prefix
        cdr("3000"),              # not E.164: only '' matches
    ), IDS, RATES, decks=DECKS)
    assert [(r["rate_id"], r["rate_deck_id"], r["prefix"], r["price_micro"]) for r in rows] == [
        (1, 100, "33", 20_000), (3, 200, "44", 30_000), (4, 300, "", 500_000), (4, 300, "", 500_000)]


def test_no_rate_anywhere_is_unrated_with_the_chain_in_the_reason():
    rates = rate_table(rate("33", 20_000, deck_id=100), rate("44", 30_000, deck_id=200))
    rows = rate_rows(cdr_table(cdr("+12125550100"), cdr("3000", billsec_s=5)), IDS, rates, decks=DECKS)
    assert [(r["rating_status"], r["price_micro"], r["billable_units"], r["rate_id"]) for r in rows] == [
        ("unrated", None, None, None)] * 2
    assert rows[0]["rating_reason"] == "no rate for +12125550100 (voice) in deck PLAN, fallback WHOLESALE, fallback ANY"
    assert rows[1]["rating_reason"] == "no rate for 3000 (voice) in deck PLAN, fallback WHOLESALE, fallback ANY"


def test_unassigned_and_deckless_calls_say_why():
    identifiers = identifier_table(identifier(), identifier("+33999999999", service_id=7, rate_deck_id=None))
    rows = rate_rows(cdr_table(
        cdr("+33145678901", caller="+33100000000", account_code="X9", channel="SIP/x-1"),
        cdr("+33140000000", caller="+33612345678", direction="in", channel="SIP/carrier-2"),
        cdr("+33145678901", caller="+33999999999"),
        cdr("+33145678901"),
    ), identifiers, rate_table(rate("33", 20_000)))
    assert [r["rating_status"] for r in rows] == ["unassigned", "unassigned", "unrated", "rated"]
    assert rows[0]["rating_reason"] == "no service identifier matches caller +33100000000 / account code X9 / channel SIP/x-1"
    assert rows[1]["rating_reason"] == ("no service identifier matches callee +33140000000 / account code (none) / "
                                        "channel SIP/carrier-2")
    assert rows[2]["rating_reason"] == "service 7 has no rate deck"
    assert rows[3]["rating_reason"] == "" and rows[0]["price_micro"] is None


def test_version_traces_and_valid_to():
    # v1 from January, v2 from October ending 2026-11-01 (exclusive): after that, v1 is the newest in force
    rates = rate_table(rate("33", 20_000, rate_id=1, valid_from="2026-01-01"),
                       rate("33", 30_000, rate_id=2, valid_from="2026-10-01", valid_to="2026-11-01"))
    rows = rate_rows(cdr_table(cdr("+33145678901", start="2026-09-30 23:59:59"),
                               cdr("+33145678901", start="2026-10-31 23:59:59"),
                               cdr("+33145678901", start="2026-11-01 00:00:00")), IDS, rates)
    assert [(r["rate_id"], r["rate_valid_from"], r["price_micro"]) for r in rows] == [
        (1, at("2026-01-01"), 20_000), (2, at("2026-10-01"), 30_000), (1, at("2026-01-01"), 20_000)]
    assert {r["tariff_version"] for r in rows} != {None}


def test_a_fallback_deck_rounds_with_its_own_rules():
    # the fallback deck rounds up to 2 decimals: 1 min at 0.0123/min -> 0.02
    decks = [deck(100, code="PLAN", fallback=200), deck(200, code="FB", rounding="up", decimals=2)]
    rates = rate_table(rate("33", 20_000, deck_id=100), rate("44", 12_300, deck_id=200))
    [row] = rate_rows(cdr_table(cdr("+447911123456")), IDS, rates, decks=decks)
    assert (row["rate_deck_id"], row["price_micro"], row["unrounded_pico"]) == (200, 20_000, 12_300_000_000)


def test_no_identifier_at_all_leaves_every_cdr_unassigned():
    rows = rate_rows(cdr_table(cdr("+33145678901"), cdr("+33145678901", billsec_s=0)),
                     identifier_table(), rate_table(rate("33", 20_000)))
    assert [(r["rating_status"], r["service_id"], r["price_micro"]) for r in rows] == [("unassigned", None, None)] * 2
