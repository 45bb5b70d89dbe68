"""The append-only audit log: who did what, to what, when."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bluerocktel.db.models import AuditEntry


def record_audit(session: Session, actor: str, action: str, target_type: str | None = None,
                 target_id: object = None, **details) -> AuditEntry:
    """Add an audit entry to ``session`` (committed with the action it records)."""
    entry = AuditEntry(actor=actor, action=action, target_type=target_type,
                       target_id=None if target_id is None else str(target_id), details=details)
    session.add(entry)
    return entry
