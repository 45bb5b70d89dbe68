"""The database collector against real Asterisk ``cdr`` tables on MariaDB and PostgreSQL.

Each test creates its own database on the server (dropped at teardown) with Asterisk's own DDL:
the legacy ``calldate`` table (``cdr_mysql`` on MariaDB; ``cdr_pgsql`` on PostgreSQL, whose
calldate is a ``timestamptz``) and the current ``start``/``answer``/``end`` table (Asterisk's
``contrib/realtime/{mysql,postgresql}/*_cdr.sql``, ``DATETIME`` / ``timestamp``). Servers:
``BLUEROCKTEL_TEST_MYSQL`` (default ``mysql+pymysql://root@127.0.0.1:3306``) and
``BLUEROCKTEL_TEST_PG``; a test whose server does not answer is skipped with the reason.

The calls, Europe/Paris wall times of Monday 5 October 2026 (UTC+2), one line each:
``(start, duration, billsec, disposition, src, dst, uniqueid, sequence)``; the answer time is
``start + duration − billsec`` and the end ``start + duration`` (what Asterisk writes).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.collectors import collect
from bluerocktel.collectors.database import window_start
from bluerocktel.db.models import CdrFile, CdrSource, CdrSourceState
from bluerocktel.mediation import import_cdr_bytes, read_quarantine
from bluerocktel.mediation.formats.asterisk_db import parse_asterisk_db
from bluerocktel.mediation.quarantine import reprocess_quarantine
from bluerocktel.workbench import Workbench

BIN = Path(sys.executable).parent / "bluerocktel"
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
DAY = dt.date(2026, 10, 5)
SERVERS = {
    "mariadb": os.environ.get("BLUEROCKTEL_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get("BLUEROCKTEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432"),
}

# --- Asterisk's DDL ---------------------------------------------------------------------------

MARIADB_LEGACY = """CREATE TABLE cdr (
  {id}calldate datetime NOT NULL default '0000-00-00 00:00:00',
  clid varchar(80) NOT NULL default '', src varchar(80) NOT NULL default '',
  dst varchar(80) NOT NULL default '', dcontext varchar(80) NOT NULL default '',
  channel varchar(80) NOT NULL default '', dstchannel varchar(80) NOT NULL default '',
  lastapp varchar(80) NOT NULL default '', lastdata varchar(80) NOT NULL default '',
  duration int(11) NOT NULL default '0', billsec int(11) NOT NULL default '0',
  disposition varchar(45) NOT NULL default '', amaflags int(11) NOT NULL default '0',
  accountcode varchar(20) NOT NULL default '', uniqueid varchar(32) NOT NULL default '',
  userfield varchar(255) NOT NULL default '',
  KEY calldate (calldate))"""
MARIADB_CURRENT = """CREATE TABLE cdr (
  {id}accountcode VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80), clid VARCHAR(80),
  channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80), lastdata VARCHAR(80),
  start DATETIME, answer DATETIME, end DATETIME, duration INTEGER, billsec INTEGER,
  disposition VARCHAR(45), amaflags VARCHAR(45), userfield VARCHAR(256), uniqueid VARCHAR(150),
  linkedid VARCHAR(150), peeraccount VARCHAR(80), sequence INTEGER,
  KEY cdr_end (end))"""
PG_LEGACY = """CREATE TABLE cdr (
  {id}calldate timestamp with time zone NOT NULL default now(),
  clid varchar(80) NOT NULL default '', src varchar(80) NOT NULL default '',
  dst varchar(80) NOT NULL default '', dcontext varchar(80) NOT NULL default '',
  channel varchar(80) NOT NULL default '', dstchannel varchar(80) NOT NULL default '',
  lastapp varchar(80) NOT NULL default '', lastdata varchar(80) NOT NULL default '',
  duration bigint NOT NULL default '0', billsec bigint NOT NULL default '0',
  disposition varchar(45) NOT NULL default '', amaflags bigint NOT NULL default '0',
  accountcode varchar(20) NOT NULL default '', uniqueid varchar(150) NOT NULL default '',
  userfield varchar(255) NOT NULL default '', peeraccount varchar(20) NOT NULL default '',
  linkedid varchar(150) NOT NULL default '', sequence int NOT NULL default '0');
CREATE INDEX cdr_calldate ON cdr (calldate)"""
PG_CURRENT = """CREATE TABLE cdr (
  {id}accountcode VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80), clid VARCHAR(80),
  channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80), lastdata VARCHAR(80),
  start TIMESTAMP WITHOUT TIME ZONE, answer TIMESTAMP WITHOUT TIME ZONE, "end" TIMESTAMP WITHOUT TIME ZONE,
  duration INTEGER, billsec INTEGER, disposition VARCHAR(45), amaflags VARCHAR(45), userfield VARCHAR(256),
  uniqueid VARCHAR(150), linkedid VARCHAR(150), peeraccount VARCHAR(80), sequence INTEGER);
CREATE INDEX cdr_end ON cdr ("end")"""
DDL = {("mariadb", "legacy"): MARIADB_LEGACY, ("mariadb", "current"): MARIADB_CURRENT,
       ("postgresql", "legacy"): PG_LEGACY, ("postgresql", "current"): PG_CURRENT}
ID_COLUMN = {"mariadb": "id INT AUTO_INCREMENT PRIMARY KEY, ", "postgresql": "id serial PRIMARY KEY, "}

# --- the calls ---------------------------------------------------------------------------------

FIRST = [
    ("09:12:03", 218, 210, "ANSWERED", "201", "0612345678", "1791184323.1", 1),
    ("10:01:00", 124, 120, "ANSWERED", "201", "0145678912", "1791187260.3", 3),
    ("10:05:00", 25, 0, "NO ANSWER", "202", "0612345678", "1791187500.5", 5),
    ("10:07:30", 3, 0, "BUSY", "203", "0498765432", "1791187650.7", 7),
    ("10:08:00", 95, 90, "ANSWERED", "0612345678", "201", "1791187680.9", 9),
]
# Two new calls, and one that ended at 10:09:00 but is inserted late: before the mark of either
# time column (calldate 10:08:00, end 10:09:35), inside its 300 s overlap.
SECOND = [
    ("10:20:00", 60, 55, "ANSWERED", "204", "0033145678912", "1791188400.11", 11),
    ("10:22:00", 30, 0, "NO ANSWER", "201", "0612345678", "1791188520.13", 13),
    ("10:04:00", 300, 290, "ANSWERED", "202", "0145678913", "1791187440.15", 15),
]
# Ended at 09:42, inserted after the mark moved to 10:22: older than mark − overlap.
LATE = [("09:40:00", 120, 100, "ANSWERED", "203", "0612345679", "1791185600.17", 17)]


def call_times(call) -> tuple[dt.datetime, dt.datetime | None, dt.datetime]:
    start = dt.datetime.combine(DAY, dt.time.fromisoformat(call[0]))
    answered = call[3] == "ANSWERED"
    answer = start + dt.timedelta(seconds=call[1] - call[2]) if answered else None
    return start, answer, start + dt.timedelta(seconds=call[1])


class Switch:
    """An Asterisk cdr table of our own: a database on MariaDB; on PostgreSQL a schema of the
    session's database (creating and dropping a PostgreSQL database costs 2 s each)."""

    def __init__(self, server: str, schema: str, database: str, namespace: str | None):
        self.server, self.schema, self.database, self.namespace = server, schema, database, namespace
        args = {"options": f"-csearch_path={namespace}"} if namespace else {}
        self.engine = sa.create_engine(f"{SERVERS[server]}/{database}", poolclass=sa.pool.NullPool,
                                       connect_args=args)
        self.exact = (server, schema) == ("postgresql", "legacy")      # timestamptz calldate
        self.has_linkedid = (server, schema) != ("mariadb", "legacy")
        self.table = f"{namespace}.cdr" if namespace else "cdr"         # the source's table option

    @property
    def url(self) -> str:
        scheme = "mysql" if self.server == "mariadb" else "postgresql"
        user = "root" if self.server == "mariadb" else "postgres"
        port = 3306 if self.server == "mariadb" else 5432
        return f"{scheme}://{user}@127.0.0.1:{port}/{self.database}"

    def row(self, call) -> dict:
        start, answer, end = call_times(call)
        _, duration, billsec, disposition, src, dst, uid, seq = call
        row = {"clid": f'"" <{src}>', "src": src, "dst": dst, "dcontext": "from-internal",
               "channel": f"PJSIP/{src}-{seq:08x}", "dstchannel": f"PJSIP/ovh-trunk-{seq + 1:08x}",
               "lastapp": "Dial", "lastdata": f"PJSIP/{dst}@ovh-trunk,60,tTr", "duration": duration,
               "billsec": billsec, "disposition": disposition, "amaflags": 3, "accountcode": "acme",
               "uniqueid": uid, "userfield": ""}
        if self.schema == "legacy":
            row["calldate"] = start.replace(tzinfo=PARIS) if self.exact else start
        else:
            row.update(start=start, answer=answer, end=end, amaflags="DOCUMENTATION")
        if self.has_linkedid:
            row.update(peeraccount="", linkedid=uid, sequence=seq)
        return row

    def insert(self, calls, rows: list[dict] | None = None) -> None:
        table = sa.Table("cdr", sa.MetaData(), autoload_with=self.engine, schema=self.namespace)
        with self.engine.begin() as conn:
            conn.execute(table.insert(), rows if rows is not None else [self.row(c) for c in calls])

    def execute(self, sql: str, **params) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


_REACHABLE: dict[str, str | None] = {}


def _unreachable(server: str) -> str | None:
    """Why ``server`` cannot be used (None when it answers); asked once per session."""
    if server not in _REACHABLE:
        try:
            with _admin(server).connect() as conn:
                conn.execute(sa.text("select 1"))
            _REACHABLE[server] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
            _REACHABLE[server] = f"{server} not reachable at {SERVERS[server]}: {str(exc).splitlines()[0]}"
    return _REACHABLE[server]


def _admin(server: str):
    url = SERVERS[server] + ("/postgres" if server == "postgresql" else "/")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool,
                            connect_args={"connect_timeout": 5})


@pytest.fixture(scope="session")
def pg_switch_database():
    """A PostgreSQL database of this session holding the tests' schemas (or why there is none)."""
    reason = _unreachable("postgresql")
    if reason:
        pytest.skip(reason)
    name = f"brt_cdr_{uuid.uuid4().hex[:10]}"
    with _admin("postgresql").connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield name
    with _admin("postgresql").connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def make_switch(request):
    """``make_switch(server, schema, with_id=False)``: a fresh Asterisk cdr table (Switch doc)."""
    made: list[Switch] = []

    def make(server: str, schema: str, with_id: bool = False) -> Switch:
        reason = _unreachable(server)
        if reason:
            pytest.skip(reason)
        name = f"brt_cdr_{uuid.uuid4().hex[:10]}"
        if server == "mariadb":
            with _admin(server).connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {name}"))
            switch = Switch(server, schema, name, None)
        else:
            database = request.getfixturevalue("pg_switch_database")
            with sa.create_engine(f"{SERVERS[server]}/{database}", poolclass=sa.pool.NullPool).begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {name}"))
            switch = Switch(server, schema, database, name)
        made.append(switch)
        for statement in DDL[(server, schema)].format(id=ID_COLUMN[server] if with_id else "").split(";"):
            switch.execute(statement)
        return switch

    yield make
    for switch in made:
        with switch.engine.begin() as conn:
            if switch.namespace:
                conn.execute(sa.text(f"DROP SCHEMA {switch.namespace} CASCADE"))
            else:
                conn.execute(sa.text(f"DROP DATABASE {switch.database}"))
        switch.engine.dispose()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A workbench on SQLite (most tests; ``wb`` runs a few on PostgreSQL as well)."""
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    workbench = Workbench.open(tmp_path / "store")
    yield workbench
    workbench.close()


def add_source(wb, switch: Switch, name: str = "pbx-paris", **options) -> None:
    options.setdefault("table", switch.table)
    with wb.db.transaction() as s:
        s.add(CdrSource(name=name, format="asterisk-db", url=switch.url, timezone="Europe/Paris", country="FR",
                        options=options))


def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="start_at").to_pylist()


def ledger(wb) -> list[CdrFile]:
    with wb.db.session() as s:
        return list(s.scalars(select(CdrFile).order_by(CdrFile.id)))


def state(wb, name: str = "pbx-paris") -> CdrSourceState:
    with wb.db.session() as s:
        source = s.scalar(select(CdrSource).where(CdrSource.name == name))
        return s.get(CdrSourceState, source.id)


def counts(summary) -> tuple:
    return summary.status, summary.received, summary.imported, summary.duplicates, summary.quarantined


def utc(hms: str) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time.fromisoformat(hms), tzinfo=UTC)


COMBINATIONS = [("mariadb", "legacy"), ("mariadb", "current"), ("postgresql", "legacy"), ("postgresql", "current")]
# The stored mark after the first read: the largest calldate (legacy) or end (current) read,
# as wall time, or exact in UTC for PostgreSQL's timestamptz calldate.
FIRST_MARK = {("mariadb", "legacy"): "2026-10-05T10:08:00", ("mariadb", "current"): "2026-10-05T10:09:35",
              ("postgresql", "legacy"): "2026-10-05T08:08:00+00:00",
              ("postgresql", "current"): "2026-10-05T10:09:35"}


# --- the incremental read ---------------------------------------------------------------------

@pytest.mark.parametrize("server,schema", COMBINATIONS, ids=[f"{a}-{b}" for a, b in COMBINATIONS])
def test_incremental_read_imports_each_cdr_once(store, make_switch, server, schema):
    wb = store
    switch = make_switch(server, schema)
    switch.insert(FIRST)
    add_source(wb, switch)

    first = collect(wb, "pbx-paris", actor="alice")
    assert counts(first) == ("ok", 5, 5, 0, 0), first.error
    rows = {r["unique_id"]: r for r in lake_rows(wb)}
    answered, unanswered, busy, inbound = (rows["1791184323.1"], rows["1791187500.5"], rows["1791187650.7"],
                                           rows["1791187680.9"])
    assert (answered["start_at"], answered["answer_at"], answered["end_at"]) == (
        utc("07:12:03"), utc("07:12:11"), utc("07:15:41"))
    assert (answered["duration_s"], answered["billsec_s"], answered["disposition"]) == (218, 210, "ANSWERED")
    assert (answered["caller"], answered["callee"], answered["direction"]) == ("201", "+33612345678", "out")
    assert (answered["account_code"], answered["channel"], answered["dst_channel"]) == (
        "acme", "PJSIP/201-00000001", "PJSIP/ovh-trunk-00000002")
    assert (answered["source"], answered["call_type"], answered["units"]) == ("pbx-paris", "voice", 0)
    assert (unanswered["answer_at"], unanswered["end_at"], unanswered["billsec_s"], unanswered["disposition"]) == (
        None, utc("08:05:25"), 0, "NO ANSWER")
    assert (busy["answer_at"], busy["duration_s"], busy["disposition"]) == (None, 3, "BUSY")
    assert (inbound["caller"], inbound["callee"], inbound["direction"], inbound["answer_at"]) == (
        "+33612345678", "201", "in", utc("08:08:05"))

    [batch] = ledger(wb)
    assert (batch.source, batch.collector, batch.format, batch.status) == (
        "pbx-paris", "database", "asterisk-db", "imported")
    assert batch.file_name.startswith(f"cdr@127.0.0.1/{switch.database}#")
    assert (batch.received, batch.imported) == (5, 5)
    cursor = json.loads(state(wb).cursor)
    assert cursor["mark"] == FIRST_MARK[(server, schema)]
    assert cursor["time_column"] == ("calldate" if schema == "legacy" else "end")
    assert (state(wb).last_status, state(wb).last_error) == ("ok", None)

    # The 3 calls of the last 300 s before the mark are read again and found known.
    switch.insert(SECOND)
    second = collect(wb, "pbx-paris")
    assert counts(second) == ("ok", 6, 3, 3, 0)
    rows = {r["unique_id"]: r for r in lake_rows(wb)}
    assert len(rows) == 8 and len(lake_rows(wb)) == 8
    late = rows["1791187440.15"]
    assert (late["start_at"], late["answer_at"], late["end_at"], late["callee"]) == (
        utc("08:04:00"), utc("08:04:10"), utc("08:09:00"), "+33145678913")
    assert rows["1791188400.11"]["callee"] == "+33145678912"
    assert len(ledger(wb)) == 2

    # Nothing new: the overlap is read again, nothing is imported, no ledger row is written.
    idle = collect(wb, "pbx-paris")
    assert counts(idle) == ("ok", 2, 0, 2, 0)
    assert idle.files == [] and len(ledger(wb)) == 2

    # A call older than mark − overlap inserted late is missed (no id column: module doc).
    switch.insert(LATE)
    missed = collect(wb, "pbx-paris")
    assert counts(missed) == ("ok", 2, 0, 2, 0)
    assert "1791185600.17" not in {r["unique_id"] for r in lake_rows(wb)}


@pytest.mark.parametrize("server,schema", [("mariadb", "legacy"), ("postgresql", "current")])
def test_id_column_catches_rows_inserted_late_with_old_times(store, make_switch, server, schema):
    wb = store
    switch = make_switch(server, schema, with_id=True)
    add_source(wb, switch)
    empty = collect(wb, "pbx-paris")
    assert counts(empty) == ("ok", 0, 0, 0, 0) and ledger(wb) == []      # an empty read ledgers nothing

    switch.insert(FIRST)
    assert counts(collect(wb, "pbx-paris")) == ("ok", 5, 5, 0, 0)
    assert json.loads(state(wb).cursor)["last_id"] == 5
    switch.insert(SECOND)
    assert collect(wb, "pbx-paris").imported == 3
    switch.insert(LATE)                              # id 9, time far behind the window
    caught = collect(wb, "pbx-paris")
    assert (caught.imported, caught.duplicates) == (1, 2)
    assert caught.files[0].file.endswith("#id9..9")
    assert "1791185600.17" in {r["unique_id"] for r in lake_rows(wb)}
    assert json.loads(state(wb).cursor)["last_id"] == 9
    assert len(lake_rows(wb)) == 9


def test_pages_never_split_one_time_and_read_every_row_once(store, make_switch):
    wb = store
    switch = make_switch("postgresql", "current")
    # Three calls ending at the same second, more than a page of 2.
    calls = [("10:00:00", 60, 50, "ANSWERED", "201", "0612345601", "1791187200.1", 1),
             ("10:00:30", 60, 50, "ANSWERED", "202", "0612345602", "1791187230.2", 2),
             ("10:01:00", 60, 50, "ANSWERED", "203", "0612345603", "1791187260.3", 3),
             ("10:01:10", 50, 40, "ANSWERED", "204", "0612345604", "1791187270.4", 4),
             ("10:01:20", 40, 30, "ANSWERED", "205", "0612345605", "1791187280.5", 5),
             ("10:03:00", 60, 0, "NO ANSWER", "206", "0612345606", "1791187380.6", 6)]
    switch.insert(calls)
    add_source(wb, switch, batch_size=2)
    summary = collect(wb, "pbx-paris")
    assert counts(summary) == ("ok", 6, 6, 0, 0)
    # end times 10:01:00, 10:01:30, 10:02:00 ×3, 10:04:00: pages [10:01:00] [10:01:30] [10:02:00 ×3] [10:04:00]
    assert [f.received for f in summary.files] == [1, 1, 3, 1]
    assert [f.file.rsplit("#", 1)[1] for f in summary.files] == [
        "2026-10-05T10:01:00..2026-10-05T10:01:00", "2026-10-05T10:01:30..2026-10-05T10:01:30",
        "2026-10-05T10:02:00..2026-10-05T10:02:00", "2026-10-05T10:04:00..2026-10-05T10:04:00"]
    assert sorted(r["unique_id"] for r in lake_rows(wb)) == sorted(c[6] for c in calls)
    assert json.loads(state(wb).cursor)["mark"] == "2026-10-05T10:04:00"


def test_fractional_end_times_within_one_second_across_pages_are_read_once_each(store, make_switch):
    wb = store
    switch = make_switch("postgresql", "current")
    calls = [("10:01:00", 60, 50, "ANSWERED", f"20{k}", f"061234560{k}", f"1791187260.{k}", k) for k in range(1, 4)]
    switch.insert(calls)
    # PostgreSQL timestamps keep microseconds: the three calls end within one second, at three
    # values, so pages of 2 cut inside that second (the cut path, not the one-value-fills-a-page one)
    for k, fraction in ((2, "0.25"), (3, "0.5")):
        switch.execute(f"UPDATE {switch.table} SET \"end\" = \"end\" + interval '{fraction} seconds' "
                       f"WHERE uniqueid = '1791187260.{k}'")
    add_source(wb, switch, batch_size=2)
    summary = collect(wb, "pbx-paris")
    assert counts(summary) == ("ok", 3, 3, 0, 0)
    assert sorted(r["unique_id"] for r in lake_rows(wb)) == sorted(c[6] for c in calls)
    again = collect(wb, "pbx-paris")
    assert again.status == "ok" and again.imported == 0


def test_bad_row_is_quarantined_once_and_its_raw_reads_again(store, make_switch):
    wb = store
    switch = make_switch("mariadb", "current")
    switch.insert(FIRST[:2])
    # billsec greater than duration: Asterisk never writes it, a broken replication might.
    switch.execute("INSERT INTO cdr (src, dst, channel, dstchannel, start, answer, end, duration, billsec, "
                   "disposition, uniqueid, linkedid, sequence) VALUES ('201', '0612345678', 'PJSIP/201-0000001f', "
                   "'PJSIP/ovh-trunk-00000020', '2026-10-05 10:02:00', '2026-10-05 10:02:05', "
                   "'2026-10-05 10:02:40', 40, 45, 'ANSWERED', '1791187320.31', '1791187320.31', 31)")
    add_source(wb, switch)
    first = collect(wb, "pbx-paris")
    assert counts(first) == ("ok", 3, 2, 0, 1)
    [issue] = first.files[0].issues
    assert issue.reason == "billsec > duration: '45'"
    raw = json.loads(issue.raw)
    assert raw["uniqueid"] == "1791187320.31" and raw["end"] == "2026-10-05 10:02:40" and raw["billsec"] == "45"

    again = collect(wb, "pbx-paris")                 # the bad row and the 10:03:04 one: in the overlap
    assert counts(again) == ("ok", 2, 0, 2, 0)
    [quarantined] = read_quarantine(wb).to_pylist()
    assert (quarantined["format"], quarantined["raw"]) == ("asterisk-db", issue.raw)

    # The quarantined raw is a document the format reads alone (cdr quarantine reprocess): the
    # row is still wrong, so it stays in the quarantine with the same reason.
    reprocessed = reprocess_quarantine(wb, source="pbx-paris", actor="test")
    assert (reprocessed.received, reprocessed.imported, reprocessed.still_failing) == (1, 0, 1)
    assert [i.reason for i in reprocessed.issues] == ["billsec > duration: '45'"]
    fixed = json.dumps({**raw, "billsec": 38}).encode()
    table, issues = parse_asterisk_db(fixed, file_name="raw", source="pbx-paris", timezone="Europe/Paris",
                                      country="FR")
    [row] = table.to_pylist()
    assert issues == [] and (row["start_at"], row["answer_at"], row["end_at"], row["billsec_s"]) == (
        utc("08:02:00"), utc("08:02:05"), utc("08:02:40"), 38)


@pytest.mark.parametrize("schema,csv_line", [
    ("current", '"acme","201","0612345678","from-internal","""Jean Dupont"" <201>","PJSIP/201-00000001",'
                '"PJSIP/ovh-trunk-00000002","Dial","PJSIP/0612345678@ovh-trunk,60,tTr","2026-10-05 09:12:03",'
                '"2026-10-05 09:12:11","2026-10-05 09:15:41",218,210,"ANSWERED","DOCUMENTATION","1791184323.1",'
                '"","","1791184323.1",1'),
    ("legacy", '"acme","201","0612345678","from-internal","""Jean Dupont"" <201>","PJSIP/201-00000001",'
               '"PJSIP/ovh-trunk-00000002","Dial","PJSIP/0612345678@ovh-trunk,60,tTr","2026-10-05 09:12:03",'
               '"2026-10-05 09:12:11","2026-10-05 09:15:41",218,210,"ANSWERED","DOCUMENTATION","1791184323.1",""'),
])
def test_a_cdr_from_master_csv_and_from_the_table_is_one_record(store, make_switch, schema, csv_line):
    wb = store
    # The same call in a 21-column (current table: linkedid, sequence) or an 18-column (classic
    # table) Master.csv, imported under the same source name.
    switch = make_switch("mariadb", schema)
    switch.insert(FIRST[:2])
    add_source(wb, switch)
    from_csv = import_cdr_bytes(wb, (csv_line + "\n").encode(), "Master.csv", "asterisk-csv", source="pbx-paris")
    assert from_csv.imported == 1
    summary = collect(wb, "pbx-paris")
    assert counts(summary) == ("ok", 2, 1, 1, 0)
    assert len(lake_rows(wb)) == 2


def test_unreachable_database_fails_with_a_clear_message(wb):
    with wb.db.transaction() as s:
        s.add(CdrSource(name="nobody", format="asterisk-db", url="mysql://root@127.0.0.1:1/asteriskcdrdb"))
        s.add(CdrSource(name="secret", format="asterisk-db", url="postgresql://cdr:hunter2@127.0.0.1:1/asterisk"))
        s.add(CdrSource(name="no-env", format="asterisk-db", url="mysql://cdr@127.0.0.1:3306/asteriskcdrdb",
                        options={"password_env": "BLUEROCKTEL_CDR_TEST_NOT_SET_ANYWHERE"}))
    refused = collect(wb, "nobody")
    assert refused.status == "failed"
    assert refused.error.startswith("mysql://root@127.0.0.1:1/asteriskcdrdb: connecting failed: OperationalError: ")
    assert "Can't connect" in refused.error
    secret = collect(wb, "secret")
    assert secret.status == "failed" and "hunter2" not in secret.error
    assert secret.error.startswith("postgresql://cdr:***@127.0.0.1:1/asterisk: connecting failed: ")
    no_env = collect(wb, "no-env")
    assert no_env.error == ("mysql://cdr@127.0.0.1:3306/asteriskcdrdb: reading the options failed: environment "
                            "variable BLUEROCKTEL_CDR_TEST_NOT_SET_ANYWHERE (option password_env) is not set: no database password")
    assert (state(wb, "nobody").last_status, state(wb, "nobody").cursor) == ("failed", None)
    assert state(wb, "nobody").last_error == refused.error
    assert ledger(wb) == []


def test_unknown_database_table_or_columns_fail_with_a_clear_message(store, make_switch):
    wb = store
    switch = make_switch("mariadb", "legacy")
    switch.execute("CREATE TABLE calls (id INT PRIMARY KEY, caller VARCHAR(20), started DATETIME)")
    with wb.db.transaction() as s:
        s.add(CdrSource(name="no-db", format="asterisk-db", url="mysql://root@127.0.0.1:3306/brt_no_such_db"))
        s.add(CdrSource(name="no-table", format="asterisk-db", url=switch.url, options={"table": "cdr_2026"}))
        s.add(CdrSource(name="not-cdr", format="asterisk-db", url=switch.url, options={"table": "calls"}))
    assert "Unknown database 'brt_no_such_db'" in collect(wb, "no-db").error
    assert collect(wb, "no-table").error.endswith(
        "reading the columns of table cdr_2026 failed: table 'cdr_2026' not found")
    assert collect(wb, "not-cdr").error.endswith(
        "table 'calls' has neither calldate (legacy schema) nor start and end (current schema); "
        "its columns: id, caller, started (use option column_map)")


def test_column_map_reads_a_non_standard_table(store, make_switch):
    wb = store
    switch = make_switch("postgresql", "current")
    switch.execute('ALTER TABLE cdr RENAME COLUMN "end" TO hangup_at')
    switch.execute("ALTER TABLE cdr RENAME COLUMN uniqueid TO call_uid")
    row = switch.row(FIRST[0])
    row["hangup_at"], row["call_uid"] = row.pop("end"), row.pop("uniqueid")
    switch.insert(None, rows=[row])
    add_source(wb, switch, column_map={"end": "hangup_at", "uniqueid": "call_uid"})
    summary = collect(wb, "pbx-paris")
    assert counts(summary) == ("ok", 1, 1, 0, 0)
    [cdr] = lake_rows(wb)
    assert (cdr["unique_id"], cdr["end_at"]) == ("1791184323.1", utc("07:15:41"))
    assert json.loads(state(wb).cursor)["time_column"] == "hangup_at"


def test_mysql_timestamp_end_is_exact_and_a_zero_answer_date_means_unanswered(store, make_switch):
    wb = store
    switch = make_switch("mariadb", "current")
    # end as TIMESTAMP (stored in UTC, shown in the session's zone), answer left at the zero date.
    switch.execute("ALTER TABLE cdr MODIFY end TIMESTAMP NULL")
    with switch.engine.begin() as conn:
        conn.execute(sa.text("SET SESSION time_zone = '+02:00', sql_mode = ''"))
        conn.execute(sa.text(
            "INSERT INTO cdr (src, dst, channel, dstchannel, start, answer, end, duration, billsec, disposition, "
            "uniqueid, linkedid, sequence) VALUES ('202', '0612345678', 'PJSIP/202-00000005', "
            "'PJSIP/ovh-trunk-00000006', '2026-10-05 10:05:00', '0000-00-00 00:00:00', '2026-10-05 10:05:25', "
            "25, 0, 'NO ANSWER', '1791187500.5', '1791187500.5', 5)"))
    add_source(wb, switch)
    assert counts(collect(wb, "pbx-paris")) == ("ok", 1, 1, 0, 0)
    [cdr] = lake_rows(wb)
    assert (cdr["start_at"], cdr["answer_at"], cdr["end_at"], cdr["duration_s"], cdr["disposition"]) == (
        utc("08:05:00"), None, utc("08:05:25"), 25, "NO ANSWER")
    cursor = json.loads(state(wb).cursor)
    assert (cursor["exact"], cursor["mark"]) == (True, "2026-10-05T08:05:25+00:00")
    assert counts(collect(wb, "pbx-paris")) == ("ok", 1, 0, 1, 0)     # re-read in the overlap, known


def test_cursor_and_ledger_in_either_store(wb, make_switch):
    # The system of record on SQLite and on PostgreSQL: the cursor moves only with committed pages.
    switch = make_switch("mariadb", "legacy")
    switch.insert(FIRST)
    add_source(wb, switch)
    assert state(wb) is None
    assert counts(collect(wb, "pbx-paris", actor="alice")) == ("ok", 5, 5, 0, 0)
    assert json.loads(state(wb).cursor) == {"table": "cdr", "schema": "legacy", "time_column": "calldate",
                                            "exact": False, "mark": "2026-10-05T10:08:00", "last_id": None}
    switch.insert(SECOND)
    assert counts(collect(wb, "pbx-paris")) == ("ok", 6, 3, 3, 0)
    assert json.loads(state(wb).cursor)["mark"] == "2026-10-05T10:22:00"
    assert [(f.collector, f.received, f.imported, f.duplicates) for f in ledger(wb)] == [
        ("database", 5, 5, 0), ("database", 3, 3, 0)]
    # The table is dropped (a switch reinstalled): the run fails, the cursor stays.
    switch.execute("DROP TABLE cdr")
    failed = collect(wb, "pbx-paris")
    assert failed.status == "failed" and failed.error.endswith("table 'cdr' not found")
    assert (state(wb).last_status, json.loads(state(wb).cursor)["mark"]) == ("failed", "2026-10-05T10:22:00")


# --- the command line ---------------------------------------------------------------------------

def test_cli_collect_once_and_watch_with_a_password_from_the_environment(make_switch, tmp_path, monkeypatch):
    switch = make_switch("mariadb", "legacy")
    switch.insert(FIRST)
    user, password = f"brt_{uuid.uuid4().hex[:8]}", f"S3cret-{uuid.uuid4().hex[:8]}"
    with _admin("mariadb").connect() as conn:
        for host in ("%", "localhost", "127.0.0.1"):
            conn.execute(sa.text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"))
            conn.execute(sa.text(f"GRANT SELECT ON {switch.database}.* TO '{user}'@'{host}'"))
    try:
        data_dir = tmp_path / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEROCKTEL_")}

        def run(*args, password_env=None):
            extra = {"BLUEROCKTEL_CDR_TEST_PASSWORD": password_env} if password_env else {}
            return subprocess.run([str(BIN), *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                                  env={**env, **extra}, timeout=120)

        url = f"mysql://{user}@127.0.0.1:3306/{switch.database}"
        added = run("source", "add", "pbx-lyon", "--format", "asterisk-db", "--url", url,
                    "--option", "password_env=BLUEROCKTEL_CDR_TEST_PASSWORD", "--timezone", "Europe/Paris")
        assert added.returncode == 0, added.stderr

        without = run("collect", "pbx-lyon", "--json")
        assert without.returncode == 1
        assert json.loads(without.stdout)["error"] == (
            f"{url}: reading the options failed: environment variable BLUEROCKTEL_CDR_TEST_PASSWORD (option password_env) "
            "is not set: no database password")

        done = run("collect", "pbx-lyon", "--json", password_env=password)
        assert done.returncode == 0, done.stdout + done.stderr
        out = json.loads(done.stdout)
        assert (out["status"], out["collector"], out["received"], out["imported"]) == ("ok", "database", 5, 5)
        assert json.loads(out["cursor"])["mark"] == "2026-10-05T10:08:00"
        assert out["files"][0]["format"] == "asterisk-db"
        assert password not in done.stdout

        switch.insert(SECOND)
        watched = run("collect", "--watch", "--rounds", "1", "--interval", "0", "--json", password_env=password)
        assert watched.returncode == 0, watched.stderr
        out = json.loads(watched.stdout)
        assert (out["source"], out["received"], out["imported"], out["duplicates"]) == ("pbx-lyon", 6, 3, 3)
        assert json.loads(out["cursor"])["mark"] == "2026-10-05T10:22:00"

        # A wrong password: refused by the server, said so, and the password is not repeated.
        monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
        monkeypatch.setenv("BLUEROCKTEL_CDR_TEST_PASSWORD", "not-the-password")
        wb = Workbench.open(data_dir)
        try:
            wrong = collect(wb, "pbx-lyon")
        finally:
            wb.close()
        assert wrong.status == "failed" and "Access denied" in wrong.error and "not-the-password" not in wrong.error
    finally:
        with _admin("mariadb").connect() as conn:
            for host in ("%", "localhost", "127.0.0.1"):
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'{host}'"))


# --- without a server -----------------------------------------------------------------------------

def test_window_reaches_back_an_hour_before_the_autumn_fall_back():
    # 25 October 2026, Europe/Paris: at 03:00 CEST the clocks go back to 02:00 CET. After a mark
    # at 02:58 (summer time), calls ending at 02:01 CET are written with smaller wall times.
    assert window_start(dt.datetime(2026, 10, 25, 2, 58), 300, False, "Europe/Paris") == \
        dt.datetime(2026, 10, 25, 1, 53)
    # Far from the change (more than 2 hours before it, or after it): mark − overlap.
    assert window_start(dt.datetime(2026, 10, 25, 0, 30), 300, False, "Europe/Paris") == \
        dt.datetime(2026, 10, 25, 0, 25)
    assert window_start(dt.datetime(2026, 10, 25, 3, 10), 300, False, "Europe/Paris") == \
        dt.datetime(2026, 10, 25, 3, 5)
    assert window_start(dt.datetime(2026, 3, 29, 1, 58), 300, False, "Europe/Paris") == \
        dt.datetime(2026, 3, 29, 1, 53)                                     # spring forward: no gap to fill
    # Exact times (timestamptz) never need it.
    exact = dt.datetime(2026, 10, 25, 0, 58, tzinfo=UTC)
    assert window_start(exact, 300, True, "Europe/Paris") == dt.datetime(2026, 10, 25, 0, 53, tzinfo=UTC)


def test_arrow_stream_with_exact_and_wall_times_and_bad_rows():
    # What the collector sends: database types as they are (timestamptz → exact, timestamp → wall).
    rows = pa.table({
        "calldate": pa.array([dt.datetime(2026, 10, 5, 7, 12, 3, tzinfo=UTC), None,
                              dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
        "duration": pa.array([218, 20, 600], pa.int64()),
        "billsec": pa.array([210, 0, 0], pa.int64()),
        "src": ["201", "202", "203"], "dst": ["0612345678", "0612345678", "0145678912"],
        "disposition": ["ANSWERED", "NO ANSWER", "NO ANSWER"],
        "uniqueid": ["1791184323.1", "1791184400.2", "1793061000.3"],
    })
    import io
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    table, issues = parse_asterisk_db(sink.getvalue(), file_name="cdr@pbx/asterisk#x", source="pbx-paris",
                                      timezone="Europe/Paris", country="FR")
    assert [(i.line, i.reason) for i in issues] == [(2, "calldate is empty")]
    assert json.loads(issues[0].raw) == {"calldate": None, "duration": 20, "billsec": 0, "src": "202",
                                         "dst": "0612345678", "disposition": "NO ANSWER",
                                         "uniqueid": "1791184400.2"}
    first, third = table.to_pylist()
    assert (first["source_line"], first["start_at"], first["answer_at"], first["end_at"]) == (
        1, utc("07:12:03"), utc("07:12:11"), utc("07:15:41"))
    # An exact time in the fall-back night is not ambiguous.
    assert (third["source_line"], third["start_at"], third["answer_at"], third["end_at"]) == (
        3, dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC), None, dt.datetime(2026, 10, 25, 0, 40, tzinfo=UTC))


def test_json_rows_wall_time_in_the_fall_back_hour_uses_the_end_to_pick_the_reading():
    # Current schema, wall times: 02:50 → 02:10 only makes sense as 02:50 CEST → 02:10 CET.
    doc = b'{"start":"2026-10-25 02:50:00","answer":"2026-10-25 02:50:10","end":"2026-10-25 02:10:00",' \
          b'"duration":1200,"billsec":1190,"src":"201","dst":"0612345678","disposition":"ANSWERED",' \
          b'"uniqueid":"1793061000.4","linkedid":"1793061000.4","sequence":4}\n' \
          b'{"start":"2026-10-05 09:12:03","end":"soon","duration":10,"billsec":0,"uniqueid":"x"}\n' \
          b'[1, 2]\n' \
          b'{"start":"2026-02-30 10:00:00","end":"2026-02-30 10:01:00","duration":60,"billsec":0,"uniqueid":"y"}\n'
    table, issues = parse_asterisk_db(doc, file_name="rows.jsonl", source="pbx-paris", timezone="Europe/Paris",
                                      country="FR")
    assert [(i.line, i.reason) for i in issues] == [(2, "unparseable end: 'soon'"),
                                                     (3, "row is not a JSON object: [1, 2]"),
                                                     (4, "unparseable start: '2026-02-30 10:00:00'")]
    [row] = table.to_pylist()
    assert (row["start_at"], row["answer_at"], row["end_at"], row["duration_s"]) == (
        dt.datetime(2026, 10, 25, 0, 50, tzinfo=UTC), dt.datetime(2026, 10, 25, 0, 50, 10, tzinfo=UTC),
        dt.datetime(2026, 10, 25, 1, 10, tzinfo=UTC), 1200)
