"""Kernel v2: time bands in the account's time zone, public holidays, DST, calls split at band boundaries."""

import json

from rating_builders import (
    band,
    cdr,
    cdr_table,
    deck,
    identifier,
    identifier_table,
    peak_offpeak_weekend,
    rate,
    rate_rows,
    rate_table,
)

PARIS = identifier_table(identifier(timezone="Europe/Paris"))
# 60/60 per minute: peak 0.10, off-peak 0.05, weekend (and French public holidays) 0.02
RATES = rate_table(rate("33", 100_000, band="peak", rate_id=1), rate("33", 50_000, band="offpeak", rate_id=2),
                   rate("33", 20_000, band="weekend", rate_id=3))
FR_DECK = [deck(100, holidays="FR")]


def rated(*cdrs, identifiers=PARIS, rates=RATES, decks=FR_DECK, bands=None) -> list[dict]:
    return rate_rows(cdr_table(*cdrs), identifiers, rates, decks=decks,
                     bands=peak_offpeak_weekend() if bands is None else bands)


def test_a_call_crossing_19h_paris_is_split_peak_then_offpeak():
    # Friday 2026-10-09, Paris = UTC+2: 19:00 local = 17:00 UTC. Started 16:57:00, answered 30 s
    # later, 300 s in 60/60: increments at 16:57:30, 16:58:30, 16:59:30 (peak), 17:00:30, 17:01:30
    # (off-peak) = 3 x 0.10 + 2 x 0.05 = 0.40
    [row] = rated(cdr("+33145678901", start="2026-10-09 16:57", ring_s=30, billsec_s=300))
    assert (row["billable_units"], row["price_micro"], row["unrounded_pico"]) == (300, 400_000, 400_000_000_000)
    assert row["band"] == "peak+offpeak"
    assert json.loads(row["segments"]) == [
        {"band": "peak", "rate_id": 1, "group_start": 0, "increments": 3, "units": 180, "amount_pico": 300_000_000_000},
        {"band": "offpeak", "rate_id": 2, "group_start": 0, "increments": 2, "units": 120, "amount_pico": 100_000_000_000}]
    assert row["flags"] == "band_split,no_cost" and row["rate_id"] == 1
    assert sum(s["units"] for s in json.loads(row["segments"])) == row["billable_units"]


def test_the_start_instant_is_the_answer_time_not_the_set_up_time():
    # set up at 16:59:50 UTC (18:59:50 Paris, peak) but answered at 17:00:10: off-peak throughout
    [row] = rated(cdr("+33145678901", start="2026-10-09 16:59:50", ring_s=20, billsec_s=60))
    assert (row["band"], row["price_micro"], row["segments"]) == ("offpeak", 50_000, None)


def test_weekend_and_the_night_into_saturday():
    rows = rated(
        cdr("+33145678901", start="2026-10-10 10:00", billsec_s=60),    # Saturday noon: weekend, 0.02
        # Friday 23:59 Paris (21:59 UTC), 120 s: one off-peak minute, then Saturday 00:00: weekend
        cdr("+33145678901", start="2026-10-09 21:59", billsec_s=120),   # 0.05 + 0.02 = 0.07
        cdr("+33145678901", start="2026-10-12 06:00", billsec_s=60),    # Monday 08:00 Paris: peak, 0.10
        cdr("+33145678901", start="2026-10-12 05:59:59", billsec_s=60),  # Monday 07:59:59: off-peak, 0.05
    )
    assert [(r["band"], r["price_micro"]) for r in rows] == [
        ("weekend", 20_000), ("offpeak+weekend", 70_000), ("peak", 100_000), ("offpeak", 50_000)]


def test_a_french_public_holiday_is_priced_as_the_weekend():
    rows = rated(cdr("+33145678901", start="2026-07-14 10:00", billsec_s=60),   # Tuesday 14 July, noon Paris
                 cdr("+33145678901", start="2026-07-15 10:00", billsec_s=60))   # Wednesday: peak
    assert [(r["band"], r["price_micro"]) for r in rows] == [("weekend", 20_000), ("peak", 100_000)]
    # a deck without a holiday calendar knows no holiday: 14 July is a Tuesday like another
    [row] = rated(cdr("+33145678901", start="2026-07-14 10:00", billsec_s=60), decks=[deck(100)])
    assert (row["band"], row["price_micro"]) == ("peak", 100_000)


def test_bands_follow_the_account_time_zone():
    # 16:30 UTC on a Wednesday is 18:30 in Paris (peak) but 12:30 in New York... and 01:30 next
    # day in Tokyo (off-peak)
    identifiers = identifier_table(identifier("+33100000001", service_id=1, timezone="Europe/Paris"),
                                   identifier("+33100000002", service_id=2, timezone="Asia/Tokyo"))
    rows = rated(cdr("+33145678901", caller="+33100000001", start="2026-10-14 16:30", billsec_s=60),
                 cdr("+33145678901", caller="+33100000002", start="2026-10-14 16:30", billsec_s=60),
                 identifiers=identifiers)
    assert [(r["service_id"], r["band"], r["price_micro"]) for r in rows] == [(1, "peak", 100_000), (2, "offpeak", 50_000)]


# night 00:00-06:00 at 0.01/min and day 06:00-24:00 at 0.03/min, every day
NIGHT_DAY = [band("night", "mon,tue,wed,thu,fri,sat,sun", "00:00", "06:00", priority=1),
             band("day", "mon,tue,wed,thu,fri,sat,sun", "06:00", "24:00")]
NIGHT_DAY_RATES = rate_table(rate("33", 10_000, band="night", rate_id=1), rate("33", 30_000, band="day", rate_id=2))


def test_the_autumn_dst_night_switches_at_06h_local_winter_time():
    # 2026-10-25: Paris goes from UTC+2 to UTC+1 at 01:00 UTC, so 06:00 local is 05:00 UTC.
    # Answered 04:30 UTC (05:30 local), 3600 s in 60/60: 30 night minutes + 30 day minutes
    # = 30 x 0.01 + 30 x 0.03 = 1.20 (with the summer offset the split would be at 04:00 UTC: 1.80)
    [row] = rated(cdr("+33145678901", start="2026-10-25 04:30", billsec_s=3600), rates=NIGHT_DAY_RATES,
                  bands=NIGHT_DAY)
    assert row["price_micro"] == 1_200_000 and row["band"] == "night+day"
    assert [(s["band"], s["units"]) for s in json.loads(row["segments"])] == [("night", 1800), ("day", 1800)]


def test_a_boundary_in_the_skipped_spring_hour_takes_effect_at_the_jump():
    # 2026-03-29: Paris jumps from 02:00 (UTC+1) to 03:00 (UTC+2) at 01:00 UTC; a band boundary at
    # 02:30 local never happens, so the band changes at the jump. Answered 00:50 UTC (01:50 local),
    # 1200 s in 60/60: 10 minutes early (0.01) + 10 minutes late (0.03) = 0.40
    bands = [band("early", "sun", "00:00", "02:30", priority=1), band("late", "sun", "02:30", "24:00")]
    rates = rate_table(rate("33", 10_000, band="early", rate_id=1), rate("33", 30_000, band="late", rate_id=2))
    [row] = rated(cdr("+33145678901", start="2026-03-29 00:50", billsec_s=1200), rates=rates, bands=bands)
    assert (row["price_micro"], row["band"]) == (400_000, "early+late")
    assert [s["units"] for s in json.loads(row["segments"])] == [600, 600]


def test_the_all_time_rows_price_a_band_the_destination_has_no_rows_for():
    # only a peak price and an all-time price: off-peak and weekend calls use the all-time row
    rates = rate_table(rate("33", 100_000, band="peak", rate_id=1), rate("33", 40_000, rate_id=2))
    rows = rated(cdr("+33145678901", start="2026-10-09 10:00", billsec_s=60),     # peak
                 cdr("+33145678901", start="2026-10-10 10:00", billsec_s=60),     # weekend -> all-time
                 cdr("+33145678901", start="2026-10-09 16:59", billsec_s=120),    # peak then all-time
                 rates=rates)
    assert [(r["band"], r["rate_id"], r["price_micro"]) for r in rows] == [
        ("peak", 1, 100_000), ("", 2, 40_000), ("peak+", 1, 140_000)]


def test_a_band_without_rows_and_without_all_time_rows_is_unrated():
    rates = rate_table(rate("33", 100_000, band="peak"))
    rows = rated(cdr("+33145678901", start="2026-10-10 10:00", billsec_s=60),     # weekend: no row
                 cdr("+33145678901", start="2026-10-09 16:59", billsec_s=120),    # peak, then off-peak: no row
                 cdr("+33145678901", start="2026-10-09 10:00", billsec_s=60),     # peak: rated
                 rates=rates)
    assert [(r["rating_status"], r["price_micro"]) for r in rows] == [
        ("unrated", None), ("unrated", None), ("rated", 100_000)]
    assert rows[0]["rating_reason"].startswith("no rate for band weekend")
    assert rows[1]["rating_reason"].startswith("no rate for band offpeak")


def test_sms_and_data_are_priced_at_the_band_of_their_instant():
    rates = rate_table(rate("33", 100_000, call_type="sms", band="peak", unit_size=1, increments=(1, 1)),
                       rate("33", 50_000, call_type="sms", band="offpeak", unit_size=1, increments=(1, 1)))
    rows = rated(cdr("+33145678901", start="2026-10-09 16:59:59", call_type="sms", units=2),   # 18:59:59 Paris
                 cdr("+33145678901", start="2026-10-09 17:00:00", call_type="sms", units=2),
                 rates=rates)
    assert [(r["band"], r["price_micro"], r["segments"]) for r in rows] == [
        ("peak", 200_000, None), ("offpeak", 100_000, None)]


def test_a_deck_without_bands_prices_every_band_row_as_absent():
    # rows with a band name but no TimeBand definitions: the band is always '' -> the '' rows
    rates = rate_table(rate("33", 100_000, band="peak"), rate("33", 40_000, rate_id=7))
    [row] = rated(cdr("+33145678901", start="2026-10-09 10:00", billsec_s=60), rates=rates, bands=[])
    assert (row["band"], row["rate_id"], row["price_micro"]) == ("", 7, 40_000)
