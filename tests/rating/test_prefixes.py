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
