"""One data dir opened: the system of record, the usage lake and the documents folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bluerocktel.db import Database
from bluerocktel.settings import database_url, resolve_data_dir, secret_key


@dataclass
class Workbench:
    data_dir: Path
    db: Database = field(repr=False)

    @classmethod
    def open(cls, data_dir: str | os.PathLike | None = None, *, migrate: bool = True) -> "Workbench":
        path = resolve_data_dir(data_dir)
        db = Database(database_url(path))
        if migrate:
            db.migrate()
        return cls(path, db)

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def documents_dir(self) -> Path:
        return self.data_dir / "documents"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def secret_key(self) -> str:
        return secret_key(self.data_dir)

    def close(self) -> None:
        self.db.dispose()
