"""Engine, sessions and migrations of the system of record."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # No pre-ping (a round trip per checkout, 6 % of an API read): a connection found dead fails
    # its one statement and SQLAlchemy then discards every pooled connection older than it
    # (optimistic disconnect handling); pool_recycle retires connections before idle timeouts.
    return create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE, so the CREATE
            # TABLEs ran one by one: a process killed while migrating left tables without the
            # version stamp, and every later start failed. One explicit transaction makes the
            # upgrade all or nothing (SQLite DDL is transactional) and makes a second process wait.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def refuse_writes(session: Session, *_event_args) -> None:
    """Raise when a read session (:meth:`Database.read_session`) holds changes to write."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("a read session may not write (it runs in autocommit): use Database.session()")


class Database:
    """The system of record of one data dir: an engine and a session factory."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads without BEGIN and COMMIT: psycopg sends each as a round trip of its own, which
        # was a third of the statements of an API read (SQLite keeps its transactions).
        self._read_sessions = self._sessions
        self.reads_autocommit = not url.startswith("sqlite")
        if self.reads_autocommit:
            self._read_sessions = sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                                               expire_on_commit=False)
            event.listen(self._read_sessions, "before_flush", refuse_writes)

    def session(self) -> Session:
        return self._sessions()

    def read_session(self) -> Session:
        """A session for reading only: on a server database each statement runs in autocommit
        (no transaction: a write would not be atomic, so none may use it)."""
        return self._read_sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def migrate(self) -> None:
        migrate(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
