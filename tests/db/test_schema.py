import datetime as dt
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
