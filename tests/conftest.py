"""Shared fixtures: every test that takes ``wb`` runs on SQLite and on PostgreSQL.

PostgreSQL is the server at ``BLUEROCKTEL_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432``);
each test gets its own database, cloned from a migrated template. Where no server answers, the
PostgreSQL variants are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from bluerocktel.workbench import Workbench

PG_SERVER = os.environ.get("BLUEROCKTEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def _pg_admin():
    return sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def pg_template():
    """A migrated PostgreSQL database to clone, or None when PostgreSQL is unreachable."""
    try:
        admin = _pg_admin()
        with admin.connect() as c:
            c.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        yield exc
        return
    name = f"brt_tpl_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    from bluerocktel.db import Database

    db = Database(f"{PG_SERVER}/{name}")
    db.migrate()
    db.dispose()
    yield name
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(request, tmp_path, monkeypatch, pg_template):
    """The system-of-record URL of this test; set in the environment for subprocesses too."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
        yield None
        return
    if isinstance(pg_template, Exception):
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {pg_template}")
    name = f"brt_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    url = f"{PG_SERVER}/{name}"
    monkeypatch.setenv("BLUEROCKTEL_DATABASE_URL", url)
    yield url
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def pytest_generate_tests(metafunc):
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("BLUEROCKTEL_DATA_DIR", str(path))
    return path


@pytest.fixture
def wb(database_url, data_dir):
    """An empty, migrated workbench on this test's backend."""
    workbench = Workbench.open(data_dir)
    yield workbench
    workbench.close()


# The sample operator (two brands, accounts, users, invoices, calls) used by the API, web and
# portal tests.
from sample_operator import app, client, sample  # noqa: E402,F401  (fixtures)
from browser_support import browser  # noqa: E402,F401  (fixture: headless Chromium)
from smtp_support import smtp, smtp_server  # noqa: E402,F401  (fixtures: a local SMTP server)
