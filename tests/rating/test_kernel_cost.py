"""Kernel v2: the buy side (carrier trunk -> buy deck), cost, margin, negative_margin and no_cost."""

from rating_builders import (
    cdr,
    cdr_table,
    deck,
    identifier,
    identifier_table,
    peak_offpeak_weekend,
    rate,
    rate_rows,
    rate_table,
    trunk,
)

IDS = identifier_table(identifier(timezone="Europe/Paris"))
DECKS = [deck(100, code="SELL"), deck(900, code="CARRIER-A", kind="buy", rounding="up", decimals=4),
         deck(901, code="CARRIER-B", kind="buy")]
RATES = rate_table(
    rate("33", 20_000, deck_id=100, rate_id=1),                        # sell: 0.02/min, 60/60
    rate("336", 100_000, deck_id=100, rate_id=2),                      # sell: mobiles 0.10/min
    rate("33", 6_000, deck_id=900, increments=(1, 1), rate_id=11),     # carrier A: 0.006/min per second
    rate("336", 150_000, deck_id=900, increments=(1, 1), rate_id=12),  # carrier A mobiles: 0.15/min (above our price)
    rate("33", 9_000, deck_id=901, rate_id=21),                        # carrier B
)
TRUNKS = [trunk("SIP/carrierA", 900), trunk("SIP/carrierA-premium", 901), trunk("SIP/old", 901, valid_to="2026-06-01")]


def test_cost_and_margin_from_the_longest_trunk_prefix():
    rows = rate_rows(cdr_table(
        # 90 s: sell 120 s x 0.02/60 = 0.04; carrier A 90 s x 0.006/60 = 0.009 -> up 4 dp 0.009
        cdr("+33145678901", billsec_s=90, dst_channel="SIP/carrierA-0001"),
        # the longer trunk prefix SIP/carrierA-premium wins: carrier B, 60/60: 2 min x 0.009 = 0.018
        cdr("+33145678901", billsec_s=90, dst_channel="SIP/carrierA-premium-0002"),
    ), IDS, RATES, decks=DECKS, trunks=TRUNKS)
    assert [(r["price_micro"], r["cost_micro"], r["margin_micro"], r["cost_deck_id"], r["cost_rate_id"], r["flags"])
            for r in rows] == [(40_000, 9_000, 31_000, 900, 11, ""), (40_000, 18_000, 22_000, 901, 21, "")]


def test_a_call_costing_more_than_its_price_is_flagged():
    # sell 60 s x 0.10/60 = 0.10; buy 59 s x 0.15/60 = 0.1475: margin -0.0475
    [row] = rate_rows(cdr_table(cdr("+33612345678", billsec_s=59, dst_channel="SIP/carrierA-3")),
                      IDS, RATES, decks=DECKS, trunks=TRUNKS)
    assert (row["price_micro"], row["cost_micro"], row["margin_micro"], row["flags"]) == (
        100_000, 147_500, -47_500, "negative_margin")


def test_no_trunk_no_buy_rate_or_an_expired_trunk_gives_no_cost():
    rows = rate_rows(cdr_table(
        cdr("+33145678901", dst_channel="SIP/unknown-1"),                                   # no trunk
        cdr("+447911123456", dst_channel="SIP/carrierA-2"),                                  # unrated, no buy rate
        cdr("+33145678901", dst_channel="SIP/old-3", start="2026-07-01 10:00"),             # trunk expired
        cdr("+33145678901", dst_channel="SIP/unknown-4", billsec_s=0),                      # free: no flag
    ), IDS, RATES, decks=DECKS, trunks=TRUNKS)
    assert [(r["rating_status"], r["cost_micro"], r["margin_micro"], r["flags"]) for r in rows] == [
        ("rated", None, None, "no_cost"), ("unrated", None, None, "no_cost"), ("rated", None, None, "no_cost"),
        ("free", None, None, "")]


def test_the_buy_side_has_its_own_bands_in_the_account_zone():
    # carrier B is cheaper at night (off-peak); a call crossing 19:00 Paris is split on the buy side too
    rates = rate_table(rate("33", 20_000, deck_id=100),
                       rate("33", 12_000, deck_id=901, band="peak"), rate("33", 6_000, deck_id=901, band="offpeak"))
    [row] = rate_rows(cdr_table(cdr("+33145678901", start="2026-10-09 16:59", billsec_s=120,
                                    dst_channel="SIP/carrierA-premium-9")),
                      IDS, rates, decks=DECKS, trunks=TRUNKS, bands=peak_offpeak_weekend(901))
    # sell (no bands): 2 x 0.02 = 0.04; buy: 1 peak minute 0.012 + 1 off-peak 0.006 = 0.018
    assert (row["price_micro"], row["cost_micro"], row["margin_micro"]) == (40_000, 18_000, 22_000)
    assert (row["band"], row["segments"], row["flags"]) == ("", None, "")   # traces describe the sell side
