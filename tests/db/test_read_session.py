"""Read sessions (API GETs): no transaction on a server database, and never a write."""

import pytest
from sqlalchemy import func, select

from bluerocktel.db.models import Brand


def _brand(code: str) -> Brand:
    return Brand(code=code, name=code, legal_name=f"{code} SAS")


def test_a_read_session_refuses_to_write_and_writes_nothing(wb):
    with wb.db.transaction() as s:
        s.add(_brand("KEEP"))
    session = wb.db.read_session()
    try:
        session.add(_brand("LOST"))
        if wb.db.reads_autocommit:
            with pytest.raises(RuntimeError, match="read session may not write"):
                session.flush()
    finally:
        session.close()
    with wb.db.session() as s:
        assert s.scalars(select(Brand.code)).all() == ["KEEP"]


def test_a_read_session_on_a_server_database_holds_no_transaction(wb):
    if not wb.db.reads_autocommit:
        pytest.skip("SQLite reads keep their transactions")
    session = wb.db.read_session()
    try:
        assert session.scalar(select(func.count()).select_from(Brand)) == 0
        # autocommit: after a statement the connection is idle, not in a transaction (a session's is INTRANS)
        assert session.connection().connection.dbapi_connection.info.transaction_status.name == "IDLE"
    finally:
        session.close()
    with wb.db.session() as session:
        session.scalar(select(func.count()).select_from(Brand))
        assert session.connection().connection.dbapi_connection.info.transaction_status.name == "INTRANS"
