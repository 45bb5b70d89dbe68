"""Longest-prefix matching of the callee against the service's deck."""

from rating_builders import cdr, cdr_table, identifier, identifier_table, rate, rate_rows, rate_table

from bluerocktel.lake import CDR_SCHEMA

# 60/60 increments, one minute calls: the price is the per-minute price.
DECK = rate_table(
    rate("33", 20_000, destination="France", zone="fr-fixed"),
    rate("336", 100_000, destination="France mobile", zone="fr-mobile"),
    rate("3361", 500_000, destination="France mobile premium", zone="fr-premium"),
    rate("44", 30_000, deck_id=200, destination="UK (another deck)"),
)


def test_the_longest_prefix_wins(one_number):
    rows = rate_rows(cdr_table(
        cdr("+33145678901"),   # 33
        cdr("+33698765432"),   # 336
        cdr("+33612345678"),   # 3361
    ), one_number, DECK)
    assert [(r["prefix"], r["destination"], r["zone"], r["rate_id"]) for r in rows] == [
        ("33", "France", "fr-fixed", 1),
        ("336", "France mobile", "fr-mobile", 2),
        ("3361", "France mobile premium", "fr-premium", 3),
    ]
    assert [r["price_micro"] for r in rows] == [20_000, 100_000, 500_000]
    assert [r["billable_s"] for r in rows] == [60, 60, 60]
    assert {r["rating_status"] for r in rows} == {"rated"}
    assert {(r["account_id"], r["service_id"], r["rate_deck_id"]) for r in rows} == {(10, 1, 100)}


def test_a_prefix_equal_to_the_whole_number_matches(one_number):
    deck = rate_table(rate("3", 1_000), rate("3361234", 7_000))
    rows = rate_rows(cdr_table(cdr("+3361234")), one_number, deck)
    assert (rows[0]["prefix"], rows[0]["price_micro"]) == ("3361234", 7_000)


def test_no_matching_prefix_is_unrated_never_free(one_number):
    rows = rate_rows(cdr_table(
        cdr("+4420794600000"),   # 44 exists, but only in deck 200: not the service's deck
        cdr("+12125550100"),     # no prefix at all
        cdr("3000"),             # not E.164: matches no rate, not even "3..."
    ), one_number, DECK)
    for row in rows:
        assert row["rating_status"] == "unrated"
        assert row["price_micro"] is None
        assert row["billable_s"] is None
        assert row["rate_id"] is None and row["prefix"] is None
        assert (row["account_id"], row["service_id"]) == (10, 1)


def test_every_cdr_column_is_kept_in_order(one_number):
    cdrs = cdr_table(cdr("+33145678901", start="2026-10-01 08:00"), cdr("+33612345678", start="2026-10-01 07:00"))
    rows = rate_rows(cdrs, one_number, DECK)
    for original, rated in zip(cdrs.to_pylist(), rows, strict=True):
        assert {k: rated[k] for k in original} == original
        assert rated["rated_at"].isoformat() == "2026-11-01T03:00:00+00:00"


def test_a_service_without_a_deck_leaves_its_calls_unrated():
    rows = rate_rows(cdr_table(cdr("+33145678901")), identifier_table(identifier(rate_deck_id=None)), DECK)
    assert (rows[0]["service_id"], rows[0]["rating_status"], rows[0]["price_micro"]) == (1, "unrated", None)


def test_an_empty_batch_gives_an_empty_rated_table(one_number):
    assert rate_rows(CDR_SCHEMA.empty_table(), one_number, DECK) == []


def test_long_prefixes_past_the_direct_table(one_number):
    # The kernel finds a number's prefix from a table of its first digits (4 to 6 of them), then
    # one table per further digit while a prefix boundary falls inside: prefixes of 2 to 11
    # digits, and numbers that stop short of a prefix or leave it after its last digit.
    deck = rate_table(rate("", 1_000), rate("33", 2_000), rate("336123", 6_000), rate("3361234", 7_000),
                      rate("336123456", 9_000), rate("33612345678", 11_000), rate("4", 1_000))
    numbers = {
        "+33612345678": "33612345678",   # the 11-digit prefix (binary search past 7 digits)
        "+33612345679": "336123456",     # leaves the 11-digit prefix at its last digit
        "+33612345": "3361234",          # stops short of the 9-digit prefix
        "+3361234": "3361234",           # the number is the 7-digit prefix
        "+3361235": "336123",            # the 7th digit leaves the 7-digit prefix
        "+336123": "336123",
        "+33612": "33",                  # stops short of the 6-digit prefix
        "+3399999999": "33",
        "+34": "",                       # only the any-destination prefix
        "+4999": "4",
        "+336123456x78": "336123456",    # digits up to the first non-digit
        "33612345678": "",               # not E.164: only the prefix ''
    }
    rows = rate_rows(cdr_table(*(cdr(number) for number in numbers)), one_number, deck)
    assert [row["prefix"] for row in rows] == list(numbers.values())
    assert [row["price_micro"] for row in rows] == [1_000 * max(len(p), 1) for p in numbers.values()]
