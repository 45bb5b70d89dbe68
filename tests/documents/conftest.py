"""A module-wide SQLite workbench for the document tests (documents never change invoice amounts)."""

import pytest

from bluerocktel.workbench import Workbench


@pytest.fixture(scope="session")
def docs_wb(tmp_path_factory):
    """A migrated SQLite workbench shared by the document tests (each test stores its own invoices)."""
    workbench = Workbench.open(tmp_path_factory.mktemp("docs") / "data")
    yield workbench
    workbench.close()
