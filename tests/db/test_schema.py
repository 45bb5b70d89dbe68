import datetime as dt
import subprocess
import sys
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bluerocktel.audit import record_audit
from bluerocktel.db.models import AuditEntry, AuditLogError, Brand, Product


def test_migrations_are_idempotent_and_match_the_models(wb):
    wb.db.migrate()  # a second upgrade is a no-op
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bluerocktel.db.models import Base

    with wb.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


KILLED_WHILE_MIGRATING = """
import os, signal, sys
import sqlalchemy as sa
from bluerocktel.db import Database

db, created = Database(sys.argv[1]), []

@sa.event.listens_for(db.engine, "after_cursor_execute")
def kill_at_the_fifth_table(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("CREATE TABLE"):
        created.append(statement)
        if len(created) == 5:
            os.kill(os.getpid(), signal.SIGKILL)

db.migrate()
"""


def test_a_process_killed_while_migrating_sqlite_leaves_nothing_half_done(tmp_path):
    url = f"sqlite:///{tmp_path / 'bluerocktel.db'}"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_MIGRATING, url], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    from bluerocktel.db import Database

    db = Database(url)
    with db.engine.connect() as conn:         # the four tables created before the kill were rolled back
        assert conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").all() == []
    db.migrate()                              # the next start migrates from scratch
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar() == 0
    db.dispose()


def test_decimal_prices_round_trip_exactly(wb):
    with wb.db.transaction() as s:
        s.add(Product(code="P1", name="x", kind="recurring", price=Decimal("0.123456789012345678")))
    with wb.db.session() as s:
        assert s.scalar(sa.select(Product.price)) == Decimal("0.123456789012345678")


def test_naive_datetimes_are_refused(wb):
    with pytest.raises(Exception, match="naive datetime"):
        with wb.db.transaction() as s:
            s.add(AuditEntry(actor="t", action="x", at=dt.datetime(2026, 1, 1)))


def test_audit_log_is_append_only_in_orm_and_database(wb):
    with wb.db.transaction() as s:
        record_audit(s, "tester", "login", "user", 1)
    with pytest.raises(AuditLogError):
        with wb.db.transaction() as s:
            entry = s.scalar(sa.select(AuditEntry))
            entry.action = "forged"
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        with wb.db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_log SET action = 'forged'"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        with wb.db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_log"))
    with wb.db.session() as s:
        assert s.scalar(sa.select(AuditEntry.action)) == "login"


def test_brand_codes_are_unique(wb):
    with pytest.raises(sa.exc.IntegrityError):
        with wb.db.transaction() as s:
            s.add(Brand(code="A", name="A", legal_name="A SAS"))
            s.add(Brand(code="A", name="B", legal_name="B SAS"))
