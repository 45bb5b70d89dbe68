"""The Dask engine gives exactly the local engine's rows, on a 2-worker LocalCluster.

One operator with every feature the rating kernel has (time bands in two account time zones,
grouped intervals, a fallback deck, per-increment rounding, minimum charge, maximum cost, the
buy side, SMS/data, and bundles: full, prorated, two on one service, unlimited with a fair-use
cap) and a few hundred generated CDRs, rated by ``rate_batch`` and by the Dask engine in small
partitions, so that every bundle service's calls are spread over several partitions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import socket
import time
from decimal import Decimal

import dask.config
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bluerocktel.cli import main
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
from bluerocktel.errors import UserFacingError
from bluerocktel.lake import CDR_SCHEMA, connect_duckdb, partition_files, read_table, write_partition
from bluerocktel.rating import rate_batch, rate_pending
from bluerocktel.rating.bundles import BUNDLE_USED_SCHEMA
from bluerocktel.rating.dask_engine import LOCAL_CLUSTER_QUIET, DaskEngineError, rating_engine
from bluerocktel.rating.tariffs import load_tariffs
from bluerocktel.workbench import Workbench

UTC = dt.timezone.utc
RATED_AT = dt.datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
PARTITION_ROWS = 100         # the October CDRs in 5 partitions


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster (processes, one thread each), started once for the module."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **LOCAL_CLUSTER_QUIET) as local:
        yield local


@pytest.fixture
def sqlite_wb(tmp_path, monkeypatch):
    """A workbench on SQLite: the engine never reads the system of record (the caller loads the
    tariffs), so these tests do not run again on PostgreSQL."""
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    workbench = Workbench.open(tmp_path / "sqlite-data")
    yield workbench
    workbench.close()


# --- the operator -------------------------------------------------------------------------------

NUMBERS = {1: "+33100000001", 2: "+33100000002", 3: "+33100000003", 4: "+33100000004"}


def seed(wb) -> dict:
    """Decks, bands, buy side, services and bundles; returns ids by name.

    Services: 1 (Paris) 600 s to French mobiles; 2 (Paris) unlimited French fixed, fair-use
    cap 900 s; 3 (New York) 600 s to French mobiles granted on Oct 11 (prorated: 600 x 21/31
    = 406 s in October) plus 300 s more; 4 (New York) no bundle; 5 (account code AC5) on a
    deck with CGRateS-style rounding (increment half-up at 5 dp, total up at 2 dp).
    """
    d = dt.datetime.fromisoformat
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS")
        paris = Account(number="C0001", brand=brand, name="Paris SARL", timezone="Europe/Paris")
        new_york = Account(number="C0002", brand=brand, name="NY Inc", timezone="America/New_York")
        product = Product(code="VOIP", name="SIP trunk", kind="usage")
        world = RateDeck(code="WORLD", name="fallback", kind="sell")
        sell = RateDeck(code="SELL", name="plan", kind="sell", holiday_calendar="FR")
        cgr = RateDeck(code="CGR", name="cgrates-like", kind="sell", rounding_method="up", rounding_decimals=2,
                       increment_rounding_method="half_up", increment_rounding_decimals=5)
        buy = RateDeck(code="BUY", name="carrier", kind="buy")
        s.add_all([brand, paris, new_york, product, world, sell, cgr, buy])
        s.flush()
        sell.fallback_deck_id = world.id
        s.add_all([
            TimeBand(deck_id=sell.id, name="peak", days="mon,tue,wed,thu,fri", start_minute=8 * 60,
                     end_minute=19 * 60, priority=1),
            TimeBand(deck_id=sell.id, name="weekend", days="sat,sun,hol", start_minute=0, end_minute=1440,
                     priority=2),
        ])
        since = d("2026-01-01T00:00:00+00:00")

        def rate(deck, prefix, price, zone, **kw):
            return Rate(deck_id=deck.id, prefix=prefix, destination=f"dest {prefix}", zone=zone,
                        price=Decimal(price), valid_from=kw.pop("valid_from", since), **kw)

        s.add_all([
            rate(sell, "33", "0.02", "fr-fixed"),
            rate(sell, "336", "0.05", "fr-mobile", band="", connection_fee=Decimal("0.015"),
                 first_increment=30, next_increment=6),
            rate(sell, "336", "0.10", "fr-mobile", band="peak", connection_fee=Decimal("0.015"),
                 first_increment=30, next_increment=6),
            rate(sell, "336", "0.01", "fr-mobile", band="weekend", connection_fee=Decimal("0.015"),
                 first_increment=30, next_increment=6),
            # grouped intervals: 0.20/min by the minute for the first minute, then 0.10/min by the second
            rate(sell, "44", "0.20", "europe", min_charge=Decimal("0.25")),
            rate(sell, "44", "0.10", "europe", group_start=60, first_increment=1, next_increment=1),
            rate(sell, "88", "3.00", "premium", max_cost=Decimal("1.00"), max_cost_action="disconnect"),
            rate(sell, "33", "0.05", "fr-sms", call_type="sms", unit_size=1, first_increment=1, next_increment=1),
            rate(sell, "", "0.01", "data", call_type="data", unit_size=1_000_000, first_increment=1024,
                 next_increment=1024),
            # a newer version of 337 from Oct 15
            rate(sell, "337", "0.08", "fr-mobile", first_increment=1, next_increment=1,
                 valid_to=d("2026-10-15T00:00:00+00:00")),
            rate(sell, "337", "0.06", "fr-mobile", first_increment=1, next_increment=1,
                 valid_from=d("2026-10-15T00:00:00+00:00")),
            rate(world, "1", "0.30", "nanp", first_increment=6, next_increment=6, max_cost=Decimal("0.40"),
                 max_cost_action="cap"),
            rate(world, "3", "9.99", "never"),   # SELL has 33 and 336: a longer fallback prefix never wins
            rate(cgr, "33", "0.0123", "fr-fixed", first_increment=1, next_increment=1),
            rate(cgr, "336", "0.1234", "fr-mobile", first_increment=30, next_increment=6),
            rate(buy, "33", "0.01", "fr-fixed", first_increment=1, next_increment=1),
            rate(buy, "336", "0.06", "fr-mobile", first_increment=1, next_increment=1),
            rate(buy, "44", "0.05", "europe", first_increment=1, next_increment=1),
            rate(buy, "33", "0.001", "fr-sms", call_type="sms", unit_size=1, first_increment=1, next_increment=1),
            CarrierTrunk(name="carrier", deck_id=buy.id, trunk="SIP/carrier", valid_from=since),
        ])
        services = {}
        for n, account, deck in [(1, paris, sell), (2, paris, sell), (3, new_york, sell), (4, new_york, sell),
                                 (5, paris, cgr)]:
            services[n] = Service(account_id=account.id, product_id=product.id, rate_deck_id=deck.id,
                                  label=f"service {n}")
        s.add_all(services.values())
        s.flush()
        for n, number in NUMBERS.items():
            s.add(ServiceIdentifier(service_id=services[n].id, kind="number", value=number, valid_from=since))
        s.add(ServiceIdentifier(service_id=services[5].id, kind="account_code", value="AC5", valid_from=since))
        mobile = Bundle(code="MOB600", name="600 s to French mobiles", call_type="voice", zones=["fr-mobile"],
                        allowance=600)
        extra = Bundle(code="MOB300", name="300 s more", call_type="voice", zones=["fr-mobile"], allowance=300)
        fixed = Bundle(code="FIXED", name="unlimited fixed", call_type="voice", zones=["fr-fixed"],
                       allowance=None, fair_use_cap=900)
        sms = Bundle(code="SMS5", name="5 SMS", call_type="sms", zones=["fr-sms"], allowance=5)
        s.add_all([mobile, extra, fixed, sms])
        s.flush()
        s.add_all([
            ServiceBundle(service_id=services[1].id, bundle_id=mobile.id, valid_from=since),
            ServiceBundle(service_id=services[1].id, bundle_id=sms.id, valid_from=since),
            ServiceBundle(service_id=services[2].id, bundle_id=fixed.id, valid_from=since),
            ServiceBundle(service_id=services[3].id, bundle_id=mobile.id, valid_from=d("2026-10-11T00:00:00+00:00")),
            ServiceBundle(service_id=services[3].id, bundle_id=extra.id, valid_from=since),
        ])
        return {"sell": sell.id, "world": world.id, "buy": buy.id,
                **{f"service{n}": svc.id for n, svc in services.items()}}


CALLEES = ["+336{:08d}", "+337{:08d}", "+331{:08d}", "+4420{:07d}", "+1212{:07d}", "+8812{:07d}",
           "+99{:08d}", "{:04d}"]   # the last: an internal extension (no '+'), matches no prefix


def generate_cdrs(seed_value: int, count: int, month: str, source_file: str) -> pa.Table:
    """``count`` CDRs of ``month``, reproducible from ``seed_value``: mostly outbound answered voice
    calls of the 4 numbers and account code AC5, a few SMS, data sessions, inbound, unanswered,
    unknown callers, and calls starting just before 19:00 Paris (the end of the peak band)."""
    rng = random.Random(seed_value)
    year, mon = map(int, month.split("-"))
    rows = []
    for i in range(count):
        day = rng.randint(1, 28)
        if rng.random() < 0.2:   # 18:50-18:59 Paris time in October (16:50 UTC): crosses the peak end
            start = dt.datetime(year, mon, day, 16, rng.randint(50, 59), rng.randint(0, 59), tzinfo=UTC)
        else:
            start = dt.datetime(year, mon, day, rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                                tzinfo=UTC)
        kind = rng.choices(["voice", "sms", "data"], [85, 10, 5])[0]
        answered = kind != "voice" or rng.random() < 0.85
        billsec = rng.choice([rng.randint(1, 90), rng.randint(1, 1500)]) if kind == "voice" and answered else 0
        units = {"voice": 0, "sms": rng.randint(1, 3), "data": rng.randint(1, 5_000_000)}[kind]
        who = rng.choices([1, 2, 3, 4, 5, 0], [30, 20, 25, 10, 10, 5])[0]
        caller = NUMBERS.get(who, "+33999999999") if who != 5 else "+33155555555"
        callee = rng.choice(CALLEES).format(rng.randint(0, 9999999)) if kind != "data" else "internet"
        if kind == "sms":
            callee = "+336{:08d}".format(rng.randint(0, 99999999))
        rows.append({
            "cdr_id": hashlib.sha256(f"{source_file}|{seed_value}|{i}".encode()).hexdigest()[:32],
            "source": "test", "source_file": source_file, "source_line": i + 1,
            "start_at": start, "answer_at": start if answered else None,
            "end_at": start + dt.timedelta(seconds=billsec + 3), "duration_s": billsec + 3, "billsec_s": billsec,
            "caller": caller, "callee": callee, "account_code": "AC5" if who == 5 else "",
            "channel": "SIP/pbx-1", "dst_channel": rng.choice(["SIP/carrier-1"] * 9 + ["SIP/other-1"]),
            "disposition": "ANSWERED" if answered else "NO ANSWER",
            "direction": rng.choices(["out", "in", "internal"], [90, 5, 5])[0],
            "call_type": kind, "units": units, "unique_id": f"{source_file}-{i}",
        })
    return pa.Table.from_pylist(rows, schema=CDR_SCHEMA)


# --- helpers ------------------------------------------------------------------------------------

def tariffs_of(wb):
    with wb.db.session() as s:
        return load_tariffs(s)


def october() -> pa.Table:
    """500 October CDRs in cdr_id order, as ``pending_cdrs`` gives them."""
    files = [generate_cdrs(1, 250, "2026-10", "oct-a.csv"), generate_cdrs(2, 250, "2026-10", "oct-b.csv")]
    return pa.concat_tables(files).sort_by("cdr_id")


def november() -> pa.Table:
    return generate_cdrs(3, 60, "2026-11", "nov-a.csv").sort_by("cdr_id")


def assert_same_rows(got: pa.Table, expected: pa.Table) -> None:
    if not got.equals(expected):      # say which row and column differ
        assert got.to_pylist() == expected.to_pylist()
    assert got.schema == expected.schema


def all_ratings(wb) -> list[dict]:
    """Every rating in the lake, by CDR then rating time, without ``rated_at``."""
    rows = read_table(wb.lake_dir, "rated", order_by="cdr_id, rated_at").to_pylist()
    for row in rows:
        del row["rated_at"]
    return rows


def free_port() -> int:
    with socket.socket() as probe:          # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the engine against rate_batch ---------------------------------------------------------------

def test_the_dask_engine_rates_like_rate_batch(sqlite_wb, cluster):
    ids = seed(sqlite_wb)
    tariffs = tariffs_of(sqlite_wb)
    mobile600 = [r["service_bundle_id"] for r in tariffs.bundles.to_pylist()
                 if r["code"] == "MOB600" and r["service_id"] == ids["service1"]]
    earlier = pa.table({"service_bundle_id": mobile600, "month": ["2026-10"], "units": [500]},
                       schema=BUNDLE_USED_SCHEMA)    # 500 of service 1's 600 s already used this month
    con = connect_duckdb()
    try:
        with rating_engine("dask", cluster.scheduler_address, partition_rows=PARTITION_ROWS) as rate:
            results = []
            for cdrs, used in [(october(), None), (october(), earlier), (november(), None)]:
                got = rate(con, cdrs, tariffs, RATED_AT, bundle_used=used)
                expected = rate_batch(con, cdrs, tariffs, RATED_AT, bundle_used=used)
                assert_same_rows(got, expected)
                results.append(got)
        alone = pa.concat_tables(rate_batch(con, october().slice(start, PARTITION_ROWS), tariffs, RATED_AT)
                                 for start in range(0, 500, PARTITION_ROWS))
    finally:
        con.close()

    # the CDRs exercise what the engine must carry over
    rated = pa.concat_tables([results[0], results[2]])
    rows = rated.to_pylist()
    flags = set(",".join(rated["flags"].drop_null().to_pylist()).split(",")) - {""}
    assert {"bundle", "band_split", "fair_use_exceeded", "negative_margin", "no_cost", "min_charge",
            "max_cost_capped", "max_cost_exceeded"} <= flags
    assert set(rated["rating_status"].to_pylist()) == {"rated", "free", "unrated", "unassigned"}
    assert ids["world"] in rated["rate_deck_id"].to_pylist()           # fallback deck
    assert ids["buy"] in rated["cost_deck_id"].to_pylist()             # buy side
    assert any(r["prefix"] == "44" and r["segments"] for r in rows)     # grouped intervals
    assert any(r["bundle_units"] and r["price_micro"] for r in rows)    # a partly covered call
    assert {r["call_type"] for r in rows} == {"voice", "sms", "data"}

    # earlier usage leaves less of the bundle: 500 s fewer covered for service 1
    def covered(table, service):
        return pc.sum(table.filter(pc.equal(table["service_id"], service))["bundle_units"]).as_py()
    assert covered(results[0], ids["service1"]) - covered(results[1], ids["service1"]) == 500

    # bundles only come out right when all calls of a service meet: rating each partition
    # alone would grant each bundle's allowance once per partition
    assert pc.sum(alone["bundle_units"]).as_py() > pc.sum(results[0]["bundle_units"]).as_py()


def test_the_local_engine_is_rate_batch_and_engine_words_are_checked():
    with rating_engine("local") as rate:
        assert rate is rate_batch
    with pytest.raises(UserFacingError, match=r"unknown rating engine 'spark' \(--engine\): expected one of "
                                              r"local, dask"):
        with rating_engine("spark"):
            pass
    with pytest.raises(UserFacingError, match=r"a Dask scheduler \('tcp://10.0.0.1:8786', --scheduler\) needs "
                                              r"--engine dask"):
        with rating_engine("local", "tcp://10.0.0.1:8786"):
            pass


def test_an_unreachable_scheduler_or_a_cluster_without_workers_is_a_clear_error():
    from distributed import LocalCluster

    port = free_port()
    started = time.monotonic()
    with pytest.raises(DaskEngineError, match=rf"cannot use the Dask scheduler 'tcp://127.0.0.1:{port}' "
                                              rf"\(--scheduler\): Timed out trying to connect"):
        with rating_engine("dask", f"tcp://127.0.0.1:{port}", connect_timeout_s=1):
            pass
    assert time.monotonic() - started < 10
    with pytest.raises(DaskEngineError, match="missing port number in address 'localhost'"):
        with rating_engine("dask", "localhost"):
            pass
    with LocalCluster(n_workers=0, processes=False, **LOCAL_CLUSTER_QUIET) as empty:
        with pytest.raises(DaskEngineError, match=rf"scheduler '{empty.scheduler_address}' \(--scheduler\) has no "
                                                  rf"worker after 1 s"):
            with rating_engine("dask", empty.scheduler_address, connect_timeout_s=1):
                pass


def test_without_a_scheduler_a_local_cluster_of_2_workers_is_started(sqlite_wb):
    seed(sqlite_wb)
    tariffs, cdrs = tariffs_of(sqlite_wb), november()
    con = connect_duckdb()
    try:
        with rating_engine("dask") as rate:
            assert len(rate.client.scheduler_info()["workers"]) == 2
            got = rate(con, cdrs, tariffs, RATED_AT)
        assert_same_rows(got, rate_batch(con, cdrs, tariffs, RATED_AT))
    finally:
        con.close()


# --- rate_pending and the command with --engine dask ---------------------------------------------



def test_rate_pending_on_dask_writes_what_the_local_engine_writes(sqlite_wb, cluster, tmp_path):
    wb = sqlite_wb
    seed(wb)
    on_dask = Workbench(tmp_path / "dask-data", wb.db)      # same system of record, another lake
    for lake in (wb, on_dask):
        write_partition(lake.lake_dir, "cdrs", "2026-10", october())
        write_partition(lake.lake_dir, "cdrs", "2026-11", november())

    def both():
        local = rate_pending(wb)
        on_cluster = rate_pending(on_dask, engine="dask", scheduler=cluster.scheduler_address)
        assert on_cluster.as_dict() == local.as_dict()
        assert all_ratings(on_dask) == all_ratings(wb)
        return on_cluster

    assert both().considered == 560
    late = generate_cdrs(4, 120, "2026-10", "oct-late.csv")    # bundles go on from what the first run used
    for lake in (wb, on_dask):
        write_partition(lake.lake_dir, "cdrs", "2026-10", late)
    assert both().considered == 120
    with wb.db.transaction() as s:                         # a rate for +99: its unrated calls are rated again
        sell = s.query(RateDeck).filter_by(code="SELL").one()
        s.add(Rate(deck_id=sell.id, prefix="99", destination="somewhere", zone="world", price=Decimal("0.50"),
                   valid_from=at("2026-01-01")))
    again = both()
    assert again.reprocessed > 0 and again.left_queue > 0
    assert len(partition_files(on_dask.lake_dir, "rated")) == len(partition_files(wb.lake_dir, "rated"))  # 1 a month


def test_the_rate_command_with_the_dask_engine(sqlite_wb, cluster, capsys):
    wb = sqlite_wb
    seed(wb)
    write_partition(wb.lake_dir, "cdrs", "2026-11", november())
    argv = ["rate", "--data-dir", str(wb.data_dir), "--json"]

    port = free_port()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):   # DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT
        assert main(argv + ["--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    assert f"cannot use the Dask scheduler 'tcp://127.0.0.1:{port}' (--scheduler)" in capsys.readouterr().err
    assert partition_files(wb.lake_dir, "rated") == []
    assert main(argv + ["--scheduler", cluster.scheduler_address]) == 2      # without --engine dask
    assert "needs --engine dask" in capsys.readouterr().err

    assert main(argv + ["--engine", "dask", "--scheduler", cluster.scheduler_address]) == 0
    on_cluster = json.loads(capsys.readouterr().out)
    con = connect_duckdb()
    expected = rate_batch(con, november(), tariffs_of(wb), RATED_AT)
    con.close()
    assert (on_cluster["considered"], on_cluster["total_price_micro"]) == (
        60, pc.sum(expected["price_micro"]).as_py())
    rated = read_table(wb.lake_dir, "rated", order_by="cdr_id").drop_columns(["rated_at"])
    assert_same_rows(rated, expected.drop_columns(["rated_at"]))
