"""Kernel v2: deck rounding (method and decimals), per-increment rounding, minimum charge, maximum cost."""

import pytest
from rating_builders import cdr, cdr_table, deck, identifier, identifier_table, rate, rate_rows, rate_table

IDS = identifier_table(identifier())


def priced(rates, decks=None, callee="+33145678901", **cdr_fields) -> dict:
    [row] = rate_rows(cdr_table(cdr(callee, **cdr_fields)), IDS, rate_table(*rates), decks=decks or [])
    return row


# 7 s in 1/1 at 0.123457/min: 7 x 0.123457 / 60 = 0.01440331666.. (unrounded_pico 14403316667)
@pytest.mark.parametrize("decimals, up, half_up, down", [
    (6, 14_404, 14_403, 14_403),
    (5, 14_410, 14_400, 14_400),          # 0.01441 / 0.01440 / 0.01440
    (4, 14_500, 14_400, 14_400),          # 0.0145 / 0.0144 / 0.0144
    (3, 15_000, 14_000, 14_000),
    (2, 20_000, 10_000, 10_000),
    (1, 100_000, 0, 0),                   # 0.1 / 0.0 / 0.0
    (0, 1_000_000, 0, 0),                 # 1 / 0 / 0
])
def test_deck_rounding_methods_at_every_decimal(decimals, up, half_up, down):
    got = {}
    for method in ("up", "half_up", "down"):
        row = priced([rate("33", 123_457, increments=(1, 1))], [deck(100, rounding=method, decimals=decimals)],
                     billsec_s=7)
        assert row["unrounded_pico"] == 14_403_316_667
        got[method] = row["price_micro"]
    assert got == {"up": up, "half_up": half_up, "down": down}


@pytest.mark.parametrize("method, expected", [("up", 13_000), ("half_up", 13_000), ("down", 12_000)])
def test_an_exact_half_at_the_last_decimal(method, expected):
    # one minute at 0.0125/min, rounded to 3 decimals: 0.0125 -> 0.013 (up, half up) / 0.012 (down)
    assert priced([rate("33", 12_500)], [deck(100, rounding=method, decimals=3)])["price_micro"] == expected


def test_the_connection_fee_is_rounded_with_the_total():
    # 0.0104 fee + 1 min at 0.0203 = 0.0307 -> 2 decimals half up: 0.03
    row = priced([rate("33", 20_300, connection_fee_micro=10_400)], [deck(100, decimals=2)])
    assert (row["price_micro"], row["unrounded_pico"]) == (30_000, 30_700_000_000)


# CGRateS tutorial RT_20CNT with the "cgrates" profile: each increment's cost is rounded to 5
# decimals half up, the total up to 4 decimals.
CGRATES_DECK = [deck(100, rounding="up", decimals=4, increment_rounding="half_up", increment_decimals=5)]
RT_20CNT = [rate("", 200_000, increments=(60, 60), connection_fee_micro=400_000),
            rate("", 100_000, increments=(0, 1), group_start=60)]


def test_per_increment_rounding_like_cgrates_tutorial_1001_to_1002():
    # 120 s: 0.4 + one 60 s increment at 0.2 + 60 one-second increments of round5(0.1 / 60 =
    # 0.0016666..) = 0.00167 each: 60 x 0.00167 = 0.1002 -> 0.7002 (unrounded 0.7)
    row = priced(RT_20CNT, CGRATES_DECK, callee="1002", billsec_s=120)
    assert (row["price_micro"], row["unrounded_pico"]) == (700_200, 700_000_000_000)


def test_per_increment_rounding_then_total_rounding():
    # 7 one-second increments at 0.123457/min: one costs 0.00205761.. -> round5 half up 0.00206;
    # 7 x 0.00206 = 0.01442 -> total *up* at 4 decimals = 0.0145
    row = priced([rate("33", 123_457, increments=(1, 1))], CGRATES_DECK, billsec_s=7)
    assert row["price_micro"] == 14_500
    # the same with a 30 s first increment: round5(30 x 0.123457 / 60 = 0.0617285) = 0.06173, then
    # nothing else (7 s < 30 s): 0.06173 -> up at 4 dp: 0.0618
    row = priced([rate("33", 123_457, increments=(30, 1))], CGRATES_DECK, billsec_s=7)
    assert row["price_micro"] == 61_800


def test_the_minimum_charge_applies_to_a_positive_price_below_it():
    rates = [rate("33", 10_000, min_charge_micro=50_000)]   # 0.01/min, at least 0.05
    assert (priced(rates, billsec_s=60)["price_micro"], priced(rates, billsec_s=60)["flags"]) == (50_000, "min_charge,no_cost")
    assert (priced(rates, billsec_s=360)["price_micro"], priced(rates, billsec_s=360)["flags"]) == (60_000, "no_cost")
    free_rate = [rate("33", 0, min_charge_micro=50_000)]
    assert (priced(free_rate)["price_micro"], priced(free_rate)["flags"]) == (0, "no_cost")   # 0 stays 0


@pytest.mark.parametrize("action, price, flags", [
    ("cap", 500_000, "max_cost_capped,no_cost"),             # charge the maximum
    ("disconnect", 1_200_000, "max_cost_exceeded,no_cost"),  # charge it all, flag for review
])
def test_the_maximum_cost(action, price, flags):
    # 1.20/min, max 0.50: one minute costs 1.20 > 0.50
    row = priced([rate("33", 1_200_000, max_cost_micro=500_000, max_cost_action=action)])
    assert (row["price_micro"], row["flags"], row["unrounded_pico"]) == (price, flags, 1_200_000_000_000)
    under = priced([rate("33", 400_000, max_cost_micro=500_000, max_cost_action=action)])
    assert (under["price_micro"], under["flags"]) == (400_000, "no_cost")


def test_min_and_max_come_from_the_first_increments_row():
    # group 0 has the min charge and max cost; group 1 (from 60 s) has other values that do not count
    rates = [rate("33", 60_000, min_charge_micro=0, max_cost_micro=100_000, max_cost_action="cap"),
             rate("33", 600_000, group_start=60, min_charge_micro=9_000_000)]
    row = priced(rates, billsec_s=90)    # 0.06 + 30 s x 0.6/60 (0.30) = 0.36 -> capped at 0.10
    assert (row["price_micro"], row["flags"]) == (100_000, "max_cost_capped,band_split,no_cost")
