"""Fixtures of the rating tests; the table builders live in ``rating_builders``."""

from __future__ import annotations

import pyarrow as pa
import pytest
from rating_builders import identifier, identifier_table


@pytest.fixture
def one_number() -> pa.Table:
    """Identifiers: service 1 (account 10, deck 100) owns the caller number +33123456789."""
    return identifier_table(identifier())
