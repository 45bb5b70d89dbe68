"""Migration 0003 rebuilds ``rates``: existing rates keep their prices under the new column names."""

import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command

from bluerocktel.db import alembic_config
from tests.conftest import PG_SERVER, _pg_admin


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path, pg_template):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    if isinstance(pg_template, Exception):
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {pg_template}")
    name = f"brt_m_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_SERVER}/{name}"
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_rates_keep_their_prices_through_0003(empty_database):
    cfg = alembic_config(empty_database)
    command.upgrade(cfg, "0002")
    engine = sa.create_engine(empty_database)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO rate_decks (id, code, name, kind, currency, created_at, updated_at) "
                          "VALUES (1, 'STD', 'Standard', 'sell', 'EUR', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')"))
        c.execute(sa.text("INSERT INTO rates (id, deck_id, prefix, destination, zone, price_per_minute, connection_fee, "
                          "first_increment_s, next_increment_s, valid_from) VALUES "
                          "(7, 1, '336', 'France mobile', 'fr-mobile', '0.0123456', '0.015', 30, 6, '2026-01-01 00:00:00+00')"))
    command.upgrade(cfg, "head")
    with engine.connect() as c:
        row = c.execute(sa.text("SELECT id, deck_id, call_type, prefix, band, group_start, price, unit_size, connection_fee, "
                                "first_increment, next_increment, min_charge, max_cost, valid_to FROM rates")).one()
        deck = c.execute(sa.text("SELECT rounding_method, rounding_decimals, fallback_deck_id FROM rate_decks")).one()
        # the rebuilt table still enforces the (new) version key
        with pytest.raises(sa.exc.IntegrityError):
            c.execute(sa.text("INSERT INTO rates (deck_id, call_type, prefix, destination, zone, band, group_start, price, "
                              "unit_size, connection_fee, first_increment, next_increment, min_charge, valid_from) "
                              "SELECT deck_id, call_type, prefix, destination, zone, band, group_start, price, unit_size, "
                              "connection_fee, first_increment, next_increment, min_charge, valid_from FROM rates"))
    with engine.begin() as c:   # a new rate gets the next id (PostgreSQL: the sequence moved on)
        c.execute(sa.text("INSERT INTO rates (deck_id, call_type, prefix, destination, zone, band, group_start, price, "
                          "unit_size, connection_fee, first_increment, next_increment, min_charge, valid_from) VALUES "
                          "(1, 'voice', '337', 'France mobile', 'fr-mobile', '', 0, '0.02', 60, '0', 60, 60, '0', "
                          "'2026-01-01 00:00:00+00')"))
        assert c.execute(sa.text("SELECT max(id) FROM rates")).scalar() > 7   # (a refused insert may use one)
    engine.dispose()
    assert tuple(row) == (7, 1, "voice", "336", "", 0, "0.0123456", 60, "0.015", 30, 6, "0", None, None)
    assert Decimal(row.price) == Decimal("0.0123456")
    assert tuple(deck) == ("half_up", 6, None)
