"""Collectors: fetch CDRs from where a source keeps them and hand them to the importer.

A CDR source (``cdr_sources`` row) says by its ``url`` how it is collected:

============================== ==================================================================
``sftp://user@host[:port]/dir`` SFTP polling (:mod:`bluerocktel.collectors.sftp`)
``mysql://…``, ``mariadb://…``,  the switch's CDR table, read incrementally
``postgresql://…``              (:mod:`bluerocktel.collectors.database`)
(empty)                         nothing to collect: CDRs are pushed (API) or imported by hand
============================== ==================================================================

Every collector goes through :func:`bluerocktel.mediation.import_cdr_file` /
``import_cdr_bytes``, so the ledger, the record dedup and the quarantine are the same whichever
way a CDR arrived. A collector keeps its progress in ``cdr_source_states`` (the cursor) and
never raises for a source that is unreachable: the run is recorded ``failed`` with the error and
the next run starts again from the last cursor.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from bluerocktel.errors import FormatError, NotFoundError

SCHEMES = {
    "sftp": "bluerocktel.collectors.sftp",
    "mysql": "bluerocktel.collectors.database",
    "mariadb": "bluerocktel.collectors.database",
    "postgresql": "bluerocktel.collectors.database",
    "postgres": "bluerocktel.collectors.database",
}


@dataclass
class CollectSummary:
    source: str
    collector: str
    status: str = "ok"                       # ok, failed
    files: list = field(default_factory=list)  # ImportSummary of each file or batch imported
    skipped: list[str] = field(default_factory=list)   # seen but not taken (incomplete, refused name…)
    received: int = 0
    imported: int = 0
    duplicates: int = 0
    quarantined: int = 0
    cursor: str | None = None
    error: str | None = None
    duration_ms: int = 0

    def add(self, summary) -> None:
        self.files.append(summary)
        self.received += summary.received
        self.imported += summary.imported
        self.duplicates += summary.duplicates
        self.quarantined += summary.quarantined

    def as_dict(self) -> dict:
        return {"source": self.source, "collector": self.collector, "status": self.status,
                "files": [f.as_dict() for f in self.files], "skipped": list(self.skipped),
                "received": self.received, "imported": self.imported, "duplicates": self.duplicates,
                "quarantined": self.quarantined, "cursor": self.cursor, "error": self.error,
                "duration_ms": self.duration_ms}

    def describe(self) -> str:
        head = (f"{self.source} ({self.collector}): {self.status}, {len(self.files)} files/batches, "
                f"{self.received} received, {self.imported} imported, {self.duplicates} duplicates, "
                f"{self.quarantined} quarantined")
        lines = [head] + [f"  skipped {s}" for s in self.skipped]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


# Options ending in ``_env`` name an environment variable holding a secret (a password, a key
# passphrase). Only variables with this prefix may be named, so that whoever may configure a CDR
# source cannot make a collector send another of the server's secrets (its database password, its
# session key) to a host of their choosing.
SECRET_ENV_PREFIX = "BLUEROCKTEL_CDR_"


def env_name_problem(name: str, option: str) -> str | None:
    """Why ``name`` may not be read as the secret of option ``option`` (None: it may)."""
    if not isinstance(name, str) or not name.startswith(SECRET_ENV_PREFIX) or not name.replace("_", "").isalnum():
        return (f"option {option} must name an environment variable starting with {SECRET_ENV_PREFIX} "
                f"(letters, digits and _), got {name!r}")
    return None


def collector_module(url: str | None):
    """The collector module for a source URL (see the module doc)."""
    import importlib

    if not url:
        raise FormatError("this CDR source has no URL: its CDRs are pushed or imported, not collected")
    scheme = urlsplit(url).scheme.split("+")[0].lower()
    if scheme not in SCHEMES:
        raise FormatError(f"unknown collector URL scheme {scheme!r} in {redact(url)}; "
                          f"known: {', '.join(sorted(SCHEMES))}")
    return importlib.import_module(SCHEMES[scheme])


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def collect(wb, source_name: str, actor: str = "collector") -> CollectSummary:
    """Run the collector of CDR source ``source_name`` once; its state is kept in the database."""
    from sqlalchemy import select

    from bluerocktel.db.models import CdrSource

    with wb.db.session() as s:
        source = s.scalar(select(CdrSource).where(CdrSource.name == source_name))
        if source is None:
            raise NotFoundError(f"unknown CDR source {source_name!r}")
        s.expunge(source)
    module = collector_module(source.url)
    started = time.monotonic()
    summary = module.collect(wb, source, actor=actor)
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    save_state(wb, source.id, summary)
    return summary


def load_cursor(wb, source_id: int) -> str | None:
    from bluerocktel.db.models import CdrSourceState

    with wb.db.session() as s:
        state = s.get(CdrSourceState, source_id)
        return state.cursor if state else None


def save_state(wb, source_id: int, summary: CollectSummary) -> None:
    """Record the run; the cursor only moves forward when the run says where it got to."""
    from bluerocktel.db.models import CdrSourceState

    with wb.db.transaction() as s:
        state = s.get(CdrSourceState, source_id)
        if state is None:
            state = CdrSourceState(source_id=source_id)
            s.add(state)
        if summary.cursor is not None:
            state.cursor = summary.cursor
        state.last_run_at = dt.datetime.now(dt.timezone.utc)
        state.last_status = summary.status
        state.last_error = summary.error


def _record_failure(wb, source_name: str, summary: CollectSummary) -> None:
    from sqlalchemy import select

    from bluerocktel.db.models import CdrSource

    with wb.db.session() as s:
        source_id = s.scalar(select(CdrSource.id).where(CdrSource.name == source_name))
    if source_id is not None:
        save_state(wb, source_id, summary)


def watch(wb, sources: list[str] | None = None, *, interval_s: float | None = None,
          rounds: int | None = None, on_result: Callable[[CollectSummary], None] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll the enabled sources that have a URL (or the given ones) until stopped, or ``rounds``
    times; each source at its own ``poll_interval_s`` unless ``interval_s`` is given. The number
    of collect runs made."""
    from sqlalchemy import select

    from bluerocktel.db.models import CdrSource

    due: dict[str, float] = {}
    runs = 0
    done_rounds = 0
    while rounds is None or done_rounds < rounds:
        with wb.db.session() as s:
            query = select(CdrSource).where(CdrSource.enabled.is_(True), CdrSource.url.is_not(None))
            rows = [(r.name, r.poll_interval_s) for r in s.scalars(query) if r.url and
                    (sources is None or r.name in sources)]
        now = time.monotonic()
        for name, every in rows:
            if due.get(name, 0) <= now:
                try:
                    result = collect(wb, name, actor="collector")
                except Exception as exc:   # a broken source must not stop the others
                    result = CollectSummary(source=name, collector="?", status="failed",
                                            error=f"{type(exc).__name__}: {exc}")
                    _record_failure(wb, name, result)
                runs += 1
                if on_result:
                    on_result(result)
                due[name] = time.monotonic() + (interval_s if interval_s is not None else every)
        done_rounds += 1
        if rounds is not None and done_rounds >= rounds:
            break
        wake = min(due.values(), default=time.monotonic() + (interval_s or 60))
        sleep(max(0.0, min(wake - time.monotonic(), 60.0)))
    return runs
