"""The rating API on the real app: a rated CDR's trace and history, a month's rated CDRs, the
unrated queue, anomalies; the role matrix and customer scoping.

The lake's ``rated`` rows are written directly (RATED_SCHEMA), not by the kernel, so these
tests pin what the API shows of a trace whatever the kernel computes. Every test runs on
SQLite and on PostgreSQL (the ``wb`` fixture behind ``client``).
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from bluerocktel import lake
from bluerocktel.db.models import Account, Brand, RateDeck, User
from bluerocktel.security import create_api_token

PROBLEM = "application/problem+json"
UTC = dt.timezone.utc
RATED_AT = dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def rated_row(cdr_id: str, start: dt.datetime, **fields) -> dict:
    """A rated CDR row: an answered outgoing voice call of 150 s from +33472000001, rated;
    ``fields`` override any column."""
    row = {"cdr_id": cdr_id, "source": "pbx-paris", "source_file": "Master.csv", "source_line": 7,
           "start_at": start, "answer_at": start + dt.timedelta(seconds=4),
           "end_at": start + dt.timedelta(seconds=154), "duration_s": 154, "billsec_s": 150,
           "caller": "+33472000001", "callee": "+33612345678", "account_code": "", "channel": "PJSIP/201",
           "dst_channel": "PJSIP/carrier-a", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
           "units": 0, "unique_id": f"u-{cdr_id}", "rating_status": "rated", "rating_reason": "",
           "flags": "", "tariff_version": "bbbbbbbbbbbbbbbb", "rated_at": RATED_AT}
    row.update(fields)
    return row


def write_rated(wb, month: str, rows: list[dict]) -> None:
    lake.write_partition(wb.lake_dir, "rated", month, pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))


# A call answered at 19:59:04 Paris time (17:59:04 UTC) for 150 s on deck FR-RETAIL
# (connection fee 0.05; peak 0.12/min until 20:00, off-peak 0.06/min; 60/60 increments):
#   increment 1 starts 19:59:04 (peak):      0.12 × 60/60 = 0.12
#   increments 2 and 3 start 20:00:04, 20:01:04 (off-peak): 2 × 0.06 × 60/60 = 0.12
#   amount = 0.05 + 0.12 + 0.12 = 0.29 (exact: 290_000_000_000 pico); price 0.290000
# Cost on CARRIER-A, 0.015/min × 3 min = 0.045; margin 0.29 - 0.045 = 0.245.
SEGMENTS = [{"band": "peak", "rate_id": 11, "group_start": 0, "increments": 1, "units": 60,
             "amount_pico": 120_000_000_000},
            {"band": "offpeak", "rate_id": 12, "group_start": 0, "increments": 2, "units": 120,
             "amount_pico": 120_000_000_000}]


@pytest.fixture
def operator(wb):
    """Two accounts (Martin, Durand), a sell and a buy deck, a user per role with a token, and
    the lake: October 2026 (split call rated twice, an unrated, an unassigned, a free call, a
    Durand call at a loss) and one September call."""
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock Telecom", legal_name="BlueRock Telecom SAS")
        s.add(brand)
        s.flush()
        martin = Account(number="C0001", brand_id=brand.id, name="Boulangerie Martin")
        durand = Account(number="C0002", brand_id=brand.id, name="Cabinet Durand")
        sell = RateDeck(code="FR-RETAIL", name="France retail", kind="sell", currency="EUR")
        buy = RateDeck(code="CARRIER-A", name="Carrier A", kind="buy", currency="EUR")
        s.add_all([martin, durand, sell, buy])
        s.flush()
        roles = {"admin": ("admin", None), "billing": ("billing", None), "support": ("support", None),
                 "read_only": ("read_only", None), "sales": ("sales", None),
                 "alice": ("customer", martin.id), "bob": ("customer", durand.id)}
        users = {key: User(email=f"{key}@bluerock.example", name=key, password_hash="!", role=role,
                           account_id=account) for key, (role, account) in roles.items()}
        s.add_all(users.values())
        s.flush()
        tokens = {key: create_api_token(s, user, "test") for key, user in users.items()}
        ids = {"martin": martin.id, "durand": durand.id, "sell": sell.id, "buy": buy.id}

    oct_ = dt.datetime(2026, 10, 5, 17, 59, 0, tzinfo=UTC)
    priced = dict(account_id=ids["martin"], service_id=5, rate_deck_id=ids["sell"], rate_id=11,
                  rate_valid_from=dt.datetime(2026, 1, 1, tzinfo=UTC), prefix="336", destination="France Mobile",
                  zone="fr_mobile", first_increment=60, next_increment=60, billable_s=180, billable_units=180)
    split = rated_row("c-split", oct_, **priced, band="peak+offpeak", segments=json.dumps(SEGMENTS),
                      unrounded_pico=290_000_000_000, price_micro=290_000, cost_deck_id=ids["buy"],
                      cost_rate_id=901, cost_micro=45_000, margin_micro=245_000, flags="band_split")
    earlier = rated_row("c-split", oct_, **priced, band="peak", unrounded_pico=410_000_000_000, price_micro=410_000,
                        tariff_version="aaaaaaaaaaaaaaaa", rated_at=RATED_AT - dt.timedelta(days=20))
    unrated = rated_row("c-unrated", oct_ + dt.timedelta(hours=1), account_id=ids["martin"], service_id=5,
                        callee="+88216000001", rating_status="unrated",
                        rating_reason="no rate for +88216000001 (voice) in deck FR-RETAIL")
    unassigned = rated_row("c-unassigned", oct_ + dt.timedelta(hours=2), caller="+33399999999",
                           rating_status="unassigned",
                           rating_reason="no service identifier matches caller +33399999999")
    free = rated_row("c-free", oct_ + dt.timedelta(hours=3), account_id=ids["martin"], service_id=5,
                     disposition="NO ANSWER", billsec_s=0, rating_status="free", price_micro=0, billable_s=0,
                     billable_units=0)
    loss = rated_row("c-durand", oct_ + dt.timedelta(hours=4), **{**priced, "account_id": ids["durand"]},
                     band="", unrounded_pico=12_000_000_000, price_micro=12_000, cost_deck_id=ids["buy"],
                     cost_rate_id=902, cost_micro=30_000, margin_micro=-18_000, flags="negative_margin")
    write_rated(wb, "2026-10", [earlier, unrated, unassigned])
    write_rated(wb, "2026-10", [split, free, loss])
    write_rated(wb, "2026-09", [rated_row("c-sept", dt.datetime(2026, 9, 30, 8, 0, tzinfo=UTC), **priced,
                                          band="", price_micro=120_000)])
    return {"tokens": tokens, **ids}


# --- GET /rated-cdrs/{cdr_id} --------------------------------------------------------------------

def test_a_customer_does_not_see_the_earlier_rating_of_another_account(client, operator, wb):
    """A re-rating moved c-durand from Martin to Durand: Durand's user gets the trace without
    Martin's earlier price; staff see the whole history."""
    moved_from = rated_row("c-durand", dt.datetime(2026, 10, 5, 21, 59, tzinfo=UTC), account_id=operator["martin"],
                           service_id=5, price_micro=99_000, rated_at=RATED_AT - dt.timedelta(days=3))
    write_rated(wb, "2026-10", [moved_from])
    tokens = operator["tokens"]
    mine = client.get("/api/v1/rated-cdrs/c-durand", headers=bearer(tokens["bob"])).json()
    assert (mine["price"], mine["history"]) == ("0.012000", [])
    staff = client.get("/api/v1/rated-cdrs/c-durand", headers=bearer(tokens["read_only"])).json()
    assert [h["price"] for h in staff["history"]] == ["0.099000"]



def test_trace_of_a_band_split_call_with_cost_margin_and_history(client, operator):
    r = client.get("/api/v1/rated-cdrs/c-split", headers=bearer(operator["tokens"]["billing"]))
    assert r.status_code == 200, r.text
    t = r.json()
    assert (t["prefix"], t["destination"], t["zone"]) == ("336", "France Mobile", "fr_mobile")
    assert (t["rate_deck_id"], t["rate_deck_code"], t["currency"], t["rate_id"]) == (
        operator["sell"], "FR-RETAIL", "EUR", 11)
    assert t["rate_valid_from"] == "2026-01-01T00:00:00Z"
    assert (t["tariff_version"], t["band"], t["bands"]) == ("bbbbbbbbbbbbbbbb", "peak+offpeak", ["peak", "offpeak"])
    assert (t["first_increment"], t["next_increment"], t["billable_s"], t["billable_units"]) == (60, 60, 180, 180)
    # 0.05 + 0.12 + 0.12 = 0.29; cost 0.045; margin 0.245 (exact decimal strings, never floats)
    assert (t["amount_precise"], t["price"], t["cost"], t["margin"]) == (
        "0.290000000000", "0.290000", "0.045000", "0.245000")
    assert (t["cost_deck_code"], t["cost_rate_id"], t["dst_channel"]) == ("CARRIER-A", 901, "PJSIP/carrier-a")
    assert t["flags"] == ["band_split"] and t["rating_status"] == "rated" and t["rating_reason"] == ""
    assert [(s["band"], s["rate_id"], s["increments"], s["units"], s["amount_precise"]) for s in t["segments"]] == [
        ("peak", 11, 1, 60, "0.120000000000"), ("offpeak", 12, 2, 120, "0.120000000000")]
    # the first rating (20 days earlier, another tariff version) is history
    assert t["history"] == [{"rated_at": "2026-10-12T03:00:00Z", "rating_status": "rated", "price": "0.410000",
                             "tariff_version": "aaaaaaaaaaaaaaaa"}]


def test_trace_of_an_unrated_call_has_its_reason_and_no_price(client, operator):
    t = client.get("/api/v1/rated-cdrs/c-unrated", headers=bearer(operator["tokens"]["support"])).json()
    assert (t["rating_status"], t["price"], t["segments"], t["bands"], t["rate_deck_code"]) == (
        "unrated", None, None, [], None)
    assert t["rating_reason"] == "no rate for +88216000001 (voice) in deck FR-RETAIL"


def test_unknown_cdr_is_a_404_problem(client, operator):
    r = client.get("/api/v1/rated-cdrs/no-such-cdr", headers=bearer(operator["tokens"]["admin"]))
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"] == "no rated CDR 'no-such-cdr'"


def test_the_calls_month_narrows_the_trace_lookup(client, operator):
    token = bearer(operator["tokens"]["admin"])
    r = client.get("/api/v1/rated-cdrs/c-split?month=2026-10", headers=token)
    assert r.status_code == 200 and r.json()["price"] == "0.290000"
    assert client.get("/api/v1/rated-cdrs/c-split?month=2026-09", headers=token).status_code == 404
    r = client.get("/api/v1/rated-cdrs/c-split?month=2026-1", headers=token)
    assert r.status_code == 400 and r.json()["detail"] == "not a month: '2026-1' (expected YYYY-MM)"


def test_customer_sees_its_own_trace_without_the_buy_side_and_not_another_accounts(client, operator):
    tokens = operator["tokens"]
    t = client.get("/api/v1/rated-cdrs/c-split", headers=bearer(tokens["alice"])).json()
    assert (t["price"], t["segments"][1]["band"], t["flags"]) == ("0.290000", "offpeak", ["band_split"])
    assert (t["cost"], t["margin"], t["cost_deck_id"], t["cost_deck_code"], t["cost_rate_id"], t["dst_channel"]) == (
        None, None, None, None, None, None)
    # Durand's loss-making call: 404 for Martin's user; Durand's user sees it without negative_margin
    r = client.get("/api/v1/rated-cdrs/c-durand", headers=bearer(tokens["alice"]))
    assert r.status_code == 404 and r.json()["detail"] == "no rated CDR 'c-durand'"
    mine = client.get("/api/v1/rated-cdrs/c-durand", headers=bearer(tokens["bob"])).json()
    assert (mine["price"], mine["flags"], mine["margin"]) == ("0.012000", [], None)
    staff = client.get("/api/v1/rated-cdrs/c-durand", headers=bearer(tokens["read_only"])).json()
    assert (staff["margin"], staff["flags"]) == ("-0.018000", ["negative_margin"])
    # a CDR nobody pays for is nobody's
    assert client.get("/api/v1/rated-cdrs/c-unassigned", headers=bearer(tokens["alice"])).status_code == 404


# --- GET /rated-cdrs -----------------------------------------------------------------------------

def test_month_list_shows_the_latest_rating_of_each_cdr_newest_first(client, operator):
    r = client.get("/api/v1/rated-cdrs?month=2026-10", headers=bearer(operator["tokens"]["admin"]))
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["month"], page["offset"], page["limit"], page["next_offset"]) == ("2026-10", 0, 50, None)
    assert [(i["cdr_id"], i["rating_status"], i["price"]) for i in page["items"]] == [
        ("c-durand", "rated", "0.012000"), ("c-free", "free", "0.000000"), ("c-unassigned", "unassigned", None),
        ("c-unrated", "unrated", None), ("c-split", "rated", "0.290000")]    # c-split once: its latest rating
    split = page["items"][-1]
    assert (split["band"], split["cost"], split["margin"], split["flags"]) == (
        "peak+offpeak", "0.045000", "0.245000", ["band_split"])


def test_month_list_filters_and_pages(client, operator):
    token = bearer(operator["tokens"]["admin"])
    page = client.get(f"/api/v1/rated-cdrs?month=2026-10&account={operator['martin']}&status=rated",
                      headers=token).json()
    assert [i["cdr_id"] for i in page["items"]] == ["c-split"] and page["next_offset"] is None
    page = client.get("/api/v1/rated-cdrs?month=2026-10&limit=2&offset=2", headers=token).json()
    assert [i["cdr_id"] for i in page["items"]] == ["c-unassigned", "c-unrated"] and page["next_offset"] == 4
    page = client.get("/api/v1/rated-cdrs?month=2026-10&limit=2&offset=4", headers=token).json()
    assert [i["cdr_id"] for i in page["items"]] == ["c-split"] and page["next_offset"] is None
    page = client.get("/api/v1/rated-cdrs?month=2026-09", headers=token).json()
    assert [i["cdr_id"] for i in page["items"]] == ["c-sept"]
    assert client.get("/api/v1/rated-cdrs?month=2025-01", headers=token).json()["items"] == []


def test_a_page_skips_cdrs_whose_latest_rating_no_longer_matches(wb, client, operator):
    """d6..d4 were rated, then re-rated unrated: the newest 'rated' ratings are stale, so the
    page of status=rated must look past them to d3..d1 (the candidate window grows)."""
    start = dt.datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    rows = []
    for n in range(1, 7):
        at = start + dt.timedelta(hours=n)
        rows.append(rated_row(f"d{n}", at, account_id=operator["martin"], price_micro=1000 * n,
                              rated_at=RATED_AT + dt.timedelta(days=31)))
        if n >= 4:
            rows.append(rated_row(f"d{n}", at, account_id=operator["martin"], rating_status="unrated",
                                  rating_reason="no rate for +33612345678 (voice) in deck FR-RETAIL",
                                  rated_at=RATED_AT + dt.timedelta(days=40)))
    write_rated(wb, "2026-12", rows)
    token = bearer(operator["tokens"]["admin"])
    page = client.get("/api/v1/rated-cdrs?month=2026-12&status=rated&limit=2", headers=token).json()
    assert ([i["cdr_id"] for i in page["items"]], page["next_offset"]) == (["d3", "d2"], 2)
    page = client.get("/api/v1/rated-cdrs?month=2026-12&status=rated&limit=2&offset=2", headers=token).json()
    assert ([i["cdr_id"] for i in page["items"]], page["next_offset"]) == (["d1"], None)
    page = client.get("/api/v1/rated-cdrs?month=2026-12&status=unrated", headers=token).json()
    assert [i["cdr_id"] for i in page["items"]] == ["d6", "d5", "d4"]


def test_pages_equal_a_plain_python_reading_of_the_lake(tmp_path):
    """Random ratings (re-ratings changing account and status): every page of every filter is
    the Python answer: latest rating per CDR, filtered, newest call first."""
    import random

    from bluerocktel.rating.queries import rated_cdrs

    rng = random.Random(4)
    rows = []
    for n in range(60):
        start = dt.datetime(2026, 10, 1, tzinfo=UTC) + dt.timedelta(minutes=rng.randrange(0, 300))
        for k in range(rng.choice([1, 1, 2, 3])):
            rows.append(rated_row(f"r{n:02d}", start, account_id=rng.choice([1, 2, None]),
                                  rating_status=rng.choice(["rated", "unrated", "free"]),
                                  rated_at=RATED_AT + dt.timedelta(hours=rng.randrange(0, 1000))))
    rng.shuffle(rows)
    for part in range(3):
        lake.write_partition(tmp_path, "rated", "2026-10", pa.Table.from_pylist(rows[part::3],
                                                                                  schema=lake.RATED_SCHEMA))
    latest = {}
    for row in rows:
        if row["cdr_id"] not in latest or row["rated_at"] > latest[row["cdr_id"]]["rated_at"]:
            latest[row["cdr_id"]] = row
    ordered = sorted(latest.values(), key=lambda r: (-r["start_at"].timestamp(), r["cdr_id"]))
    for account in (None, 1, 2):
        for status in (None, "rated", "unrated"):
            expected = [r["cdr_id"] for r in ordered if (account is None or r["account_id"] == account)
                        and (status is None or r["rating_status"] == status)]
            for limit in (4, 100):
                got, offset = [], 0
                while True:
                    page = rated_cdrs(tmp_path, month="2026-10", account_id=account, status=status, limit=limit,
                                      offset=offset)
                    got += [r["cdr_id"] for r in page.rows]
                    assert len(page.rows) == limit or not page.has_more
                    if not page.has_more:
                        break
                    offset += limit
                assert got == expected, (account, status, limit)


BAD_LIST_QUERIES = [
    ("month=2026-13", 400, "not a month: '2026-13' (expected YYYY-MM)"),
    ("month=october", 400, "not a month: 'october' (expected YYYY-MM)"),
    ("month=2026-10&status=billed", 400, "unknown rating status 'billed'; known: rated, unrated, unassigned, free"),
    ("month=2026-10&limit=0", 422, "the request parameters are invalid"),
    ("", 422, "the request parameters are invalid"),
]


def test_bad_list_parameters_are_problems(client, operator):
    for query, status, detail in BAD_LIST_QUERIES:
        r = client.get(f"/api/v1/rated-cdrs?{query}", headers=bearer(operator["tokens"]["admin"]))
        assert r.status_code == status and r.headers["content-type"] == PROBLEM, query
        assert r.json()["detail"] == detail


def test_customer_lists_only_its_own_calls_without_costs(client, operator):
    tokens = operator["tokens"]
    page = client.get("/api/v1/rated-cdrs?month=2026-10", headers=bearer(tokens["alice"])).json()
    assert [i["cdr_id"] for i in page["items"]] == ["c-free", "c-unrated", "c-split"]
    assert {(i["cost"], i["margin"]) for i in page["items"]} == {(None, None)}
    # asking for another account gives nothing, not that account's calls
    other = client.get(f"/api/v1/rated-cdrs?month=2026-10&account={operator['durand']}",
                       headers=bearer(tokens["alice"])).json()
    assert (other["items"], other["next_offset"]) == ([], None)
    bob = client.get("/api/v1/rated-cdrs?month=2026-10", headers=bearer(tokens["bob"])).json()
    assert [(i["cdr_id"], i["flags"]) for i in bob["items"]] == [("c-durand", [])]


# --- GET /rating/unrated -------------------------------------------------------------------------

def test_unrated_queue_counts_by_reason_and_pages_oldest_first(wb, client, operator):
    token = bearer(operator["tokens"]["support"])
    r = client.get("/api/v1/rating/unrated", headers=token)
    assert r.status_code == 200, r.text
    queue = r.json()
    assert [(c["status"], c["reason"], c["calls"]) for c in queue["counts"]] == [
        ("unassigned", "no service identifier matches caller +33399999999", 1),
        ("unrated", "no rate for +88216000001 (voice) in deck FR-RETAIL", 1)]
    assert queue["total"] == 2 and queue["next_offset"] is None
    assert [(i["cdr_id"], i["status"], i["account_id"], i["source_file"], i["source_line"])
            for i in queue["items"]] == [
        ("c-unrated", "unrated", operator["martin"], "Master.csv", 7),
        ("c-unassigned", "unassigned", None, "Master.csv", 7)]
    first = client.get("/api/v1/rating/unrated?limit=1", headers=token).json()
    assert ([i["cdr_id"] for i in first["items"]], first["next_offset"]) == (["c-unrated"], 1)
    second = client.get("/api/v1/rating/unrated?limit=1&offset=1", headers=token).json()
    assert ([i["cdr_id"] for i in second["items"]], second["next_offset"]) == (["c-unassigned"], None)
    mine = client.get(f"/api/v1/rating/unrated?account={operator['martin']}", headers=token).json()
    assert [i["cdr_id"] for i in mine["items"]] == ["c-unrated"]
    assert client.get("/api/v1/rating/unrated?month=2026-09", headers=token).json()["total"] == 0

    # a rating after the fix prices the call: it leaves the queue
    write_rated(wb, "2026-10", [rated_row("c-unrated", dt.datetime(2026, 10, 5, 18, 59, tzinfo=UTC),
                                          account_id=operator["martin"], callee="+88216000001", price_micro=3_500_000,
                                          rated_at=RATED_AT + dt.timedelta(days=1))])
    after = client.get("/api/v1/rating/unrated?month=2026-10", headers=token).json()
    assert [i["cdr_id"] for i in after["items"]] == ["c-unassigned"] and after["total"] == 1


def test_unrated_queue_refuses_a_bad_month(client, operator):
    r = client.get("/api/v1/rating/unrated?month=2026-9", headers=bearer(operator["tokens"]["admin"]))
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"] == "not a month: '2026-9' (expected YYYY-MM)"


# --- GET /rating/anomalies -----------------------------------------------------------------------

def test_anomalies_list_a_five_hour_call(wb, client, operator):
    start = dt.datetime(2026, 10, 6, 2, 0, tzinfo=UTC)
    write_rated(wb, "2026-10", [rated_row("c-long", start, account_id=operator["martin"], service_id=5,
                                          destination="France Mobile", zone="fr_mobile", billsec_s=18_000,
                                          duration_s=18_004, end_at=start + dt.timedelta(seconds=18_004),
                                          price_micro=2_160_000)])
    token = bearer(operator["tokens"]["read_only"])
    r = client.get("/api/v1/rating/anomalies?since=2026-10-06T00:00:00Z&until=2026-10-07T00:00:00Z", headers=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["since"], body["until"]) == ("2026-10-06T00:00:00Z", "2026-10-07T00:00:00Z")
    # 18,000 s = 5 h, over the default 4 h (14,400 s) limit and under twice it: a warning
    [a] = body["items"]
    assert (a["kind"], a["severity"], a["account_number"], a["cdr_id"], a["calls"], a["minutes"], a["amount"]) == (
        "long_call", "warning", "C0001", "c-long", 1, "300.00", "2.16")
    assert (a["window_start"], a["window_end"]) == ("2026-10-06T02:00:00Z", "2026-10-06T07:00:04Z")
    assert a["detail"] == ("call of 5 h 00 min 00 s to +33612345678 (France Mobile), over the 14400 s limit; "
                           "cdr c-long")
    other = client.get(f"/api/v1/rating/anomalies?since=2026-10-06T00:00:00Z&until=2026-10-07T00:00:00Z"
                       f"&account={operator['durand']}", headers=token).json()
    assert other["items"] == []
    # the default range is the 7 days before now: October 2026 is long gone
    assert client.get("/api/v1/rating/anomalies", headers=token).json()["items"] == []


def test_bad_anomaly_ranges_are_400_problems(client, operator):
    for query, detail in [
        ("since=2026-10-07T00:00:00Z&until=2026-10-06T00:00:00Z",
         "since 2026-10-07T00:00:00+00:00 must be before until 2026-10-06T00:00:00+00:00"),
        ("since=2026-10-06T00:00:00&until=2026-10-07T00:00:00Z",
         "since 2026-10-06T00:00:00 has no time zone: give an aware datetime (UTC)"),
    ]:
        r = client.get(f"/api/v1/rating/anomalies?{query}", headers=bearer(operator["tokens"]["admin"]))
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
        assert r.json()["detail"] == detail


# --- role matrix ---------------------------------------------------------------------------------

STAFF_ENDPOINTS = ["/api/v1/rated-cdrs/c-split", "/api/v1/rated-cdrs?month=2026-10", "/api/v1/rating/unrated",
                   "/api/v1/rating/anomalies?since=2026-10-01T00:00:00Z&until=2026-11-01T00:00:00Z"]


ROLE_MATRIX = {"admin": 200, "billing": 200, "support": 200, "read_only": 200, "sales": 403}


def test_role_matrix_of_every_rating_endpoint(client, operator):
    for role, expected in ROLE_MATRIX.items():
        for path in STAFF_ENDPOINTS:
            r = client.get(path, headers=bearer(operator["tokens"][role]))
            assert r.status_code == expected, (role, path, r.text)
            if expected == 403:
                assert r.headers["content-type"] == PROBLEM
                assert r.json()["detail"] == f"role '{role}' may not use this endpoint (rating:read)"


def test_customers_never_see_the_unrated_queue_or_anomalies(client, operator):
    for customer in ("alice", "bob"):
        for path in STAFF_ENDPOINTS[2:]:
            r = client.get(path, headers=bearer(operator["tokens"][customer]))
            assert r.status_code == 403 and r.headers["content-type"] == PROBLEM, path
            assert r.json()["detail"] == "role 'customer' may not use this endpoint (rating:read)"


def test_rating_routes_need_a_token_and_are_documented(client, operator):
    for path in STAFF_ENDPOINTS:
        r = client.get(path)
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM, path
    paths = set(client.get("/api/v1/openapi.json").json()["paths"])
    assert {"/api/v1/rated-cdrs/{cdr_id}", "/api/v1/rated-cdrs", "/api/v1/rating/unrated",
            "/api/v1/rating/anomalies"} <= paths
